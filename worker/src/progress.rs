//! Live counters for the progress bar and metrics. Cheap to update from many
//! tasks; read as a consistent-enough [`ProgressSnapshot`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of one running process (all chunks it executes).
#[derive(Default, Debug)]
pub struct Progress {
    /// Items and bytes found by the source walks so far.
    pub discovered_items: AtomicU64,
    pub discovered_bytes: AtomicU64,
    /// Items with a final outcome, and the bytes they account for.
    pub done_items: AtomicU64,
    pub done_bytes: AtomicU64,
    pub copied: AtomicU64,
    pub skipped: AtomicU64,
    pub failed: AtomicU64,
    /// Bytes actually sent to the destination.
    pub sent_bytes: AtomicU64,
    /// Walks still running (0 once every chunk has been enumerated).
    pub walks_running: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub discovered_items: u64,
    pub discovered_bytes: u64,
    pub done_items: u64,
    pub done_bytes: u64,
    pub copied: u64,
    pub skipped: u64,
    pub failed: u64,
    pub sent_bytes: u64,
    pub walks_running: u64,
}

impl Progress {
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            discovered_items: self.discovered_items.load(Relaxed),
            discovered_bytes: self.discovered_bytes.load(Relaxed),
            done_items: self.done_items.load(Relaxed),
            done_bytes: self.done_bytes.load(Relaxed),
            copied: self.copied.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            failed: self.failed.load(Relaxed),
            sent_bytes: self.sent_bytes.load(Relaxed),
            walks_running: self.walks_running.load(Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}
