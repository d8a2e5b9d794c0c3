//! One chunk, start to finish.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ferry_connectors::graph::{DestItem, DriveRef};
use ferry_connectors::spserver::LibraryInfo;
use ferry_connectors::{ConnectorError, SourceEntry, WalkItem};
use ferry_proto::incremental::{
    decide, Action, Candidates, SourceFacts, SourceSystem, TargetFacts,
};
use ferry_proto::names::{self, NameDecision};
use ferry_proto::{
    Chunk, FailureCategory, ItemKind, ItemOutcome, JobSettings, Outcome, SkipReason, SourceLibrary,
};
use ferry_store::state::{ChunkRecord, ChunkState, GuidEntry, ItemRecord, StateStore};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::progress::Progress;
use crate::{WorkerContext, WorkerError};

/// What a finished chunk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkSummary {
    /// Items recorded by this execution (not counting those recorded by an
    /// earlier, interrupted one).
    pub items: u64,
    /// Bytes sent to the destination.
    pub bytes: u64,
}

/// Where the chunk's content comes from.
enum Origin {
    Share(Arc<ferry_connectors::fileshare::FileShareSource>),
    Sp {
        source: Arc<ferry_connectors::spserver::SpServerSource>,
        web_url: String,
    },
}

impl Origin {
    async fn open(
        &self,
        entry: &SourceEntry,
    ) -> Result<ferry_connectors::ByteStream, ConnectorError> {
        match self {
            Origin::Share(s) => s.open(&entry.rel_path).await,
            Origin::Sp { source, web_url } => {
                // `location` is the absolute URL; the connector wants the
                // server-relative one.
                let server_relative =
                    names::decode_path(&server_relative(&entry.location)).into_owned();
                source.open(web_url, &server_relative).await
            }
        }
    }
}

/// `https://host/sites/a/b.txt` → `/sites/a/b.txt`.
fn server_relative(url: &str) -> String {
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    match after_scheme.find('/') {
        Some(i) => after_scheme[i..].to_string(),
        None => "/".to_string(),
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

fn parent_and_name(rel: &str) -> (&str, &str) {
    match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    }
}

fn normalize_folder(path: Option<&str>) -> String {
    path.unwrap_or_default()
        .split(['/', '\\'])
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

/// The result of one spawned copy.
struct Copied {
    record: ItemRecord,
    guid: Option<(Uuid, GuidEntry)>,
}

/// Collects item records and commits them in batches, so a chunk of 20,000
/// small files costs tens of commits, not 20,000.
struct Recorder<'a, S> {
    store: &'a S,
    chunk: &'a Chunk,
    items: Vec<ItemRecord>,
    guids: Vec<(Uuid, GuidEntry)>,
    recorded: u64,
    bytes: u64,
}

impl<S: StateStore> Recorder<'_, S> {
    fn push(&mut self, record: ItemRecord, guid: Option<(Uuid, GuidEntry)>, progress: &Progress) {
        Progress::add(&progress.done_items, 1);
        Progress::add(&progress.done_bytes, record.outcome.size);
        Progress::add(&progress.sent_bytes, record.bytes_sent);
        match record.outcome.outcome {
            Outcome::Copied => Progress::add(&progress.copied, 1),
            Outcome::Skipped { .. } => Progress::add(&progress.skipped, 1),
            Outcome::Failed { .. } => Progress::add(&progress.failed, 1),
        }
        self.bytes += record.bytes_sent;
        self.recorded += 1;
        self.items.push(record);
        self.guids.extend(guid);
    }

    async fn flush(&mut self) -> Result<(), WorkerError> {
        // GUIDs first: a GUID entry without its item record is harmless (the
        // item is re-evaluated and found again); the reverse would lose it.
        if !self.guids.is_empty() {
            self.store.put_guids(self.chunk.job, &self.guids).await?;
            self.guids.clear();
        }
        if !self.items.is_empty() {
            self.store
                .record_items(
                    self.chunk.job,
                    self.chunk.round,
                    &self.chunk.id,
                    &self.items,
                )
                .await?;
            self.items.clear();
        }
        Ok(())
    }
}

/// Executes one chunk. Item problems become failed items; only what makes the
/// whole chunk pointless (sign-in, a missing library, a dead network after
/// retries) ends it with an error.
pub async fn execute_chunk<S: StateStore>(
    ctx: &WorkerContext<S>,
    chunk: &Chunk,
) -> Result<ChunkSummary, WorkerError> {
    ferry_proto::check_schema(chunk.schema_version, "chunk")
        .map_err(|e| WorkerError::Protocol(e.to_string()))?;
    let job = ctx
        .store
        .job(chunk.job)
        .await?
        .ok_or(WorkerError::UnknownJob(chunk.job))?;
    let plan = job
        .plan
        .as_ref()
        .ok_or(WorkerError::UnknownJob(chunk.job))?;
    let library = plan
        .libraries
        .get(chunk.library)
        .ok_or_else(|| WorkerError::UnknownLibrary {
            chunk: chunk.id.clone(),
            library: chunk.library,
        })?;
    let settings = &job.spec.settings;

    // Mark the chunk started; a chunk started before in this round is a resume.
    let earlier = ctx
        .store
        .chunks(chunk.job, chunk.round)
        .await?
        .into_iter()
        .find(|r| r.chunk.id == chunk.id);
    let resumed = earlier.as_ref().is_some_and(|r| r.starts > 0);
    let starts = earlier.map_or(0, |r| r.starts) + 1;
    ctx.store
        .put_chunk(
            chunk.round,
            &ChunkRecord {
                chunk: chunk.clone(),
                state: ChunkState::Running {
                    worker: ctx.name.clone(),
                    since: Utc::now(),
                },
                starts,
            },
        )
        .await?;

    // Source.
    let (origin, system, walk_subtree, strip) = match &library.source {
        SourceLibrary::FileShare { path } => {
            let share = ferry_connectors::fileshare::FileShareSource::new(path)?;
            (
                Origin::Share(Arc::new(share)),
                SourceSystem::FileShare,
                chunk.subtree.clone(),
                String::new(),
            )
        }
        SourceLibrary::SharePointServer {
            site_url,
            subfolder,
            ..
        } => {
            let source = ctx
                .sources
                .get(site_url)
                .await
                .ok_or_else(|| WorkerError::NoSource(site_url.clone()))?;
            let sub = normalize_folder(subfolder.as_deref());
            (
                Origin::Sp {
                    source,
                    web_url: site_url.clone(),
                },
                SourceSystem::SharePointServer,
                join(&sub, &chunk.subtree),
                sub,
            )
        }
    };

    // Destination: the library, the optional subfolder, and what is there now.
    let library_name = match (&library.destination.library, &library.source) {
        (Some(name), _) => name.clone(),
        (None, SourceLibrary::SharePointServer { title, .. }) => title.clone(),
        (None, SourceLibrary::FileShare { .. }) => "Documents".to_string(),
    };
    let drive = ctx
        .destination
        .resolve_library(&library.destination.site_url, &library_name)
        .await?;
    let prefix = normalize_folder(library.destination.subfolder.as_deref());
    let scan_root = join(&prefix, &chunk.subtree);
    let existing = if settings.scan_only {
        match ctx.destination.scan(&drive, &scan_root).await {
            Ok(items) => items,
            Err(ConnectorError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        }
    } else {
        if !scan_root.is_empty() {
            ctx.destination.ensure_folder(&drive, &scan_root).await?;
        }
        ctx.destination.scan(&drive, &scan_root).await?
    };
    let target = std::sync::Mutex::new(TargetIndex::new(existing));
    let finished = ctx
        .store
        .finished_keys(chunk.job, chunk.round, &chunk.id)
        .await?;
    let guids = match system {
        SourceSystem::SharePointServer => ctx.store.guids(chunk.job).await?,
        SourceSystem::FileShare => BTreeMap::new(),
    };
    // A resumed round needs to know what the destination held before this
    // round began: the previous round's records (source times by key).
    let before_round: Option<HashMap<String, Option<chrono::DateTime<Utc>>>> =
        match (resumed, chunk.round) {
            (true, r) if r > 0 => Some(
                ctx.store
                    .chunk_items(chunk.job, r - 1, &chunk.id)
                    .await?
                    .into_iter()
                    .filter(|i| !matches!(i.outcome.outcome, Outcome::Failed { .. }))
                    .map(|i| (i.key, i.source_modified))
                    .collect(),
            ),
            _ => None,
        };
    let drive_root_path = names::decode_path(&server_relative(&drive.web_url)).into_owned();

    let mut rx: mpsc::Receiver<WalkItem> = match &origin {
        Origin::Share(s) => s.walk(&walk_subtree),
        Origin::Sp { source, web_url } => {
            let SourceLibrary::SharePointServer {
                list_id,
                title,
                root_folder,
                ..
            } = &library.source
            else {
                unreachable!("origin and library kinds match")
            };
            let info = LibraryInfo {
                id: *list_id,
                title: title.clone(),
                root_folder: root_folder.clone(),
                item_count: 0,
                hidden: false,
            };
            source.walk(web_url, &info, &walk_subtree)
        }
    };

    let plan_ctx = ItemContext {
        settings,
        system,
        drive: &drive,
        drive_root_path: &drive_root_path,
        target: &target,
        guids: &guids,
    };
    let mut folders: HashMap<String, Option<String>> = HashMap::new();
    folders.insert(String::new(), Some(join(&prefix, "")));
    // Chunks over a subtree map that subtree's own folder to itself.
    if !chunk.subtree.is_empty() {
        folders.insert(chunk.subtree.clone(), Some(scan_root.clone()));
    }
    let mut recorder = Recorder {
        store: &ctx.store,
        chunk,
        items: Vec::new(),
        guids: Vec::new(),
        recorded: 0,
        bytes: 0,
    };
    let origin = Arc::new(origin);
    // One file's copy work, with what every copy shares.
    let file_work = |entry: SourceEntry, dest_rel: String, repair, otherwise| FileWork {
        origin: origin.clone(),
        destination: ctx.destination.clone(),
        drive: drive.clone(),
        record: plan_ctx.record(&entry, &dest_rel, Outcome::Copied),
        entry,
        dest_rel,
        repair,
        otherwise,
    };
    let mut copies: JoinSet<Result<Copied, ConnectorError>> = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut walk_done = false;
    Progress::add(&ctx.progress.walks_running, 1);
    let concurrency = ctx.concurrency.max(1);

    let result: Result<(), WorkerError> = async {
        loop {
            if walk_done && copies.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some(joined) = copies.join_next(), if !copies.is_empty() => {
                    let copied = joined.map_err(|e| WorkerError::Protocol(format!("a copy task failed: {e}")))??;
                    recorder.push(copied.record, copied.guid, &ctx.progress);
                }
                next = rx.recv(), if !walk_done && copies.len() < concurrency => {
                    let Some(next) = next else {
                        walk_done = true;
                        ctx.progress.walks_running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    };
                    match next {
                        Err(unreadable) if unreadable.code == "enumeration_failed" => {
                            // The listing itself broke: the whole chunk is retried.
                            return Err(WorkerError::Enumeration(format!("{}: {}", unreadable.location, unreadable.message)));
                        }
                        Err(unreadable) => {
                            Progress::add(&ctx.progress.discovered_items, 1);
                            if finished.contains(&unreadable.rel_path) {
                                continue;
                            }
                            let record = ItemRecord {
                                key: unreadable.rel_path.clone(),
                                outcome: ItemOutcome {
                                    source: unreadable.location.clone(),
                                    destination: String::new(),
                                    name: parent_and_name(&unreadable.rel_path).1.to_string(),
                                    kind: ItemKind::File,
                                    size: 0,
                                    outcome: Outcome::Failed {
                                        category: FailureCategory::SourceUnreadable,
                                        message: format!("{} Check the source's permissions and that it still exists, then re-run.", unreadable.message),
                                        code: unreadable.code.clone(),
                                    },
                                },
                                bytes_sent: 0,
                                source_modified: None,
                                at: Utc::now(),
                            };
                            recorder.push(record, None, &ctx.progress);
                        }
                        Ok(entry) => {
                            Progress::add(&ctx.progress.discovered_items, 1);
                            Progress::add(&ctx.progress.discovered_bytes, entry.size);
                            let Some(rel) = relative_to(&entry.rel_path, &strip) else {
                                continue; // the task's subfolder itself
                            };
                            let step = plan_ctx.evaluate(&entry, rel, &folders);
                            if entry.kind == ItemKind::Folder {
                                folders.insert(rel.to_string(), step.folder_maps_to());
                            }
                            if finished.contains(&entry.rel_path) {
                                continue;
                            }
                            match step {
                                Step::Record((dest_rel, Outcome::Skipped { reason: SkipReason::TargetIsNewer }), guid)
                                    if resumed && entry.kind == ItemKind::File && repair_candidate(&target, &dest_rel, &entry).is_some() =>
                                {
                                    let _ = guid;
                                    let repair = repair_candidate(&target, &dest_rel, &entry);
                                    copies.spawn(copy_file(file_work(entry, dest_rel, repair, Otherwise::Record(Outcome::Skipped { reason: SkipReason::TargetIsNewer }))));
                                }
                                Step::Record((dest_rel, outcome), guid) => {
                                    // A resumed round: "unchanged" may mean the
                                    // interrupted run already sent it.
                                    let outcome = match outcome {
                                        Outcome::Skipped { reason: SkipReason::Unchanged | SkipReason::AlreadyExists }
                                            if resumed && before_round.as_ref().is_none_or(|b| match entry.kind {
                                                // A folder existed before the round if the previous round had it.
                                                ItemKind::Folder => !b.contains_key(&entry.rel_path),
                                                ItemKind::File => b.get(&entry.rel_path) != Some(&entry.modified),
                                            }) =>
                                        {
                                            Outcome::Copied
                                        }
                                        other => other,
                                    };
                                    recorder.push(plan_ctx.record(&entry, &dest_rel, outcome), guid, &ctx.progress);
                                }
                                Step::Move { dest_rel, item_id, guid } => {
                                    ctx.destination.move_item(&drive, &item_id, &dest_rel).await?;
                                    lock(&target).moved(&item_id, &dest_rel);
                                    let outcome = Outcome::Skipped { reason: SkipReason::MovedToMatchSource };
                                    recorder.push(plan_ctx.record(&entry, &dest_rel, outcome), guid, &ctx.progress);
                                }
                                Step::Copy { dest_rel, relocate } => {
                                    if let Some(item_id) = relocate {
                                        ctx.destination.move_item(&drive, &item_id, &dest_rel).await?;
                                        lock(&target).moved(&item_id, &dest_rel);
                                    }
                                    if entry.kind == ItemKind::Folder {
                                        let made = ctx.destination.ensure_folder(&drive, &dest_rel).await?;
                                        let guid = entry.unique_id.map(|g| (g, GuidEntry { item_id: made.id.clone(), rel_path: dest_rel.clone() }));
                                        recorder.push(plan_ctx.record(&entry, &dest_rel, Outcome::Copied), guid, &ctx.progress);
                                    } else if let Some(done_id) = resumed.then(|| lock(&target).same_file(&dest_rel, &entry).map(|d| d.id.clone())).flatten() {
                                        // Copied by the interrupted run, not yet recorded.
                                        let guid = entry.unique_id.map(|g| (g, GuidEntry { item_id: done_id, rel_path: dest_rel.clone() }));
                                        recorder.push(plan_ctx.record(&entry, &dest_rel, Outcome::Copied), guid, &ctx.progress);
                                    } else {
                                        let repair = if resumed { repair_candidate(&target, &dest_rel, &entry) } else { None };
                                        copies.spawn(copy_file(file_work(entry, dest_rel, repair, Otherwise::Upload)));
                                    }
                                }
                            }
                        }
                    }
                }
                _ = tick.tick() => recorder.flush().await?,
            }
        }
        Ok(())
    }
    .await;
    if !walk_done {
        ctx.progress
            .walks_running
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
    // Whatever happened, keep what finished: it is the checkpoint.
    copies.abort_all();
    let flushed = recorder.flush().await;
    result?;
    flushed?;

    let summary = ChunkSummary {
        items: recorder.recorded,
        bytes: recorder.bytes,
    };
    ctx.store
        .put_chunk(
            chunk.round,
            &ChunkRecord {
                chunk: chunk.clone(),
                state: ChunkState::Done {
                    items: summary.items,
                    bytes: summary.bytes,
                },
                starts,
            },
        )
        .await?;
    Ok(summary)
}

/// `rel` relative to the task's subfolder `strip`; `None` for the subfolder itself.
fn relative_to<'a>(rel: &'a str, strip: &str) -> Option<&'a str> {
    if strip.is_empty() {
        return Some(rel);
    }
    if rel.eq_ignore_ascii_case(strip) {
        return None;
    }
    match rel.get(..strip.len() + 1) {
        Some(head) if head[..strip.len()].eq_ignore_ascii_case(strip) && head.ends_with('/') => {
            Some(&rel[strip.len() + 1..])
        }
        _ => Some(rel),
    }
}

/// A destination file that may be what an interrupted run of this round
/// sent (same size, other modified time: its upload finished, setting its
/// times did not). Checked by content hash before anything is sent.
struct Repair {
    item_id: String,
    hash: Option<String>,
}

/// What to do when a [`Repair`] candidate turns out to differ.
enum Otherwise {
    Upload,
    Record(Outcome),
}

/// One file's work, run concurrently with others.
struct FileWork {
    origin: Arc<Origin>,
    destination: crate::Destinations,
    drive: DriveRef,
    entry: SourceEntry,
    dest_rel: String,
    record: ItemRecord,
    repair: Option<Repair>,
    otherwise: Otherwise,
}

async fn source_hash(origin: &Origin, entry: &SourceEntry) -> Result<String, ConnectorError> {
    use futures_util::StreamExt;
    let mut stream = origin.open(entry).await?;
    let mut h = quickxorhash::QuickXorHash::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| ConnectorError::Io {
            location: entry.location.clone(),
            source,
        })?;
        h.update(&chunk);
    }
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.encode(h.finalize()))
}

/// Streams one file to the destination (or, for a [`Repair`], confirms it
/// is already there) and says how it went. Transient errors end the chunk
/// (it is retried); anything else is this item's failure.
async fn copy_file(work: FileWork) -> Result<Copied, ConnectorError> {
    let FileWork {
        origin,
        destination,
        drive,
        entry,
        dest_rel,
        mut record,
        repair,
        otherwise,
    } = work;
    let guid_for = |id: &str| {
        entry.unique_id.map(|g| {
            (
                g,
                GuidEntry {
                    item_id: id.to_string(),
                    rel_path: dest_rel.clone(),
                },
            )
        })
    };
    let result = async {
        if let Some(repair) = &repair {
            let same =
                repair.hash.is_some() && source_hash(&origin, &entry).await.ok() == repair.hash;
            if same {
                destination
                    .set_file_times(
                        &drive,
                        &repair.item_id,
                        &dest_rel,
                        entry.created,
                        entry.modified,
                    )
                    .await?;
                return Ok((repair.item_id.clone(), 0, Outcome::Copied));
            }
            if let Otherwise::Record(outcome) = &otherwise {
                return Ok((repair.item_id.clone(), 0, outcome.clone()));
            }
        }
        let content = origin.open(&entry).await?;
        let item = destination
            .upload(
                &drive,
                &dest_rel,
                entry.size,
                content,
                entry.created,
                entry.modified,
            )
            .await?;
        Ok::<_, ConnectorError>((item.id, entry.size, Outcome::Copied))
    }
    .await;
    record.at = Utc::now();
    match result {
        Ok((id, sent, outcome)) => {
            record.bytes_sent = sent;
            record.outcome.outcome = outcome;
            Ok(Copied {
                guid: guid_for(&id),
                record,
            })
        }
        Err(e) if e.is_transient() || matches!(e, ConnectorError::Auth { .. }) => Err(e),
        Err(e) => {
            let (category, code) = match &e {
                ConnectorError::HashMismatch { .. } => {
                    (FailureCategory::HashMismatch, "hashMismatch".to_string())
                }
                ConnectorError::Io { source, .. } => (
                    FailureCategory::SourceUnreadable,
                    source
                        .raw_os_error()
                        .map_or_else(|| format!("{:?}", source.kind()), |c| c.to_string()),
                ),
                ConnectorError::NotFound { .. } => (
                    FailureCategory::SourceUnreadable,
                    "itemNotFound".to_string(),
                ),
                ConnectorError::Rejected { code, .. } => {
                    (FailureCategory::DestinationRejected, code.clone())
                }
                _ => (FailureCategory::DestinationRejected, "protocol".to_string()),
            };
            record.outcome.outcome = Outcome::Failed {
                category,
                message: e.to_string(),
                code,
            };
            Ok(Copied { record, guid: None })
        }
    }
}

/// A destination file at `rel` with the source's size but another modified
/// time: possibly sent by the interrupted run without its times.
fn repair_candidate(
    target: &std::sync::Mutex<TargetIndex>,
    rel: &str,
    entry: &SourceEntry,
) -> Option<Repair> {
    lock(target).at(rel).and_then(|t| {
        (t.kind == ItemKind::File
            && t.size == entry.size
            && t.modified.map(|m| m.timestamp()) != entry.modified.map(|m| m.timestamp()))
        .then(|| Repair {
            item_id: t.id.clone(),
            hash: t.quick_xor_hash.clone(),
        })
    })
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The destination as scanned at the chunk's start, indexed by path
/// (case-insensitively, as SharePoint compares paths) and by item id.
struct TargetIndex {
    by_path: HashMap<String, DestItem>,
    by_id: HashMap<String, String>,
}

impl TargetIndex {
    fn new(items: Vec<DestItem>) -> Self {
        let mut by_path = HashMap::with_capacity(items.len());
        let mut by_id = HashMap::with_capacity(items.len());
        for item in items {
            let key = item.rel_path.to_lowercase();
            by_id.insert(item.id.clone(), key.clone());
            by_path.insert(key, item);
        }
        TargetIndex { by_path, by_id }
    }

    /// Item `id` (and, for a folder, everything under it) now lives at `to`.
    fn moved(&mut self, id: &str, to: &str) {
        let Some(from_key) = self.by_id.get(id).cloned() else {
            return;
        };
        let Some(from) = self.by_path.get(&from_key).map(|i| i.rel_path.clone()) else {
            return;
        };
        let under = format!("{from_key}/");
        let keys: Vec<String> = self
            .by_path
            .keys()
            .filter(|k| **k == from_key || k.starts_with(&under))
            .cloned()
            .collect();
        for key in keys {
            if let Some(mut item) = self.by_path.remove(&key) {
                let suffix = item
                    .rel_path
                    .strip_prefix(from.as_str())
                    .unwrap_or_default();
                item.rel_path = format!("{to}{suffix}");
                let new_key = item.rel_path.to_lowercase();
                self.by_id.insert(item.id.clone(), new_key.clone());
                self.by_path.insert(new_key, item);
            }
        }
    }

    fn at(&self, rel: &str) -> Option<&DestItem> {
        self.by_path.get(&rel.to_lowercase())
    }

    fn with_id(&self, id: &str) -> Option<&DestItem> {
        self.by_id.get(id).and_then(|p| self.by_path.get(p))
    }

    /// The destination file at `rel` when it has the source's size and
    /// modified second: what an interrupted run left after uploading it.
    fn same_file(&self, rel: &str, entry: &SourceEntry) -> Option<&DestItem> {
        self.at(rel).filter(|t| {
            t.kind == ItemKind::File
                && t.size == entry.size
                && t.modified.map(|m| m.timestamp()) == entry.modified.map(|m| m.timestamp())
        })
    }
}

fn facts(item: &DestItem) -> TargetFacts<'_> {
    TargetFacts {
        path: &item.rel_path,
        kind: item.kind,
        modified: item.modified,
    }
}

/// What to do with one entry.
enum Step {
    /// Final without I/O: skipped or failed (destination path, outcome), and
    /// the GUID entry to remember.
    Record((String, Outcome), Option<(Uuid, GuidEntry)>),
    /// Create (folder) or upload (file) at `dest_rel`, after moving the item
    /// found by GUID (`relocate`: its id) there.
    Copy {
        dest_rel: String,
        relocate: Option<String>,
    },
    /// Move the destination item `item_id` (found by GUID) to `dest_rel`;
    /// its content is unchanged, so nothing is uploaded.
    Move {
        dest_rel: String,
        item_id: String,
        guid: Option<(Uuid, GuidEntry)>,
    },
}

impl Step {
    /// What a folder's children are placed under (`None`: children are not
    /// migrated because the folder is not).
    fn folder_maps_to(&self) -> Option<String> {
        match self {
            Step::Copy { dest_rel, .. } | Step::Move { dest_rel, .. } => Some(dest_rel.clone()),
            Step::Record(
                (
                    dest,
                    Outcome::Skipped {
                        reason:
                            SkipReason::AlreadyExists | SkipReason::ScanOnly | SkipReason::Unchanged,
                    },
                ),
                _,
            ) => Some(dest.clone()),
            Step::Record(..) => None,
        }
    }
}

/// The per-chunk facts every item decision reads.
struct ItemContext<'a> {
    settings: &'a JobSettings,
    system: SourceSystem,
    drive: &'a DriveRef,
    drive_root_path: &'a str,
    target: &'a std::sync::Mutex<TargetIndex>,
    guids: &'a BTreeMap<Uuid, GuidEntry>,
}

impl ItemContext<'_> {
    fn record(&self, entry: &SourceEntry, dest_rel: &str, outcome: Outcome) -> ItemRecord {
        let destination = if dest_rel.is_empty() {
            String::new()
        } else {
            format!("{}/{}", self.drive.web_url.trim_end_matches('/'), dest_rel)
        };
        ItemRecord {
            key: entry.rel_path.clone(),
            outcome: ItemOutcome {
                source: entry.location.clone(),
                destination,
                name: parent_and_name(&entry.rel_path).1.to_string(),
                kind: entry.kind,
                size: entry.size,
                outcome,
            },
            bytes_sent: 0,
            source_modified: entry.modified,
            at: Utc::now(),
        }
    }

    fn skip(dest: String, reason: SkipReason) -> Step {
        Step::Record((dest, Outcome::Skipped { reason }), None)
    }

    fn fail(dest: String, category: FailureCategory, message: String, code: &str) -> Step {
        Step::Record(
            (
                dest,
                Outcome::Failed {
                    category,
                    message,
                    code: code.to_string(),
                },
            ),
            None,
        )
    }

    /// Filters, names, limits and the incremental rule, in that order.
    fn evaluate(
        &self,
        entry: &SourceEntry,
        rel: &str,
        folders: &HashMap<String, Option<String>>,
    ) -> Step {
        let (parent, name) = parent_and_name(rel);
        let is_folder = entry.kind == ItemKind::Folder;
        let Some(Some(dest_parent)) = folders.get(parent) else {
            return Self::skip(String::new(), SkipReason::ParentNotMigrated);
        };
        let s = self.settings;

        // 1. The job's filters.
        if entry.hidden && !s.include_hidden {
            return Self::skip(String::new(), SkipReason::Hidden);
        }
        if !is_folder {
            let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
            if !ext.is_empty()
                && s.skip_extensions
                    .iter()
                    .any(|x| x.trim_start_matches('.').eq_ignore_ascii_case(ext))
            {
                return Self::skip(String::new(), SkipReason::ExcludedExtension);
            }
            if let (Some(cut), Some(m)) = (s.modified_after, entry.modified) {
                if m < cut {
                    return Self::skip(String::new(), SkipReason::ModifiedBefore);
                }
            }
            if let (Some(cut), Some(c)) = (s.created_after, entry.created) {
                if c < cut {
                    return Self::skip(String::new(), SkipReason::CreatedBefore);
                }
            }
        }

        // 2. SharePoint Online's names and limits.
        let at_root = dest_parent.is_empty();
        let dest_name = match names::apply_policy(name, at_root, is_folder, &s.invalid_names) {
            NameDecision::Keep => name.to_string(),
            NameDecision::Rename(new) => new,
            NameDecision::Skip(_) => return Self::skip(String::new(), SkipReason::InvalidName),
            NameDecision::Fail(problem) => {
                return Self::fail(
                    String::new(),
                    problem.failure_category(),
                    problem.message(),
                    "invalidName",
                );
            }
        };
        let dest_rel = join(dest_parent, &dest_name);
        let full = format!(
            "{}/{}",
            self.drive_root_path.trim_end_matches('/'),
            dest_rel
        );
        if let Err(problem) = names::check_decoded_path(&full) {
            return Self::fail(
                dest_rel,
                problem.failure_category(),
                problem.message(),
                "pathTooLong",
            );
        }
        if !is_folder {
            if let Err(problem) = names::check_size(entry.size) {
                return Self::fail(
                    dest_rel,
                    problem.failure_category(),
                    problem.message(),
                    "fileTooLarge",
                );
            }
        }

        // 3. The incremental rule.
        let target = lock(self.target);
        let by_guid = entry
            .unique_id
            .and_then(|g| self.guids.get(&g))
            .and_then(|e| target.with_id(&e.item_id));
        let mut by_path = target.at(&dest_rel);
        if let (Some(g), Some(p)) = (by_guid, by_path) {
            if g.id == p.id {
                by_path = None; // the same item, found both ways
            }
        }
        let decision = decide(
            s.incremental,
            self.system,
            &SourceFacts {
                path: &dest_rel,
                kind: entry.kind,
                unique_id: entry.unique_id,
                modified: entry.modified,
            },
            &Candidates {
                by_guid: by_guid.map(facts),
                by_path: by_path.map(facts),
            },
        );
        let matched = match decision.matched_by {
            Some(ferry_proto::incremental::MatchBasis::Guid) => by_guid,
            Some(ferry_proto::incremental::MatchBasis::Path) => by_path.or(by_guid),
            None => None,
        };
        let guid_entry = |item: &DestItem| {
            entry.unique_id.map(|g| {
                (
                    g,
                    GuidEntry {
                        item_id: item.id.clone(),
                        rel_path: dest_rel.clone(),
                    },
                )
            })
        };
        match decision.action {
            Action::Skip { reason } => match (&decision.relocate_from, matched) {
                // Found by GUID at another path with unchanged content: the
                // move is the whole job (a rename or move at the source).
                (Some(_), Some(item)) if !s.scan_only => Step::Move {
                    item_id: item.id.clone(),
                    guid: guid_entry(item),
                    dest_rel,
                },
                _ => {
                    let guid = matched.and_then(guid_entry);
                    Step::Record((dest_rel, Outcome::Skipped { reason }), guid)
                }
            },
            Action::Fail { conflict } => Self::fail(
                dest_rel,
                FailureCategory::DestinationRejected,
                conflict.message(),
                "conflict",
            ),
            Action::Copy { .. } if s.scan_only => Self::skip(dest_rel, SkipReason::ScanOnly),
            Action::Copy { .. } => Step::Copy {
                relocate: decision
                    .relocate_from
                    .as_ref()
                    .and(matched.map(|m| m.id.clone())),
                dest_rel,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, rel: &str, kind: ItemKind) -> DestItem {
        DestItem {
            id: id.into(),
            rel_path: rel.into(),
            kind,
            size: 1,
            created: None,
            modified: None,
            quick_xor_hash: None,
            web_url: String::new(),
        }
    }

    #[test]
    fn paths_relative_to_the_task_subfolder() {
        for (rel, strip, want) in [
            ("a/b.txt", "", Some("a/b.txt")),
            ("Sub/a.txt", "Sub", Some("a.txt")),
            ("sub/a.txt", "Sub", Some("a.txt")),
            ("Sub", "Sub", None),
            ("Subway/a.txt", "Sub", Some("Subway/a.txt")),
            ("Sub/x/y", "Sub/x", Some("y")),
        ] {
            assert_eq!(relative_to(rel, strip), want, "{rel} - {strip}");
        }
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a", ""), "a");
        assert_eq!(join("a", "b"), "a/b");
        assert_eq!(parent_and_name("a/b/c.txt"), ("a/b", "c.txt"));
        assert_eq!(parent_and_name("c.txt"), ("", "c.txt"));
        assert_eq!(normalize_folder(Some("/A\\B//C/")), "A/B/C");
        assert_eq!(
            server_relative("https://h/sites/a/b%20c.txt"),
            "/sites/a/b%20c.txt"
        );
        assert_eq!(server_relative("https://h"), "/");
    }

    #[test]
    fn the_destination_index_follows_moves_case_insensitively() {
        let mut t = TargetIndex::new(vec![
            item("f", "Old", ItemKind::Folder),
            item("a", "Old/a.txt", ItemKind::File),
            item("s", "Old/Sub", ItemKind::Folder),
            item("b", "Old/Sub/b.txt", ItemKind::File),
            item("x", "Older/x.txt", ItemKind::File),
        ]);
        assert_eq!(t.at("old/A.TXT").map(|i| i.id.as_str()), Some("a"));
        t.moved("f", "New Name");
        assert!(t.at("Old/a.txt").is_none());
        assert_eq!(
            t.at("New Name/a.txt").map(|i| i.rel_path.as_str()),
            Some("New Name/a.txt")
        );
        assert_eq!(
            t.with_id("b").map(|i| i.rel_path.as_str()),
            Some("New Name/Sub/b.txt")
        );
        assert_eq!(
            t.at("Older/x.txt").map(|i| i.id.as_str()),
            Some("x"),
            "a sibling with a longer name stays"
        );
        t.moved("unknown", "Z");
        assert_eq!(t.by_path.len(), 5);
    }
}
