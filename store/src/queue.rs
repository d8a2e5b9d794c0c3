//! The chunk queue seam and its in-process backend.
//!
//! Semantics every backend keeps: at-least-once delivery; a delivery is
//! either acked (done), retried (back on the queue after a delay, attempt + 1)
//! or dead-lettered (kept aside, visible, requeueable).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::Chunk;
use tokio::sync::Notify;

use crate::{Result, StoreError};

/// What the worker decided about a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    Ack,
    /// Deliver again after `delay`, with `attempt + 1`.
    Retry {
        delay: Duration,
    },
    /// Give up: keep it aside with the reason, for `ferry requeue`.
    DeadLetter {
        reason: String,
    },
}

/// A place where chunks wait for workers.
pub trait ChunkQueue: Send + Sync + 'static {
    /// Publishes a chunk; returns once the queue holds it durably (publisher
    /// confirm on a broker).
    fn publish(&self, chunk: Chunk) -> impl Future<Output = Result<()>> + Send;
    /// The next chunk, or `None` once the queue is closed and drained.
    fn next(&self) -> impl Future<Output = Option<Chunk>> + Send;
    /// Settles a chunk taken with [`ChunkQueue::next`].
    fn settle(&self, chunk: Chunk, how: Settle) -> impl Future<Output = Result<()>> + Send;
    /// Dead-lettered chunks with their reasons.
    fn dead_letters(&self) -> impl Future<Output = Result<Vec<(Chunk, String)>>> + Send;
    /// Puts dead-lettered chunks of `job` back on the queue (attempt reset to 1).
    fn requeue_dead(&self, job: ferry_proto::JobId) -> impl Future<Output = Result<usize>> + Send;
    /// No more publishes: `next` returns `None` once nothing is queued or in flight.
    fn close(&self);
}

#[derive(Default)]
struct Inner {
    ready: VecDeque<Chunk>,
    /// Taken but not settled, plus retries waiting for their delay.
    in_flight: usize,
    dead: Vec<(Chunk, String)>,
    closed: bool,
}

/// The embedded default: an in-process queue shared by the coordinator and
/// its worker tasks. Nothing survives the process — the state store is what
/// makes a job resumable; the coordinator republishes unfinished chunks.
#[derive(Clone, Default)]
pub struct MemoryQueue {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another task panicked mid-update of
        // plain counters; the data is still consistent enough to continue.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ChunkQueue for MemoryQueue {
    async fn publish(&self, chunk: Chunk) -> Result<()> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(StoreError::Closed);
        }
        inner.ready.push_back(chunk);
        drop(inner);
        self.notify.notify_waiters();
        self.notify.notify_one();
        Ok(())
    }

    async fn next(&self) -> Option<Chunk> {
        loop {
            let notified = self.notify.notified();
            {
                let mut inner = self.lock();
                if let Some(chunk) = inner.ready.pop_front() {
                    inner.in_flight += 1;
                    return Some(chunk);
                }
                if inner.closed && inner.in_flight == 0 {
                    drop(inner);
                    self.notify.notify_waiters();
                    return None;
                }
            }
            notified.await;
        }
    }

    async fn settle(&self, mut chunk: Chunk, how: Settle) -> Result<()> {
        match how {
            Settle::Ack => {
                self.lock().in_flight -= 1;
                self.notify.notify_waiters();
            }
            Settle::DeadLetter { reason } => {
                let mut inner = self.lock();
                inner.in_flight -= 1;
                inner.dead.push((chunk, reason));
                drop(inner);
                self.notify.notify_waiters();
            }
            Settle::Retry { delay } => {
                chunk.attempt += 1;
                let this = self.clone();
                // Stays counted in flight until it is ready again, so `next`
                // does not report the queue drained while a retry waits.
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let mut inner = this.lock();
                    inner.in_flight -= 1;
                    inner.ready.push_back(chunk);
                    drop(inner);
                    this.notify.notify_waiters();
                    this.notify.notify_one();
                });
            }
        }
        Ok(())
    }

    async fn dead_letters(&self) -> Result<Vec<(Chunk, String)>> {
        Ok(self.lock().dead.clone())
    }

    async fn requeue_dead(&self, job: ferry_proto::JobId) -> Result<usize> {
        let mut inner = self.lock();
        let (mine, others): (Vec<_>, Vec<_>) =
            inner.dead.drain(..).partition(|(c, _)| c.job == job);
        inner.dead = others;
        let n = mine.len();
        for (mut chunk, _) in mine {
            chunk.attempt = 1;
            inner.ready.push_back(chunk);
        }
        drop(inner);
        self.notify.notify_waiters();
        Ok(n)
    }

    fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }
}
