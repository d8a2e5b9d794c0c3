//! # ferry-coordinator — plans jobs and sees them through
//!
//! - [`plan`]: tasks → libraries (signing in to sources to list them).
//! - [`run_round`]: starts or resumes a round: records and publishes its
//!   chunks, runs in-process workers (the embedded default), tracks completion
//!   from the state store, and closes the round when every chunk is done.
//! - [`report`]: SPMT-shaped reports of a round.
//!
//! Architecture invariant: the coordinator holds no state that is not in the
//! state store — kill it at any point and [`run_round`] on the same store picks
//! up from the last checkpoint.

pub mod cli;
pub mod demo;
pub mod report;
pub mod site_structure;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ferry_connectors::ConnectorError;
use ferry_proto::structure;
use ferry_proto::{
    Chunk, Destination, HubChoice, JobId, JobSpec, LibraryPlan, Plan, SiteAction, SiteHub,
    SitePlan, SiteStructure, Source, SourceLibrary, SCHEMA_VERSION,
};
use ferry_store::queue::ChunkQueue;
use ferry_store::state::{ChunkRecord, ChunkState, JobRecord, RoundRecord, RoundState, StateStore};
use ferry_store::StoreError;
use ferry_worker::{ProgressSnapshot, Sources, WorkerContext};
use tokio_util::sync::CancellationToken;

/// Errors of planning and running, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no job {0} in this state directory: `ferry status` lists the jobs here")]
    UnknownJob(JobId),
    #[error("task {task}: {message}")]
    Task { task: usize, message: String },
    #[error("task {task}: sign in to the SharePoint Server site {site} first (--source-user and --source-password)")]
    NotSignedIn { task: usize, site: String },
    #[error("site structure: {0}")]
    Structure(String),
    #[error("the plan has problems; edit them and run it again:\n  {}", .0.join("\n  "))]
    PlanInvalid(Vec<String>),
    #[error("{0} chunk(s) could not be finished (see `ferry status`); fix the cause shown and run `ferry resume`")]
    Incomplete(usize),
}

/// Resolves a job's tasks into libraries. SharePoint Server sources must be
/// signed in (`sources`); file-share paths must exist.
pub async fn plan(job: JobId, spec: &JobSpec, sources: &Sources) -> Result<Plan, CoordinatorError> {
    let mut libraries = Vec::new();
    let mut sites = Vec::new();
    for (task, t) in spec.tasks.iter().enumerate() {
        match &t.source {
            Source::FileShare { path } => {
                let meta = std::fs::metadata(path).map_err(|e| CoordinatorError::Task {
                    task,
                    message: format!("the source folder {path} cannot be read: {e}. Check the path and that this account may read it"),
                })?;
                if !meta.is_dir() {
                    return Err(CoordinatorError::Task {
                        task,
                        message: format!("the source {path} is not a folder: give the folder whose contents to migrate"),
                    });
                }
                if t.destination.library.is_none() {
                    return Err(CoordinatorError::Task {
                        task,
                        message: "a file-share task needs a destination library (--to-library)"
                            .into(),
                    });
                }
                libraries.push(LibraryPlan {
                    task,
                    source: SourceLibrary::FileShare { path: path.clone() },
                    destination: t.destination.clone(),
                    site: None,
                    items: None,
                    bytes: None,
                });
            }
            Source::SharePointServer {
                site_url,
                library,
                subfolder,
            } => {
                let source =
                    sources
                        .get(site_url)
                        .await
                        .ok_or_else(|| CoordinatorError::NotSignedIn {
                            task,
                            site: site_url.clone(),
                        })?;
                match library {
                    Some(title) => {
                        let libs = source.libraries(site_url).await?;
                        let found = libs
                            .iter()
                            .find(|l| l.title.eq_ignore_ascii_case(title) || l.root_folder.rsplit('/').next().is_some_and(|n| n.eq_ignore_ascii_case(title)))
                            .ok_or_else(|| CoordinatorError::Task {
                                task,
                                message: format!(
                                    "the source site {site_url} has no library '{title}'; its libraries are: {}",
                                    libs.iter().map(|l| l.title.as_str()).collect::<Vec<_>>().join(", ")
                                ),
                            })?;
                        libraries.push(LibraryPlan {
                            task,
                            source: SourceLibrary::SharePointServer {
                                site_url: site_url.clone(),
                                list_id: found.id,
                                title: found.title.clone(),
                                root_folder: found.root_folder.clone(),
                                subfolder: subfolder.clone(),
                            },
                            destination: Destination {
                                library: t
                                    .destination
                                    .library
                                    .clone()
                                    .or_else(|| Some(found.title.clone())),
                                ..t.destination.clone()
                            },
                            site: None,
                            items: None,
                            bytes: None,
                        });
                    }
                    None => {
                        plan_site(task, t, &source, &mut sites, &mut libraries).await?;
                    }
                }
            }
        }
    }
    Ok(Plan {
        schema_version: SCHEMA_VERSION,
        job,
        sites,
        libraries,
    })
}

/// A whole SharePoint Server site: its libraries and every subsite, mapped
/// to destination sites as the task's structure says.
///
/// - Keep classic: each subsite becomes a subsite at the same relative place
///   under the destination site.
/// - Switch to modern: each level-one subsite becomes its own site collection
///   (`{tenant}/sites/{name}`); deeper subsites stay subsites of their
///   promoted parent. With a hub choice, the destination site registers as
///   the hub (and the promoted sites join it), or all of them join an
///   existing hub.
///
/// The user's reviewed URLs (`subsite_destinations`) replace the proposals.
async fn plan_site(
    task: usize,
    t: &ferry_proto::TaskSpec,
    source: &ferry_connectors::spserver::SpServerSource,
    sites: &mut Vec<SitePlan>,
    libraries: &mut Vec<LibraryPlan>,
) -> Result<(), CoordinatorError> {
    let Source::SharePointServer { site_url, .. } = &t.source else {
        return Ok(());
    };
    let site_url = site_url.trim_end_matches('/').to_string();
    let dest_root = t.destination.site_url.trim_end_matches('/').to_string();
    let tenant = tenant_root(&dest_root);
    let (modern, hub) = match &t.structure {
        SiteStructure::KeepClassic => (false, HubChoice::None),
        SiteStructure::SwitchToModern { hub } => (true, hub.clone()),
    };
    let web = source.web(&site_url).await?;
    let root = sites.len();
    sites.push(SitePlan {
        task,
        source: site_url.clone(),
        destination: dest_root.clone(),
        title: web.title,
        action: SiteAction::Existing,
        hub: match &hub {
            HubChoice::None => SiteHub::None,
            HubChoice::RegisterDestination => SiteHub::Register,
            HubChoice::JoinExisting { hub } => SiteHub::Join { hub: hub.clone() },
        },
    });
    let mut stack = vec![(site_url, root, 0usize)];
    while let Some((web, index, depth)) = stack.pop() {
        for lib in source
            .libraries(&web)
            .await?
            .into_iter()
            .filter(|l| !l.hidden)
        {
            libraries.push(LibraryPlan {
                task,
                source: SourceLibrary::SharePointServer {
                    site_url: web.clone(),
                    list_id: lib.id,
                    title: lib.title.clone(),
                    root_folder: lib.root_folder.clone(),
                    subfolder: None,
                },
                destination: Destination {
                    site_url: sites[index].destination.clone(),
                    library: Some(lib.title.clone()),
                    subfolder: None,
                },
                site: Some(index),
                items: None,
                bytes: None,
            });
        }
        let mut subs = source.subsites(&web).await?;
        subs.sort_by(|a, b| b.url.cmp(&a.url)); // popped in URL order
        for sub in subs {
            let sub_url = sub.url.trim_end_matches('/').to_string();
            let leaf = structure::leaf(&sub_url).to_string();
            let promoted = modern && depth == 0;
            let proposed = if promoted {
                structure::site_collection_url(&tenant, &leaf)
            } else {
                structure::subsite_url(&sites[index].destination, &leaf)
            };
            let destination = t
                .subsite_destinations
                .iter()
                .find(|(k, _)| k.trim_end_matches('/').eq_ignore_ascii_case(&sub_url))
                .map(|(_, v)| v.trim_end_matches('/').to_string())
                .unwrap_or(proposed);
            let (action, hub) = if promoted {
                let hub = match &hub {
                    HubChoice::None => SiteHub::None,
                    HubChoice::RegisterDestination => SiteHub::Join {
                        hub: dest_root.clone(),
                    },
                    HubChoice::JoinExisting { hub } => SiteHub::Join { hub: hub.clone() },
                };
                (
                    SiteAction::SiteCollection {
                        template: MODERN_TEMPLATE.into(),
                    },
                    hub,
                )
            } else {
                (
                    SiteAction::Subsite {
                        parent: index,
                        template: MODERN_TEMPLATE.into(),
                    },
                    SiteHub::None,
                )
            };
            let child = sites.len();
            sites.push(SitePlan {
                task,
                source: sub_url.clone(),
                destination,
                title: sub.title,
                action,
                hub,
            });
            stack.push((sub_url, child, depth + 1));
        }
    }
    Ok(())
}

/// Counts the files and bytes of every library at the source (`ferry plan`).
pub async fn count(plan: &mut Plan, sources: &Sources) -> Result<(), CoordinatorError> {
    for lib in &mut plan.libraries {
        let (mut items, mut bytes) = (0u64, 0u64);
        match &lib.source {
            SourceLibrary::FileShare { path } => {
                let share = ferry_connectors::fileshare::FileShareSource::new(path)?;
                let mut rx = share.walk("");
                while let Some(entry) = rx.recv().await {
                    if let Ok(e) = entry {
                        if e.kind == ferry_proto::ItemKind::File {
                            items += 1;
                            bytes += e.size;
                        }
                    }
                }
            }
            SourceLibrary::SharePointServer {
                site_url,
                list_id,
                title,
                root_folder,
                subfolder,
            } => {
                let source =
                    sources
                        .get(site_url)
                        .await
                        .ok_or_else(|| CoordinatorError::NotSignedIn {
                            task: lib.task,
                            site: site_url.clone(),
                        })?;
                let info = ferry_connectors::spserver::LibraryInfo {
                    id: *list_id,
                    title: title.clone(),
                    root_folder: root_folder.clone(),
                    item_count: 0,
                    hidden: false,
                };
                for e in source
                    .list_items(site_url, &info, subfolder.as_deref().unwrap_or(""))
                    .await?
                {
                    if e.kind == ferry_proto::ItemKind::File {
                        items += 1;
                        bytes += e.size;
                    }
                }
            }
        }
        lib.items = Some(items);
        lib.bytes = Some(bytes);
    }
    Ok(())
}

/// Modern team site without a Microsoft 365 group.
const MODERN_TEMPLATE: &str = "STS#3";

/// `https://contoso.sharepoint.com/sites/x` → `https://contoso.sharepoint.com`.
pub fn tenant_root(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            format!("{scheme}://{}", rest.split('/').next().unwrap_or_default())
        }
        None => url.to_string(),
    }
}

/// How a round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundOutcome {
    pub round: u32,
    /// True when this call continued a round an earlier run left unfinished.
    pub resumed: bool,
    pub chunks: usize,
    /// Chunks that could not be finished (dead-lettered), with reasons.
    pub dead: Vec<(String, String)>,
}

/// What `run_round` should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundMode {
    /// Continue the unfinished round if there is one, else start the next.
    ResumeOrNext,
    /// Only continue an unfinished round (error if there is none).
    ResumeOnly,
}

/// How [`run_round`] runs.
pub struct RoundOptions {
    pub mode: RoundMode,
    /// In-process workers taking chunks from the queue.
    pub workers: usize,
    /// SharePoint Online REST client for the structure phases; needed when
    /// the plan has sites.
    pub sites: Option<Arc<ferry_connectors::sites::SitesClient>>,
}

/// Starts or resumes a round of `job` with in-process workers and waits for
/// it, calling `on_progress` about four times a second.
///
/// Safe to interrupt anywhere (cancel `cancel`, or kill the process): chunk
/// states and item checkpoints are in the store, and the next call resumes.
pub async fn run_round<S, Q>(
    ctx: Arc<WorkerContext<S>>,
    queue: Arc<Q>,
    job_id: JobId,
    options: RoundOptions,
    cancel: CancellationToken,
    mut on_progress: impl FnMut(ProgressSnapshot),
) -> Result<RoundOutcome, CoordinatorError>
where
    S: StateStore + Clone,
    Q: ChunkQueue,
{
    let RoundOptions {
        mode,
        workers,
        sites,
    } = options;
    let store = ctx.store.clone();
    let mut job = store
        .job(job_id)
        .await?
        .ok_or(CoordinatorError::UnknownJob(job_id))?;
    let plan = job
        .plan
        .clone()
        .ok_or(CoordinatorError::UnknownJob(job_id))?;

    let unfinished = job
        .current_round()
        .filter(|r| r.state == RoundState::Running)
        .map(|r| r.round);
    let (round, resumed) = match (unfinished, mode) {
        (Some(r), _) => (r, true),
        (None, RoundMode::ResumeOnly) => {
            return Err(CoordinatorError::Task {
                task: 0,
                message: "this job has no paused round: run it again with `ferry migrate --job` for an incremental round".into(),
            })
        }
        (None, RoundMode::ResumeOrNext) => {
            let next = job.rounds.last().map_or(0, |r| r.round + 1);
            job.rounds.push(RoundRecord {
                round: next,
                state: RoundState::Running,
                started: Utc::now(),
                finished: None,
            });
            store.put_job(&job).await?;
            (next, false)
        }
    };

    // Structure first: the sites and libraries content goes into.
    if !plan.sites.is_empty() {
        let client = sites.as_deref().ok_or_else(|| {
            CoordinatorError::Structure(
                "this job creates sites: sign in to SharePoint Online".into(),
            )
        })?;
        site_structure::build(&store, &job, round, &plan, client).await?;
    }

    // Every library is a chunk; those already done stay done.
    let existing = store.chunks(job_id, round).await?;
    let mut to_publish = Vec::new();
    for (index, _) in plan.libraries.iter().enumerate() {
        let id = format!("L{index}");
        match existing.iter().find(|c| c.chunk.id == id) {
            Some(ChunkRecord {
                state: ChunkState::Done { .. },
                ..
            }) => {}
            Some(record) => {
                // Back to pending (a dead letter from the paused run must not
                // count as finished); `starts` stays, so the worker knows this
                // chunk is resumed.
                store
                    .put_chunk(
                        round,
                        &ChunkRecord {
                            state: ChunkState::Pending,
                            ..record.clone()
                        },
                    )
                    .await?;
                to_publish.push(Chunk {
                    attempt: 1,
                    ..record.chunk.clone()
                });
            }
            None => {
                let chunk = Chunk {
                    schema_version: SCHEMA_VERSION,
                    job: job_id,
                    id,
                    library: index,
                    round,
                    subtree: String::new(),
                    attempt: 1,
                };
                store
                    .put_chunk(
                        round,
                        &ChunkRecord {
                            chunk: chunk.clone(),
                            state: ChunkState::Pending,
                            starts: 0,
                        },
                    )
                    .await?;
                to_publish.push(chunk);
            }
        }
    }
    for chunk in to_publish {
        queue.publish(chunk).await?;
    }

    let worker_cancel = cancel.child_token();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        tasks.spawn(ferry_worker::run(
            ctx.clone(),
            queue.clone(),
            worker_cancel.clone(),
        ));
    }

    // Track completion from the state store, as a remote coordinator would.
    let total = plan.libraries.len();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let dead = loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                worker_cancel.cancel();
                while tasks.join_next().await.is_some() {}
                return Err(CoordinatorError::Incomplete(total));
            }
            _ = tick.tick() => {}
        }
        on_progress(ctx.progress.snapshot());
        let chunks = store.chunks(job_id, round).await?;
        let done = chunks
            .iter()
            .filter(|c| matches!(c.state, ChunkState::Done { .. }))
            .count();
        let dead: Vec<_> = chunks
            .iter()
            .filter_map(|c| match &c.state {
                ChunkState::DeadLettered { reason } => Some((c.chunk.id.clone(), reason.clone())),
                _ => None,
            })
            .collect();
        if done + dead.len() >= total {
            break dead;
        }
    };
    worker_cancel.cancel();
    while tasks.join_next().await.is_some() {}
    on_progress(ctx.progress.snapshot());

    if dead.is_empty() {
        // Hubs after content, as SPMT does.
        if plan.sites.iter().any(|s| s.hub != SiteHub::None) {
            let client = sites.as_deref().ok_or_else(|| {
                CoordinatorError::Structure(
                    "this job joins hubs: sign in to SharePoint Online".into(),
                )
            })?;
            site_structure::hubs(&store, &job, round, &plan, client).await?;
        }
        let mut job = store
            .job(job_id)
            .await?
            .ok_or(CoordinatorError::UnknownJob(job_id))?;
        if let Some(r) = job.rounds.iter_mut().find(|r| r.round == round) {
            r.state = RoundState::Completed;
            r.finished = Some(Utc::now());
        }
        store.put_job(&job).await?;
    }
    Ok(RoundOutcome {
        round,
        resumed,
        chunks: total,
        dead,
    })
}

/// Creates a job record (planned) in the store: plans the tasks, then
/// [`create_job_with_plan`].
pub async fn create_job<S: StateStore>(
    store: &S,
    spec: JobSpec,
    sources: &Sources,
    destination: Option<&ferry_connectors::graph::GraphDestination>,
    sites: Option<&ferry_connectors::sites::SitesClient>,
) -> Result<JobRecord, CoordinatorError> {
    let plan = plan(JobId::new(), &spec, sources).await?;
    create_job_with_plan(store, spec, plan, destination, sites).await
}

/// Stores a job with a given (possibly hand-edited) plan, after checking it:
/// the plan's URLs ([`ferry_proto::structure::validate`]), the destination
/// libraries that must exist already, and the hubs joined by name. A wrong
/// site, library, hub or sign-in fails here, before anything is created.
pub async fn create_job_with_plan<S: StateStore>(
    store: &S,
    spec: JobSpec,
    mut plan: Plan,
    destination: Option<&ferry_connectors::graph::GraphDestination>,
    sites: Option<&ferry_connectors::sites::SitesClient>,
) -> Result<JobRecord, CoordinatorError> {
    let id = JobId::new();
    plan.job = id;
    structure::apply_site_urls(&mut plan);
    structure::validate(&plan).map_err(|problems| {
        CoordinatorError::PlanInvalid(problems.iter().map(|p| describe(&plan, p)).collect())
    })?;
    if let Some(dest) = destination {
        let mut checked = std::collections::HashSet::new();
        for lib in plan.libraries.iter().filter(|l| l.site.is_none()) {
            let name = match (&lib.destination.library, &lib.source) {
                (Some(n), _) => n.clone(),
                (None, SourceLibrary::SharePointServer { title, .. }) => title.clone(),
                (None, SourceLibrary::FileShare { .. }) => "Documents".to_string(),
            };
            if checked.insert((lib.destination.site_url.to_lowercase(), name.to_lowercase())) {
                dest.resolve_library(&lib.destination.site_url, &name)
                    .await
                    .map_err(|e| CoordinatorError::Task {
                        task: lib.task,
                        message: format!(
                            "destination {} library '{name}': {e}",
                            lib.destination.site_url
                        ),
                    })?;
            }
        }
    }
    if let Some(client) = sites {
        site_structure::check_hubs(&plan, client).await?;
    }
    let record = JobRecord {
        schema_version: SCHEMA_VERSION,
        id,
        spec,
        plan: Some(plan),
        rounds: Vec::new(),
        created: Utc::now(),
    };
    store.put_job(&record).await?;
    Ok(record)
}

/// A plan problem with the site's source named, for people.
fn describe(plan: &Plan, p: &structure::PlanProblem) -> String {
    match p.site.and_then(|i| plan.sites.get(i)) {
        Some(site) => format!("{p} (source {})", site.source),
        None => p.to_string(),
    }
}

/// Builds a round's report from the store.
pub async fn round_report<S: StateStore>(
    store: &S,
    job: &JobRecord,
    round: u32,
    throttled_waits: u64,
    throttled_ms: u64,
) -> Result<report::RoundReport, CoordinatorError> {
    let all = store.items(job.id, round).await?;
    let is_structure =
        |c: &str| c == site_structure::STRUCTURE_CHUNK || c == site_structure::HUB_CHUNK;
    let structure_lines = all
        .iter()
        .filter(|(c, _)| is_structure(c))
        .map(|(_, i)| report::StructureLine::from_record(i))
        .collect();
    let items: Vec<_> = all.into_iter().filter(|(c, _)| !is_structure(c)).collect();
    let chunks = store.chunks(job.id, round).await?;
    let plan = job
        .plan
        .as_ref()
        .ok_or(CoordinatorError::UnknownJob(job.id))?;
    let mut libraries = Vec::new();
    for (index, lib) in plan.libraries.iter().enumerate() {
        let id = format!("L{index}");
        let mine: Vec<_> = items
            .iter()
            .filter(|(c, _)| *c == id)
            .map(|(_, i)| i)
            .collect();
        let totals = report::totals(mine.iter().copied());
        let done = chunks
            .iter()
            .any(|c| c.chunk.id == id && matches!(c.state, ChunkState::Done { .. }));
        let status = match (done, totals.failed) {
            (false, _) => "Incomplete",
            (true, 0) => "Completed",
            (true, _) => "Completed with failures",
        };
        let source = match &lib.source {
            SourceLibrary::FileShare { path } => path.clone(),
            SourceLibrary::SharePointServer {
                site_url, title, ..
            } => format!("{site_url} ({title})"),
        };
        let destination = format!(
            "{} ({}{})",
            lib.destination.site_url,
            lib.destination.library.as_deref().unwrap_or_default(),
            lib.destination
                .subfolder
                .as_deref()
                .map(|s| format!("/{s}"))
                .unwrap_or_default()
        );
        libraries.push(report::LibrarySummary {
            source,
            destination,
            status: status.to_string(),
            totals,
        });
    }
    Ok(report::RoundReport {
        job: job.id.to_string(),
        job_name: job.spec.name.clone(),
        round,
        totals: report::totals(items.iter().map(|(_, i)| i)),
        libraries,
        throttled_waits,
        throttled_ms,
        structure: structure_lines,
        items: items
            .iter()
            .map(|(_, i)| report::ItemLine::from_record(i))
            .collect(),
    })
}
