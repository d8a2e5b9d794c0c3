//! The one test suite every queue and state-store backend must pass.
//! Public so that a backend in another crate runs the same checks; it panics
//! on failure, like any test.

use std::time::Duration;

use chrono::Utc;
use ferry_proto::{
    Chunk, Destination, ItemKind, ItemOutcome, JobId, JobSettings, JobSpec, Outcome, SkipReason,
    Source, TaskSpec, SCHEMA_VERSION,
};
use uuid::Uuid;

use crate::queue::{ChunkQueue, Settle};
use crate::state::{
    ChunkRecord, ChunkState, GuidEntry, ItemRecord, JobRecord, RoundRecord, RoundState, StateStore,
};

fn chunk(job: JobId, id: &str) -> Chunk {
    Chunk {
        schema_version: SCHEMA_VERSION,
        job,
        id: id.into(),
        library: 0,
        round: 0,
        subtree: String::new(),
        attempt: 1,
    }
}

fn job_record(id: JobId) -> JobRecord {
    JobRecord {
        schema_version: SCHEMA_VERSION,
        id,
        spec: JobSpec {
            schema_version: SCHEMA_VERSION,
            name: "conformance".into(),
            tasks: vec![TaskSpec {
                source: Source::FileShare {
                    path: "/data".into(),
                },
                destination: Destination {
                    site_url: "https://t.sharepoint.com/sites/a".into(),
                    library: Some("Documents".into()),
                    subfolder: None,
                },
                structure: Default::default(),
                subsite_destinations: Default::default(),
            }],
            settings: JobSettings::default(),
        },
        plan: None,
        rounds: vec![RoundRecord {
            round: 0,
            state: RoundState::Running,
            started: Utc::now(),
            finished: None,
        }],
        created: Utc::now(),
    }
}

fn item(key: &str) -> ItemRecord {
    ItemRecord {
        key: key.into(),
        outcome: ItemOutcome {
            source: format!("/data/{key}"),
            destination: format!("https://t/{key}"),
            name: key.rsplit('/').next().unwrap_or(key).into(),
            kind: ItemKind::File,
            size: 3,
            outcome: Outcome::Skipped {
                reason: SkipReason::Unchanged,
            },
        },
        bytes_sent: 0,
        source_modified: None,
        at: Utc::now(),
    }
}

/// Jobs, chunks, items and GUIDs: stored, read back, idempotent, isolated
/// between jobs, rounds and chunks.
pub async fn state_store_suite<S: StateStore>(store: &S) {
    let a = JobId::new();
    let b = JobId::new();
    assert!(store.job(a).await.unwrap().is_none());
    let mut ja = job_record(a);
    store.put_job(&ja).await.unwrap();
    store.put_job(&job_record(b)).await.unwrap();
    ja.rounds[0].state = RoundState::Completed;
    store.put_job(&ja).await.unwrap(); // overwrite, not duplicate
    assert_eq!(store.job(a).await.unwrap().unwrap(), ja);
    let jobs = store.jobs().await.unwrap();
    assert_eq!(jobs.len(), 2);

    // Chunks: keyed by (job, round, id); a re-put replaces.
    for (round, id) in [(0, "L0"), (0, "L1"), (1, "L0")] {
        store
            .put_chunk(
                round,
                &ChunkRecord {
                    chunk: chunk(a, id),
                    state: ChunkState::Pending,
                    starts: 0,
                },
            )
            .await
            .unwrap();
    }
    store
        .put_chunk(
            0,
            &ChunkRecord {
                chunk: chunk(a, "L0"),
                state: ChunkState::Done { items: 2, bytes: 6 },
                starts: 1,
            },
        )
        .await
        .unwrap();
    let r0 = store.chunks(a, 0).await.unwrap();
    assert_eq!(r0.len(), 2);
    assert_eq!(r0[0].state, ChunkState::Done { items: 2, bytes: 6 });
    assert_eq!(store.chunks(a, 1).await.unwrap().len(), 1);
    assert!(store.chunks(b, 0).await.unwrap().is_empty());

    // Items: idempotent per key; keys with odd characters; chunk ids that are
    // prefixes of each other do not bleed into each other.
    let odd = "Ünïcødé/a b#%/x.txt";
    store
        .record_items(a, 0, "L1", &[item("a.txt"), item(odd)])
        .await
        .unwrap();
    store
        .record_items(a, 0, "L1", &[item("a.txt")])
        .await
        .unwrap();
    store
        .record_items(a, 0, "L10", &[item("z.txt")])
        .await
        .unwrap();
    store
        .record_items(a, 1, "L1", &[item("b.txt")])
        .await
        .unwrap();
    let keys = store.finished_keys(a, 0, "L1").await.unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(odd));
    assert_eq!(store.finished_keys(a, 0, "L10").await.unwrap().len(), 1);
    let l1 = store.chunk_items(a, 0, "L1").await.unwrap();
    assert_eq!(l1.len(), 2);
    assert!(l1.iter().any(|i| i.key == odd));
    let all = store.items(a, 0).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all.iter().filter(|(c, _)| c == "L1").count(), 2);
    assert!(store.items(b, 0).await.unwrap().is_empty());

    // GUID map per job.
    let g = Uuid::from_u128(99);
    let entry = GuidEntry {
        item_id: "01ABC".into(),
        rel_path: "a.txt".into(),
    };
    store.put_guids(a, &[(g, entry.clone())]).await.unwrap();
    let moved = GuidEntry {
        item_id: "01ABC".into(),
        rel_path: "x/b.txt".into(),
    };
    store.put_guids(a, &[(g, moved.clone())]).await.unwrap();
    assert_eq!(store.guids(a).await.unwrap().get(&g), Some(&moved));
    assert!(store.guids(b).await.unwrap().is_empty());
}

/// Delivery, ack, retry with attempt + 1, dead-letter and requeue, close.
pub async fn queue_suite<Q: ChunkQueue>(queue: &Q) {
    let job = JobId::new();
    for id in ["L0", "L1", "L2"] {
        queue.publish(chunk(job, id)).await.unwrap();
    }
    let first = queue.next().await.unwrap();
    assert_eq!(first.id, "L0");
    queue.settle(first, Settle::Ack).await.unwrap();

    let second = queue.next().await.unwrap();
    assert_eq!(second.id, "L1");
    queue
        .settle(
            second,
            Settle::Retry {
                delay: Duration::from_millis(10),
            },
        )
        .await
        .unwrap();
    let third = queue.next().await.unwrap();
    assert_eq!(third.id, "L2");
    queue
        .settle(
            third,
            Settle::DeadLetter {
                reason: "gave up".into(),
            },
        )
        .await
        .unwrap();
    let again = queue.next().await.unwrap();
    assert_eq!((again.id.as_str(), again.attempt), ("L1", 2));
    queue.settle(again, Settle::Ack).await.unwrap();

    let dead = queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1, "gave up");
    assert_eq!(queue.requeue_dead(job).await.unwrap(), 1);
    let revived = queue.next().await.unwrap();
    assert_eq!((revived.id.as_str(), revived.attempt), ("L2", 1));

    // Closing: `next` waits for in-flight work, then ends.
    queue.close();
    assert!(queue.publish(chunk(job, "late")).await.is_err());
    queue.settle(revived, Settle::Ack).await.unwrap();
    assert!(queue.next().await.is_none());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn redb_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::state::RedbStore::open(dir.path()).unwrap();
        state_store_suite(&store).await;
        // And it survives reopening.
        drop(store);
        let store = crate::state::RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.jobs().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn memory_queue_conforms() {
        queue_suite(&crate::queue::MemoryQueue::new()).await;
    }
}
