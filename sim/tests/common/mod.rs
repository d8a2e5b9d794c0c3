//! Helpers for the emulator's end-to-end tests: start an in-process instance on
//! 127.0.0.1:0 with its own temp data dir, get tokens, poll with deadlines.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use base64::Engine;
use ferry_sim::{Config, SimHandle};
use serde_json::Value;

pub struct TestSim {
    pub handle: Option<SimHandle>,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub cfg: Config,
}

pub fn client() -> reqwest::Client {
    // reqwest is built without a default crypto provider in this workspace
    // (the product uses ring only): install it before building a client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub fn config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        // Most tests create sites with the app's own token and no Owner; the
        // Owner rule (on by default, as in SharePoint Online) has its own test.
        require_owner_for_app_only: false,
        ..Config::default()
    }
}

impl TestSim {
    pub async fn start() -> TestSim {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestSim {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path());
        f(&mut cfg);
        let handle = ferry_sim::start(cfg.clone()).await.expect("start");
        TestSim {
            base: handle.base_url.clone(),
            handle: Some(handle),
            dir,
            http: client(),
            cfg,
        }
    }

    /// Stop and start again on the same data dir (new port).
    pub async fn restart(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await.expect("shutdown");
        }
        let h = ferry_sim::start(self.cfg.clone()).await.expect("restart");
        self.base = h.base_url.clone();
        self.handle = Some(h);
    }

    /// Stop and start again on the same data dir and the same port (URLs stay valid).
    pub async fn restart_same_port(&mut self) {
        let h = self.handle.take().expect("running");
        let addr = h.addr;
        h.shutdown().await.expect("shutdown");
        let h = ferry_sim::start_on(addr, self.cfg.clone())
            .await
            .expect("restart on the same port");
        self.base = h.base_url.clone();
        self.handle = Some(h);
    }

    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await.expect("shutdown");
        }
    }

    pub fn url(&self, p: &str) -> String {
        format!("{}{}", self.base, p)
    }

    pub async fn token(&self) -> String {
        let r = self
            .http
            .post(self.url("/common/oauth2/v2.0/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "ferry"),
                ("client_secret", "ferry-secret"),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .expect("token");
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        v["access_token"].as_str().expect("access_token").to_owned()
    }

    pub async fn get_json(&self, tok: &str, p: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(p))
            .bearer_auth(tok)
            .send()
            .await
            .expect("send");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn sp_get(&self, p: &str, accept: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(p))
            .basic_auth("someone@example.com", Some("password"))
            .header("accept", accept)
            .send()
            .await
            .expect("send");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn put_content(&self, tok: &str, p: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .http
            .put(self.url(p))
            .bearer_auth(tok)
            .body(body)
            .send()
            .await
            .expect("send");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn admin(&self, method: reqwest::Method, p: &str, body: Option<Value>) -> Value {
        let mut rb = self.http.request(method, self.url(p));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("admin");
        assert!(r.status().is_success(), "admin {p}: {}", r.status());
        r.json().await.expect("json")
    }

    pub async fn root_drive(&self, tok: &str) -> String {
        let (s, v) = self.get_json(tok, "/v1.0/sites/root/drive").await;
        assert_eq!(s, 200, "{v}");
        v["id"].as_str().expect("id").to_owned()
    }
}

pub fn qxh(data: &[u8]) -> String {
    let mut h = quickxorhash::QuickXorHash::new();
    h.update(data);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Deterministic test bytes.
pub fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect()
}

/// Poll `f` until it yields `Some`, or panic at the deadline.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Assert a Graph error body shape and code.
pub fn assert_graph_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    let inner = &v["error"]["innerError"];
    assert!(
        inner["date"].is_string()
            && inner["request-id"].is_string()
            && inner["client-request-id"].is_string(),
        "{v}"
    );
}

/// Send a raw HTTP/1.1 request (the path goes on the wire exactly as given, unlike
/// reqwest, which normalises `..` and `%2e%2e`). Returns (status, body).
pub async fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write body");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Chunked bodies: take the first JSON object found.
    let json = body.find('{').and_then(|i| {
        let b = &body[i..];
        let j = b.rfind('}')?;
        serde_json::from_str(&b[..=j]).ok()
    });
    (status, json.unwrap_or(Value::Null))
}
