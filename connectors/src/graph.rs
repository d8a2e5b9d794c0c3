//! The SharePoint Online destination over Microsoft Graph (`/v1.0`) or SharePoint's
//! own `/_api/v2.0` drive API (same shapes).
//!
//! - Throttling and retries happen in one place (`crate::http`); an expired token
//!   (`401`) is renewed once per request.
//! - Uploads stream: small files (≤ [`GraphConfig::small_upload_limit`]) are buffered
//!   and sent with one `PUT …/content` followed by a `PATCH` of `fileSystemInfo`;
//!   larger ones go through an upload session in fragments of
//!   [`GraphConfig::fragment_size`], buffered one at a time. The quickXorHash is
//!   computed on the way and compared with what the service stored.
//! - [`GraphDestination::upload`] and [`GraphDestination::move_item`] create missing
//!   parent folders themselves (through [`GraphDestination::ensure_folder`], whose
//!   results are cached per drive for the life of the destination).
//! - [`GraphDestination::scan`] of a whole drive uses delta on the root: for 20,000
//!   items that is ~20 requests of up to 999 items (2 RU each), versus at least one
//!   `children` request per folder (plus paging) for a recursive listing. Paths are
//!   rebuilt from `parentReference.id` (SharePoint Online's delta omits
//!   `parentReference.path`). SharePoint Online supports delta only at the drive
//!   root, so a subtree scan (a chunk of a split library) lists `children` folder by
//!   folder, 8 folders at a time, and costs only what the subtree holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, SecondsFormat, Utc};
use ferry_proto::ItemKind;
use futures_util::StreamExt;
use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::auth::TokenSource;
use crate::http::{
    encode_path, encode_segment, read_json, redact_url, Failure, Http, HttpConfig, HttpStats,
    Replay,
};
use crate::{ByteStream, ConnectorError};

/// Upload fragments must be multiples of this (320 KiB), except the last one.
pub const FRAGMENT_MULTIPLE: u64 = 327_680;
/// Folders listed at once by a subtree scan.
const SCAN_PARALLELISM: usize = 8;
/// Properties a scan needs.
const SCAN_SELECT: &str = "id,name,size,file,folder,root,deleted,parentReference,fileSystemInfo,webUrl,createdDateTime,lastModifiedDateTime";
/// Upload fragments must be smaller than 60 MiB.
const MAX_FRAGMENT: u64 = 60 * 1024 * 1024;

/// Settings of the Graph destination.
#[derive(Clone, Debug)]
pub struct GraphConfig {
    /// `https://graph.microsoft.com/v1.0`, `https://{tenant}.sharepoint.com/_api/v2.0`
    /// or the emulator's `http://127.0.0.1:{port}/v1.0`.
    pub graph_base: String,
    /// Files up to this size go in one `PUT`; larger ones in an upload session.
    /// Default 4 MiB.
    pub small_upload_limit: u64,
    /// Upload-session fragment size; rounded down to a multiple of 327,680 bytes and
    /// kept under 60 MiB. Default 10 MiB (32 × 327,680). Memory per upload is one
    /// fragment.
    pub fragment_size: u64,
    /// Attempts per request (throttling waits included). Default 8.
    pub max_attempts: u32,
    /// Longest `Retry-After` honoured. Default 5 minutes.
    pub max_retry_after: Duration,
    /// First backoff delay after a server error without `Retry-After` (doubles per
    /// attempt, with jitter, up to 60 s). Default 500 ms.
    pub base_backoff: Duration,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            graph_base: "https://graph.microsoft.com/v1.0".to_owned(),
            small_upload_limit: 4 * 1024 * 1024,
            fragment_size: 32 * FRAGMENT_MULTIPLE,
            max_attempts: 8,
            max_retry_after: Duration::from_secs(300),
            base_backoff: Duration::from_millis(500),
        }
    }
}

/// A document library (drive) of a SharePoint Online site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveRef {
    /// Graph site id, `{hostname},{siteGuid},{webGuid}`.
    pub site_id: String,
    pub drive_id: String,
    /// Absolute site URL.
    pub site_url: String,
    /// The library's display name (drive `name`).
    pub library: String,
    /// Absolute URL of the library root (drive `webUrl`).
    pub web_url: String,
}

/// An item at the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestItem {
    pub id: String,
    /// Path relative to the drive root, `/`-separated, no leading `/` (`""` = root).
    pub rel_path: String,
    pub kind: ItemKind,
    pub size: u64,
    /// `fileSystemInfo` times (the ones Ferry sets from the source), falling back to
    /// the item's own.
    pub created: Option<DateTime<Utc>>,
    pub modified: Option<DateTime<Utc>>,
    /// Base64 quickXorHash (files).
    pub quick_xor_hash: Option<String>,
    pub web_url: String,
}

/// The SharePoint Online destination.
pub struct GraphDestination {
    http: Http,
    cfg: GraphConfig,
    base: String,
    tokens: Arc<dyn TokenSource>,
    /// Folders known to exist: `"{drive_id}\n{lower-case rel_path}"` → item.
    folders: Mutex<HashMap<String, DestItem>>,
}

impl std::fmt::Debug for GraphDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphDestination")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// What a request carries.
enum Payload {
    None,
    Json(Value),
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The `fileSystemInfo` object for the times given.
fn file_system_info(
    created: Option<DateTime<Utc>>,
    modified: Option<DateTime<Utc>>,
) -> serde_json::Map<String, Value> {
    let mut fsi = serde_json::Map::new();
    if let Some(c) = created {
        fsi.insert("createdDateTime".into(), json!(fmt_time(c)));
    }
    if let Some(m) = modified {
        fsi.insert("lastModifiedDateTime".into(), json!(fmt_time(m)));
    }
    fsi
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Splits `a/b/c` into (`a/b`, `c`).
fn split_parent(rel: &str) -> (&str, &str) {
    match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    }
}

/// Trims slashes and refuses empty, `.` and `..` segments.
fn clean_rel(rel: &str) -> Result<String, ConnectorError> {
    let t = rel.trim_matches('/');
    if t.is_empty() {
        return Ok(String::new());
    }
    if t.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(ConnectorError::Rejected {
            url: rel.to_owned(),
            status: 0,
            code: "invalidPath".to_owned(),
            message: "empty, '.' or '..' path segments are not allowed".to_owned(),
        });
    }
    Ok(t.to_owned())
}

/// The part of `parentReference.path` after `root:`, percent-decoded.
fn parent_rel_from_path(path: &str) -> Option<String> {
    let (_, after) = path.split_once("root:")?;
    let decoded = percent_encoding::percent_decode_str(after)
        .decode_utf8()
        .ok()?
        .into_owned();
    Some(decoded.trim_matches('/').to_owned())
}

fn join_rel(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// Builds a [`DestItem`]; `rel_path` as known by the caller, or from
/// `parentReference.path` + `name`.
fn dest_item(v: &Value, rel_path: Option<&str>) -> DestItem {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
    let is_root = v.get("root").is_some();
    let rel = match rel_path {
        Some(r) => r.to_owned(),
        None if is_root => String::new(),
        None => {
            let parent = v
                .pointer("/parentReference/path")
                .and_then(Value::as_str)
                .and_then(parent_rel_from_path)
                .unwrap_or_default();
            join_rel(&parent, s("name"))
        }
    };
    let kind = if v.get("folder").is_some() || is_root {
        ItemKind::Folder
    } else {
        ItemKind::File
    };
    let fsi = v.get("fileSystemInfo");
    DestItem {
        id: s("id").to_owned(),
        rel_path: rel,
        kind,
        size: v.get("size").and_then(Value::as_u64).unwrap_or(0),
        created: parse_time(fsi.and_then(|f| f.get("createdDateTime")))
            .or_else(|| parse_time(v.get("createdDateTime"))),
        modified: parse_time(fsi.and_then(|f| f.get("lastModifiedDateTime")))
            .or_else(|| parse_time(v.get("lastModifiedDateTime"))),
        quick_xor_hash: v
            .pointer("/file/hashes/quickXorHash")
            .and_then(Value::as_str)
            .map(str::to_owned),
        web_url: s("webUrl").to_owned(),
    }
}

fn qxh_b64(h: &mut quickxorhash::QuickXorHash) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Reads a whole (small) file, checking its size; returns it and its quickXorHash.
async fn buffer_all(
    rel: &str,
    size: u64,
    content: &mut ByteStream,
) -> Result<(Bytes, String), ConnectorError> {
    let mut buf = BytesMut::with_capacity(size as usize);
    let mut hasher = quickxorhash::QuickXorHash::new();
    while let Some(chunk) = content.next().await {
        let chunk = chunk.map_err(|e| ConnectorError::Io {
            location: rel.to_owned(),
            source: e,
        })?;
        if (buf.len() + chunk.len()) as u64 > size {
            return Err(size_changed(rel, size, (buf.len() + chunk.len()) as u64));
        }
        hasher.update(&chunk);
        buf.extend_from_slice(&chunk);
    }
    if buf.len() as u64 != size {
        return Err(size_changed(rel, size, buf.len() as u64));
    }
    Ok((buf.freeze(), qxh_b64(&mut hasher)))
}

fn size_changed(rel: &str, expected: u64, got: u64) -> ConnectorError {
    ConnectorError::Io {
        location: rel.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "the file changed size while it was copied (expected {expected} bytes, read {got} or more)"
            ),
        ),
    }
}

/// First start of `nextExpectedRanges` (`["26-"]`, `["26-99"]`).
fn next_expected(v: &Value) -> Option<u64> {
    v.get("nextExpectedRanges")?
        .as_array()?
        .iter()
        .filter_map(|r| r.as_str()?.split('-').next()?.trim().parse::<u64>().ok())
        .min()
}

impl GraphDestination {
    /// A destination talking to `cfg.graph_base` with tokens from `tokens`.
    pub fn new(cfg: GraphConfig, tokens: Arc<dyn TokenSource>) -> Result<Self, ConnectorError> {
        let http = Http::new(HttpConfig {
            max_attempts: cfg.max_attempts,
            max_retry_after: cfg.max_retry_after,
            base_backoff: cfg.base_backoff,
            ..HttpConfig::default()
        })?;
        let mut cfg = cfg;
        let frag = (cfg.fragment_size / FRAGMENT_MULTIPLE).max(1) * FRAGMENT_MULTIPLE;
        let frag = frag.min((MAX_FRAGMENT - 1) / FRAGMENT_MULTIPLE * FRAGMENT_MULTIPLE);
        if frag != cfg.fragment_size {
            tracing::warn!(
                message =
                    "Upload fragment size adjusted to a multiple of 327,680 bytes under 60 MiB.",
                requested = cfg.fragment_size,
                used = frag
            );
            cfg.fragment_size = frag;
        }
        Ok(Self {
            http,
            base: cfg.graph_base.trim_end_matches('/').to_owned(),
            cfg,
            tokens,
            folders: Mutex::new(HashMap::new()),
        })
    }

    /// HTTP counters (throttling waits, retries, requests) for reports and metrics.
    pub fn stats(&self) -> Arc<HttpStats> {
        self.http.stats.clone()
    }

    /// The configuration in use (fragment size after rounding).
    pub fn config(&self) -> &GraphConfig {
        &self.cfg
    }

    /// Sends an authorised request; renews the token once on `401`.
    async fn call(
        &self,
        method: Method,
        url: &str,
        payload: Payload,
        replay: Replay,
    ) -> Result<Response, ConnectorError> {
        self.http
            .send_bearer(self.tokens.as_ref(), url, replay, || {
                let rb = self
                    .http
                    .client
                    .request(method.clone(), url)
                    .header("Accept", "application/json");
                match &payload {
                    Payload::None => rb,
                    Payload::Json(v) => rb.json(v),
                }
            })
            .await
    }

    /// GET a JSON document; `Ok(None)` on 404.
    async fn get_json_opt(&self, url: &str, what: &str) -> Result<Option<Value>, ConnectorError> {
        let resp = self
            .call(Method::GET, url, Payload::None, Replay::Safe)
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(Failure::read(url, resp).await.into_error(what));
        }
        read_json(url, resp).await.map(Some)
    }

    async fn get_json(&self, url: &str, what: &str) -> Result<Value, ConnectorError> {
        let resp = self
            .call(Method::GET, url, Payload::None, Replay::Safe)
            .await?;
        if !resp.status().is_success() {
            return Err(Failure::read(url, resp).await.into_error(what));
        }
        read_json(url, resp).await
    }

    /// Every page of a collection, following `@odata.nextLink`.
    async fn get_all(&self, first: &str, what: &str) -> Result<Vec<Value>, ConnectorError> {
        let mut out = Vec::new();
        let mut url = first.to_owned();
        loop {
            let mut v = self.get_json(&url, what).await?;
            if let Some(Value::Array(a)) = v.get_mut("value").map(Value::take) {
                out.extend(a);
            }
            match v.get("@odata.nextLink").and_then(Value::as_str) {
                Some(next) if next != url => url = next.to_owned(),
                _ => return Ok(out),
            }
        }
    }

    async fn site(&self, site_url: &str) -> Result<Value, ConnectorError> {
        let u = reqwest::Url::parse(site_url).map_err(|e| ConnectorError::NotFound {
            what: "The destination site".to_owned(),
            location: site_url.to_owned(),
            hint: format!("the site URL is not a valid URL ({e}); give e.g. https://contoso.sharepoint.com/sites/team"),
        })?;
        let host = u.host_str().unwrap_or_default();
        let path = u.path().trim_matches('/');
        let url = if path.is_empty() {
            format!("{}/sites/{host}", self.base)
        } else {
            format!("{}/sites/{host}:/{path}", self.base)
        };
        self.get_json_opt(&url, "The destination site")
            .await?
            .ok_or_else(|| ConnectorError::NotFound {
                what: "The destination site".to_owned(),
                location: site_url.to_owned(),
                hint: "check the site URL; modern sites are under /sites/ or /teams/, and the signed-in account or app must have access".to_owned(),
            })
    }

    /// Every document library of a site.
    pub async fn libraries(&self, site_url: &str) -> Result<Vec<DriveRef>, ConnectorError> {
        let site = self.site(site_url).await?;
        let site_id = site
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let site_web = site
            .get("webUrl")
            .and_then(Value::as_str)
            .unwrap_or(site_url)
            .to_owned();
        let url = format!("{}/sites/{}/drives", self.base, site_id);
        let drives = self.get_all(&url, "The site's libraries").await?;
        Ok(drives
            .iter()
            .map(|d| DriveRef {
                site_id: site_id.clone(),
                drive_id: d
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                site_url: site_web.clone(),
                library: d
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                web_url: d
                    .get("webUrl")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect())
    }

    /// The library named `library` (display name, or the last segment of its URL:
    /// "Documents" and "Shared Documents" both find the default library).
    pub async fn resolve_library(
        &self,
        site_url: &str,
        library: &str,
    ) -> Result<DriveRef, ConnectorError> {
        let libs = self.libraries(site_url).await?;
        let want = percent_encoding::percent_decode_str(library.trim_matches('/'))
            .decode_utf8_lossy()
            .into_owned();
        let want_last = want.rsplit('/').next().unwrap_or(&want).to_owned();
        let url_name = |d: &DriveRef| {
            let last = d
                .web_url
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("");
            percent_encoding::percent_decode_str(last)
                .decode_utf8_lossy()
                .into_owned()
        };
        if let Some(d) = libs
            .iter()
            .find(|d| d.library.eq_ignore_ascii_case(&want))
            .or_else(|| {
                libs.iter()
                    .find(|d| url_name(d).eq_ignore_ascii_case(&want_last))
            })
        {
            return Ok(d.clone());
        }
        let names: Vec<String> = libs
            .iter()
            .map(|d| format!("{} ({})", d.library, url_name(d)))
            .collect();
        Err(ConnectorError::NotFound {
            what: format!("The library '{library}'"),
            location: site_url.to_owned(),
            hint: if names.is_empty() {
                "the site has no document libraries".to_owned()
            } else {
                format!("the site's libraries are: {}", names.join(", "))
            },
        })
    }

    fn drive_url(&self, drive: &DriveRef) -> String {
        format!("{}/drives/{}", self.base, drive.drive_id)
    }

    fn path_url(&self, drive: &DriveRef, rel: &str) -> String {
        if rel.is_empty() {
            format!("{}/root", self.drive_url(drive))
        } else {
            format!("{}/root:/{}", self.drive_url(drive), encode_path(rel))
        }
    }

    /// Every item under `subtree` (`""` = the whole drive; the subtree folder itself is
    /// not included), sorted by path.
    pub async fn scan(
        &self,
        drive: &DriveRef,
        subtree: &str,
    ) -> Result<Vec<DestItem>, ConnectorError> {
        let subtree = clean_rel(subtree)?;
        if subtree.is_empty() {
            self.scan_delta(drive).await
        } else {
            self.scan_children(drive, &subtree).await
        }
    }

    /// A subtree, by listing `children` folder by folder, up to `SCAN_PARALLELISM`
    /// folders at a time. A missing subtree has no items.
    async fn scan_children(
        &self,
        drive: &DriveRef,
        subtree: &str,
    ) -> Result<Vec<DestItem>, ConnectorError> {
        let Some(top) = self.item_by_path(drive, subtree).await? else {
            return Ok(Vec::new());
        };
        if top.kind != ItemKind::Folder {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut pending = vec![(top.id.clone(), top.rel_path.clone())];
        let mut running = futures_util::stream::FuturesUnordered::new();
        loop {
            while running.len() < SCAN_PARALLELISM {
                let Some((id, rel)) = pending.pop() else {
                    break;
                };
                running.push(async move {
                    let url = format!(
                        "{}/items/{}/children?$top=999&$select={SCAN_SELECT}",
                        self.drive_url(drive),
                        encode_segment(&id)
                    );
                    self.get_all(&url, "The folder").await.map(|v| (rel, v))
                });
            }
            let Some(done) = running.next().await else {
                break;
            };
            let (parent_rel, children) = match done {
                Ok(r) => r,
                // A folder deleted while we scan simply has no items.
                Err(ConnectorError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            for c in &children {
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                let item = dest_item(c, Some(&join_rel(&parent_rel, name)));
                if item.kind == ItemKind::Folder {
                    pending.push((item.id.clone(), item.rel_path.clone()));
                }
                out.push(item);
            }
        }
        out.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        Ok(out)
    }

    /// The whole drive, by delta from the root.
    async fn scan_delta(&self, drive: &DriveRef) -> Result<Vec<DestItem>, ConnectorError> {
        let subtree = String::new();
        let first = format!(
            "{}/root/delta?$top=999&$select={SCAN_SELECT}",
            self.drive_url(drive)
        );
        let mut resynced = false;
        let values = loop {
            let mut out: Vec<Value> = Vec::new();
            let mut url = first.clone();
            let mut gone = false;
            loop {
                let resp = self
                    .call(Method::GET, &url, Payload::None, Replay::Safe)
                    .await?;
                if resp.status() == reqwest::StatusCode::GONE {
                    gone = true;
                    break;
                }
                if !resp.status().is_success() {
                    return Err(Failure::read(&url, resp).await.into_error("The library"));
                }
                let mut v = read_json(&url, resp).await?;
                if let Some(Value::Array(a)) = v.get_mut("value").map(Value::take) {
                    out.extend(a);
                }
                match v.get("@odata.nextLink").and_then(Value::as_str) {
                    Some(n) if n != url => url = n.to_owned(),
                    _ => break,
                }
            }
            if !gone {
                break out;
            }
            if resynced {
                return Err(ConnectorError::Protocol {
                    url: redact_url(&first),
                    message: "delta asked for a resync twice in a row".to_owned(),
                });
            }
            resynced = true;
        };
        // id → (name, parent id, value); a later entry for the same id wins.
        let mut by_id: HashMap<String, &Value> = HashMap::new();
        let mut root_id = None;
        for v in &values {
            let Some(id) = v.get("id").and_then(Value::as_str) else {
                continue;
            };
            if v.get("root").is_some() {
                root_id = Some(id.to_owned());
            }
            by_id.insert(id.to_owned(), v);
        }
        let mut paths: HashMap<String, Option<String>> = HashMap::new();
        if let Some(r) = &root_id {
            paths.insert(r.clone(), Some(String::new()));
        }
        let mut out = Vec::new();
        let ids: Vec<String> = by_id.keys().cloned().collect();
        for id in ids {
            let v = by_id[&id];
            if v.get("deleted").is_some() || Some(&id) == root_id.as_ref() {
                continue;
            }
            let Some(rel) = resolve_path(&id, &by_id, &mut paths) else {
                continue;
            };
            let inside = subtree.is_empty()
                || (rel.len() > subtree.len()
                    && rel.as_bytes()[subtree.len()] == b'/'
                    && rel
                        .get(..subtree.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(&subtree)));
            if inside {
                out.push(dest_item(v, Some(&rel)));
            }
        }
        out.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        Ok(out)
    }

    /// The item at `rel_path` (`""` = the root), if any.
    pub async fn item_by_path(
        &self,
        drive: &DriveRef,
        rel_path: &str,
    ) -> Result<Option<DestItem>, ConnectorError> {
        let rel = clean_rel(rel_path)?;
        let url = self.path_url(drive, &rel);
        Ok(self
            .get_json_opt(&url, "The item")
            .await?
            .map(|v| dest_item(&v, Some(&rel))))
    }

    /// The item with this id, if any.
    pub async fn item_by_id(
        &self,
        drive: &DriveRef,
        id: &str,
    ) -> Result<Option<DestItem>, ConnectorError> {
        let url = format!("{}/items/{}", self.drive_url(drive), encode_segment(id));
        Ok(self
            .get_json_opt(&url, "The item")
            .await?
            .map(|v| dest_item(&v, None)))
    }

    fn cache_key(drive: &DriveRef, rel: &str) -> String {
        format!("{}\n{}", drive.drive_id, rel.to_lowercase())
    }

    /// The folder at `rel_path`, created with any missing parents. Idempotent and safe
    /// to call concurrently for the same folder (a lost creation race is answered
    /// with the winner's folder).
    pub async fn ensure_folder(
        &self,
        drive: &DriveRef,
        rel_path: &str,
    ) -> Result<DestItem, ConnectorError> {
        let rel = clean_rel(rel_path)?;
        if let Some(hit) = self.cached_folder(drive, &rel) {
            return Ok(hit);
        }
        // Fast path: the whole folder exists.
        if let Some(it) = self.item_by_path(drive, &rel).await? {
            return self.remember_folder(drive, &rel, it);
        }
        let segs: Vec<&str> = rel.split('/').collect();
        let mut parent = match self.cached_folder(drive, "") {
            Some(r) => r,
            None => {
                let root = self.item_by_path(drive, "").await?.ok_or_else(|| {
                    ConnectorError::NotFound {
                        what: "The library root".to_owned(),
                        location: drive.web_url.clone(),
                        hint: "the library was deleted".to_owned(),
                    }
                })?;
                self.remember_folder(drive, "", root)?
            }
        };
        let mut known_missing = false;
        for i in 1..=segs.len() {
            let prefix = segs[..i].join("/");
            if let Some(hit) = self.cached_folder(drive, &prefix) {
                parent = hit;
                continue;
            }
            let existing = if known_missing || i == segs.len() {
                None
            } else {
                self.item_by_path(drive, &prefix).await?
            };
            let item = match existing {
                Some(it) => it,
                None => {
                    known_missing = true;
                    self.create_folder(drive, &parent, segs[i - 1], &prefix)
                        .await?
                }
            };
            parent = self.remember_folder(drive, &prefix, item)?;
        }
        Ok(parent)
    }

    fn cached_folder(&self, drive: &DriveRef, rel: &str) -> Option<DestItem> {
        self.folders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&Self::cache_key(drive, rel))
            .cloned()
    }

    fn remember_folder(
        &self,
        drive: &DriveRef,
        rel: &str,
        item: DestItem,
    ) -> Result<DestItem, ConnectorError> {
        if item.kind != ItemKind::Folder {
            return Err(ConnectorError::Rejected {
                url: item.web_url,
                status: 409,
                code: "nameAlreadyExists".to_owned(),
                message: format!("'{rel}' is a file, so it cannot be used as a folder"),
            });
        }
        self.folders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Self::cache_key(drive, rel), item.clone());
        Ok(item)
    }

    fn forget_folders(&self, drive: &DriveRef) {
        let prefix = format!("{}\n", drive.drive_id);
        self.folders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| !k.starts_with(&prefix));
    }

    async fn create_folder(
        &self,
        drive: &DriveRef,
        parent: &DestItem,
        name: &str,
        rel: &str,
    ) -> Result<DestItem, ConnectorError> {
        let url = format!(
            "{}/items/{}/children",
            self.drive_url(drive),
            encode_segment(&parent.id)
        );
        let body = json!({"name": name, "folder": {}, "@microsoft.graph.conflictBehavior": "fail"});
        let resp = self
            .call(Method::POST, &url, Payload::Json(body), Replay::Safe)
            .await?;
        let status = resp.status();
        if status.is_success() {
            let v = read_json(&url, resp).await?;
            tracing::debug!(message = "Created a destination folder.", drive = %drive.library, path = %rel);
            return Ok(dest_item(&v, Some(rel)));
        }
        if status == reqwest::StatusCode::CONFLICT {
            // Someone (another worker, or our own retried request) created it first.
            drop(resp);
            return self
                .item_by_path(drive, rel)
                .await?
                .ok_or_else(|| ConnectorError::Protocol {
                    url: redact_url(&url),
                    message: format!("'{rel}' already exists but cannot be read"),
                });
        }
        Err(Failure::read(&url, resp)
            .await
            .into_error("The parent folder"))
    }

    /// Uploads one file to `rel_path` (replacing any file there), creating missing
    /// parent folders, preserving `created`/`modified`, verifying the quickXorHash.
    /// `size` must be the exact length of `content`; a file that grows or shrinks while
    /// it is read fails with `Io` and nothing partial is committed.
    pub async fn upload(
        &self,
        drive: &DriveRef,
        rel_path: &str,
        size: u64,
        content: ByteStream,
        created: Option<DateTime<Utc>>,
        modified: Option<DateTime<Utc>>,
    ) -> Result<DestItem, ConnectorError> {
        let rel = clean_rel(rel_path)?;
        if rel.is_empty() {
            return Err(ConnectorError::Rejected {
                url: drive.web_url.clone(),
                status: 0,
                code: "invalidPath".to_owned(),
                message: "an upload needs a file name".to_owned(),
            });
        }
        let (parent_rel, name) = split_parent(&rel);
        let small = size <= self.cfg.small_upload_limit || size == 0;
        let mut content = content;
        // Small files are read (and hashed) before anything is sent.
        let buffered = if small {
            Some(buffer_all(&rel, size, &mut content).await?)
        } else {
            None
        };
        // The parent comes from the folder cache; if it vanished meanwhile (404), it
        // is looked up (and created) again once.
        let mut second_try = false;
        let item = loop {
            let parent = self.ensure_folder(drive, parent_rel).await?;
            let base = format!(
                "{}/items/{}:/{}:",
                self.drive_url(drive),
                encode_segment(&parent.id),
                encode_segment(name)
            );
            let r = match &buffered {
                Some((body, sent)) => {
                    self.upload_small(&base, &rel, body, sent, created, modified)
                        .await
                }
                None => match self
                    .create_session(&base, name, size, created, modified)
                    .await
                {
                    Ok(upload_url) => {
                        self.upload_session(
                            &upload_url,
                            &base,
                            &rel,
                            size,
                            &mut content,
                            created,
                            modified,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                },
            };
            match r {
                Err(ConnectorError::NotFound { .. }) if !second_try => {
                    second_try = true;
                    tracing::info!(message = "The destination folder vanished; creating it again.", path = %parent_rel);
                    self.forget_folders(drive);
                }
                r => break r?,
            }
        };
        tracing::debug!(message = "Uploaded a file.", drive = %drive.library, path = %rel, size);
        Ok(item)
    }

    async fn upload_small(
        &self,
        base: &str,
        rel: &str,
        body: &Bytes,
        sent: &str,
        created: Option<DateTime<Utc>>,
        modified: Option<DateTime<Utc>>,
    ) -> Result<DestItem, ConnectorError> {
        let url = format!("{base}/content?@microsoft.graph.conflictBehavior=replace");
        let resp = self
            .http
            .send_bearer(self.tokens.as_ref(), &url, Replay::Safe, || {
                self.http
                    .client
                    .put(&url)
                    .header("Content-Type", "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(Failure::read(&url, resp)
                .await
                .into_error("The parent folder"));
        }
        let v = read_json(&url, resp).await?;
        let mut item = dest_item(&v, Some(rel));
        check_hash(rel, sent, &item)?;
        if created.is_some() || modified.is_some() {
            let patched = self
                .set_times(&item.id, base, rel, created, modified)
                .await?;
            item.created = patched.created;
            item.modified = patched.modified;
        }
        Ok(item)
    }

    /// Sets an existing item's `fileSystemInfo` times (e.g. to repair a file
    /// whose upload finished before an interruption but whose times were not
    /// set yet).
    pub async fn set_file_times(
        &self,
        drive: &DriveRef,
        item_id: &str,
        rel_path: &str,
        created: Option<DateTime<Utc>>,
        modified: Option<DateTime<Utc>>,
    ) -> Result<DestItem, ConnectorError> {
        let base = self.drive_url(drive);
        self.set_times(item_id, &base, rel_path, created, modified)
            .await
    }

    async fn set_times(
        &self,
        item_id: &str,
        base: &str,
        rel: &str,
        created: Option<DateTime<Utc>>,
        modified: Option<DateTime<Utc>>,
    ) -> Result<DestItem, ConnectorError> {
        let drive_url = base.split("/items/").next().unwrap_or(base);
        let url = format!("{drive_url}/items/{}", encode_segment(item_id));
        let fsi = file_system_info(created, modified);
        let resp = self
            .call(
                Method::PATCH,
                &url,
                Payload::Json(json!({"fileSystemInfo": fsi})),
                Replay::Safe,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(Failure::read(&url, resp)
                .await
                .into_error("The uploaded file"));
        }
        let v = read_json(&url, resp).await?;
        Ok(dest_item(&v, Some(rel)))
    }

    /// Starts an upload session; returns its (pre-authorised) upload URL.
    async fn create_session(
        &self,
        base: &str,
        name: &str,
        size: u64,
        created: Option<DateTime<Utc>>,
        modified: Option<DateTime<Utc>>,
    ) -> Result<String, ConnectorError> {
        let fsi = file_system_info(created, modified);
        let mut item_props = json!({
            "@microsoft.graph.conflictBehavior": "replace",
            "name": name,
            "fileSize": size,
        });
        if !fsi.is_empty() {
            item_props["fileSystemInfo"] = Value::Object(fsi);
        }
        let url = format!("{base}/createUploadSession");
        let resp = self
            .call(
                Method::POST,
                &url,
                Payload::Json(json!({"item": item_props, "deferCommit": false})),
                Replay::Safe,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(Failure::read(&url, resp)
                .await
                .into_error("The parent folder"));
        }
        let v = read_json(&url, resp).await?;
        v.get("uploadUrl")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ConnectorError::Protocol {
                url: redact_url(&url),
                message: "createUploadSession answered without an uploadUrl".to_owned(),
            })
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_session(
        &self,
        upload_url: &str,
        base: &str,
        rel: &str,
        size: u64,
        content: &mut ByteStream,
        created: Option<DateTime<Utc>>,
        modified: Option<DateTime<Utc>>,
    ) -> Result<DestItem, ConnectorError> {
        let result = self.send_fragments(upload_url, rel, size, content).await;
        let (sent, final_item) = match result {
            Ok(r) => r,
            Err(e) => {
                self.cancel_session(upload_url).await;
                return Err(e);
            }
        };
        let mut item = dest_item(&final_item, Some(rel));
        check_hash(rel, &sent, &item)?;
        // createUploadSession carries fileSystemInfo; set it again only if the
        // service did not keep it.
        let same = |want: Option<DateTime<Utc>>, got: Option<DateTime<Utc>>| {
            want.is_none_or(|w| got.is_some_and(|g| (g - w).num_seconds().abs() < 1))
        };
        if !same(created, item.created) || !same(modified, item.modified) {
            let patched = self
                .set_times(&item.id, base, rel, created, modified)
                .await?;
            item.created = patched.created;
            item.modified = patched.modified;
        }
        Ok(item)
    }

    /// Sends the content in fragments; returns the hash sent and the final driveItem.
    async fn send_fragments(
        &self,
        upload_url: &str,
        rel: &str,
        size: u64,
        content: &mut ByteStream,
    ) -> Result<(String, Value), ConnectorError> {
        let frag = self.cfg.fragment_size;
        let mut hasher = quickxorhash::QuickXorHash::new();
        let mut carry: Option<Bytes> = None;
        let mut offset = 0u64;
        while offset < size {
            let want = frag.min(size - offset) as usize;
            let mut buf = BytesMut::with_capacity(want);
            while buf.len() < want {
                let chunk = match carry.take() {
                    Some(c) => c,
                    None => match content.next().await {
                        Some(Ok(c)) => c,
                        Some(Err(e)) => {
                            return Err(ConnectorError::Io {
                                location: rel.to_owned(),
                                source: e,
                            })
                        }
                        None => return Err(size_changed(rel, size, offset + buf.len() as u64)),
                    },
                };
                let take = (want - buf.len()).min(chunk.len());
                hasher.update(&chunk[..take]);
                buf.extend_from_slice(&chunk[..take]);
                if take < chunk.len() {
                    carry = Some(chunk.slice(take..));
                }
            }
            let last = offset + want as u64 == size;
            if last {
                // Refuse to commit a file that grew while it was read.
                let extra = match carry.take() {
                    Some(c) if !c.is_empty() => c.len(),
                    _ => loop {
                        match content.next().await {
                            Some(Ok(c)) if c.is_empty() => continue,
                            Some(Ok(c)) => break c.len(),
                            Some(Err(e)) => {
                                return Err(ConnectorError::Io {
                                    location: rel.to_owned(),
                                    source: e,
                                })
                            }
                            None => break 0,
                        }
                    },
                };
                if extra > 0 {
                    return Err(size_changed(rel, size, size + extra as u64));
                }
            }
            let fragment = buf.freeze();
            let mut from = 0usize;
            loop {
                let start = offset + from as u64;
                let end = offset + fragment.len() as u64 - 1;
                let part = fragment.slice(from..);
                let range = format!("bytes {start}-{end}/{size}");
                // Pre-authorised URL: no Authorization header.
                let resp = self
                    .http
                    .send(upload_url, Replay::Safe, || {
                        self.http
                            .client
                            .put(upload_url)
                            .header("Content-Range", range.clone())
                            .body(part.clone())
                    })
                    .await?;
                let status = resp.status().as_u16();
                let next = match status {
                    200 | 201 => {
                        if !last {
                            return Err(ConnectorError::Protocol {
                                url: redact_url(upload_url),
                                message: format!("the upload completed at byte {end} of {size}"),
                            });
                        }
                        let v = read_json(upload_url, resp).await?;
                        return Ok((qxh_b64(&mut hasher), v));
                    }
                    202 => {
                        let v = read_json(upload_url, resp).await?;
                        next_expected(&v)
                    }
                    416 => {
                        // Overlap: ask the session what it has.
                        drop(resp);
                        self.session_status(upload_url).await?
                    }
                    404 => {
                        return Err(ConnectorError::Transient {
                            url: redact_url(upload_url),
                            status,
                            attempts: 1,
                        })
                    }
                    _ => {
                        return Err(Failure::read(upload_url, resp)
                            .await
                            .into_error("The upload session"))
                    }
                };
                let frag_end = offset + fragment.len() as u64;
                match next {
                    Some(n) if n == frag_end => break,
                    Some(n) if n >= offset && n < frag_end => {
                        from = (n - offset) as usize;
                        tracing::debug!(message = "Upload session asked to resume inside a fragment.", next = n);
                    }
                    None if last => {
                        return Err(ConnectorError::Protocol {
                            url: redact_url(upload_url),
                            message: "the session accepted every byte but did not return the file".to_owned(),
                        })
                    }
                    other => {
                        return Err(ConnectorError::Protocol {
                            url: redact_url(upload_url),
                            message: format!(
                                "the session expects byte {other:?}, outside the fragment {offset}-{frag_end}"
                            ),
                        })
                    }
                }
            }
            offset += fragment.len() as u64;
        }
        Err(ConnectorError::Protocol {
            url: redact_url(upload_url),
            message: "the upload session never completed".to_owned(),
        })
    }

    async fn session_status(&self, upload_url: &str) -> Result<Option<u64>, ConnectorError> {
        let resp = self
            .http
            .send(upload_url, Replay::Safe, || {
                self.http.client.get(upload_url)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(Failure::read(upload_url, resp)
                .await
                .into_error("The upload session"));
        }
        let v = read_json(upload_url, resp).await?;
        Ok(next_expected(&v))
    }

    async fn cancel_session(&self, upload_url: &str) {
        let r = self
            .http
            .send(upload_url, Replay::Safe, || {
                self.http.client.delete(upload_url)
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(message = "Cannot cancel an upload session; it will expire.", error = %e);
        }
    }

    /// Renames and/or moves an item (matched by the source's GUID) to `new_rel_path`,
    /// creating missing parent folders. Fails with `Rejected` (409) if the name is
    /// taken.
    pub async fn move_item(
        &self,
        drive: &DriveRef,
        item_id: &str,
        new_rel_path: &str,
    ) -> Result<DestItem, ConnectorError> {
        let rel = clean_rel(new_rel_path)?;
        let (parent_rel, name) = split_parent(&rel);
        if name.is_empty() {
            return Err(ConnectorError::Rejected {
                url: drive.web_url.clone(),
                status: 0,
                code: "invalidPath".to_owned(),
                message: "the root cannot be moved".to_owned(),
            });
        }
        let parent = self.ensure_folder(drive, parent_rel).await?;
        let url = format!(
            "{}/items/{}",
            self.drive_url(drive),
            encode_segment(item_id)
        );
        let body = json!({"name": name, "parentReference": {"id": parent.id}});
        let resp = self
            .call(Method::PATCH, &url, Payload::Json(body), Replay::Safe)
            .await?;
        if !resp.status().is_success() {
            return Err(Failure::read(&url, resp)
                .await
                .into_error("The item to move"));
        }
        let v = read_json(&url, resp).await?;
        let item = dest_item(&v, Some(&rel));
        if item.kind == ItemKind::Folder {
            self.forget_folders(drive);
        }
        Ok(item)
    }
}

/// The path of `id`, from its parent chain (memoised); `None` if the chain is broken.
fn resolve_path(
    id: &str,
    by_id: &HashMap<String, &Value>,
    paths: &mut HashMap<String, Option<String>>,
) -> Option<String> {
    if let Some(p) = paths.get(id) {
        return p.clone();
    }
    // Walk up to a known ancestor, then fill in downwards.
    let mut chain: Vec<String> = Vec::new();
    let mut cur = id.to_owned();
    let base: Option<String> = loop {
        if let Some(p) = paths.get(&cur) {
            break p.clone();
        }
        if chain.len() > 10_000 || chain.contains(&cur) {
            break None;
        }
        let Some(v) = by_id.get(&cur) else {
            break None;
        };
        chain.push(cur.clone());
        match v.pointer("/parentReference/id").and_then(Value::as_str) {
            Some(p) => cur = p.to_owned(),
            None => {
                // No parent id: trust parentReference.path if present.
                let from_path = v
                    .pointer("/parentReference/path")
                    .and_then(Value::as_str)
                    .and_then(parent_rel_from_path);
                let last = chain.pop();
                if let (Some(last), Some(pp)) = (last, from_path) {
                    let name = by_id[&last]
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let full = join_rel(&pp, name);
                    paths.insert(last, Some(full.clone()));
                    break Some(full);
                }
                break None;
            }
        }
    };
    let mut acc = base;
    while let Some(c) = chain.pop() {
        acc = acc.map(|p| {
            let name = by_id[&c].get("name").and_then(Value::as_str).unwrap_or("");
            join_rel(&p, name)
        });
        paths.insert(c, acc.clone());
    }
    paths.get(id).cloned().flatten()
}

fn check_hash(rel: &str, sent: &str, item: &DestItem) -> Result<(), ConnectorError> {
    match &item.quick_xor_hash {
        Some(stored) if stored != sent => Err(ConnectorError::HashMismatch {
            location: if item.web_url.is_empty() {
                rel.to_owned()
            } else {
                item.web_url.clone()
            },
            sent: sent.to_owned(),
            stored: stored.clone(),
        }),
        Some(_) => Ok(()),
        None => {
            tracing::debug!(message = "The service returned no quickXorHash; not verified.", path = %rel);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_parent_chain() {
        let vals = [
            json!({"id":"r","root":{},"name":"root"}),
            json!({"id":"a","name":"A b","parentReference":{"id":"r"}}),
            json!({"id":"c","name":"c#.txt","parentReference":{"id":"a"}}),
            json!({"id":"x","name":"orphan","parentReference":{"id":"missing"}}),
            json!({"id":"p","name":"p.txt","parentReference":{"path":"/drives/d/root:/Q%20R"}}),
        ];
        let by_id: HashMap<String, &Value> = vals
            .iter()
            .map(|v| (v["id"].as_str().unwrap().to_owned(), v))
            .collect();
        let mut paths = HashMap::new();
        paths.insert("r".to_owned(), Some(String::new()));
        let mut get = |id: &str| resolve_path(id, &by_id, &mut paths);
        assert_eq!(get("c").as_deref(), Some("A b/c#.txt"));
        assert_eq!(get("a").as_deref(), Some("A b"));
        assert_eq!(get("x"), None);
        assert_eq!(get("p").as_deref(), Some("Q R/p.txt"));
    }

    #[test]
    fn hash_mismatch_is_reported() {
        let item = dest_item(
            &json!({"id":"1","name":"a","file":{"hashes":{"quickXorHash":"stored"}},"webUrl":"http://x/a"}),
            Some("a"),
        );
        assert!(check_hash("a", "stored", &item).is_ok());
        match check_hash("a", "sent", &item) {
            Err(ConnectorError::HashMismatch {
                sent,
                stored,
                location,
            }) => {
                assert_eq!(
                    (sent.as_str(), stored.as_str(), location.as_str()),
                    ("sent", "stored", "http://x/a")
                )
            }
            other => panic!("{other:?}"),
        }
        let no_hash = dest_item(&json!({"id":"1","name":"a","file":{}}), Some("a"));
        assert!(check_hash("a", "sent", &no_hash).is_ok());
    }

    #[test]
    fn expected_ranges() {
        assert_eq!(
            next_expected(&json!({"nextExpectedRanges":["26-"]})),
            Some(26)
        );
        assert_eq!(
            next_expected(&json!({"nextExpectedRanges":["7-9","3-5"]})),
            Some(3)
        );
        assert_eq!(next_expected(&json!({})), None);
    }
}
