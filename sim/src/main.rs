//! `ferry-sim` binary: arguments and telemetry only; everything else is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// A protocol-faithful SharePoint Server / SharePoint Online / Graph / Entra ID emulator.
#[derive(Debug, Parser)]
#[command(name = "ferry-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "FERRY_SIM_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// JSON configuration file (the `Config` struct); flags below override it.
    #[arg(long, env = "FERRY_SIM_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long, env = "FERRY_SIM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Public base URL (defaults to http://{listen}).
    #[arg(long, env = "FERRY_SIM_PUBLIC_URL")]
    public_url: Option<String>,
    /// Hostname used in Graph site ids.
    #[arg(long, env = "FERRY_SIM_HOSTNAME")]
    hostname: Option<String>,
    /// JSON farm description applied on first start.
    #[arg(long)]
    farm: Option<PathBuf>,
    /// Import a local folder on first start: DIR=/sites/x/Shared Documents
    #[arg(long, value_name = "DIR=LIBRARY_URL")]
    import: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut cfg: ferry_sim::Config = match &args.config {
        Some(p) => serde_json::from_slice(&std::fs::read(p)?)?,
        None => ferry_sim::Config::default(),
    };
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if args.public_url.is_some() {
        cfg.public_url = args.public_url;
    }
    if args.hostname.is_some() {
        cfg.hostname = args.hostname;
    }
    if let Some(f) = args.farm {
        cfg.farm = Some(serde_json::from_slice(&std::fs::read(f)?)?);
    }
    for i in args.import {
        let (dir, lib) = i
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--import expects DIR=LIBRARY_URL"))?;
        cfg.imports.push(ferry_sim::Import {
            dir: dir.into(),
            library_url: lib.into(),
        });
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    ferry_sim::run(listener, cfg, async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(message = "Shutdown requested.");
    })
    .await
}
