//! # ferry-store — the chunk queue and the state store
//!
//! Two small seams, each with an embedded backend for the one-machine default:
//! - [`queue::ChunkQueue`]: where chunks wait for a worker ([`queue::MemoryQueue`]).
//! - [`state::StateStore`]: jobs, chunk states, per-item checkpoints and the
//!   source GUID → destination item map ([`state::RedbStore`], one local file).
//!
//! Every write is idempotent (keyed by job, round, chunk and item), so a chunk
//! delivered twice records the same facts twice without double counting.
//! [`conformance`] is the one test suite every backend must pass.

pub mod conformance;
pub mod queue;
pub mod state;

/// Errors of the queue and the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state file {path} cannot be opened: {message}. Check the path and its permissions; if the file is damaged, keep a copy and start afresh with another --state directory")]
    Open { path: String, message: String },
    #[error("{path} is in use by another ferry process (a migration is running): watch it with `ferry status`, or wait until it ends")]
    Busy { path: String },
    #[error("state store error: {0}")]
    Backend(String),
    #[error("a stored record is unreadable ({what}): {message}")]
    Corrupt { what: String, message: String },
    #[error("the queue is closed")]
    Closed,
}

impl StoreError {
    /// Whether retrying later can help (a backend hiccup), as opposed to a
    /// corrupt record or a closed queue.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
