//! `ferry-sim`: a protocol-faithful emulator of the parts of SharePoint Server,
//! SharePoint Online, Microsoft Graph and Entra ID that a migration touches — what
//! Azurite is for Azure Storage.
//!
//! # Layout
//! - [`run`] / [`start`]: serve one emulator instance (= one host) on a bound listener.
//! - `http`: request plumbing — classification, fault injection, auth, throttling,
//!   error bodies in each dialect (Graph, SharePoint verbose / JSON light, OAuth).
//! - `sprest`: SharePoint REST (`{web}/_api/...`) incl. SPSiteManager and hubs.
//! - `graph`: the Graph drive API under `/v1.0` and `/_api/v2.0`, `$batch`.
//! - `upload`: resumable upload sessions (pre-authorised upload URLs).
//! - `identity`: Entra ID v2 token, device-code and discovery endpoints.
//! - `store`: in-memory model + write-behind persistence (redb) + blob files.
//! - `seed`: declarative farm descriptions and local-folder import.
//! - `admin`: `/_sim/...` for tests.
//!
//! # Invariants
//! - No user-supplied name ever becomes a local path: content lives in
//!   `{data_dir}/blobs/{uuid}`; `..`, `.`, `\` path segments are rejected.
//! - Metadata is kept in memory and persisted in batches by one thread (one redb
//!   transaction per batch); `run` flushes before it returns. A crash loses at most the
//!   batch in flight. Upload sessions are persisted (bytes in `uploads/`); tokens and
//!   request digests are in memory only.
//! - Secrets and tokens are never logged.

pub mod admin;
pub mod config;
pub mod error;
pub mod graph;
pub mod http;
pub mod identity;
pub mod ops;
pub mod seed;
pub mod sprest;
pub mod store;
pub mod upload;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::DefaultBodyLimit;
use axum::Router;

pub use config::{
    AppCertificate, AppRegistration, Config, FaultConfig, Import, Settings, ThrottleConfig, User,
};
pub use error::SimError;
pub use seed::{Farm, ItemSpec, LibSpec, SiteSpec, WebSpec};

/// Serve the emulator on `listener` until `shutdown` completes; flushes state before returning.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let sim = build(config, addr).await?;
    let s2 = sim.clone();
    let app = Router::new()
        .fallback(move |req: axum::extract::Request| http::dispatch(s2.clone(), req))
        .layer(DefaultBodyLimit::disable());
    tracing::info!(message = "Emulator listening.", %addr, base_url = %sim.base_url, hostname = %sim.hostname);
    let sweeper = tokio::spawn(sweep(sim.clone()));
    let res = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    sweeper.abort();
    let s3 = sim.clone();
    tokio::task::spawn_blocking(move || s3.store.close()).await?;
    tracing::info!(message = "Emulator stopped.", %addr);
    res.map_err(Into::into)
}

async fn build(config: Config, addr: SocketAddr) -> anyhow::Result<Arc<http::Sim>> {
    let base_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| default_base_url(addr))
        .trim_end_matches('/')
        .to_owned();
    let hostname = config.hostname.clone().unwrap_or_else(|| {
        let h = base_url.split("://").nth(1).unwrap_or(&base_url);
        let h = h.split('/').next().unwrap_or(h);
        h.rsplit_once(':').map_or(h, |(a, _)| a).to_owned()
    });
    let data_dir = config.data_dir.clone();
    let (store, empty) =
        tokio::task::spawn_blocking(move || store::Store::open(&data_dir)).await??;
    let settings = Settings {
        throttle: config.throttle.clone(),
        faults: config.faults.clone(),
        provisioning_delay_secs: config.provisioning_delay_secs,
    };
    let sim = Arc::new(http::Sim {
        cfg: config,
        base_url,
        hostname,
        store,
        settings: RwLock::new(settings),
        tokens: Mutex::new(HashMap::new()),
        refresh_tokens: Mutex::new(HashMap::new()),
        device_codes: Mutex::new(HashMap::new()),
        digests: Mutex::new(HashMap::new()),
        download_tokens: Mutex::new(HashMap::new()),
        uploads: Mutex::new(HashMap::new()),
        windows: Mutex::new(HashMap::new()),
        fault_draws: Default::default(),
        counters: Default::default(),
    });
    upload::restore(&sim).await;
    if empty {
        let s = sim.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            seed::init_root(&s)?;
            if let Some(f) = &s.cfg.farm {
                seed::apply_farm(&s, f)?;
            }
            for i in &s.cfg.imports {
                let n = seed::import_into(&s, &i.dir, &i.library_url)?;
                tracing::info!(message = "Imported local folder.", dir = %i.dir.display(), library = %i.library_url, files = n);
            }
            s.store.flush();
            Ok(())
        })
        .await??;
    }
    Ok(sim)
}

async fn sweep(sim: Arc<http::Sim>) {
    let mut iv = tokio::time::interval(std::time::Duration::from_secs(30));
    loop {
        iv.tick().await;
        let now = std::time::Instant::now();
        sim.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, t| t.expires + std::time::Duration::from_secs(3600) > now);
        sim.device_codes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, d| d.expires > now);
        let expired: Vec<(String, std::path::PathBuf)> = {
            let m = sim.uploads.lock().unwrap_or_else(|e| e.into_inner());
            m.iter()
                .filter_map(|(k, s)| {
                    s.try_lock()
                        .ok()
                        .filter(|s| s.expires < chrono::Utc::now())
                        .map(|_| (k.clone(), sim.store.uploads.join(format!("{k}.part"))))
                })
                .collect()
        };
        for (k, p) in expired {
            sim.uploads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&k);
            sim.store.put_record(format!("upload/{k}"), None);
            let _ = tokio::fs::remove_file(p).await;
        }
    }
}

/// A running in-process emulator.
pub struct SimHandle {
    /// `http://127.0.0.1:{port}`.
    pub base_url: String,
    /// Bound address.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl SimHandle {
    /// Stop serving, flush state and wait for the server to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await?
    }
}

/// Start an instance on `127.0.0.1:0` (or `config.public_url` is used verbatim for links).
pub async fn start(config: Config) -> anyhow::Result<SimHandle> {
    start_on("127.0.0.1:0".parse()?, config).await
}

/// Start an instance on a given address.
pub async fn start_on(addr: SocketAddr, config: Config) -> anyhow::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let base_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| default_base_url(addr))
        .trim_end_matches('/')
        .to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let _ = ready_tx;
    let task = tokio::spawn(run(listener, config, async move {
        let _ = rx.await;
    }));
    drop(ready_rx);
    let h = SimHandle {
        base_url,
        addr,
        stop: Some(tx),
        task,
    };
    // Wait until the server answers (the store opens before serving).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if h.task.is_finished() {
            return match h.task.await {
                Ok(Ok(())) => Err(anyhow::anyhow!("The emulator stopped during startup.")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.into()),
            };
        }
        if probe(addr).await {
            return Ok(h);
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("The emulator did not become ready in time.");
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

async fn probe(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if s.write_all(b"GET /_sim/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.is_ok() && &buf[9..12] == b"200"
}

/// `http://{addr}`, with an unspecified bind address (0.0.0.0 / ::) replaced by loopback.
fn default_base_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        if addr.is_ipv4() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        }
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}
