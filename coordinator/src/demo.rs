//! `ferry demo`: the whole product on one machine with nothing to set up.
//!
//! Starts two emulator instances in-process — a SharePoint Server farm (the
//! source) and a SharePoint Online tenant (the destination) — writes a sample
//! file share, and migrates both into the tenant with the same code path as
//! `ferry migrate` (sign-in, planning, in-process workers, reports). Running
//! it again runs the next incremental round of the same job.
//!
//! The emulators keep their data under `--dir`, and their ports are chosen
//! once and remembered there, so the job's URLs stay valid across runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use ferry_proto::{Destination, JobSettings, JobSpec, Source, TaskSpec, SCHEMA_VERSION};
use ferry_sim::{Config, Farm, ItemSpec, LibSpec, SiteSpec, WebSpec};
use ferry_store::state::{RedbStore, StateStore};
use serde::{Deserialize, Serialize};

use crate::cli::{DemoArgs, Output, SignInArgs};
use crate::RoundMode;

const DEMO_JOB_NAME: &str = "Ferry demo";

#[derive(Serialize, Deserialize)]
struct Ports {
    farm: u16,
    tenant: u16,
}

fn t(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn file(path: &str, size: u64, modified: &str) -> ItemSpec {
    ItemSpec {
        path: path.into(),
        size: Some(size),
        created: t(modified),
        modified: t(modified),
        ..Default::default()
    }
}

/// The sample SharePoint Server farm: a site with two libraries and a subsite.
fn farm() -> Farm {
    Farm {
        sites: vec![SiteSpec {
            url: "/sites/intranet".into(),
            title: Some("Intranet".into()),
            libraries: vec![
                LibSpec {
                    title: "Documents".into(),
                    items: vec![
                        file("Welcome.docx", 24_000, "2023-01-10T09:00:00Z"),
                        file("Projects/Apollo/Plan.xlsx", 48_000, "2023-03-01T10:30:00Z"),
                        file(
                            "Projects/Apollo/Budget Q1.xlsx",
                            31_000,
                            "2023-03-02T11:00:00Z",
                        ),
                        file("Projects/Zeus/Notes.txt", 1_200, "2023-04-05T08:15:00Z"),
                        file(
                            "Large/Training video.mp4",
                            9 * 1024 * 1024,
                            "2022-12-24T18:00:00Z",
                        ),
                    ],
                    ..Default::default()
                },
                LibSpec {
                    title: "Policies".into(),
                    items: vec![
                        file("Travel policy.pdf", 120_000, "2021-06-01T12:00:00Z"),
                        file("Security/Passwords.pdf", 80_000, "2022-02-01T12:00:00Z"),
                    ],
                    ..Default::default()
                },
            ],
            webs: vec![WebSpec {
                url: "hr".into(),
                title: Some("Human Resources".into()),
                libraries: vec![LibSpec {
                    title: "Documents".into(),
                    items: vec![
                        file("Benefits/Overview.pdf", 64_000, "2023-05-05T09:00:00Z"),
                        file("Onboarding checklist.docx", 22_000, "2023-05-06T09:00:00Z"),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The destination tenant: just the target site. The `Policies` library and
/// the `hr` subsite are created by the migration (classic structure).
fn tenant() -> Farm {
    Farm {
        sites: vec![SiteSpec {
            url: "/sites/migrated".into(),
            title: Some("Migrated".into()),
            ..Default::default()
        }],
    }
}

/// Writes the sample file share (only once: later runs keep any edits the
/// user made, which the incremental round then picks up).
fn write_share(root: &Path) -> anyhow::Result<()> {
    if root.exists() {
        return Ok(());
    }
    let files: &[(&str, usize)] = &[
        ("Reports/2023/Annual report.pdf", 180_000),
        ("Reports/2023/Q4 summary.docx", 40_000),
        ("Reports/2024/Draft.docx", 35_000),
        ("Design/Logo final.png", 90_000),
        ("Design/Résumé – Zoë.pdf", 12_000),
        ("Design/日本語のファイル.txt", 2_000),
        ("Archive/Empty file.txt", 0),
        ("Archive/What? A file: with bad name.txt", 1_000),
        ("Archive/Big dataset.csv", 6 * 1024 * 1024),
        (".hidden-settings.ini", 100),
    ];
    for (rel, size) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let content: Vec<u8> = (0..*size).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, content)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn sim_config(data_dir: PathBuf, farm: Farm) -> Config {
    Config {
        data_dir,
        farm: Some(farm),
        ..Config::default()
    }
}

async fn start(port: u16, config: Config) -> anyhow::Result<ferry_sim::SimHandle> {
    let addr = format!("127.0.0.1:{port}").parse()?;
    ferry_sim::start_on(addr, config)
        .await
        .with_context(|| format!("cannot start the emulator on port {port} (in use? delete the demo directory to pick new ports)"))
}

/// Runs the demo.
pub async fn run(state: &Path, args: DemoArgs, out: Output) -> anyhow::Result<u8> {
    let dir = args.dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let share = dir.join("file-share");
    write_share(&share)?;

    // Ports: chosen once, then reused so the job's URLs stay valid.
    let ports_file = dir.join("ports.json");
    let (farm_sim, tenant_sim) = match std::fs::read(&ports_file) {
        Ok(bytes) => {
            let p: Ports = serde_json::from_slice(&bytes)
                .context("ports.json is damaged: delete the demo directory")?;
            (
                start(p.farm, sim_config(dir.join("farm"), farm())).await?,
                start(p.tenant, sim_config(dir.join("tenant"), tenant())).await?,
            )
        }
        Err(_) => {
            let f = start(0, sim_config(dir.join("farm"), farm())).await?;
            let t = start(0, sim_config(dir.join("tenant"), tenant())).await?;
            std::fs::write(
                &ports_file,
                serde_json::to_vec(&Ports {
                    farm: f.addr.port(),
                    tenant: t.addr.port(),
                })?,
            )?;
            (f, t)
        }
    };
    eprintln!(
        "SharePoint Server farm (emulated): {}/sites/intranet",
        farm_sim.base_url
    );
    eprintln!(
        "SharePoint Online tenant (emulated): {}/sites/migrated",
        tenant_sim.base_url
    );

    let sign_in = SignInArgs {
        tenant: Config::default().tenant_id,
        client_id: Some("ferry".into()),
        client_secret: Some("ferry-secret".into()),
        authority: tenant_sim.base_url.clone(),
        graph: format!("{}/v1.0", tenant_sim.base_url),
        source_user: Some("someone@example.com".into()),
        source_password: Some("password".into()),
        ..SignInArgs::default()
    };
    let store = RedbStore::open(state)?;
    let existing = store
        .jobs()
        .await?
        .into_iter()
        .find(|j| j.spec.name == DEMO_JOB_NAME);
    let job = match existing {
        Some(job) => {
            eprintln!(
                "Running the next incremental round of the demo job {}.",
                job.id
            );
            job
        }
        None => {
            let share_path = share.canonicalize()?.display().to_string();
            let spec = JobSpec {
                schema_version: SCHEMA_VERSION,
                name: DEMO_JOB_NAME.into(),
                tasks: vec![
                    TaskSpec {
                        source: Source::FileShare { path: share_path },
                        destination: Destination {
                            site_url: format!("{}/sites/migrated", tenant_sim.base_url),
                            library: Some("Documents".into()),
                            subfolder: Some("From file share".into()),
                        },
                        structure: Default::default(),
                        subsite_destinations: Default::default(),
                    },
                    TaskSpec {
                        source: Source::SharePointServer {
                            site_url: format!("{}/sites/intranet", farm_sim.base_url),
                            library: None,
                            subfolder: None,
                        },
                        destination: Destination {
                            site_url: format!("{}/sites/migrated", tenant_sim.base_url),
                            library: None,
                            subfolder: None,
                        },
                        structure: Default::default(),
                        subsite_destinations: Default::default(),
                    },
                ],
                settings: JobSettings::default(),
            };
            let sources = crate::cli::sources(state, &spec, &sign_in).await?;
            let dest = crate::cli::destination(state, &sign_in, &args.run)?;
            let plan = crate::plan(ferry_proto::JobId::new(), &spec, &sources).await?;
            let sites = crate::cli::sites_client(state, &sign_in, &plan)?;
            let job =
                crate::create_job_with_plan(&store, spec, plan, Some(&dest), sites.as_deref())
                    .await?;
            eprintln!(
                "Created the demo job {} ({} libraries).",
                job.id,
                job.plan.as_ref().map_or(0, |p| p.libraries.len())
            );
            job
        }
    };
    let result = crate::cli::run_job(
        state,
        store,
        job,
        RoundMode::ResumeOrNext,
        &sign_in,
        &args.run,
        out,
    )
    .await;
    farm_sim.shutdown().await?;
    tenant_sim.shutdown().await?;
    let code = result?;
    if code == crate::cli::EXIT_INCOMPLETE {
        bail!("the demo did not finish: see the unfinished chunks above");
    }
    eprintln!(
        "Edit files under {} and run `ferry demo` again for an incremental round.",
        share.display()
    );
    Ok(code)
}
