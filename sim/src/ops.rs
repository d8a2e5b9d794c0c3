//! Mutations shared by the Graph and SharePoint REST surfaces.

use std::sync::atomic::Ordering;

use axum::body::Body;
use base64::Engine;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::error::{SimError, SimResult};
use crate::http::Sim;
use crate::store::{check_name, Item, State};

/// What to do when a name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conflict {
    /// 409 `nameAlreadyExists`.
    Fail,
    /// Overwrite the existing file.
    Replace,
    /// Pick a free name (`a 1.txt`).
    Rename,
}

impl Conflict {
    /// Parse `@microsoft.graph.conflictBehavior`.
    pub fn parse(s: Option<&str>, default: Conflict) -> SimResult<Conflict> {
        match s.map(str::to_ascii_lowercase).as_deref() {
            None | Some("") => Ok(default),
            Some("fail") => Ok(Conflict::Fail),
            Some("replace") => Ok(Conflict::Replace),
            Some("rename") => Ok(Conflict::Rename),
            Some(o) => Err(SimError::InvalidRequest(format!(
                "Invalid conflict behavior '{o}'."
            ))),
        }
    }
}

/// Content written to a blob.
#[derive(Debug, Clone)]
pub struct Written {
    /// Blob id (file name under `blobs/`).
    pub blob: Uuid,
    /// Bytes.
    pub size: u64,
    /// quickXorHash, base64.
    pub qxh: String,
}

/// Encode a finished quickXorHash.
pub fn qxh_b64(h: &mut quickxorhash::QuickXorHash) -> String {
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Stream a request body into a new blob, hashing on the way. Never buffers the whole body.
pub async fn write_blob(sim: &Sim, body: Body, limit: u64) -> SimResult<Written> {
    write_blob_sized(sim, body, limit, None).await
}

/// Like [`write_blob`]; a small body with a known length (≤ 1 MiB) is read into memory and
/// written + hashed in one blocking call (fewer thread hops per small file).
pub async fn write_blob_sized(
    sim: &Sim,
    body: Body,
    limit: u64,
    len: Option<u64>,
) -> SimResult<Written> {
    if let Some(n) = len.filter(|n| *n <= (1 << 20) && *n <= limit) {
        let data = axum::body::to_bytes(body, n as usize).await.map_err(|_| {
            SimError::InvalidRequest("The body does not match its Content-Length.".into())
        })?;
        let blob = Uuid::new_v4();
        let path = sim.store.blob_path(blob);
        let (size, qxh) = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
            let mut h = quickxorhash::QuickXorHash::new();
            h.update(&data);
            std::fs::write(&path, &data)?;
            Ok((data.len() as u64, qxh_b64(&mut h)))
        })
        .await
        .map_err(|e| SimError::Store(e.to_string()))??;
        sim.counters
            .uploaded_bytes
            .fetch_add(size, Ordering::Relaxed);
        return Ok(Written { blob, size, qxh });
    }
    let blob = Uuid::new_v4();
    let tmp = sim.store.uploads.join(format!("{}.tmp", blob.simple()));
    let res = async {
        let f = tokio::fs::File::create(&tmp).await?;
        let mut w = tokio::io::BufWriter::with_capacity(256 * 1024, f);
        let mut h = quickxorhash::QuickXorHash::new();
        let mut size = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| SimError::InvalidRequest(format!("Reading the body failed: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(SimError::TooLarge(
                    "The file is larger than allowed for this upload method.".into(),
                ));
            }
            h.update(&chunk);
            w.write_all(&chunk).await?;
        }
        w.flush().await?;
        drop(w.into_inner());
        Ok::<_, SimError>((size, qxh_b64(&mut h)))
    }
    .await;
    match res {
        Ok((size, qxh)) => {
            tokio::fs::rename(&tmp, sim.store.blob_path(blob)).await?;
            sim.counters
                .uploaded_bytes
                .fetch_add(size, Ordering::Relaxed);
            Ok(Written { blob, size, qxh })
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}

/// Remove blobs that are no longer referenced.
pub async fn drop_blobs(sim: &Sim, blobs: Vec<Uuid>) {
    for b in blobs {
        let _ = tokio::fs::remove_file(sim.store.blob_path(b)).await;
    }
}

/// Check the decoded server-relative path length limit (400 characters).
fn check_len(st: &State, parent: Uuid, name: &str) -> SimResult<()> {
    if st.item_url(parent).chars().count() + 1 + name.chars().count() >= 400 {
        return Err(SimError::InvalidRequest(
            "The decoded URL is 400 characters or longer.".into(),
        ));
    }
    Ok(())
}

fn live_folder(st: &State, id: Uuid) -> SimResult<&Item> {
    match st.items.get(&id) {
        Some(i) if !i.deleted && i.folder => Ok(i),
        Some(i) if !i.deleted => Err(SimError::InvalidRequest(
            "The parent is not a folder.".into(),
        )),
        _ => Err(SimError::NotFound(
            "The parent folder does not exist.".into(),
        )),
    }
}

/// File timestamps requested by the client.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct FsTimes {
    /// `createdDateTime`.
    pub created: Option<DateTime<Utc>>,
    /// `lastModifiedDateTime`.
    pub modified: Option<DateTime<Utc>>,
}

/// Create or replace a file from a written blob. Returns `(item, created)`.
#[allow(clippy::too_many_arguments)]
pub fn commit_file(
    sim: &Sim,
    parent: Uuid,
    name: &str,
    conflict: Conflict,
    replace_item: Option<Uuid>,
    w: &Written,
    times: FsTimes,
    author: &str,
) -> SimResult<(Uuid, bool, Option<Uuid>)> {
    let mut st = sim.store.write();
    let now = Utc::now();
    let target = if let Some(id) = replace_item {
        match st.items.get(&id) {
            Some(i) if !i.deleted && !i.folder => Some(id),
            Some(i) if !i.deleted => {
                return Err(SimError::InvalidRequest(
                    "The target item is a folder.".into(),
                ))
            }
            _ => return Err(SimError::NotFound("The item does not exist.".into())),
        }
    } else {
        check_name(name)?;
        live_folder(&st, parent)?;
        match st.child(parent, name) {
            Some(ex) => match conflict {
                Conflict::Fail => {
                    return Err(SimError::NameAlreadyExists(format!(
                        "The specified item name '{name}' already exists in the folder."
                    )))
                }
                Conflict::Replace if st.items[&ex].folder => {
                    return Err(SimError::NameAlreadyExists(format!(
                        "A folder named '{name}' already exists."
                    )))
                }
                Conflict::Replace => Some(ex),
                Conflict::Rename => None,
            },
            None => None,
        }
    };
    let (id, created, old_blob) = if let Some(id) = target {
        let mut it = st.items[&id].clone();
        let old = it.blob.replace(w.blob);
        it.size = w.size;
        it.qxh.clone_from(&w.qxh);
        it.version += 1;
        it.modified = times.modified.unwrap_or(now);
        if let Some(c) = times.created {
            it.created = c;
        }
        st.upsert_item(it);
        (id, false, old)
    } else {
        let name = if conflict == Conflict::Rename {
            st.free_name(parent, name)
        } else {
            name.to_owned()
        };
        check_len(&st, parent, &name)?;
        let list_id = st.items[&parent].list_id;
        let item_id = st.next_item_id(list_id);
        let id = Uuid::new_v4();
        st.upsert_item(Item {
            unique_id: id,
            list_id,
            item_id,
            parent: Some(parent),
            name,
            folder: false,
            size: w.size,
            created: times.created.unwrap_or(now),
            modified: times.modified.unwrap_or(now),
            blob: Some(w.blob),
            qxh: w.qxh.clone(),
            version: 1,
            meta_rev: 0,
            seq: 0,
            deleted: false,
            author: author.to_owned(),
        });
        (id, true, None)
    };
    sim.store.commit(&mut st);
    sim.counters.files_written.fetch_add(1, Ordering::Relaxed);
    Ok((id, created, old_blob))
}

/// Create a folder. Returns `(item, created)`; with `Replace` an existing folder is returned.
pub fn create_folder(
    sim: &Sim,
    parent: Uuid,
    name: &str,
    conflict: Conflict,
    author: &str,
) -> SimResult<(Uuid, bool)> {
    let mut st = sim.store.write();
    check_name(name)?;
    live_folder(&st, parent)?;
    let name = match st.child(parent, name) {
        Some(ex) => match conflict {
            Conflict::Fail => {
                return Err(SimError::NameAlreadyExists(format!(
                    "An item named '{name}' already exists."
                )))
            }
            Conflict::Replace if st.items[&ex].folder => return Ok((ex, false)),
            Conflict::Replace => {
                return Err(SimError::NameAlreadyExists(format!(
                    "A file named '{name}' already exists."
                )))
            }
            Conflict::Rename => st.free_name(parent, name),
        },
        None => name.to_owned(),
    };
    check_len(&st, parent, &name)?;
    let list_id = st.items[&parent].list_id;
    let item_id = st.next_item_id(list_id);
    let id = Uuid::new_v4();
    let now = Utc::now();
    st.upsert_item(Item {
        unique_id: id,
        list_id,
        item_id,
        parent: Some(parent),
        name,
        folder: true,
        size: 0,
        created: now,
        modified: now,
        blob: None,
        qxh: String::new(),
        version: 1,
        meta_rev: 0,
        seq: 0,
        deleted: false,
        author: author.to_owned(),
    });
    sim.store.commit(&mut st);
    Ok((id, true))
}

/// Walk/create folders along `segs` from `root`.
pub fn ensure_folders(sim: &Sim, root: Uuid, segs: &[String], author: &str) -> SimResult<Uuid> {
    let mut cur = root;
    for s in segs {
        let existing = sim.store.read().child(cur, s);
        cur = match existing {
            Some(id) => {
                if !sim.store.read().items[&id].folder {
                    return Err(SimError::InvalidRequest(format!(
                        "'{s}' is a file, not a folder."
                    )));
                }
                id
            }
            None => create_folder(sim, cur, s, Conflict::Replace, author)?.0,
        };
    }
    Ok(cur)
}

/// Rename/move/retime an item.
pub fn update_item(
    sim: &Sim,
    id: Uuid,
    new_name: Option<&str>,
    new_parent: Option<Uuid>,
    times: FsTimes,
    conflict: Conflict,
) -> SimResult<()> {
    let mut st = sim.store.write();
    let mut it = match st.items.get(&id) {
        Some(i) if !i.deleted => i.clone(),
        _ => {
            return Err(SimError::NotFound(
                "The resource could not be found.".into(),
            ))
        }
    };
    if it.parent.is_none() && (new_name.is_some() || new_parent.is_some()) {
        return Err(SimError::InvalidRequest(
            "The root folder cannot be renamed or moved.".into(),
        ));
    }
    let parent = new_parent.or(it.parent).unwrap_or(id);
    let mut name = new_name.map_or_else(|| it.name.clone(), str::to_owned);
    if new_name.is_some() || new_parent.is_some() {
        check_name(&name)?;
        let pf = live_folder(&st, parent)?;
        if pf.list_id != it.list_id {
            return Err(SimError::InvalidRequest(
                "Moving items between drives is not supported.".into(),
            ));
        }
        if it.folder && st.is_ancestor(id, parent) {
            return Err(SimError::InvalidRequest(
                "A folder cannot be moved into itself.".into(),
            ));
        }
        if let Some(ex) = st.child(parent, &name) {
            if ex != id {
                match conflict {
                    Conflict::Rename => name = st.free_name(parent, &name),
                    _ => {
                        return Err(SimError::NameAlreadyExists(format!(
                            "An item named '{name}' already exists in the destination."
                        )))
                    }
                }
            }
        }
        check_len(&st, parent, &name)?;
        it.name = name;
        it.parent = Some(parent);
    }
    if let Some(c) = times.created {
        it.created = c;
    }
    it.meta_rev += 1;
    it.modified = times
        .modified
        .unwrap_or(if new_name.is_some() || new_parent.is_some() {
            Utc::now()
        } else {
            it.modified
        });
    st.upsert_item(it);
    sim.store.commit(&mut st);
    Ok(())
}

/// Delete an item (tombstones it and its descendants).
pub async fn delete_item(sim: &Sim, id: Uuid) -> SimResult<()> {
    let blobs = {
        let mut st = sim.store.write();
        match st.items.get(&id) {
            Some(i) if !i.deleted && i.parent.is_some() => {}
            Some(i) if !i.deleted => {
                return Err(SimError::AccessDenied(
                    "The root folder cannot be deleted.".into(),
                ))
            }
            _ => {
                return Err(SimError::NotFound(
                    "The resource could not be found.".into(),
                ))
            }
        }
        let b = st.delete_tree(id);
        sim.store.commit(&mut st);
        b
    };
    drop_blobs(sim, blobs).await;
    Ok(())
}

/// Stream a blob (optionally a byte range) as a response body.
pub async fn stream_blob(
    sim: &Sim,
    item: &Item,
    range: Option<&str>,
    name_header: bool,
) -> SimResult<axum::response::Response> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let blob = item
        .blob
        .ok_or_else(|| SimError::NotFound("The item has no content.".into()))?;
    let mut f = tokio::fs::File::open(sim.store.blob_path(blob)).await?;
    let size = item.size;
    let (status, start, len) = match range.and_then(|r| parse_range(r, size)) {
        Some((a, b)) => (206u16, a, b - a + 1),
        None if range.is_some() && size > 0 => {
            return Ok(axum::response::Response::builder()
                .status(416)
                .header("content-range", format!("bytes */{size}"))
                .body(Body::empty())
                .unwrap_or_default())
        }
        None => (200, 0, size),
    };
    if start > 0 {
        f.seek(std::io::SeekFrom::Start(start)).await?;
    }
    sim.counters
        .downloaded_bytes
        .fetch_add(len, Ordering::Relaxed);
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), 256 * 1024);
    let mut b = axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/octet-stream")
        .header("content-length", len)
        .header("accept-ranges", "bytes")
        .header(
            "etag",
            format!(
                "\"{{{}}},{}\"",
                item.unique_id.to_string().to_uppercase(),
                item.etag_rev()
            ),
        );
    if status == 206 {
        b = b.header(
            "content-range",
            format!("bytes {}-{}/{}", start, start + len - 1, size),
        );
    }
    if name_header {
        b = b.header(
            "content-disposition",
            format!(
                "attachment; filename*=UTF-8''{}",
                crate::http::encode_q(&item.name)
            ),
        );
    }
    Ok(b.body(Body::from_stream(stream)).unwrap_or_default())
}

fn parse_range(r: &str, size: u64) -> Option<(u64, u64)> {
    let r = r.trim().strip_prefix("bytes=")?;
    if r.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = r.split_once('-')?;
    let (a, b) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (size.saturating_sub(n), size - 1)
    } else {
        let a: u64 = a.parse().ok()?;
        let b: u64 = if b.is_empty() {
            size - 1
        } else {
            b.parse::<u64>().ok()?.min(size - 1)
        };
        (a, b)
    };
    (a <= b && a < size).then_some((a, b))
}
