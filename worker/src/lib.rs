//! # ferry-worker — executes chunks
//!
//! A worker takes a [`Chunk`] from the queue, enumerates its library (or
//! folder subtree), applies the job's filters, name policy and the incremental
//! rule against the destination, copies what must be copied (streamed, several
//! files at a time) and records one outcome per item in the state store.
//!
//! Architecture invariants:
//! - **Stateless between chunks**: everything a chunk needs comes from the
//!   chunk, the job record in the state store and the sign-ins the process
//!   holds ([`Sources`], [`Destinations`]); nothing is carried over.
//! - **Tolerates redelivery**: items already recorded for the chunk's round are
//!   not touched again; an item copied by an interrupted run but not yet
//!   recorded is recognised at the destination (same size and modified time)
//!   and recorded without a second upload.
//! - **Ack after durability**: a chunk is acked only after its item records
//!   are committed to the state store.
//!
//! Cancellation: [`run`] stops taking chunks when its token is cancelled and
//! abandons the current one without acking it; what was recorded stays
//! recorded, and the chunk runs again on resume.

mod execute;
mod progress;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_connectors::graph::GraphDestination;
use ferry_connectors::spserver::SpServerSource;
use ferry_connectors::ConnectorError;
use ferry_proto::Chunk;
use ferry_store::queue::{ChunkQueue, Settle};
use ferry_store::state::{ChunkRecord, ChunkState, StateStore};
use ferry_store::StoreError;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub use execute::{execute_chunk, ChunkSummary};
pub use progress::{Progress, ProgressSnapshot};

/// Errors that end a chunk (item-level problems never do: they become failed
/// items in the report).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("job {0} is not in the state store")]
    UnknownJob(ferry_proto::JobId),
    #[error("chunk {chunk} names library {library}, which the job's plan does not have")]
    UnknownLibrary { chunk: String, library: usize },
    #[error("no signed-in source for {0}: sign in to it before running the job")]
    NoSource(String),
    #[error("listing the source failed part-way ({0}); the chunk will be retried")]
    Enumeration(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the worker was cancelled")]
    Cancelled,
}

/// What the queue should do with a chunk that ended with this error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try again later (network, throttling, a store hiccup).
    Retry,
    /// Trying again cannot help until a person acts (credentials, a missing
    /// library, a corrupt record).
    DeadLetter,
    /// The process is stopping: leave the chunk for the resume.
    Abandon,
}

impl WorkerError {
    /// The one place that decides retry versus dead-letter.
    pub fn disposition(&self) -> Disposition {
        match self {
            WorkerError::Connector(e) if e.is_transient() => Disposition::Retry,
            WorkerError::Store(e) if e.is_transient() => Disposition::Retry,
            WorkerError::Enumeration(_) => Disposition::Retry,
            WorkerError::Cancelled => Disposition::Abandon,
            _ => Disposition::DeadLetter,
        }
    }
}

/// Signed-in SharePoint Server sources, by site URL (lower-cased, no trailing
/// slash). Credentials stay inside the connectors; chunks never carry them.
#[derive(Default, Clone)]
pub struct Sources {
    sites: Arc<Mutex<HashMap<String, Arc<SpServerSource>>>>,
}

pub(crate) fn site_key(url: &str) -> String {
    url.trim_end_matches('/').to_ascii_lowercase()
}

impl Sources {
    pub async fn insert(&self, site_url: &str, source: Arc<SpServerSource>) {
        self.sites.lock().await.insert(site_key(site_url), source);
    }

    /// The signed-in source serving `site_url` (the site itself or the site
    /// collection above it, since one sign-in serves every subsite).
    pub async fn get(&self, site_url: &str) -> Option<Arc<SpServerSource>> {
        let sites = self.sites.lock().await;
        let mut key = site_key(site_url);
        loop {
            if let Some(s) = sites.get(&key) {
                return Some(s.clone());
            }
            match key.rfind('/') {
                Some(i) if i > "https://".len() => key.truncate(i),
                _ => return None,
            }
        }
    }
}

/// The destination tenant's Graph client (one sign-in serves every site).
pub type Destinations = Arc<GraphDestination>;

/// What a worker needs; shared by all worker tasks of a process.
pub struct WorkerContext<S> {
    pub store: S,
    pub sources: Sources,
    pub destination: Destinations,
    pub progress: Arc<Progress>,
    /// Files copied at once within one chunk.
    pub concurrency: usize,
    /// Name in logs and chunk records.
    pub name: String,
    /// Chunk starts before a chunk is dead-lettered.
    pub max_chunk_attempts: u32,
}

/// Takes chunks from `queue` until it is closed or `cancel` fires.
pub async fn run<S: StateStore, Q: ChunkQueue>(
    ctx: Arc<WorkerContext<S>>,
    queue: Arc<Q>,
    cancel: CancellationToken,
) {
    loop {
        let chunk = tokio::select! {
            _ = cancel.cancelled() => return,
            next = queue.next() => match next {
                Some(c) => c,
                None => return,
            },
        };
        let settle = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = handle(&ctx, &chunk) => outcome,
        };
        if let Err(error) = queue.settle(chunk.clone(), settle).await {
            tracing::warn!(message = "Could not settle a chunk.", chunk = %chunk.id, %error);
        }
    }
}

async fn handle<S: StateStore>(ctx: &WorkerContext<S>, chunk: &Chunk) -> Settle {
    let span =
        tracing::info_span!("chunk", job = %chunk.job, chunk = %chunk.id, round = chunk.round);
    let _enter = span.enter();
    match execute_chunk(ctx, chunk).await {
        Ok(summary) => {
            tracing::info!(
                message = "Chunk finished.",
                chunk = %chunk.id,
                items = summary.items,
                bytes = summary.bytes
            );
            Settle::Ack
        }
        Err(error) => {
            let disposition = error.disposition();
            let exhausted = chunk.attempt >= ctx.max_chunk_attempts;
            tracing::warn!(
                message = "Chunk failed.",
                chunk = %chunk.id,
                attempt = chunk.attempt,
                %error
            );
            match disposition {
                Disposition::Retry if !exhausted => Settle::Retry {
                    delay: retry_delay(chunk.attempt),
                },
                Disposition::Abandon => Settle::Retry {
                    delay: Duration::ZERO,
                },
                _ => {
                    let reason = error.to_string();
                    let record = ChunkRecord {
                        chunk: chunk.clone(),
                        state: ChunkState::DeadLettered {
                            reason: reason.clone(),
                        },
                        starts: chunk.attempt,
                    };
                    if let Err(e) = ctx.store.put_chunk(chunk.round, &record).await {
                        tracing::warn!(message = "Could not record a dead-lettered chunk.", chunk = %chunk.id, error = %e);
                    }
                    Settle::DeadLetter { reason }
                }
            }
        }
    }
}

/// 2 s, 4 s, 8 s … capped at one minute.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempt.min(6)).min(60))
}
