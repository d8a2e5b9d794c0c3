//! Shared helpers for the end-to-end tests: start emulators in-process, run
//! the real `ferry` binary against them, look at what arrived.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use ferry_connectors::auth::{DestinationSignIn, Secret, TokenProvider};
use ferry_connectors::graph::{DestItem, DriveRef, GraphConfig, GraphDestination};
use ferry_proto::ItemKind;
use ferry_sim::{Config, Farm, LibSpec, SimHandle, SiteSpec, WebSpec};
use serde_json::Value;

/// The `ferry` binary, built once per test process (a no-op when current).
pub fn ferry_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "ferry-coordinator",
                "--bin",
                "ferry",
            ])
            .current_dir(&root)
            .status()
            .expect("cannot run cargo to build the ferry binary");
        assert!(status.success(), "building the ferry binary failed");
        // target/debug/deps/e2e-… → target/debug/ferry
        let exe = std::env::current_exe().expect("current exe");
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .join("ferry");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

/// An HTTP client for the tests' own requests. reqwest is built without a
/// default crypto provider (the product uses ring only), so install it first.
pub fn client() -> reqwest::Client {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::new()
}

/// An emulator instance with its data directory.
pub struct Sim {
    pub handle: SimHandle,
    pub base: String,
    _dir: Option<tempfile::TempDir>,
}

impl Sim {
    /// Starts an emulator seeded with `farm`; `tweak` adjusts the config.
    pub async fn start(farm: Farm, tweak: impl FnOnce(&mut Config)) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            farm: Some(farm),
            ..Config::default()
        };
        tweak(&mut config);
        let handle = ferry_sim::start(config).await.expect("emulator starts");
        let base = handle.base_url.clone();
        Sim {
            handle,
            base,
            _dir: Some(dir),
        }
    }

    pub fn site(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `/_sim/counters` as JSON.
    pub async fn counters(&self) -> Value {
        client()
            .get(format!("{}/_sim/counters", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn counter(&self, name: &str) -> u64 {
        self.counters().await[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// A Graph client signed in with the emulator's default app.
    pub fn graph(&self) -> GraphDestination {
        let tokens = TokenProvider::new(
            &self.base,
            &format!("{}/.default", self.base),
            DestinationSignIn::ClientSecret {
                tenant: Config::default().tenant_id,
                client_id: "ferry".into(),
                secret: Secret::new("ferry-secret"),
            },
            None,
        )
        .unwrap();
        GraphDestination::new(
            GraphConfig {
                graph_base: format!("{}/v1.0", self.base),
                ..GraphConfig::default()
            },
            Arc::new(tokens),
        )
        .unwrap()
    }

    /// Every item of a library under `subtree`, by path.
    pub async fn listing(
        &self,
        site: &str,
        library: &str,
        subtree: &str,
    ) -> (DriveRef, BTreeMap<String, DestItem>) {
        let g = self.graph();
        let drive = g.resolve_library(&self.site(site), library).await.unwrap();
        let items = g.scan(&drive, subtree).await.unwrap();
        (
            drive,
            items.into_iter().map(|i| (i.rel_path.clone(), i)).collect(),
        )
    }

    /// A file's content, downloaded over Graph.
    pub async fn download(&self, drive: &DriveRef, item_id: &str) -> Vec<u8> {
        let token = token(&self.base).await;
        let url = format!(
            "{}/v1.0/drives/{}/items/{}/content",
            self.base, drive.drive_id, item_id
        );
        let resp = client().get(url).bearer_auth(token).send().await.unwrap();
        assert!(resp.status().is_success(), "download: {}", resp.status());
        resp.bytes().await.unwrap().to_vec()
    }
}

/// A client-credentials token from an emulator.
pub async fn token(base: &str) -> String {
    let tenant = Config::default().tenant_id;
    let resp: Value = client()
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "ferry"),
            ("client_secret", "ferry-secret"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"].as_str().expect("token").to_string()
}

/// A tenant with one site collection holding `libraries` (and `webs` as subsites).
pub fn tenant_farm(site: &str, libraries: &[&str], webs: &[&str]) -> Farm {
    Farm {
        sites: vec![SiteSpec {
            url: site.into(),
            libraries: libraries
                .iter()
                .map(|t| LibSpec {
                    title: (*t).into(),
                    ..Default::default()
                })
                .collect(),
            webs: webs
                .iter()
                .map(|w| WebSpec {
                    url: (*w).into(),
                    libraries: libraries
                        .iter()
                        .map(|t| LibSpec {
                            title: (*t).into(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
    }
}

/// What a `ferry` run printed and returned.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(out: std::process::Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Arguments that sign `ferry` in to an emulated tenant (the secret goes
/// through the environment, as the README recommends).
pub fn sign_in(tenant: &Sim) -> Vec<String> {
    vec![
        "--tenant".into(),
        Config::default().tenant_id,
        "--client-id".into(),
        "ferry".into(),
        "--authority".into(),
        tenant.base.clone(),
        "--graph".into(),
        format!("{}/v1.0", tenant.base),
    ]
}

/// `migrate --json --from SHARE --to SITE --to-library LIBRARY EXTRA…`,
/// signed in to `tenant`.
pub fn migrate_share(
    share: &Path,
    tenant: &Sim,
    site: &str,
    library: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "migrate".into(),
        "--json".into(),
        "--from".into(),
        share.display().to_string(),
        "--to".into(),
        tenant.site(site),
        "--to-library".into(),
        library.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(sign_in(tenant));
    args
}

/// `migrate --json --job JOB EXTRA…` (the next incremental round), signed in.
pub fn rerun(job: &str, tenant: &Sim, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "migrate".into(),
        "--json".into(),
        "--job".into(),
        job.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(sign_in(tenant));
    args
}

/// A `ferry` command ready to run (or spawn) with a state directory.
pub fn ferry_command(state: &Path, args: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(ferry_bin());
    cmd.arg("--state")
        .arg(state)
        .args(args)
        .env("FERRY_CLIENT_SECRET", "ferry-secret")
        .env("FERRY_SOURCE_PASSWORD", "password")
        .env_remove("FERRY_LOG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `ferry` to completion (at most two minutes).
pub async fn ferry(state: &Path, args: &[String]) -> Run {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        ferry_command(state, args).output(),
    )
    .await
    .expect("ferry finished within two minutes")
    .expect("ferry runs");
    Run::from_output(out)
}

/// Writes `files` (relative path → content) under `root`, each with the
/// modified time `mtime`.
pub fn write_files(root: &Path, files: &[(&str, Vec<u8>)], mtime: DateTime<Utc>) {
    for (rel, content) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        set_mtime(&path, mtime);
    }
}

pub fn set_mtime(path: &Path, mtime: DateTime<Utc>) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::from(mtime)).unwrap();
}

/// Deterministic bytes.
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 2654435761 + seed as u64) >> 7) as u8)
        .collect()
}

/// quickXorHash, base64, as Graph reports it.
pub fn qxh(data: &[u8]) -> String {
    use base64::Engine;
    let mut h = quickxorhash::QuickXorHash::new();
    h.update(data);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Polls `check` until it is true, failing after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not happen within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The rows of a report CSV as maps from column to value.
pub fn read_csv(path: &Path) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut lines = text.lines();
    let header = split_csv(lines.next().unwrap_or_default());
    Ok(lines
        .filter(|l| !l.is_empty())
        .map(|l| header.iter().cloned().zip(split_csv(l)).collect())
        .collect())
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(String::new()),
            (c, _) => out.last_mut().unwrap().push(c),
        }
    }
    out
}

/// The report directory of the only job in `state`.
pub fn report_dir(state: &Path) -> PathBuf {
    let reports = state.join("reports");
    let mut jobs: Vec<_> = std::fs::read_dir(&reports)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(jobs.len(), 1, "one job in {}", reports.display());
    jobs.pop().unwrap()
}

/// Files (not folders) of a listing: path → (size, hash).
pub fn files_of(listing: &BTreeMap<String, DestItem>) -> BTreeMap<String, (u64, Option<String>)> {
    listing
        .iter()
        .filter(|(_, i)| i.kind == ItemKind::File)
        .map(|(p, i)| (p.clone(), (i.size, i.quick_xor_hash.clone())))
        .collect()
}
