//! Request plumbing shared by every API family: classification, faults, auth,
//! throttling, error rendering.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::Response;
use base64::Engine;
use chrono::Utc;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::config::{Config, Settings};
use crate::error::{SimError, SimResult};
use crate::store::Store;
use crate::upload::UploadSession;

/// Counters exposed on `/_sim/counters`.
#[derive(Default, Debug)]
pub struct Counters {
    /// All requests.
    pub requests: AtomicU64,
    /// Requests answered 429 by the throttle.
    pub throttled: AtomicU64,
    /// Injected 503/500 answers.
    pub faults: AtomicU64,
    /// Bytes of file content received.
    pub uploaded_bytes: AtomicU64,
    /// Bytes of file content sent.
    pub downloaded_bytes: AtomicU64,
    /// Files created or replaced.
    pub files_written: AtomicU64,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Throttling key: the client id, or `user:{upn}` for Basic auth.
    pub app: String,
    /// User, for delegated tokens and Basic.
    pub user: Option<String>,
    /// Authenticated with Basic (SharePoint Server style; POSTs need a request digest).
    pub basic: bool,
}

/// An issued access or refresh token.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// Client id.
    pub client_id: String,
    /// User for delegated grants.
    pub user: Option<String>,
    /// Expiry.
    pub expires: Instant,
}

/// A pending device-code authorisation.
#[derive(Debug, Clone)]
pub struct DeviceCode {
    /// Client that asked.
    pub client_id: String,
    /// Code the user types.
    pub user_code: String,
    /// Approved by this user.
    pub approved_by: Option<String>,
    /// Expiry.
    pub expires: Instant,
}

/// Per-app throttle window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    start: Instant,
    used: u64,
}

/// Shared state of one emulator instance.
pub struct Sim {
    /// Startup configuration.
    pub cfg: Config,
    /// Public base URL, no trailing slash.
    pub base_url: String,
    /// Hostname used in Graph site ids.
    pub hostname: String,
    /// Metadata + blobs.
    pub store: Store,
    /// Runtime-adjustable throttle/fault settings.
    pub settings: RwLock<Settings>,
    /// Access tokens.
    pub tokens: Mutex<HashMap<String, TokenInfo>>,
    /// Refresh tokens.
    pub refresh_tokens: Mutex<HashMap<String, TokenInfo>>,
    /// Device codes by device_code.
    pub device_codes: Mutex<HashMap<String, DeviceCode>>,
    /// Request digests and their expiry.
    pub digests: Mutex<HashMap<String, Instant>>,
    /// Pre-authorised download tokens → (item, expiry).
    pub download_tokens: Mutex<HashMap<String, (Uuid, Instant)>>,
    /// Upload sessions by id.
    pub uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadSession>>>>,
    /// Throttle windows by app.
    pub windows: Mutex<HashMap<String, Window>>,
    /// Fault-injection draw counter.
    pub fault_draws: AtomicU64,
    /// Counters.
    pub counters: Counters,
}

/// Which error/response dialect a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Microsoft Graph / `_api/v2.0`.
    Graph,
    /// SharePoint REST, `odata=verbose`.
    SpVerbose,
    /// SharePoint REST, JSON light (`nometadata` / `minimalmetadata`).
    SpLight,
    /// Entra ID token endpoints.
    OAuth,
    /// `/_sim` admin.
    Admin,
}

/// Everything a handler needs to know about the request.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Method.
    pub method: Method,
    /// Decoded query parameters (first value wins in `q`).
    pub query: HashMap<String, String>,
    /// Headers.
    pub headers: HeaderMap,
    /// `request-id`.
    pub request_id: String,
    /// Dialect.
    pub flavor: Flavor,
    /// Caller.
    pub principal: Option<Principal>,
}

impl Ctx {
    /// A query parameter (case-insensitive key).
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(&k.to_ascii_lowercase()).map(String::as_str)
    }
    /// A header as str.
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(|v| v.to_str().ok())
    }
}

/// Parse a query string into lower-cased keys.
pub fn parse_query(q: &str) -> HashMap<String, String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap_or_default();
    let mut m = HashMap::new();
    for (k, v) in pairs {
        m.entry(k.to_ascii_lowercase()).or_insert(v);
    }
    m
}

/// Percent-decode a path (UTF-8 required).
pub fn decode_path(p: &str) -> SimResult<String> {
    percent_encoding::percent_decode_str(p)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| SimError::InvalidRequest("The path is not valid UTF-8.".into()))
}

/// Percent-encode a server-relative path for use in a URL.
pub fn encode_path(p: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'!')
        .remove(b'$')
        .remove(b'(')
        .remove(b')')
        .remove(b',')
        .remove(b'\'')
        .remove(b'=')
        .remove(b':')
        .remove(b'@');
    percent_encoding::utf8_percent_encode(p, SET).to_string()
}

/// Percent-encode a query value.
pub fn encode_q(p: &str) -> String {
    percent_encoding::utf8_percent_encode(p, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A random token (two v4 UUIDs: 244 random bits), hex.
pub fn random_token() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// JSON response.
pub fn json_resp(status: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// JSON response with the SharePoint content type for a flavour.
pub fn sp_json(flavor: Flavor, status: u16, v: &Value) -> Response {
    let ct = if flavor == Flavor::SpVerbose {
        "application/json;odata=verbose;charset=utf-8"
    } else {
        "application/json;odata=nometadata;streaming=true;charset=utf-8"
    };
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", ct)
        .body(Body::from(body))
        .unwrap_or_default()
}

/// Empty response.
pub fn empty(status: u16) -> Response {
    Response::builder()
        .status(status)
        .body(Body::empty())
        .unwrap_or_default()
}

/// Render an error in the request's dialect.
pub fn error_response(ctx: &Ctx, err: &SimError) -> Response {
    let status = err.status();
    let msg = err.to_string();
    let mut resp = match ctx.flavor {
        Flavor::Graph | Flavor::Admin => {
            let code = if matches!(err, SimError::Unauthenticated(_)) && ctx.principal.is_none() {
                "InvalidAuthenticationToken"
            } else {
                err.graph_code()
            };
            json_resp(
                status,
                &json!({"error": {"code": code, "message": msg, "innerError": {
                    "date": Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                    "request-id": ctx.request_id,
                    "client-request-id": ctx.header("client-request-id").unwrap_or(&ctx.request_id),
                }}}),
            )
        }
        Flavor::SpVerbose => sp_json(
            Flavor::SpVerbose,
            status,
            &json!({"error": {"code": err.sp_code(), "message": {"lang": "en-US", "value": msg}}}),
        ),
        Flavor::SpLight => sp_json(
            Flavor::SpLight,
            status,
            &json!({"odata.error": {"code": err.sp_code(), "message": {"lang": "en-US", "value": msg}}}),
        ),
        Flavor::OAuth => json_resp(
            status,
            &json!({"error": "invalid_request", "error_description": msg}),
        ),
    };
    let h = resp.headers_mut();
    match err {
        SimError::Throttled { retry_after, limit } => {
            h.insert("retry-after", HeaderValue::from(*retry_after));
            h.insert("ratelimit-limit", HeaderValue::from(*limit));
            h.insert("ratelimit-remaining", HeaderValue::from(0u64));
            h.insert("ratelimit-reset", HeaderValue::from(*retry_after));
        }
        SimError::Unavailable { retry_after } => {
            h.insert("retry-after", HeaderValue::from(*retry_after));
        }
        SimError::Unauthenticated(_) => {
            let v = if matches!(ctx.flavor, Flavor::SpVerbose | Flavor::SpLight) {
                "Bearer realm=\"\", Basic realm=\"ferry-sim\""
            } else {
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\""
            };
            h.insert("www-authenticate", HeaderValue::from_static(v));
        }
        _ => {}
    }
    resp
}

impl Sim {
    /// Draw the next fault decision.
    pub fn fault(&self) -> Option<SimError> {
        let f = self
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .faults
            .clone();
        if f.error_503_share <= 0.0 && f.error_500_share <= 0.0 {
            return None;
        }
        let n = self.fault_draws.fetch_add(1, Ordering::Relaxed);
        let u = unit_f64(splitmix(self.cfg.seed ^ splitmix(n)));
        if u < f.error_503_share {
            Some(SimError::Unavailable {
                retry_after: f.retry_after_secs.max(1),
            })
        } else if u < f.error_503_share + f.error_500_share {
            Some(SimError::InjectedInternal)
        } else {
            None
        }
    }

    /// Injected latency.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(
            self.settings
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .faults
                .latency_ms,
        )
    }

    /// Charge `cost` resource units to `app`; returns remaining budget when throttling is on.
    pub fn charge(&self, app: &str, cost: u64) -> SimResult<Option<(u64, u64, u64)>> {
        let t = self
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .throttle
            .clone();
        let Some(limit) = t.ru_per_minute else {
            return Ok(None);
        };
        let window = Duration::from_secs(if t.window_secs == 0 {
            60
        } else {
            t.window_secs
        });
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let e = w.entry(app.to_owned()).or_insert(Window {
            start: now,
            used: 0,
        });
        if now.duration_since(e.start) >= window {
            *e = Window {
                start: now,
                used: 0,
            };
        }
        let reset = window
            .saturating_sub(now.duration_since(e.start))
            .as_secs_f64()
            .ceil()
            .max(1.0) as u64;
        if e.used + cost > limit {
            self.counters.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(SimError::Throttled {
                retry_after: reset,
                limit,
            });
        }
        e.used += cost;
        Ok(Some((limit, limit - e.used, reset)))
    }

    /// Authenticate a request from its headers.
    pub fn authenticate(&self, headers: &HeaderMap) -> SimResult<Principal> {
        let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            return Err(SimError::Unauthenticated("Access token is empty.".into()));
        };
        if let Some(tok) = strip_prefix_ci(auth, "bearer ") {
            let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            return match tokens.get(tok.trim()) {
                Some(t) if t.expires > Instant::now() => Ok(Principal {
                    app: t.client_id.clone(),
                    user: t.user.clone(),
                    basic: false,
                }),
                Some(_) => Err(SimError::Unauthenticated(
                    "Lifetime validation failed, the token is expired.".into(),
                )),
                None => Err(SimError::Unauthenticated("Invalid access token.".into())),
            };
        }
        if let Some(b) = strip_prefix_ci(auth, "basic ") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|v| String::from_utf8(v).ok())
                .ok_or_else(|| SimError::Unauthenticated("Malformed Basic credentials.".into()))?;
            let (user, pass) = raw
                .split_once(':')
                .ok_or_else(|| SimError::Unauthenticated("Malformed Basic credentials.".into()))?;
            let user = user.rsplit('\\').next().unwrap_or(user);
            if self
                .cfg
                .users
                .iter()
                .any(|u| u.upn.eq_ignore_ascii_case(user) && u.password == pass)
            {
                return Ok(Principal {
                    app: format!("user:{}", user.to_lowercase()),
                    user: Some(user.to_owned()),
                    basic: true,
                });
            }
            return Err(SimError::Unauthenticated(
                "Access denied. Wrong user name or password.".into(),
            ));
        }
        Err(SimError::Unauthenticated(
            "Unsupported authorization scheme.".into(),
        ))
    }

    /// Display name for a user.
    pub fn display_name(&self, upn: &str) -> String {
        self.cfg
            .users
            .iter()
            .find(|u| u.upn.eq_ignore_ascii_case(upn))
            .and_then(|u| u.display_name.clone())
            .unwrap_or_else(|| upn.to_owned())
    }
}

/// Case-insensitive prefix strip.
pub fn strip_prefix_ci<'a>(s: &'a str, p: &str) -> Option<&'a str> {
    (s.len() >= p.len() && s.is_char_boundary(p.len()) && s[..p.len()].eq_ignore_ascii_case(p))
        .then(|| &s[p.len()..])
}

/// SplitMix64 step.
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit_f64(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Entry point for every request.
pub async fn dispatch(sim: Arc<Sim>, req: Request<Body>) -> Response {
    sim.counters.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let raw_path = parts.uri.path().to_owned();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let accept = parts
        .headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut ctx = Ctx {
        method: parts.method.clone(),
        query,
        headers: parts.headers,
        request_id: Uuid::new_v4().to_string(),
        flavor: Flavor::Graph,
        principal: None,
    };
    let path = match decode_path(&raw_path) {
        Ok(p) => p,
        Err(e) => return finish(&ctx, Err(e)),
    };
    let lower = path.to_ascii_lowercase();
    // The query string is never logged: it may carry `tempauth` tokens.
    tracing::debug!(message = "Request received.", method = %ctx.method, path = %path);

    // Admin, identity and pre-authorised URLs: no Authorization, no throttle.
    if lower.starts_with("/_sim/") || lower == "/_sim" {
        ctx.flavor = Flavor::Admin;
        let r = crate::admin::handle(&sim, &ctx, &path, body).await;
        return finish(&ctx, r);
    }
    if crate::identity::is_identity(&lower) {
        return crate::identity::handle(&sim, &mut ctx, &path, body).await;
    }
    let transfer = lower == "/_layouts/15/download.aspx" || lower == "/_api/v2.0/uploadsession";
    if transfer {
        // Pre-authorised URLs: never throttled; faults only when `faults.transfer_urls`.
        let inject = sim
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .faults
            .transfer_urls;
        if inject {
            if let Some(e) = sim.fault() {
                sim.counters.faults.fetch_add(1, Ordering::Relaxed);
                drain(body).await;
                return finish(&ctx, Err(e));
            }
        }
        let r = if lower == "/_layouts/15/download.aspx" {
            crate::graph::predownload(&sim, &ctx).await
        } else {
            crate::upload::fragment_route(&sim, &ctx, body).await
        };
        return finish(&ctx, r);
    }

    // API families.
    let (family, prefix, rest) = if let Some(r) = strip_prefix_ci(&path, "/v1.0") {
        (Flavor::Graph, String::new(), r.to_owned())
    } else if let Some(i) = lower.find("/_api/v2.0") {
        (
            Flavor::Graph,
            format!("v2:{}", &path[..i]),
            path[i + "/_api/v2.0".len()..].to_owned(),
        )
    } else if let Some(i) = lower
        .find("/_api/")
        .or_else(|| lower.ends_with("/_api").then(|| lower.len() - 5))
    {
        let f = if accept.contains("odata=verbose") || accept.is_empty() || accept == "*/*" {
            Flavor::SpVerbose
        } else {
            Flavor::SpLight
        };
        (
            f,
            path[..i].to_owned(),
            path[(i + 5).min(path.len())..].to_owned(),
        )
    } else {
        return finish(
            &ctx,
            Err(SimError::NotFound(format!("No endpoint at '{path}'."))),
        );
    };
    ctx.flavor = family;

    let lat = sim.latency();
    if !lat.is_zero() {
        tokio::time::sleep(lat).await;
    }
    if let Some(e) = sim.fault() {
        sim.counters.faults.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(message = "Injected fault.", status = e.status());
        drain(body).await;
        return finish(&ctx, Err(e));
    }
    let principal = match sim.authenticate(&ctx.headers) {
        Ok(p) => p,
        Err(e) => {
            drain(body).await;
            return finish(&ctx, Err(e));
        }
    };
    ctx.principal = Some(principal.clone());
    let cost = cost_of(&ctx.method, &lower);
    let rl = match sim.charge(&principal.app, cost) {
        Ok(rl) => rl,
        Err(e) => {
            tracing::debug!(message = "Throttled request.", app = %principal.app);
            drain(body).await;
            return finish(&ctx, Err(e));
        }
    };
    let r = if family == Flavor::Graph {
        crate::graph::handle(&sim, &ctx, &prefix, &rest, body).await
    } else {
        crate::sprest::handle(&sim, &ctx, &prefix, &rest, body).await
    };
    let mut resp = finish(&ctx, r);
    if let Some((limit, remaining, reset)) = rl {
        if remaining * 5 <= limit || resp.status() == StatusCode::TOO_MANY_REQUESTS {
            let h = resp.headers_mut();
            h.insert("ratelimit-limit", HeaderValue::from(limit));
            h.insert("ratelimit-remaining", HeaderValue::from(remaining));
            h.insert("ratelimit-reset", HeaderValue::from(reset));
        }
    }
    resp
}

/// Read and discard up to 64 MiB of an unread request body so the client sees the
/// error response instead of a reset connection.
pub async fn drain(body: Body) {
    use futures_util::StreamExt;
    let mut s = body.into_data_stream();
    let mut n = 0usize;
    while let Some(Ok(c)) = s.next().await {
        n += c.len();
        if n > 64 * 1024 * 1024 {
            break;
        }
    }
}

/// Resource-unit cost of a request (Graph's model).
pub fn cost_of(method: &Method, lower_path: &str) -> u64 {
    if lower_path.contains("/permissions") || lower_path.contains("roleassignments") {
        return 5;
    }
    if method == Method::GET {
        let multi = [
            "/children",
            "/delta",
            "/drives",
            "/items",
            "/webs",
            "/lists",
            "/files",
            "/folders",
            "/hubsites",
            "/sites",
        ]
        .iter()
        .any(|s| lower_path.ends_with(s));
        if multi {
            2
        } else {
            1
        }
    } else {
        2
    }
}

/// Turn a handler result into a response, adding `request-id`.
pub fn finish(ctx: &Ctx, r: SimResult<Response>) -> Response {
    let mut resp = match r {
        Ok(r) => r,
        Err(e) => {
            if matches!(e.disposition(), crate::error::Disposition::Fatal) {
                tracing::error!(message = "Request failed.", error = %e);
            }
            error_response(ctx, &e)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&ctx.request_id) {
        resp.headers_mut().insert("request-id", v);
    }
    if let Some(c) = ctx.headers.get("client-request-id") {
        resp.headers_mut().insert("client-request-id", c.clone());
    }
    resp
}

/// Read a (limited) body fully.
pub async fn read_body(sim: &Sim, body: Body) -> SimResult<bytes::Bytes> {
    axum::body::to_bytes(body, sim.cfg.max_json_bytes)
        .await
        .map_err(|_| SimError::TooLarge("The request body is too large.".into()))
}

/// Read a JSON body (empty = `{}`).
pub async fn read_json(sim: &Sim, body: Body) -> SimResult<Value> {
    let b = read_body(sim, body).await?;
    if b.iter().all(|c| c.is_ascii_whitespace()) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&b)
        .map_err(|e| SimError::InvalidRequest(format!("Malformed JSON body: {e}")))
}
