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

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ferry_connectors::ConnectorError;
use ferry_proto::{
    Chunk, Destination, JobId, JobSpec, LibraryPlan, Plan, Source, SourceLibrary, SCHEMA_VERSION,
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
    #[error("{0} chunk(s) could not be finished (see `ferry status`); fix the cause shown and run `ferry resume`")]
    Incomplete(usize),
}

/// Resolves a job's tasks into libraries. SharePoint Server sources must be
/// signed in (`sources`); file-share paths must exist.
pub async fn plan(job: JobId, spec: &JobSpec, sources: &Sources) -> Result<Plan, CoordinatorError> {
    let mut libraries = Vec::new();
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
                        });
                    }
                    None => {
                        // The whole site and its subsites, classic structure:
                        // each subsite maps to the same relative path under the
                        // destination site (or the user's reviewed URL).
                        let mut webs = vec![(
                            site_url.trim_end_matches('/').to_string(),
                            t.destination.site_url.trim_end_matches('/').to_string(),
                        )];
                        while let Some((web, dest)) = webs.pop() {
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
                                        site_url: dest.clone(),
                                        library: Some(lib.title.clone()),
                                        subfolder: None,
                                    },
                                });
                            }
                            for sub in source.subsites(&web).await? {
                                let sub_url = sub.url.trim_end_matches('/').to_string();
                                let mapped = t
                                    .subsite_destinations
                                    .get(&sub_url)
                                    .cloned()
                                    .unwrap_or_else(|| {
                                        let leaf = sub_url.rsplit('/').next().unwrap_or_default();
                                        format!("{dest}/{leaf}")
                                    });
                                webs.push((sub_url, mapped));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Plan {
        schema_version: SCHEMA_VERSION,
        job,
        libraries,
    })
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

/// Starts or resumes a round of `job` with `workers` in-process workers and
/// waits for it, calling `on_progress` about four times a second.
///
/// Safe to interrupt anywhere (cancel `cancel`, or kill the process): chunk
/// states and item checkpoints are in the store, and the next call resumes.
pub async fn run_round<S, Q>(
    ctx: Arc<WorkerContext<S>>,
    queue: Arc<Q>,
    job_id: JobId,
    mode: RoundMode,
    workers: usize,
    cancel: CancellationToken,
    mut on_progress: impl FnMut(ProgressSnapshot),
) -> Result<RoundOutcome, CoordinatorError>
where
    S: StateStore + Clone,
    Q: ChunkQueue,
{
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

/// Creates a job record (planned) in the store. With `destination`, every
/// destination library is resolved first, so a wrong site, library or
/// sign-in fails now with a clear message instead of mid-run.
pub async fn create_job<S: StateStore>(
    store: &S,
    spec: JobSpec,
    sources: &Sources,
    destination: Option<&ferry_connectors::graph::GraphDestination>,
) -> Result<JobRecord, CoordinatorError> {
    let id = JobId::new();
    let plan = plan(id, &spec, sources).await?;
    if let Some(dest) = destination {
        let mut checked = std::collections::HashSet::new();
        for lib in &plan.libraries {
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

/// Builds a round's report from the store.
pub async fn round_report<S: StateStore>(
    store: &S,
    job: &JobRecord,
    round: u32,
    throttled_waits: u64,
    throttled_ms: u64,
) -> Result<report::RoundReport, CoordinatorError> {
    let items = store.items(job.id, round).await?;
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
        items: items
            .iter()
            .map(|(_, i)| report::ItemLine::from_record(i))
            .collect(),
    })
}
