//! Helpers for the connector tests: an in-process emulator on 127.0.0.1:0 with its own
//! temp data dir, sign-in helpers, byte streams, polling with deadlines.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_connectors::auth::{DestinationSignIn, Secret, TokenProvider};
use ferry_connectors::graph::{GraphConfig, GraphDestination};
use ferry_connectors::sites::{sharepoint_scope, SitesClient};
use ferry_connectors::ByteStream;
use ferry_sim::{Config, SimHandle};

pub const TENANT: &str = "contoso.onmicrosoft.com";
pub const SCOPE: &str = "https://graph.microsoft.com/.default";
pub const USER: &str = "someone@example.com";
pub const PASSWORD: &str = "password";

pub struct TestSim {
    pub handle: Option<SimHandle>,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl TestSim {
    pub async fn start() -> TestSim {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestSim {
        // The tests build their own reqwest clients too.
        ferry_connectors::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config {
            data_dir: dir.path().join("sim"),
            ..Config::default()
        };
        f(&mut cfg);
        let handle = ferry_sim::start(cfg).await.expect("start the emulator");
        TestSim {
            base: handle.base_url.clone(),
            handle: Some(handle),
            dir,
        }
    }

    pub fn url(&self, p: &str) -> String {
        format!("{}{}", self.base, p)
    }

    pub fn graph_base(&self) -> String {
        format!("{}/v1.0", self.base)
    }

    pub fn secret_sign_in(&self) -> DestinationSignIn {
        DestinationSignIn::ClientSecret {
            tenant: TENANT.to_owned(),
            client_id: "ferry".to_owned(),
            secret: Secret::new("ferry-secret"),
        }
    }

    pub fn tokens(&self) -> Arc<TokenProvider> {
        Arc::new(
            TokenProvider::new(&self.base, SCOPE, self.secret_sign_in(), None)
                .expect("token provider"),
        )
    }

    pub fn graph(&self) -> GraphDestination {
        self.graph_with(|_| {})
    }

    pub fn graph_with(&self, f: impl FnOnce(&mut GraphConfig)) -> GraphDestination {
        let mut cfg = GraphConfig {
            graph_base: self.graph_base(),
            max_retry_after: Duration::from_secs(5),
            ..GraphConfig::default()
        };
        f(&mut cfg);
        GraphDestination::new(cfg, self.tokens()).expect("graph destination")
    }

    /// A site-structure client with a SharePoint-scoped token and quick polling.
    pub fn sites(&self) -> SitesClient {
        self.sites_with(|_| {})
    }

    pub fn sites_with(&self, f: impl FnOnce(&mut ferry_connectors::HttpConfig)) -> SitesClient {
        let mut http = ferry_connectors::HttpConfig {
            max_retry_after: Duration::from_secs(5),
            ..Default::default()
        };
        f(&mut http);
        let tokens = Arc::new(
            TokenProvider::new(
                &self.base,
                &sharepoint_scope(&self.base),
                self.secret_sign_in(),
                None,
            )
            .expect("token provider"),
        );
        SitesClient::new(tokens, http)
            .expect("sites client")
            .with_poll_interval(Duration::from_millis(50), Duration::from_millis(200))
    }

    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await.expect("shutdown");
        }
    }
}

/// Content as a stream in uneven pieces (to exercise fragment boundaries).
pub fn stream_of(data: Vec<u8>, piece: usize) -> ByteStream {
    let data = Bytes::from(data);
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let end = (i + piece).min(data.len());
        chunks.push(Ok(data.slice(i..end)));
        i = end;
    }
    Box::pin(futures_util::stream::iter(chunks))
}

/// Deterministic pseudo-random bytes.
pub fn bytes_of(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn qxh(data: &[u8]) -> String {
    use base64::Engine;
    let mut h = quickxorhash::QuickXorHash::new();
    h.update(data);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

pub async fn collect(mut s: ByteStream) -> Vec<u8> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.expect("read chunk"));
    }
    out
}

/// Polls `f` until it returns `Some`, failing after `timeout`.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port nothing listens on.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let p = l.local_addr().expect("addr").port();
    drop(l);
    p
}

/// A TCP proxy in front of the emulator that records every byte clients send, to
/// check headers on the wire.
pub struct Recorder {
    pub sent: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Recorder {
    /// Binds the proxy, starts the emulator with the proxy as its public URL (so
    /// upload URLs and next links come back through it), and forwards.
    pub async fn start_sim() -> (TestSim, Recorder) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let public = format!("http://{}", listener.local_addr().expect("addr"));
        let sim = TestSim::start_with(|c| c.public_url = Some(public.clone())).await;
        let target = sim.handle.as_ref().expect("handle").addr;
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let rec = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let rec = rec.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.split();
                    let (mut sr, mut sw) = server.split();
                    let up = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            rec.lock().unwrap().extend_from_slice(&buf[..n]);
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = sw.shutdown().await;
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                        let _ = cw.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        (sim, Recorder { sent })
    }

    /// Header blocks of the requests whose request line starts with `prefix`.
    pub fn requests_starting(&self, prefix: &str) -> Vec<String> {
        let data = self.sent.lock().unwrap().clone();
        let text = String::from_utf8_lossy(&data).into_owned();
        text.match_indices(prefix)
            .map(|(i, _)| {
                let rest = &text[i..];
                let end = rest.find("\r\n\r\n").unwrap_or(rest.len());
                rest[..end].to_owned()
            })
            .collect()
    }
}
