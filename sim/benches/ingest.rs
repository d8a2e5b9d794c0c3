//! Raw ingestion benchmark of the emulator (it must not be the bottleneck of Ferry's
//! benchmarks). Starts an in-process instance on 127.0.0.1:0 with a temp data dir and
//! drives it over real HTTP with reqwest:
//!
//! - small files: `PUT /drives/{id}/root:/bench/{dir}/{i}.bin:/content`, 4 KiB each, at a
//!   fixed concurrency → files/s;
//! - large files: upload sessions with 10 MiB fragments (a multiple of 320 KiB) → MB/s,
//!   one upload alone and several in parallel.
//!
//! Client and server share the machine's cores, so the numbers are a lower bound.
//!
//! `cargo bench -p ferry-sim --bench ingest` (env: BENCH_SMALL_FILES=20000,
//! BENCH_CONCURRENCY=32, BENCH_SMALL_BYTES=4096, BENCH_LARGE_MIB=256, BENCH_PARALLEL_LARGE=4).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{json, Value};

fn env(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n_small = env("BENCH_SMALL_FILES", 20_000);
    let conc = env("BENCH_CONCURRENCY", 32);
    let small_bytes = env("BENCH_SMALL_BYTES", 4096);
    let large_mib = env("BENCH_LARGE_MIB", 256);
    let par_large = env("BENCH_PARALLEL_LARGE", 4);

    let dir = tempfile::tempdir()?;
    let cfg = ferry_sim::Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let sim = ferry_sim::start(cfg).await?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let base = sim.base_url.clone();
    let tok: Value = http
        .post(format!("{base}/common/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "ferry"),
            ("client_secret", "ferry-secret"),
        ])
        .send()
        .await?
        .json()
        .await?;
    let tok = tok["access_token"].as_str().unwrap_or_default().to_owned();
    let drive: Value = http
        .get(format!("{base}/v1.0/sites/root/drive"))
        .bearer_auth(&tok)
        .send()
        .await?
        .json()
        .await?;
    let did = drive["id"].as_str().unwrap_or_default().to_owned();

    // Small files.
    let payload = bytes::Bytes::from(vec![0x5au8; small_bytes]);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (http, base, tok, did, payload, next, errors) = (
            http.clone(),
            base.clone(),
            tok.clone(),
            did.clone(),
            payload.clone(),
            next.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n_small {
                    break;
                }
                let url = format!(
                    "{base}/v1.0/drives/{did}/root:/bench/d{}/f{i}.bin:/content",
                    i % 100
                );
                match http
                    .put(url)
                    .bearer_auth(&tok)
                    .body(payload.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let el = t.elapsed().as_secs_f64();
    println!(
        "small files: {n_small} x {small_bytes} B, concurrency {conc}: {:.0} PUTs/s ({:.1} MB/s), {:.2} s, errors {}",
        n_small as f64 / el,
        (n_small * small_bytes) as f64 / el / 1e6,
        el,
        errors.load(Ordering::Relaxed)
    );

    // Large files.
    let one = large_upload(&http, &base, &tok, &did, "large-0.bin", large_mib).await?;
    println!(
        "large file: {large_mib} MiB in 10 MiB fragments: {:.0} MB/s ({:.2} s)",
        (large_mib << 20) as f64 / one / 1e6,
        one
    );
    let t = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..par_large {
        let (http, base, tok, did) = (http.clone(), base.clone(), tok.clone(), did.clone());
        tasks.push(tokio::spawn(async move {
            large_upload(
                &http,
                &base,
                &tok,
                &did,
                &format!("large-p{k}.bin"),
                large_mib,
            )
            .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let el = t.elapsed().as_secs_f64();
    println!(
        "large files: {par_large} x {large_mib} MiB in parallel: {:.0} MB/s aggregate ({:.2} s)",
        (par_large * (large_mib << 20)) as f64 / el / 1e6,
        el
    );
    let counters: Value = http
        .get(format!("{base}/_sim/counters"))
        .send()
        .await?
        .json()
        .await?;
    println!("counters: {counters}");
    sim.shutdown().await?;
    Ok(())
}

async fn large_upload(
    http: &reqwest::Client,
    base: &str,
    tok: &str,
    did: &str,
    name: &str,
    mib: usize,
) -> anyhow::Result<f64> {
    let total = mib << 20;
    let frag = 327_680 * 32; // 10 MiB
    let chunk = bytes::Bytes::from((0..frag).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
    let t = Instant::now();
    let s: Value = http
        .post(format!(
            "{base}/v1.0/drives/{did}/root:/bench/{name}:/createUploadSession"
        ))
        .bearer_auth(tok)
        .json(&json!({"item": {"@microsoft.graph.conflictBehavior": "replace"}}))
        .send()
        .await?
        .json()
        .await?;
    let url = s["uploadUrl"].as_str().unwrap_or_default().to_owned();
    let mut off = 0;
    let mut last = 0;
    while off < total {
        let len = frag.min(total - off);
        // Stream the fragment body in 1 MiB pieces rather than one buffer.
        let body = chunk.slice(..len);
        let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = (0..len)
            .step_by(1 << 20)
            .map(|p| Ok(body.slice(p..(p + (1 << 20)).min(len))))
            .collect();
        let r = http
            .put(&url)
            .header(
                "content-range",
                format!("bytes {off}-{}/{total}", off + len - 1),
            )
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(
                futures_util::stream::iter(pieces).map(|x| x),
            ))
            .send()
            .await?;
        last = r.status().as_u16();
        let _ = r.bytes().await?;
        off += len;
    }
    anyhow::ensure!(last == 201 || last == 200, "last fragment answered {last}");
    Ok(t.elapsed().as_secs_f64())
}
