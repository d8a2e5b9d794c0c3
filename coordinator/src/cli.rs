//! The `ferry` commands: sign-in, job creation from flags or SPMT bulk files,
//! running with a live progress display, status, reports.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use ferry_connectors::auth::{CredentialCache, DestinationSignIn, Secret, TokenProvider};
use ferry_connectors::graph::{GraphConfig, GraphDestination};
use ferry_connectors::sites::SitesClient;
use ferry_connectors::spserver::SpServerSource;
use ferry_proto::{
    Destination, HubChoice, InvalidNamePolicy, JobId, JobSettings, JobSpec, PlanFile, SiteAction,
    SiteHub, SiteStructure, Source, TaskSpec, SCHEMA_VERSION,
};
use ferry_store::queue::MemoryQueue;
use ferry_store::state::{ChunkState, JobRecord, RedbStore, RoundState, StateStore};
use ferry_worker::{Progress, ProgressSnapshot, Sources, WorkerContext};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{RoundMode, RoundOutcome};

/// Exit codes: 0 everything migrated or skipped by rule; 2 finished with
/// failed items (see FailureSummary); 3 chunks left unfinished (resume);
/// 1 an error stopped the run; 130 interrupted (resume).
pub const EXIT_ITEM_FAILURES: u8 = 2;
pub const EXIT_INCOMPLETE: u8 = 3;
pub const EXIT_INTERRUPTED: u8 = 130;

/// How results are printed.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub json: bool,
}

/// Sign-in to the destination tenant and to SharePoint Server sources.
/// Secrets are best given through the environment variables, not flags
/// (flags show up in the process list).
#[derive(Args, Clone, Debug, Default)]
pub struct SignInArgs {
    /// Directory (tenant) id or domain of the destination tenant.
    #[arg(long, env = "FERRY_TENANT", default_value = "organizations")]
    pub tenant: String,
    /// Application (client) id registered in the destination tenant.
    #[arg(long, env = "FERRY_CLIENT_ID")]
    pub client_id: Option<String>,
    /// Client secret (unattended sign-in).
    #[arg(long, env = "FERRY_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// Private key (PEM) of the app's certificate (unattended sign-in).
    #[arg(long, requires = "certificate")]
    pub certificate_key: Option<PathBuf>,
    /// The app's certificate (PEM).
    #[arg(long, requires = "certificate_key")]
    pub certificate: Option<PathBuf>,
    /// Microsoft 365 user name (with --password).
    #[arg(long, env = "FERRY_USERNAME")]
    pub username: Option<String>,
    /// Microsoft 365 password.
    #[arg(long, env = "FERRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Sign in as a person in a browser (device code).
    #[arg(long)]
    pub device_code: bool,
    /// Identity endpoint.
    #[arg(
        long,
        env = "FERRY_AUTHORITY",
        default_value = "https://login.microsoftonline.com"
    )]
    pub authority: String,
    /// Graph endpoint.
    #[arg(
        long,
        env = "FERRY_GRAPH",
        default_value = "https://graph.microsoft.com/v1.0"
    )]
    pub graph: String,
    /// SharePoint Server user, as someone@example.com.
    #[arg(long, env = "FERRY_SOURCE_USER")]
    pub source_user: Option<String>,
    /// SharePoint Server password (kept, encrypted, for the next run).
    #[arg(long, env = "FERRY_SOURCE_PASSWORD", hide_env_values = true)]
    pub source_password: Option<String>,
}

/// How a run executes.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// In-process workers (each runs one chunk = one library at a time).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Files copied at once within one chunk.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Files up to this many bytes go in one request; larger ones in an upload session.
    #[arg(long, default_value_t = 4 * 1024 * 1024, hide = true)]
    pub small_upload_limit: u64,
    /// Owner (user@contoso.com) of the site collections the job creates;
    /// SharePoint Online requires one when Ferry signs in as an application.
    /// Given to `resume` or `migrate --job`, it replaces the job's.
    #[arg(long)]
    pub site_owner: Option<String>,
    /// Upload-session fragment size in bytes (a multiple of 327,680).
    #[arg(long, default_value_t = 32 * 327_680, hide = true)]
    pub fragment_size: u64,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            workers: 4,
            concurrency: 8,
            small_upload_limit: 4 * 1024 * 1024,
            fragment_size: 32 * 327_680,
            site_owner: None,
        }
    }
}

#[derive(Args, Clone, Debug, Default)]
pub struct MigrateArgs {
    /// Source: a folder (file share) or a SharePoint Server site URL.
    #[arg(long, required_unless_present_any = ["tasks", "job", "plan"])]
    pub from: Option<String>,
    /// Source document library (SharePoint Server); omit to migrate every library of the site and its subsites.
    #[arg(long)]
    pub from_library: Option<String>,
    /// Folder inside the source library.
    #[arg(long)]
    pub from_folder: Option<String>,
    /// Destination SharePoint Online site URL.
    #[arg(long, required_unless_present_any = ["tasks", "job", "plan"])]
    pub to: Option<String>,
    /// Destination document library.
    #[arg(long)]
    pub to_library: Option<String>,
    /// Folder inside the destination library (created when missing).
    #[arg(long)]
    pub to_folder: Option<String>,
    /// SPMT bulk task file (8-column CSV or JSON); repeatable.
    #[arg(long)]
    pub tasks: Vec<PathBuf>,
    /// Run a reviewed plan file written by `ferry plan` (edited or not).
    #[arg(long, conflicts_with_all = ["from", "tasks", "job"])]
    pub plan: Option<PathBuf>,
    /// Switch to modern site structure: every level-one subsite becomes its own site collection.
    #[arg(long)]
    pub modern: bool,
    /// With --modern: register the destination site as a hub and join the promoted sites to it.
    #[arg(long, requires = "modern", conflicts_with = "hub_join")]
    pub hub_register: bool,
    /// With --modern: join the destination and promoted sites to this existing hub (title or URL; `ferry hubs` lists them).
    #[arg(long, requires = "modern")]
    pub hub_join: Option<String>,
    /// Run the next incremental round of this existing job instead of creating one.
    #[arg(long, conflicts_with_all = ["from", "tasks"])]
    pub job: Option<String>,
    /// A name for the job.
    #[arg(long)]
    pub name: Option<String>,
    /// Evaluate everything, copy nothing.
    #[arg(long)]
    pub scan_only: bool,
    /// Copy every file on every run (incremental is on by default and fixed at the first run).
    #[arg(long)]
    pub no_incremental: bool,
    /// Extensions not to migrate, e.g. `tmp,bak`.
    #[arg(long, value_delimiter = ',')]
    pub skip_ext: Vec<String>,
    /// Skip files last modified before this date (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    pub modified_after: Option<String>,
    /// Skip files created before this date (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    pub created_after: Option<String>,
    /// Do not migrate hidden files.
    #[arg(long)]
    pub exclude_hidden: bool,
    /// What to do with names SharePoint Online refuses: replace characters, or skip the item.
    #[arg(long, default_value = "replace", value_parser = ["replace", "skip"])]
    pub invalid_names: String,
    #[command(flatten)]
    pub sign_in: SignInArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

fn parse_date(flag: &str, s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("{flag} {s:?}: give a date as YYYY-MM-DD or an RFC 3339 time"))?;
    Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The job a `migrate` command describes.
pub fn job_spec(args: &MigrateArgs) -> anyhow::Result<JobSpec> {
    let mut tasks = Vec::new();
    for file in &args.tasks {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the task file {}", file.display()))?;
        let parsed = ferry_proto::bulk::parse(&file.display().to_string(), &text)?;
        for w in parsed.warnings {
            eprintln!("warning: {w}");
        }
        tasks.extend(parsed.tasks);
    }
    if let (Some(from), Some(to)) = (&args.from, &args.to) {
        if !is_url(to) {
            bail!("--to {to:?} is not a URL: give the destination SharePoint Online site URL, e.g. https://contoso.sharepoint.com/sites/hr");
        }
        let source = if is_url(from) {
            Source::SharePointServer {
                site_url: from.trim_end_matches('/').to_string(),
                library: args.from_library.clone(),
                subfolder: args.from_folder.clone(),
            }
        } else {
            if args.from_library.is_some() {
                bail!("--from-library applies to SharePoint Server sources; {from:?} is a folder");
            }
            Source::FileShare { path: from.clone() }
        };
        if matches!(source, Source::FileShare { .. }) && args.to_library.is_none() {
            bail!("--to-library is required for a file-share source (e.g. --to-library Documents)");
        }
        tasks.push(TaskSpec {
            source,
            destination: Destination {
                site_url: to.trim_end_matches('/').to_string(),
                library: args.to_library.clone(),
                subfolder: args.to_folder.clone(),
            },
            structure: if args.modern {
                SiteStructure::SwitchToModern {
                    hub: match (&args.hub_join, args.hub_register) {
                        (Some(hub), _) => HubChoice::JoinExisting { hub: hub.clone() },
                        (None, true) => HubChoice::RegisterDestination,
                        (None, false) => HubChoice::None,
                    },
                }
            } else {
                SiteStructure::KeepClassic
            },
            subsite_destinations: Default::default(),
        });
    }
    if tasks.is_empty() {
        bail!("nothing to migrate: give --from and --to, or --tasks FILE");
    }
    let settings = JobSettings {
        incremental: !args.no_incremental,
        scan_only: args.scan_only,
        skip_extensions: args.skip_ext.clone(),
        modified_after: args
            .modified_after
            .as_deref()
            .map(|s| parse_date("--modified-after", s))
            .transpose()?,
        created_after: args
            .created_after
            .as_deref()
            .map(|s| parse_date("--created-after", s))
            .transpose()?,
        include_hidden: !args.exclude_hidden,
        site_owner: args.run.site_owner.clone(),
        invalid_names: if args.invalid_names == "skip" {
            InvalidNamePolicy::Skip
        } else {
            InvalidNamePolicy::default()
        },
    };
    let name = args.name.clone().unwrap_or_else(|| match &tasks[0].source {
        Source::FileShare { path } => format!("{path} → {}", tasks[0].destination.site_url),
        Source::SharePointServer { site_url, .. } => {
            format!("{site_url} → {}", tasks[0].destination.site_url)
        }
    });
    Ok(JobSpec {
        schema_version: SCHEMA_VERSION,
        name,
        tasks,
        settings,
    })
}

/// Signs in to the destination tenant.
pub fn destination(
    state: &Path,
    s: &SignInArgs,
    run: &RunArgs,
) -> anyhow::Result<Arc<GraphDestination>> {
    let sign_in = destination_sign_in(s)?;
    let cache = CredentialCache::open(state)?;
    let scope = graph_scope(&s.graph);
    let tokens = TokenProvider::new(&s.authority, &scope, sign_in, Some(cache))?
        .on_device_code(|p| eprintln!("{}", p.message));
    let dest = GraphDestination::new(
        GraphConfig {
            graph_base: s.graph.trim_end_matches('/').to_string(),
            small_upload_limit: run.small_upload_limit,
            fragment_size: run.fragment_size,
            ..GraphConfig::default()
        },
        Arc::new(tokens),
    )?;
    Ok(Arc::new(dest))
}

/// The destination sign-in the flags describe.
fn destination_sign_in(s: &SignInArgs) -> anyhow::Result<DestinationSignIn> {
    let client_id = s.client_id.clone().ok_or_else(|| {
        anyhow!("no destination sign-in: give --client-id (FERRY_CLIENT_ID) of an app registered in the tenant, with --client-secret, --certificate-key/--certificate, --username/--password or --device-code")
    })?;
    let tenant = s.tenant.clone();
    let sign_in = if let Some(secret) = &s.client_secret {
        DestinationSignIn::ClientSecret {
            tenant,
            client_id,
            secret: Secret::new(secret.clone()),
        }
    } else if let (Some(key), Some(cert)) = (&s.certificate_key, &s.certificate) {
        DestinationSignIn::Certificate {
            tenant,
            client_id,
            key_pem: key.clone(),
            cert_pem: cert.clone(),
        }
    } else if let Some(user) = &s.username {
        let password = s
            .password
            .clone()
            .ok_or_else(|| anyhow!("--username needs --password (or FERRY_PASSWORD)"))?;
        DestinationSignIn::Password {
            tenant,
            client_id,
            username: user.clone(),
            password: Secret::new(password),
        }
    } else {
        DestinationSignIn::DeviceCode { tenant, client_id }
    };
    Ok(sign_in)
}

/// `https://graph.microsoft.com/.default` for Graph; the same shape for any host.
fn graph_scope(graph: &str) -> String {
    let origin = graph
        .split_once("://")
        .map(|(scheme, rest)| format!("{scheme}://{}", rest.split('/').next().unwrap_or_default()))
        .unwrap_or_else(|| graph.to_string());
    format!("{origin}/.default")
}

/// Signs in to every SharePoint Server site the job reads from. A password
/// given once is kept in the encrypted cache, so the next run does not ask.
pub async fn sources(state: &Path, spec: &JobSpec, s: &SignInArgs) -> anyhow::Result<Sources> {
    let sources = Sources::default();
    let mut sites: Vec<&str> = spec
        .tasks
        .iter()
        .filter_map(|t| match &t.source {
            Source::SharePointServer { site_url, .. } => Some(site_url.as_str()),
            Source::FileShare { .. } => None,
        })
        .collect();
    sites.sort();
    sites.dedup();
    if sites.is_empty() {
        return Ok(sources);
    }
    let cache = CredentialCache::open(state)?;
    for site in sites {
        let user = s.source_user.clone().ok_or_else(|| {
            anyhow!("{site} is a SharePoint Server source: give --source-user someone@example.com (and --source-password the first time)")
        })?;
        let target = CredentialCache::sp_server_target(site, &user);
        let (password, given) = match &s.source_password {
            Some(p) => (Secret::new(p.clone()), true),
            None => (
                cache.get(&target)?.ok_or_else(|| {
                    anyhow!("no saved password for {user} at {site}: give --source-password (or FERRY_SOURCE_PASSWORD) once")
                })?,
                false,
            ),
        };
        // A quick first sign-in, so a wrong URL or a dead server is reported
        // in seconds; the connection kept for the run retries patiently.
        let quick = ferry_connectors::HttpConfig {
            max_attempts: 2,
            ..Default::default()
        };
        SpServerSource::connect(site, &user, password.expose(), quick)
            .await
            .with_context(|| format!("cannot sign in to {site}"))?;
        let source = SpServerSource::connect(site, &user, password.expose(), Default::default())
            .await
            .with_context(|| format!("cannot sign in to {site}"))?;
        if given {
            cache.put(&target, &password)?;
        }
        sources.insert(site, Arc::new(source)).await;
    }
    Ok(sources)
}

/// A SharePoint Online REST client for the plan's site structure (`None`
/// when the plan creates no sites and joins no hubs).
pub fn sites_client(
    state: &Path,
    s: &SignInArgs,
    plan: &ferry_proto::Plan,
) -> anyhow::Result<Option<Arc<SitesClient>>> {
    let Some(first) = plan.sites.first() else {
        return Ok(None);
    };
    Ok(Some(sharepoint_client(state, s, &first.destination)?))
}

/// A SharePoint Online REST client signed in for the tenant of `site_url`.
pub fn sharepoint_client(
    state: &Path,
    s: &SignInArgs,
    site_url: &str,
) -> anyhow::Result<Arc<SitesClient>> {
    let sign_in = destination_sign_in(s)?;
    let cache = CredentialCache::open(state)?;
    let scope = ferry_connectors::sites::sharepoint_scope(site_url);
    let tokens = TokenProvider::new(&s.authority, &scope, sign_in, Some(cache))?
        .on_device_code(|p| eprintln!("{}", p.message));
    Ok(Arc::new(SitesClient::new(
        Arc::new(tokens),
        Default::default(),
    )?))
}

#[derive(Args, Clone, Debug)]
pub struct PlanArgs {
    #[command(flatten)]
    pub task: MigrateArgs,
    /// Where to write the plan.
    #[arg(long, default_value = "ferry-plan.json")]
    pub out: PathBuf,
    /// Skip counting files and bytes at the source.
    #[arg(long)]
    pub no_scan: bool,
}

/// `ferry plan`: resolve the tasks into sites and libraries, count what is
/// at the source, and write a plan a person reviews and edits (destination
/// URLs of every site) before `ferry migrate --plan` runs it.
pub async fn plan(state: &Path, args: PlanArgs, out: Output) -> anyhow::Result<u8> {
    let spec = job_spec(&args.task)?;
    let srcs = sources(state, &spec, &args.task.sign_in).await?;
    let mut plan = crate::plan(JobId::new(), &spec, &srcs).await?;
    if let Err(problems) = ferry_proto::structure::validate(&plan) {
        for p in problems {
            eprintln!("warning: {p}: edit it in the plan before running it");
        }
    }
    if !args.no_scan {
        crate::count(&mut plan, &srcs).await?;
    }
    let file = PlanFile {
        schema_version: SCHEMA_VERSION,
        spec,
        plan,
    };
    let text = serde_json::to_string_pretty(&file)?;
    std::fs::write(&args.out, format!("{text}\n"))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    if out.json {
        println!("{text}");
    } else {
        print_plan(&file.plan);
        println!(
            "\nWrote {}. Edit the \"destination\" of any site there, then run:\n  ferry migrate --plan {}",
            args.out.display(),
            args.out.display()
        );
    }
    Ok(0)
}

fn print_plan(plan: &ferry_proto::Plan) {
    if !plan.sites.is_empty() {
        println!("Sites:");
        for (i, s) in plan.sites.iter().enumerate() {
            let action = match &s.action {
                SiteAction::Existing => "existing site".to_string(),
                SiteAction::SiteCollection { .. } => "new site collection".to_string(),
                SiteAction::Subsite { parent, .. } => format!("new subsite of [{parent}]"),
            };
            let hub = match &s.hub {
                SiteHub::None => String::new(),
                SiteHub::Register => ", registered as a hub".to_string(),
                SiteHub::Join { hub } => format!(", joins hub {hub}"),
            };
            println!("  [{i}] {} -> {} ({action}{hub})", s.source, s.destination);
        }
    }
    println!("Libraries:");
    for (i, l) in plan.libraries.iter().enumerate() {
        let from = match &l.source {
            ferry_proto::SourceLibrary::FileShare { path } => path.clone(),
            ferry_proto::SourceLibrary::SharePointServer {
                site_url, title, ..
            } => {
                format!("{site_url} ({title})")
            }
        };
        let counts = match (l.items, l.bytes) {
            (Some(n), Some(b)) => format!("  {n} files, {}", human_bytes(b)),
            _ => String::new(),
        };
        let site = l.site.map(|s| format!("[{s}] ")).unwrap_or_default();
        println!(
            "  [{i}] {from} -> {site}{} ({}{}){counts}",
            l.destination.site_url,
            l.destination.library.as_deref().unwrap_or("?"),
            l.destination
                .subfolder
                .as_deref()
                .map(|f| format!("/{f}"))
                .unwrap_or_default()
        );
    }
}

#[derive(Args, Clone, Debug)]
pub struct HubsArgs {
    /// Any site URL of the destination tenant.
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub sign_in: SignInArgs,
}

/// `ferry hubs`: the tenant's hub sites, by name.
pub async fn hubs(state: &Path, args: HubsArgs, out: Output) -> anyhow::Result<u8> {
    let client = sharepoint_client(state, &args.sign_in, &args.to)?;
    let hubs = client.hub_sites(&crate::tenant_root(&args.to)).await?;
    if out.json {
        let rows: Vec<_> = hubs
            .iter()
            .map(|h| serde_json::json!({"id": h.id, "title": h.title, "site_url": h.site_url}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if hubs.is_empty() {
        println!("The tenant has no hub sites.");
    } else {
        for h in hubs {
            println!("{}  {}", h.title, h.site_url);
        }
    }
    Ok(0)
}

/// `ferry migrate`.
pub async fn migrate(state: &Path, args: MigrateArgs, out: Output) -> anyhow::Result<u8> {
    let store = RedbStore::open(state)?;
    let job = match (&args.job, &args.plan) {
        (Some(id), _) => find_job(&store, Some(id)).await?,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the plan {}", file.display()))?;
            let plan_file: PlanFile = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a Ferry plan file (see the line and column); `ferry plan` writes one", file.display())
            })?;
            ferry_proto::check_schema(plan_file.schema_version, "the plan file")?;
            let dest = destination(state, &args.sign_in, &args.run)?;
            let sites = sites_client(state, &args.sign_in, &plan_file.plan)?;
            let job = crate::create_job_with_plan(
                &store,
                plan_file.spec,
                plan_file.plan,
                Some(&dest),
                sites.as_deref(),
            )
            .await?;
            eprintln!("Created job {} from the plan {}.", job.id, file.display());
            job
        }
        (None, None) => {
            let spec = job_spec(&args)?;
            let srcs = sources(state, &spec, &args.sign_in).await?;
            let dest = destination(state, &args.sign_in, &args.run)?;
            let plan = crate::plan(JobId::new(), &spec, &srcs).await?;
            let sites = sites_client(state, &args.sign_in, &plan)?;
            let job =
                crate::create_job_with_plan(&store, spec, plan, Some(&dest), sites.as_deref())
                    .await?;
            eprintln!(
                "Created job {} ({} libraries).",
                job.id,
                job.plan.as_ref().map_or(0, |p| p.libraries.len())
            );
            job
        }
    };
    run_job(
        state,
        store,
        job,
        RoundMode::ResumeOrNext,
        &args.sign_in,
        &args.run,
        out,
    )
    .await
}

/// `ferry resume`.
pub async fn resume(
    state: &Path,
    job: Option<&str>,
    sign_in: SignInArgs,
    run_args: RunArgs,
    out: Output,
) -> anyhow::Result<u8> {
    let store = RedbStore::open(state)?;
    let job = match job {
        Some(id) => find_job(&store, Some(id)).await?,
        None => {
            let paused: Vec<_> = store.jobs().await?.into_iter().filter(is_paused).collect();
            match paused.as_slice() {
                [one] => one.clone(),
                [] => bail!(
                    "no paused job in {}: `ferry status` lists the jobs",
                    state.display()
                ),
                many => bail!(
                    "{} paused jobs: name one ({})",
                    many.len(),
                    many.iter()
                        .map(|j| j.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    run_job(
        state,
        store,
        job,
        RoundMode::ResumeOnly,
        &sign_in,
        &run_args,
        out,
    )
    .await
}

fn is_paused(job: &JobRecord) -> bool {
    job.current_round()
        .is_some_and(|r| r.state == RoundState::Running)
}

async fn find_job(store: &RedbStore, id: Option<&str>) -> anyhow::Result<JobRecord> {
    let jobs = store.jobs().await?;
    let id = id.unwrap_or_default();
    let matches: Vec<_> = jobs
        .into_iter()
        .filter(|j| j.id.to_string().starts_with(id))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no job {id:?} here: `ferry status` lists the jobs"),
        _ => bail!("{id:?} matches several jobs: give more of the id"),
    }
}

#[derive(Serialize)]
struct RunResult<'a> {
    job: String,
    round: u32,
    resumed: bool,
    state: &'a str,
    copied: u64,
    skipped: u64,
    failed: u64,
    bytes_sent: u64,
    throttled_waits: u64,
    seconds: f64,
    reports: Vec<String>,
    unfinished_chunks: Vec<(String, String)>,
}

pub async fn run_job(
    state: &Path,
    store: RedbStore,
    job: JobRecord,
    mode: RoundMode,
    sign_in: &SignInArgs,
    run_args: &RunArgs,
    out: Output,
) -> anyhow::Result<u8> {
    let mut job = job;
    if run_args.site_owner.is_some() && run_args.site_owner != job.spec.settings.site_owner {
        job.spec.settings.site_owner = run_args.site_owner.clone();
        store.put_job(&job).await?;
    }
    let srcs = sources(state, &job.spec, sign_in).await?;
    let dest = destination(state, sign_in, run_args)?;
    let progress = Arc::new(Progress::default());
    let ctx = Arc::new(WorkerContext {
        store: store.clone(),
        sources: srcs,
        destination: dest.clone(),
        progress: progress.clone(),
        concurrency: run_args.concurrency,
        name: format!("{}-{}", hostname(), std::process::id()),
        max_chunk_attempts: 5,
    });
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nStopping: finished items are kept; `ferry resume` continues.");
                cancel.cancel();
            }
        });
    }
    let started = Instant::now();
    let mut display = ProgressDisplay::new();
    let sites = match &job.plan {
        Some(plan) => sites_client(state, sign_in, plan)?,
        None => None,
    };
    let result = crate::run_round(
        ctx,
        Arc::new(MemoryQueue::new()),
        job.id,
        crate::RoundOptions {
            mode,
            workers: run_args.workers,
            sites,
        },
        cancel.clone(),
        |snap| display.show(&snap, started.elapsed()),
    )
    .await;
    display.finish();
    let outcome: RoundOutcome = match result {
        Ok(o) => o,
        Err(crate::CoordinatorError::Incomplete(_)) if cancel.is_cancelled() => {
            eprintln!(
                "Paused job {}. Resume with: ferry resume {}",
                job.id, job.id
            );
            return Ok(EXIT_INTERRUPTED);
        }
        Err(e) => return Err(e.into()),
    };
    let stats = dest.stats().snapshot();
    let job = store
        .job(job.id)
        .await?
        .ok_or_else(|| anyhow!("job vanished from the state store"))?;
    let report = crate::round_report(
        &store,
        &job,
        outcome.round,
        stats.throttled_waits,
        stats.throttled_ms,
    )
    .await?;
    let dir = report_dir(state, job.id);
    let paths = report
        .write(&dir)
        .with_context(|| format!("cannot write reports to {}", dir.display()))?;
    let snap = progress.snapshot();
    let state_word = if !outcome.dead.is_empty() {
        "incomplete"
    } else if report.totals.failed > 0 {
        "completed with failures"
    } else {
        "completed"
    };
    let result = RunResult {
        job: job.id.to_string(),
        round: outcome.round,
        resumed: outcome.resumed,
        state: state_word,
        copied: report.totals.copied,
        skipped: report.totals.skipped,
        failed: report.totals.failed,
        bytes_sent: snap.sent_bytes,
        throttled_waits: stats.throttled_waits,
        seconds: started.elapsed().as_secs_f64(),
        reports: paths.iter().map(|p| p.display().to_string()).collect(),
        unfinished_chunks: outcome.dead.clone(),
    };
    if out.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        eprintln!(
            "Job {} round {} {}: {} copied, {} skipped, {} failed ({} sent in {:.1}s, {} throttled waits).",
            result.job,
            result.round,
            result.state,
            result.copied,
            result.skipped,
            result.failed,
            human_bytes(result.bytes_sent),
            result.seconds,
            result.throttled_waits
        );
        for (chunk, reason) in &outcome.dead {
            eprintln!("  unfinished {chunk}: {reason}");
        }
        eprintln!("Reports: {}", dir.display());
    }
    Ok(if !outcome.dead.is_empty() {
        EXIT_INCOMPLETE
    } else if report.totals.failed > 0 {
        EXIT_ITEM_FAILURES
    } else {
        0
    })
}

fn report_dir(state: &Path, job: JobId) -> PathBuf {
    state.join("reports").join(job.to_string())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "local".into())
}

#[derive(Serialize)]
struct JobStatus {
    job: String,
    name: String,
    created: DateTime<Utc>,
    round: Option<u32>,
    state: &'static str,
    libraries: usize,
    chunks_done: usize,
    chunks_unfinished: usize,
    items_done: usize,
    incremental: bool,
}

/// `ferry status`.
pub async fn status(state: &Path, job: Option<&str>, out: Output) -> anyhow::Result<u8> {
    if !state.join("state.redb").exists() {
        bail!(
            "no Ferry state in {} (run `ferry migrate`, or point --state at the right directory)",
            state.display()
        );
    }
    // A migration holds the state open for writing while it runs: if it
    // does, unfinished rounds are running, not paused.
    let (store, running) = match RedbStore::open(state) {
        Ok(store) => (store, false),
        Err(ferry_store::StoreError::Busy { .. }) => (RedbStore::open_read_only(state)?, true),
        Err(e) => return Err(e.into()),
    };
    let jobs = match job {
        Some(id) => vec![find_job(&store, Some(id)).await?],
        None => store.jobs().await?,
    };
    let mut rows = Vec::new();
    for j in &jobs {
        let round = j.current_round();
        let (done, unfinished, items) = match round {
            Some(r) => {
                let chunks = store.chunks(j.id, r.round).await?;
                let done = chunks
                    .iter()
                    .filter(|c| matches!(c.state, ChunkState::Done { .. }))
                    .count();
                let libs = j.plan.as_ref().map_or(0, |p| p.libraries.len());
                (
                    done,
                    libs.saturating_sub(done),
                    store.items(j.id, r.round).await?.len(),
                )
            }
            None => (0, j.plan.as_ref().map_or(0, |p| p.libraries.len()), 0),
        };
        rows.push(JobStatus {
            job: j.id.to_string(),
            name: j.spec.name.clone(),
            created: j.created,
            round: round.map(|r| r.round),
            state: match round.map(|r| r.state) {
                None => "planned",
                Some(RoundState::Running) if running => "running",
                Some(RoundState::Running) => "paused",
                Some(RoundState::Completed) => "completed",
            },
            libraries: j.plan.as_ref().map_or(0, |p| p.libraries.len()),
            chunks_done: done,
            chunks_unfinished: unfinished,
            items_done: items,
            incremental: j.spec.settings.incremental,
        });
    }
    if out.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("No jobs in {}.", state.display());
    } else {
        for r in &rows {
            println!(
                "{}  {:<9} round {}  libraries {}/{} done, {} items recorded  {}",
                r.job,
                r.state,
                r.round.map_or("-".into(), |n| n.to_string()),
                r.chunks_done,
                r.libraries,
                r.items_done,
                r.name
            );
            if r.state == "paused" {
                println!(
                    "    {} libraries remain: `ferry resume {}` continues from the checkpoint",
                    r.chunks_unfinished, r.job
                );
            }
        }
    }
    Ok(0)
}

/// `ferry report`.
pub async fn report(
    state: &Path,
    job: &str,
    round: Option<u32>,
    dir: Option<PathBuf>,
    out: Output,
) -> anyhow::Result<u8> {
    let store = RedbStore::open_read_only(state)?;
    let job = find_job(&store, Some(job)).await?;
    let round = match round.or(job.current_round().map(|r| r.round)) {
        Some(r) => r,
        None => bail!("job {} has not run yet: nothing to report", job.id),
    };
    let report = crate::round_report(&store, &job, round, 0, 0).await?;
    let dir = dir.unwrap_or_else(|| report_dir(state, job.id));
    let paths = report.write(&dir)?;
    if out.json {
        println!("{}", serde_json::to_string_pretty(&paths)?);
    } else {
        for p in paths {
            println!("{}", p.display());
        }
    }
    Ok(0)
}

/// Live progress on a terminal (one redrawn line), plain lines every few
/// seconds otherwise.
struct ProgressDisplay {
    tty: bool,
    last_line: Option<Instant>,
    last_sample: Option<(Instant, u64)>,
    rate: f64,
}

impl ProgressDisplay {
    fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        ProgressDisplay {
            tty,
            // Plain output starts after the first interval: a short run prints
            // only its result.
            last_line: (!tty).then(Instant::now),
            last_sample: None,
            rate: 0.0,
        }
    }

    fn show(&mut self, s: &ProgressSnapshot, elapsed: Duration) {
        let now = Instant::now();
        if let Some((t, b)) = self.last_sample {
            let dt = now.duration_since(t).as_secs_f64();
            if dt >= 0.5 {
                let inst = (s.done_bytes.saturating_sub(b)) as f64 / dt;
                self.rate = if self.rate == 0.0 {
                    inst
                } else {
                    0.7 * self.rate + 0.3 * inst
                };
                self.last_sample = Some((now, s.done_bytes));
            }
        } else {
            self.last_sample = Some((now, s.done_bytes));
        }
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self
            .last_line
            .is_some_and(|t| now.duration_since(t) < every)
        {
            return;
        }
        self.last_line = Some(now);
        let scanning = s.walks_running > 0;
        let eta = if !scanning && self.rate > 0.0 {
            let left = s.discovered_bytes.saturating_sub(s.done_bytes) as f64 / self.rate;
            format!("ETA {}", clock(Duration::from_secs_f64(left)))
        } else if scanning {
            "scanning".to_string()
        } else {
            String::new()
        };
        let pct = (100 * s.done_items)
            .checked_div(s.discovered_items)
            .unwrap_or(0);
        let bar_len = 20;
        let filled = (pct as usize * bar_len / 100).min(bar_len);
        let line = format!(
            "[{}{}] {}/{} items  {}/{}  {}/s  {} copied {} skipped {} failed  {}  {}",
            "#".repeat(filled),
            "-".repeat(bar_len - filled),
            s.done_items,
            s.discovered_items,
            human_bytes(s.done_bytes),
            human_bytes(s.discovered_bytes),
            human_bytes(self.rate as u64),
            s.copied,
            s.skipped,
            s.failed,
            clock(elapsed),
            eta
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.tty && self.last_line.is_some() {
            eprintln!();
        }
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Where the sample content and the emulated tenant's data go.
    #[arg(long, default_value = ".ferry-demo")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `ferry demo`: see [`crate::demo`].
pub async fn demo(state: &Path, args: DemoArgs, out: Output) -> anyhow::Result<u8> {
    crate::demo::run(state, args, out).await
}
