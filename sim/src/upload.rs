//! Graph resumable upload sessions (`createUploadSession` + fragment PUTs).
//!
//! The upload URL is pre-authorised: `{base}/_api/v2.0/uploadSession?guid='{id}'&tempauth={token}`.
//! Fragments must arrive in order; each is streamed to `uploads/{id}.part` while the
//! quickXorHash is updated, so nothing is buffered whole. Sessions live in memory only.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Method;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::error::{SimError, SimResult};
use crate::http::{empty, json_resp, random_token, Ctx, Sim};
use crate::ops::{commit_file, drop_blobs, qxh_b64, Conflict, FsTimes, Written};

/// Fragment sizes must be multiples of this (320 KiB), except the last one.
pub const FRAGMENT_MULTIPLE: u64 = 327_680;
/// Fragments must be smaller than this (60 MiB).
pub const MAX_FRAGMENT: u64 = 60 * 1024 * 1024;

/// One upload session.
pub struct UploadSession {
    /// Session id.
    pub id: String,
    /// Pre-authorisation token carried in the URL.
    pub token: String,
    /// Target folder.
    pub parent: Uuid,
    /// Target name.
    pub name: String,
    /// Existing file to replace (`items/{id}/createUploadSession`).
    pub replace_item: Option<Uuid>,
    /// Conflict behaviour at commit.
    pub conflict: Conflict,
    /// Requested timestamps.
    pub times: FsTimes,
    /// Declared total size (from `item.fileSize` or the first fragment).
    pub total: Option<u64>,
    /// Next expected byte.
    pub next: u64,
    /// Expiry (renewed on every fragment).
    pub expires: DateTime<Utc>,
    /// Wait for an explicit commit (POST to the upload URL).
    pub defer_commit: bool,
    /// Who created it.
    pub author: String,
    path: PathBuf,
    hasher: quickxorhash::QuickXorHash,
    /// API base used for driveItem links.
    pub api_base: String,
    /// Finished (no more fragments accepted).
    pub done: bool,
}

/// What survives a restart of an upload session (the bytes are in `uploads/{id}.part`;
/// the hash is rebuilt from them).
#[derive(serde::Serialize, serde::Deserialize)]
struct SessionRecord {
    id: String,
    token: String,
    parent: Uuid,
    name: String,
    replace_item: Option<Uuid>,
    conflict: Conflict,
    times: FsTimes,
    total: Option<u64>,
    next: u64,
    expires: DateTime<Utc>,
    defer_commit: bool,
    author: String,
    api_base: String,
}

impl UploadSession {
    fn record(&self) -> SessionRecord {
        SessionRecord {
            id: self.id.clone(),
            token: self.token.clone(),
            parent: self.parent,
            name: self.name.clone(),
            replace_item: self.replace_item,
            conflict: self.conflict,
            times: self.times,
            total: self.total,
            next: self.next,
            expires: self.expires,
            defer_commit: self.defer_commit,
            author: self.author.clone(),
            api_base: self.api_base.clone(),
        }
    }
}

fn persist(sim: &Sim, s: &UploadSession) {
    sim.store.put_record(
        format!("upload/{}", s.id),
        serde_json::to_vec(&s.record()).ok(),
    );
}

fn forget(sim: &Sim, id: &str) {
    sim.store.put_record(format!("upload/{id}"), None);
}

/// Restore the upload sessions persisted before a restart (re-hashing their bytes) and
/// remove leftovers (expired sessions, orphan part and temp files).
pub async fn restore(sim: &Arc<Sim>) {
    let records = std::mem::take(
        &mut *sim
            .store
            .upload_records
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    let mut keep = std::collections::HashSet::new();
    for raw in records {
        let Ok(r) = serde_json::from_slice::<SessionRecord>(&raw) else {
            continue;
        };
        let path = sim.store.uploads.join(format!("{}.part", r.id));
        let alive = r.expires > Utc::now()
            && (r.next == 0
                || tokio::fs::metadata(&path)
                    .await
                    .is_ok_and(|m| m.len() >= r.next));
        if !alive {
            forget(sim, &r.id);
            continue;
        }
        let mut s = UploadSession {
            id: r.id.clone(),
            token: r.token,
            parent: r.parent,
            name: r.name,
            replace_item: r.replace_item,
            conflict: r.conflict,
            times: r.times,
            total: r.total,
            next: r.next,
            expires: r.expires,
            defer_commit: r.defer_commit,
            author: r.author,
            path,
            hasher: quickxorhash::QuickXorHash::new(),
            api_base: r.api_base,
            done: false,
        };
        if s.next > 0 && rollback(&mut s, r.next).await.is_err() {
            forget(sim, &r.id);
            continue;
        }
        keep.insert(format!("{}.part", r.id));
        sim.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(r.id, Arc::new(tokio::sync::Mutex::new(s)));
    }
    if let Ok(mut rd) = tokio::fs::read_dir(&sim.store.uploads).await {
        while let Ok(Some(e)) = rd.next_entry().await {
            if !keep.contains(&e.file_name().to_string_lossy().into_owned()) {
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
    }
    let n = keep.len();
    if n > 0 {
        tracing::info!(message = "Upload sessions restored.", sessions = n);
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Create a session and answer with `{uploadUrl, expirationDateTime, nextExpectedRanges}`.
#[allow(clippy::too_many_arguments)]
pub fn create(
    sim: &Arc<Sim>,
    parent: Uuid,
    name: String,
    replace_item: Option<Uuid>,
    conflict: Conflict,
    times: FsTimes,
    total: Option<u64>,
    defer_commit: bool,
    author: String,
    api_base: String,
) -> SimResult<Response> {
    if let Some(t) = total {
        if t > sim.cfg.max_file_bytes {
            return Err(SimError::TooLarge(
                "The file exceeds the maximum file size.".into(),
            ));
        }
    }
    let id = Uuid::new_v4().simple().to_string();
    let token = random_token();
    let expires = Utc::now() + Duration::seconds(sim.cfg.upload_session_lifetime_secs as i64);
    let path = sim.store.uploads.join(format!("{id}.part"));
    let s = UploadSession {
        id: id.clone(),
        token: token.clone(),
        parent,
        name,
        replace_item,
        conflict,
        times,
        total,
        next: 0,
        expires,
        defer_commit,
        author,
        path,
        hasher: quickxorhash::QuickXorHash::new(),
        api_base,
        done: false,
    };
    persist(sim, &s);
    sim.uploads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(s)));
    let url = format!(
        "{}/_api/v2.0/uploadSession?guid='{id}'&tempauth={token}",
        sim.base_url
    );
    Ok(json_resp(
        200,
        &json!({
            "@odata.context": format!("{}/$metadata#microsoft.graph.uploadSession", sim.base_url),
            "uploadUrl": url,
            "expirationDateTime": fmt_time(expires),
            "nextExpectedRanges": ["0-"],
        }),
    ))
}

fn status_body(s: &UploadSession) -> serde_json::Value {
    let ranges = match s.total {
        Some(t) if s.next >= t => vec![],
        // Closed form `start-end` once the size is known (as SharePoint answers; the
        // Python Graph SDK's LargeFileUploadTask depends on it), open `start-` before.
        Some(t) => vec![format!("{}-{}", s.next, t - 1)],
        None => vec![format!("{}-", s.next)],
    };
    json!({"expirationDateTime": fmt_time(s.expires), "nextExpectedRanges": ranges})
}

/// Parse `bytes a-b/total`.
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let v = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = v.split_once('/')?;
    let total = if total.trim() == "*" {
        None
    } else {
        Some(total.trim().parse().ok()?)
    };
    let (a, b) = range.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b, total))
}

/// Handle GET/PUT/POST/DELETE on a pre-authorised upload URL.
pub async fn fragment_route(sim: &Arc<Sim>, ctx: &Ctx, body: Body) -> SimResult<Response> {
    // The upload URL is pre-authenticated: "If you include the Authorization header when
    // issuing the PUT call, it may result in an HTTP 401 Unauthorized response." The
    // emulator always refuses it (any method), so a client that leaks its bearer token
    // to the upload host is caught in tests.
    if ctx.header("authorization").is_some() {
        crate::http::drain(body).await;
        return Err(SimError::Unauthenticated(
            "The upload URL is pre-authenticated; do not send an Authorization header.".into(),
        ));
    }
    let id = ctx.q("guid").unwrap_or("").trim_matches('\'').to_owned();
    let token = ctx.q("tempauth").unwrap_or("");
    let sess = sim
        .uploads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .cloned();
    let Some(sess) = sess else {
        return Err(SimError::NotFound(
            "The upload session was not found or has expired.".into(),
        ));
    };
    let mut s = sess.lock().await;
    if !constant_eq(s.token.as_bytes(), token.as_bytes()) {
        return Err(SimError::Unauthenticated(
            "The upload URL token is not valid.".into(),
        ));
    }
    if s.expires < Utc::now() {
        drop(s);
        cancel(sim, &id).await;
        return Err(SimError::NotFound("The upload session has expired.".into()));
    }
    match ctx.method {
        Method::GET => Ok(json_resp(200, &status_body(&s))),
        Method::DELETE => {
            drop(s);
            cancel(sim, &id).await;
            Ok(empty(204))
        }
        Method::PUT => put_fragment(sim, ctx, &mut s, body).await,
        _ if ctx.method == Method::POST && !s.defer_commit => {
            crate::http::drain(body).await;
            Err(SimError::InvalidRequest(
                "The session does not defer its commit.".into(),
            ))
        }
        Method::POST if s.defer_commit => {
            let total = s.total.unwrap_or(0);
            if s.next != total {
                return Err(SimError::InvalidRequest(
                    "Not all bytes have been uploaded.".into(),
                ));
            }
            finish_upload(sim, &mut s).await
        }
        _ => Err(SimError::MethodNotAllowed),
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn cancel(sim: &Sim, id: &str) {
    let s = sim
        .uploads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
    forget(sim, id);
    if let Some(s) = s {
        let mut s = s.lock().await;
        s.done = true;
        let _ = tokio::fs::remove_file(&s.path).await;
    }
}

async fn put_fragment(
    sim: &Arc<Sim>,
    ctx: &Ctx,
    s: &mut UploadSession,
    body: Body,
) -> SimResult<Response> {
    let parts = match check_fragment(sim, ctx, s) {
        Ok(v) => v,
        Err(e) => {
            if !matches!(e, SimError::TooLarge(_)) {
                crate::http::drain(body).await;
            }
            return Err(e);
        }
    };
    write_fragment(sim, s, body, parts).await
}

fn check_fragment(
    sim: &Sim,
    ctx: &Ctx,
    s: &UploadSession,
) -> SimResult<(u64, u64, u64, u64, bool)> {
    if s.done {
        return Err(SimError::RangeNotSatisfiable(
            "The upload session is already complete.".into(),
        ));
    }
    let cr = ctx
        .header("content-range")
        .ok_or_else(|| SimError::InvalidRequest("The Content-Range header is missing.".into()))?;
    let (a, b, total) = parse_content_range(cr).ok_or_else(|| {
        SimError::InvalidRequest(format!("The Content-Range header '{cr}' is malformed."))
    })?;
    let total = total
        .or(s.total)
        .ok_or_else(|| SimError::InvalidRequest("The total size is unknown.".into()))?;
    if total > sim.cfg.max_file_bytes {
        return Err(SimError::TooLarge(
            "The file exceeds the maximum file size.".into(),
        ));
    }
    if let Some(t) = s.total {
        if t != total {
            return Err(SimError::InvalidRequest(format!(
                "The declared total size {total} does not match {t}."
            )));
        }
    }
    if b >= total {
        return Err(SimError::RangeNotSatisfiable(format!(
            "The range {a}-{b} is beyond the file size {total}."
        )));
    }
    if a != s.next {
        return Err(SimError::RangeNotSatisfiable(format!(
            "The uploaded fragment overlaps or skips data: expected offset {}, got {a}.",
            s.next
        )));
    }
    let len = b - a + 1;
    if let Some(cl) = ctx
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        if cl != len {
            return Err(SimError::InvalidRequest(format!(
                "Content-Length {cl} does not match the range length {len}."
            )));
        }
    }
    if len >= MAX_FRAGMENT {
        return Err(SimError::TooLarge(
            "The fragment must be smaller than 60 MiB.".into(),
        ));
    }
    let last = b + 1 == total;
    if sim.cfg.strict_fragment_multiple && !last && len % FRAGMENT_MULTIPLE != 0 {
        return Err(SimError::InvalidRequest(format!(
            "The fragment size {len} is not a multiple of 327680 bytes."
        )));
    }
    Ok((a, b, total, len, last))
}

async fn write_fragment(
    sim: &Arc<Sim>,
    s: &mut UploadSession,
    body: Body,
    (a, b, total, len, last): (u64, u64, u64, u64, bool),
) -> SimResult<Response> {
    use tokio::io::AsyncSeekExt;
    s.total = Some(total);
    // The part file is opened per fragment (no descriptor held between fragments).
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&s.path)
        .await?;
    f.set_len(a).await?;
    f.seek(std::io::SeekFrom::Start(a)).await?;
    let mut w = tokio::io::BufWriter::with_capacity(1 << 20, f);
    // Stream the fragment to the part file, hashing on the way.
    let mut got = 0u64;
    let mut stream = body.into_data_stream();
    let hasher = &mut s.hasher;
    let mut res: SimResult<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                SimError::InvalidRequest(format!("Reading the fragment failed: {e}"))
            })?;
            got += chunk.len() as u64;
            if got > len {
                return Err(SimError::InvalidRequest(
                    "The fragment is longer than its Content-Range.".into(),
                ));
            }
            w.write_all(&chunk).await?;
            hasher.update(&chunk);
        }
        w.flush().await?;
        Ok(())
    }
    .await;
    drop(w);
    if res.is_ok() && got != len {
        res = Err(SimError::InvalidRequest(format!(
            "The fragment has {got} bytes but its Content-Range says {len}."
        )));
    }
    if let Err(e) = res {
        // Roll back to the fragment start so the client can retry it: cut the part file
        // and re-hash the bytes before it (rare path; the normal path hashes while streaming).
        tracing::debug!(message = "Fragment failed; session rolled back.", offset = a, error = %e);
        rollback(s, a).await?;
        return Err(e);
    }
    sim.counters
        .uploaded_bytes
        .fetch_add(len, Ordering::Relaxed);
    s.next = b + 1;
    s.expires = Utc::now() + Duration::seconds(sim.cfg.upload_session_lifetime_secs as i64);
    persist(sim, s);
    if !last || s.defer_commit {
        return Ok(json_resp(202, &status_body(s)));
    }
    finish_upload(sim, s).await
}

/// Truncate the part file to `len` bytes and rebuild the hash of that prefix.
async fn rollback(s: &mut UploadSession, len: u64) -> SimResult<()> {
    let path = s.path.clone();
    let hasher =
        tokio::task::spawn_blocking(move || -> std::io::Result<quickxorhash::QuickXorHash> {
            use std::io::Read;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .read(true)
                .open(&path)?;
            f.set_len(len)?;
            let mut h = quickxorhash::QuickXorHash::new();
            let mut r = std::io::BufReader::with_capacity(1 << 20, f);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(h)
        })
        .await
        .map_err(|e| SimError::Store(e.to_string()))??;
    s.hasher = hasher;
    s.next = len;
    Ok(())
}

async fn finish_upload(sim: &Arc<Sim>, s: &mut UploadSession) -> SimResult<Response> {
    if let Ok(f) = tokio::fs::File::open(&s.path).await {
        f.sync_data().await.ok();
    }
    let blob = Uuid::new_v4();
    let w = Written {
        blob,
        size: s.next,
        qxh: qxh_b64(&mut s.hasher),
    };
    // The hasher is consumed; reset so a retried commit after a conflict re-hashes.
    tokio::fs::rename(&s.path, sim.store.blob_path(blob)).await?;
    let res = commit_file(
        sim,
        s.parent,
        &s.name,
        s.conflict,
        s.replace_item,
        &w,
        s.times,
        &s.author,
    );
    s.done = true;
    forget(sim, &s.id);
    sim.uploads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&s.id);
    match res {
        Ok((id, created, old)) => {
            if let Some(o) = old {
                drop_blobs(sim, vec![o]).await;
            }
            let st = sim.store.read();
            let v = crate::graph::item_json(sim, &st, id, &s.api_base);
            Ok(json_resp(if created { 201 } else { 200 }, &v))
        }
        Err(e) => {
            drop_blobs(sim, vec![blob]).await;
            Err(e)
        }
    }
}
