//! HTTP plumbing shared by every connector: one `reqwest` client per connector,
//! throttling and retries in one place, error bodies of every dialect parsed in one
//! place, and the counters the engine reports.
//!
//! Retry policy ([`Http::send`]):
//! - `429`/`503` with `Retry-After` (seconds or an HTTP date): wait exactly that long,
//!   capped by [`HttpConfig::max_retry_after`], then send again. Counted in
//!   [`HttpStats::throttled_waits`] / [`HttpStats::throttled_ms`]. The server refused
//!   the request before acting on it, so this is safe for every method. Every other
//!   request of the same connector holds back until the wait is over too.
//! - `429`/`503` without `Retry-After`, other `5xx`, timeouts and connection errors:
//!   exponential backoff with full jitter — only for requests marked idempotent
//!   (or replayable); a connection that was never established is retried always.
//! - After [`HttpConfig::max_attempts`]: [`ConnectorError::Transient`] (or
//!   [`ConnectorError::Unreachable`] when no connection could be made).
//!
//! Every request body is buffered ([`bytes::Bytes`], cheap to clone), so a request can
//! be rebuilt for each attempt by the caller's closure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;

use crate::auth::TokenSource;
use crate::ConnectorError;

/// Retry and timeout settings of one connector's HTTP client.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Attempts per request, first one included (at least 1). Default 8.
    pub max_attempts: u32,
    /// Longest `Retry-After` honoured; longer ones are cut to this. Default 5 minutes.
    pub max_retry_after: Duration,
    /// First backoff delay for server errors without `Retry-After`. Default 500 ms.
    pub base_backoff: Duration,
    /// Longest backoff delay. Default 60 s.
    pub max_backoff: Duration,
    /// Connect timeout. Default 30 s.
    pub connect_timeout: Duration,
    /// Time allowed without progress reading a response (per read). Default 5 minutes.
    pub read_timeout: Duration,
    /// Most requests in flight at once through this connector; after throttling the
    /// limit halves (down to 1) and grows back by one per round of successes
    /// (AIMD), so a busy fleet backs off instead of collecting 429s. Default 64.
    pub max_concurrency: usize,
    /// `User-Agent`; Microsoft asks migration tools to decorate it
    /// (`ISV|Company|App/Version`) so that throttling is attributed fairly.
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            max_retry_after: Duration::from_secs(300),
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(300),
            max_concurrency: 64,
            user_agent: format!("ISV|Ferry|Ferry/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Counters of one connector's HTTP traffic, shared with the engine (reports, metrics).
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Times the server throttled us (`429`/`503` + `Retry-After`) and we waited.
    pub throttled_waits: AtomicU64,
    /// Milliseconds spent waiting because of throttling.
    pub throttled_ms: AtomicU64,
    /// Retries after server errors, timeouts or connection failures (not throttling).
    pub retries: AtomicU64,
    /// Requests sent (every attempt counts).
    pub requests: AtomicU64,
    /// Current adaptive limit of requests in flight (see [`HttpConfig::max_concurrency`]).
    pub concurrency_limit: AtomicU64,
}

/// A plain copy of [`HttpStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpStatsSnapshot {
    pub throttled_waits: u64,
    pub throttled_ms: u64,
    pub retries: u64,
    pub requests: u64,
    pub concurrency_limit: u64,
}

impl HttpStats {
    /// Current values.
    pub fn snapshot(&self) -> HttpStatsSnapshot {
        HttpStatsSnapshot {
            throttled_waits: self.throttled_waits.load(Ordering::Relaxed),
            throttled_ms: self.throttled_ms.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            concurrency_limit: self.concurrency_limit.load(Ordering::Relaxed),
        }
    }
}

/// Installs rustls' ring provider as the process default, once (idempotent).
///
/// reqwest is built with `rustls-no-provider` so that ring is the only crypto stack
/// in the tree; cargo unifies that feature across the workspace, so *any*
/// `reqwest::Client` built in a process that links this crate (binaries, and every
/// test binary of a `--workspace` run) panics unless a provider is installed
/// first. The connectors call this themselves; call it at the top of `main` and in
/// test helpers that build their own clients.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another part of the process installed one first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// One connector's HTTP client with its retry policy and counters.
#[derive(Clone, Debug)]
pub(crate) struct Http {
    pub(crate) client: reqwest::Client,
    pub(crate) cfg: HttpConfig,
    pub(crate) stats: Arc<HttpStats>,
    /// When the service throttles one request, every request of this connector
    /// waits out the same `Retry-After` instead of collecting more 429s (which
    /// Microsoft counts against the app and can prolong the throttling).
    pause_until: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    /// Adaptive limit of requests in flight.
    limiter: Arc<Limiter>,
}

/// AIMD limit on requests in flight.
#[derive(Debug)]
struct Limiter {
    state: std::sync::Mutex<LimitState>,
    notify: tokio::sync::Notify,
    stats: Arc<HttpStats>,
}

#[derive(Debug)]
struct LimitState {
    limit: f64,
    max: f64,
    in_flight: usize,
    /// No further decrease before this (one decrease per throttling episode).
    hold_until: Option<tokio::time::Instant>,
}

/// One request in flight; dropping it frees the slot.
struct Slot(Arc<Limiter>);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        s.in_flight = s.in_flight.saturating_sub(1);
        drop(s);
        self.0.notify.notify_waiters();
    }
}

impl Limiter {
    fn new(max: usize, stats: Arc<HttpStats>) -> Self {
        let max = max.max(1) as f64;
        stats.concurrency_limit.store(max as u64, Ordering::Relaxed);
        Self {
            state: std::sync::Mutex::new(LimitState {
                limit: max,
                max,
                in_flight: 0,
                hold_until: None,
            }),
            notify: tokio::sync::Notify::new(),
            stats,
        }
    }

    async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if (s.in_flight as f64) < s.limit.floor().max(1.0) {
                    s.in_flight += 1;
                    return Slot(self.clone());
                }
            }
            notified.await;
        }
    }

    /// Multiplicative decrease to half of what was really in flight, once per
    /// throttling episode (answers to requests already in flight do not count again).
    fn throttled(&self, wait: Duration) {
        let now = tokio::time::Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.hold_until.is_some_and(|h| now < h) {
            return;
        }
        s.hold_until = Some(now + wait);
        let in_flight = (s.in_flight + 1) as f64;
        s.limit = (s.limit.min(in_flight) / 2.0).max(1.0);
        self.stats
            .concurrency_limit
            .store(s.limit.floor() as u64, Ordering::Relaxed);
    }

    /// Additive increase: about +1 per `limit` successes.
    fn succeeded(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.limit < s.max {
            s.limit = (s.limit + 1.0 / s.limit.max(1.0)).min(s.max);
            self.stats
                .concurrency_limit
                .store(s.limit.floor() as u64, Ordering::Relaxed);
            drop(s);
            self.notify.notify_waiters();
        }
    }
}

/// Whether a request may be sent again after an ambiguous failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    /// GET, PUT, DELETE, PATCH with a buffered body, or a POST whose repetition is
    /// harmless (e.g. create with `conflictBehavior=fail`, handled by the caller).
    Safe,
    /// Only retried when the server surely did not act on it (throttled, no
    /// connection). For future non-replayable POSTs (e.g. site creation).
    #[allow(dead_code)]
    Unsafe,
}

impl Http {
    pub(crate) fn new(cfg: HttpConfig) -> Result<Self, ConnectorError> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(cfg.user_agent.clone())
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            // Redirects are followed by hand where they matter (pre-authorised
            // download URLs must not receive our Authorization header; reqwest strips
            // it on cross-host redirects, and same-host ones are ours anyway).
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| ConnectorError::Protocol {
                url: String::new(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        let mut cfg = cfg;
        cfg.max_attempts = cfg.max_attempts.max(1);
        let stats = Arc::new(HttpStats::default());
        Ok(Self {
            client,
            limiter: Arc::new(Limiter::new(cfg.max_concurrency, stats.clone())),
            cfg,
            stats,
            pause_until: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// Sends the request built by `build` until it gets an answer that is not a
    /// throttle or a server error, within the retry budget. Non-success answers that
    /// are not retried are returned as they are for the caller to map.
    pub(crate) async fn send<F>(
        &self,
        url_for_errors: &str,
        replay: Replay,
        build: F,
    ) -> Result<Response, ConnectorError>
    where
        F: Fn() -> RequestBuilder,
    {
        let shown = redact_url(url_for_errors);
        let max = self.cfg.max_attempts;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.wait_out_pause().await;
            let slot = self.limiter.acquire().await;
            self.wait_out_pause().await;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let sent = build().send().await;
            drop(slot);
            match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let throttled = status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::SERVICE_UNAVAILABLE;
                    if throttled {
                        if attempt >= max {
                            return Err(ConnectorError::Transient {
                                url: shown,
                                status: status.as_u16(),
                                attempts: attempt,
                            });
                        }
                        let wait = match retry_after(resp.headers()) {
                            Some(w) => w.min(self.cfg.max_retry_after),
                            None => self.backoff(attempt),
                        };
                        self.stats.throttled_waits.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .throttled_ms
                            .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
                        tracing::warn!(
                            message = "Throttled by the server; waiting before retrying.",
                            url = %shown,
                            status = status.as_u16(),
                            wait_ms = wait.as_millis() as u64,
                            attempt
                        );
                        drop(resp);
                        self.limiter.throttled(wait);
                        self.pause_all(wait);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    let server_error = status.is_server_error()
                        && status != StatusCode::NOT_IMPLEMENTED
                        && status != StatusCode::INSUFFICIENT_STORAGE;
                    if server_error && replay == Replay::Safe {
                        if attempt >= max {
                            return Err(ConnectorError::Transient {
                                url: shown,
                                status: status.as_u16(),
                                attempts: attempt,
                            });
                        }
                        let wait = self.backoff(attempt);
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            message = "Server error; retrying after a backoff.",
                            url = %shown,
                            status = status.as_u16(),
                            wait_ms = wait.as_millis() as u64,
                            attempt
                        );
                        drop(resp);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    if !status.is_server_error() {
                        self.limiter.succeeded();
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    let never_connected = e.is_connect();
                    let retryable = never_connected || replay == Replay::Safe;
                    if !retryable || attempt >= max {
                        if never_connected {
                            return Err(ConnectorError::Unreachable {
                                url: shown,
                                message: error_chain(&e),
                            });
                        }
                        return Err(ConnectorError::Transient {
                            url: shown,
                            status: 0,
                            attempts: attempt,
                        });
                    }
                    let wait = self.backoff(attempt);
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        message = "Request failed; retrying after a backoff.",
                        url = %shown,
                        error = %error_chain(&e),
                        wait_ms = wait.as_millis() as u64,
                        attempt
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// [`Http::send`] with a bearer token from `tokens` on every attempt; an expired
    /// token (`401`) is invalidated and the request sent once more with a fresh one.
    /// `build` makes the request without `Authorization`.
    pub(crate) async fn send_bearer<F>(
        &self,
        tokens: &dyn TokenSource,
        url: &str,
        replay: Replay,
        build: F,
    ) -> Result<Response, ConnectorError>
    where
        F: Fn() -> RequestBuilder,
    {
        let mut renewed = false;
        loop {
            let token = tokens.token().await?;
            let resp = self
                .send(url, replay, || build().bearer_auth(&token))
                .await?;
            if resp.status() == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                tokens.invalidate();
                continue;
            }
            return Ok(resp);
        }
    }

    /// Sleeps while the connector is paused by a throttling answer.
    async fn wait_out_pause(&self) {
        loop {
            let until = *self.pause_until.lock().unwrap_or_else(|e| e.into_inner());
            match until {
                Some(t) if t > tokio::time::Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    fn pause_all(&self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        let mut p = self.pause_until.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none_or(|t| t < until) {
            *p = Some(until);
        }
    }

    /// Exponential backoff with full jitter: uniform in `[base·2^(n-1)/2, base·2^(n-1)]`,
    /// capped by `max_backoff`.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .cfg
            .base_backoff
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
            .min(self.cfg.max_backoff);
        let r = (uuid::Uuid::new_v4().as_u128() as u64 % 1000) as u32;
        exp / 2 + (exp / 2) * r / 1000
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
        return None;
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.signed_duration_since(chrono::Utc::now());
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// A URL fit for logs and errors: no query string (upload and download URLs carry
/// pre-authorisation tokens there) and no user info.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url.split(['?', '#']).next().unwrap_or("").to_owned(),
    }
}

/// The error and its sources, one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A failed answer, read and parsed: status, service error code, message.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) url: String,
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl Failure {
    /// Reads the body of a non-success answer (bounded) and parses any of the error
    /// dialects: Graph `{"error":{"code","message"}}`, SharePoint verbose
    /// `{"error":{"code","message":{"value"}}}`, SharePoint JSON light
    /// `{"odata.error":…}`, OAuth `{"error":"…","error_description":"…"}`.
    pub(crate) async fn read(url: &str, resp: Response) -> Failure {
        let status = resp.status().as_u16();
        let text = read_limited(resp, 64 * 1024).await;
        let (code, message) = parse_error_body(&text);
        let message = if message.is_empty() {
            let t: String = text.chars().take(300).collect();
            if t.trim().is_empty() {
                StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("no details")
                    .to_owned()
            } else {
                t
            }
        } else {
            message
        };
        Failure {
            url: redact_url(url),
            status,
            code,
            message,
        }
    }

    /// The generic mapping: 401 → Auth, 404 → NotFound, 5xx/429 → Transient, others
    /// → Rejected.
    pub(crate) fn into_error(self, what: &str) -> ConnectorError {
        match self.status {
            401 => ConnectorError::Auth {
                target: self.url,
                message: self.message,
            },
            404 | 410 if self.code != "resyncRequired" => ConnectorError::NotFound {
                what: what.to_owned(),
                location: self.url,
                hint: self.message,
            },
            429 | 500..=599 if self.status != 507 => ConnectorError::Transient {
                url: self.url,
                status: self.status,
                attempts: 1,
            },
            _ => ConnectorError::Rejected {
                url: self.url,
                status: self.status,
                code: self.code,
                message: self.message,
            },
        }
    }
}

async fn read_limited(mut resp: Response, limit: usize) -> String {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        buf.extend_from_slice(&chunk);
        if buf.len() >= limit {
            buf.truncate(limit);
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// `(code, message)` from any of the error dialects; empty strings when unknown.
pub(crate) fn parse_error_body(text: &str) -> (String, String) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return (String::new(), String::new());
    };
    let err = v.get("error").or_else(|| v.get("odata.error"));
    match err {
        Some(Value::Object(o)) => {
            let code = o
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let message = match o.get("message") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(m)) => m
                    .get("value")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                _ => String::new(),
            };
            (code, message)
        }
        Some(Value::String(code)) => {
            let message = v
                .get("error_description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            (code.clone(), message)
        }
        _ => (String::new(), String::new()),
    }
}

/// Reads a JSON body (bounded at 64 MiB) or fails with `Protocol`.
pub(crate) async fn read_json(url: &str, resp: Response) -> Result<Value, ConnectorError> {
    let bytes = resp.bytes().await.map_err(|e| ConnectorError::Protocol {
        url: redact_url(url),
        message: format!("reading the answer failed: {}", error_chain(&e)),
    })?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|e| ConnectorError::Protocol {
        url: redact_url(url),
        message: format!("the answer is not JSON: {e}"),
    })
}

/// Percent-encodes one path segment: everything but RFC 3986 unreserved characters.
pub(crate) fn encode_segment(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// Percent-encodes a `/`-separated path segment by segment.
pub(crate) fn encode_path(p: &str) -> String {
    p.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_every_dialect() {
        let check = |body: &str, code: &str, msg: &str| {
            assert_eq!(
                parse_error_body(body),
                (code.to_owned(), msg.to_owned()),
                "{body}"
            );
        };
        check(
            r#"{"error":{"code":"itemNotFound","message":"gone"}}"#,
            "itemNotFound",
            "gone",
        );
        check(
            r#"{"error":{"code":"-1, X","message":{"lang":"en-US","value":"bad"}}}"#,
            "-1, X",
            "bad",
        );
        check(
            r#"{"odata.error":{"code":"-2, Y","message":{"lang":"en-US","value":"worse"}}}"#,
            "-2, Y",
            "worse",
        );
        check(
            r#"{"error":"invalid_client","error_description":"AADSTS7000215"}"#,
            "invalid_client",
            "AADSTS7000215",
        );
        check("<html>", "", "");
    }

    #[test]
    fn urls_lose_their_secrets() {
        assert_eq!(
            redact_url("http://u:p@h:1/_api/v2.0/uploadSession?guid='x'&tempauth=SECRET"),
            "http://h:1/_api/v2.0/uploadSession"
        );
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_path("a b/#%/é"), "a%20b/%23%25/%C3%A9");
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            "Thu, 01 Jan 1970 00:00:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
