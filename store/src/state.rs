//! The state store seam and its embedded backend (one redb file).
//!
//! What lives here is everything needed to resume a job on another run (or,
//! with a shared backend, another machine): the job (spec, plan, rounds),
//! each chunk's state, one record per finished item (the checkpoint and the
//! report's source), and the map from SharePoint Server item GUIDs to the
//! destination items they were copied to.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferry_proto::{ItemOutcome, JobId, JobSpec, Plan};
use redb::{
    ConcurrencyMode, Database, DatabaseError, ReadOnlyDatabase, ReadableDatabase, ReadableTable,
    TableDefinition,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Result, StoreError};

/// How far a round got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundState {
    /// Started and not finished: running now, or paused by a stop or a crash.
    Running,
    Completed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u32,
    pub state: RoundState,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
}

/// A job as stored. Holds no credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub schema_version: u32,
    pub id: JobId,
    pub spec: JobSpec,
    /// Set once planning succeeded.
    pub plan: Option<Plan>,
    pub rounds: Vec<RoundRecord>,
    pub created: DateTime<Utc>,
}

impl JobRecord {
    pub fn current_round(&self) -> Option<&RoundRecord> {
        self.rounds.last()
    }
}

/// Where a chunk is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ChunkState {
    Pending,
    Running {
        worker: String,
        since: DateTime<Utc>,
    },
    Done {
        items: u64,
        bytes: u64,
    },
    /// Gave up after retries; requeueable.
    DeadLettered {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub chunk: ferry_proto::Chunk,
    pub state: ChunkState,
    /// How many times this chunk was started in this round.
    pub starts: u32,
}

/// One finished item: the checkpoint that stops a resumed run from copying it
/// again, and a line of the item report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// Source path relative to the library root: the item's key in its chunk.
    pub key: String,
    pub outcome: ItemOutcome,
    /// Bytes actually sent (0 unless copied).
    pub bytes_sent: u64,
    /// The source's modified time when the outcome was decided: tells a
    /// resumed round whether the destination copy predates the round.
    #[serde(default)]
    pub source_modified: Option<DateTime<Utc>>,
    /// When the outcome was decided.
    pub at: DateTime<Utc>,
}

/// Where a SharePoint Server item went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuidEntry {
    /// Destination drive item id.
    pub item_id: String,
    /// Destination path relative to the library root, when recorded.
    pub rel_path: String,
}

/// The state store. Every write is idempotent.
pub trait StateStore: Send + Sync + 'static {
    fn put_job(&self, job: &JobRecord) -> impl Future<Output = Result<()>> + Send;
    fn job(&self, id: JobId) -> impl Future<Output = Result<Option<JobRecord>>> + Send;
    fn jobs(&self) -> impl Future<Output = Result<Vec<JobRecord>>> + Send;
    fn put_chunk(&self, round: u32, chunk: &ChunkRecord)
        -> impl Future<Output = Result<()>> + Send;
    fn chunks(
        &self,
        job: JobId,
        round: u32,
    ) -> impl Future<Output = Result<Vec<ChunkRecord>>> + Send;
    /// Records finished items of one chunk (re-recording the same key replaces it).
    fn record_items(
        &self,
        job: JobId,
        round: u32,
        chunk: &str,
        items: &[ItemRecord],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Every item record of a round, ordered by chunk then key.
    fn items(
        &self,
        job: JobId,
        round: u32,
    ) -> impl Future<Output = Result<Vec<(String, ItemRecord)>>> + Send;
    /// The item records of one chunk in one round.
    fn chunk_items(
        &self,
        job: JobId,
        round: u32,
        chunk: &str,
    ) -> impl Future<Output = Result<Vec<ItemRecord>>> + Send;
    /// The keys of the finished items of one chunk in one round.
    fn finished_keys(
        &self,
        job: JobId,
        round: u32,
        chunk: &str,
    ) -> impl Future<Output = Result<HashSet<String>>> + Send;
    fn put_guids(
        &self,
        job: JobId,
        entries: &[(Uuid, GuidEntry)],
    ) -> impl Future<Output = Result<()>> + Send;
    /// The whole GUID map of a job (loaded once per chunk).
    fn guids(&self, job: JobId) -> impl Future<Output = Result<BTreeMap<Uuid, GuidEntry>>> + Send;
}

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const CHUNKS: TableDefinition<&str, &[u8]> = TableDefinition::new("chunks");
const ITEMS: TableDefinition<&str, &[u8]> = TableDefinition::new("items");
const GUIDS: TableDefinition<&str, &[u8]> = TableDefinition::new("guids");

/// The embedded default: one redb file (`state.redb`) under the state
/// directory, in redb's single-writer mode: one process writes (a running
/// migration), any number read at the same time ([`RedbStore::open_read_only`]:
/// `ferry status`, `ferry report`). A second writer is refused with
/// [`StoreError::Busy`].
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Db>,
}

enum Db {
    Writer(Database),
    Reader(ReadOnlyDatabase),
}

impl Db {
    fn begin_read(&self) -> std::result::Result<redb::ReadTransaction, redb::TransactionError> {
        match self {
            Db::Writer(d) => d.begin_read(),
            Db::Reader(d) => d.begin_read(),
        }
    }
}

fn builder() -> redb::Builder {
    let mut b = Database::builder();
    b.set_concurrency_mode(ConcurrencyMode::SingleWriter);
    b
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(backend)
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// `{job}/{round}/{chunk}/` — the prefix of a chunk's keys. Chunk ids never
/// contain a NUL; the item key follows after a NUL so prefixes cannot collide.
fn chunk_key(job: JobId, round: u32, chunk: &str) -> String {
    format!("{job}/{round:010}/{chunk}")
}

fn item_prefix(job: JobId, round: u32, chunk: &str) -> String {
    format!("{}\0", chunk_key(job, round, chunk))
}

fn round_prefix(job: JobId, round: u32) -> String {
    format!("{job}/{round:010}/")
}

/// Keys with `prefix`, as a half-open range (`prefix` .. `prefix` + U+10FFFF).
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

impl RedbStore {
    /// Opens (or creates) `dir/state.redb`.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("state.redb");
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(&e))?;
        let db = builder().create(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Busy {
                path: path.display().to_string(),
            },
            e => open_err(&e),
        })?;
        let txn = db.begin_write().map_err(|e| open_err(&e))?;
        for table in [JOBS, CHUNKS, ITEMS, GUIDS] {
            txn.open_table(table).map_err(|e| open_err(&e))?;
        }
        txn.commit().map_err(|e| open_err(&e))?;
        Ok(RedbStore {
            db: Arc::new(Db::Writer(db)),
        })
    }

    /// Opens `dir/state.redb` for reading, alongside a migration that may be
    /// writing it. A file a killed process left needing recovery is repaired
    /// by opening it for writing once, when no other process writes.
    pub fn open_read_only(dir: &Path) -> Result<Self> {
        let path = dir.join("state.redb");
        if !path.exists() {
            return Err(StoreError::Open {
                path: path.display().to_string(),
                message: "there is no Ferry state here".into(),
            });
        }
        match builder().open_read_only(&path) {
            Ok(db) => Ok(RedbStore {
                db: Arc::new(Db::Reader(db)),
            }),
            Err(DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::Busy {
                path: path.display().to_string(),
            }),
            // Needs recovery (a writer was killed): repair by a writable open.
            Err(_) => Self::open(dir),
        }
    }

    /// Runs a write transaction on a blocking thread (redb is synchronous and
    /// commits fsync).
    async fn write<F>(&self, f: F) -> Result<()>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<()> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let Db::Writer(db) = &*db else {
                return Err(StoreError::Backend("the state was opened read-only".into()));
            };
            let txn = db.begin_write().map_err(backend)?;
            f(&txn)?;
            txn.commit().map_err(backend)
        })
        .await
        .map_err(backend)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            f(&txn)
        })
        .await
        .map_err(backend)?
    }
}

impl StateStore for RedbStore {
    async fn put_job(&self, job: &JobRecord) -> Result<()> {
        let key = job.id.to_string();
        let value = encode(job)?;
        self.write(move |txn| {
            txn.open_table(JOBS)
                .map_err(backend)?
                .insert(key.as_str(), value.as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn job(&self, id: JobId) -> Result<Option<JobRecord>> {
        self.read(move |txn| {
            let table = txn.open_table(JOBS).map_err(backend)?;
            let found = match table.get(id.to_string().as_str()).map_err(backend)? {
                Some(v) => Some(decode("job", v.value())?),
                None => None,
            };
            Ok(found)
        })
        .await
    }

    async fn jobs(&self) -> Result<Vec<JobRecord>> {
        self.read(|txn| {
            let table = txn.open_table(JOBS).map_err(backend)?;
            let mut jobs: Vec<JobRecord> = Vec::new();
            for row in table.iter().map_err(backend)? {
                let (_, v) = row.map_err(backend)?;
                jobs.push(decode("job", v.value())?);
            }
            jobs.sort_by_key(|j| j.created);
            Ok(jobs)
        })
        .await
    }

    async fn put_chunk(&self, round: u32, chunk: &ChunkRecord) -> Result<()> {
        let key = chunk_key(chunk.chunk.job, round, &chunk.chunk.id);
        let value = encode(chunk)?;
        self.write(move |txn| {
            txn.open_table(CHUNKS)
                .map_err(backend)?
                .insert(key.as_str(), value.as_slice())
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn chunks(&self, job: JobId, round: u32) -> Result<Vec<ChunkRecord>> {
        let start = round_prefix(job, round);
        self.read(move |txn| {
            let table = txn.open_table(CHUNKS).map_err(backend)?;
            let end = prefix_end(&start);
            let mut out = Vec::new();
            for row in table.range(start.as_str()..end.as_str()).map_err(backend)? {
                let (_, v) = row.map_err(backend)?;
                out.push(decode("chunk", v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn record_items(
        &self,
        job: JobId,
        round: u32,
        chunk: &str,
        items: &[ItemRecord],
    ) -> Result<()> {
        let prefix = item_prefix(job, round, chunk);
        let rows = items
            .iter()
            .map(|i| Ok((format!("{prefix}{}", i.key), encode(i)?)))
            .collect::<Result<Vec<_>>>()?;
        self.write(move |txn| {
            let mut table = txn.open_table(ITEMS).map_err(backend)?;
            for (k, v) in &rows {
                table.insert(k.as_str(), v.as_slice()).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn items(&self, job: JobId, round: u32) -> Result<Vec<(String, ItemRecord)>> {
        let start = round_prefix(job, round);
        self.read(move |txn| {
            let table = txn.open_table(ITEMS).map_err(backend)?;
            let end = prefix_end(&start);
            let mut out = Vec::new();
            for row in table.range(start.as_str()..end.as_str()).map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                let chunk = k
                    .value()
                    .strip_prefix(start.as_str())
                    .and_then(|rest| rest.split('\0').next())
                    .unwrap_or_default()
                    .to_string();
                out.push((chunk, decode("item", v.value())?));
            }
            Ok(out)
        })
        .await
    }

    async fn chunk_items(&self, job: JobId, round: u32, chunk: &str) -> Result<Vec<ItemRecord>> {
        let start = item_prefix(job, round, chunk);
        self.read(move |txn| {
            let table = txn.open_table(ITEMS).map_err(backend)?;
            let end = prefix_end(&start);
            let mut out = Vec::new();
            for row in table.range(start.as_str()..end.as_str()).map_err(backend)? {
                let (_, v) = row.map_err(backend)?;
                out.push(decode("item", v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn finished_keys(&self, job: JobId, round: u32, chunk: &str) -> Result<HashSet<String>> {
        let start = item_prefix(job, round, chunk);
        self.read(move |txn| {
            let table = txn.open_table(ITEMS).map_err(backend)?;
            let end = prefix_end(&start);
            let mut out = HashSet::new();
            for row in table.range(start.as_str()..end.as_str()).map_err(backend)? {
                let (k, _) = row.map_err(backend)?;
                if let Some(key) = k.value().strip_prefix(start.as_str()) {
                    out.insert(key.to_string());
                }
            }
            Ok(out)
        })
        .await
    }

    async fn put_guids(&self, job: JobId, entries: &[(Uuid, GuidEntry)]) -> Result<()> {
        let rows = entries
            .iter()
            .map(|(g, e)| Ok((format!("{job}/{g}"), encode(e)?)))
            .collect::<Result<Vec<_>>>()?;
        self.write(move |txn| {
            let mut table = txn.open_table(GUIDS).map_err(backend)?;
            for (k, v) in &rows {
                table.insert(k.as_str(), v.as_slice()).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn guids(&self, job: JobId) -> Result<BTreeMap<Uuid, GuidEntry>> {
        let start = format!("{job}/");
        self.read(move |txn| {
            let table = txn.open_table(GUIDS).map_err(backend)?;
            let end = prefix_end(&start);
            let mut out = BTreeMap::new();
            for row in table.range(start.as_str()..end.as_str()).map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                let guid = k
                    .value()
                    .strip_prefix(start.as_str())
                    .and_then(|g| Uuid::parse_str(g).ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        what: "guid key".into(),
                        message: k.value().to_string(),
                    })?;
                out.insert(guid, decode("guid entry", v.value())?);
            }
            Ok(out)
        })
        .await
    }
}
