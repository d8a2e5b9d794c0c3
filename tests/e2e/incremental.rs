//! Incremental rounds copy only what is new or newer, and say why every
//! other item was skipped.

use chrono::{DateTime, Duration, Utc};
use ferry_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_round_copies_only_new_and_newer_files() {
    let tenant = Sim::start(tenant_farm("/sites/dest", &["Documents"], &[]), |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let share = work.path().join("share");
    let t0: DateTime<Utc> = "2024-01-01T10:00:00Z".parse().unwrap();
    write_files(
        &share,
        &[
            ("same.txt", b"same".to_vec()),
            ("changed.txt", b"old".to_vec()),
            ("older.txt", b"older".to_vec()),
            ("dir/inner.txt", b"inner".to_vec()),
        ],
        t0,
    );
    let state = work.path().join("state");
    let args = migrate_share(&share, &tenant, "/sites/dest", "Documents", &[]);
    let run = ferry(&state, &args).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["copied"], 5, "4 files and a folder");
    let job = run.json()["job"].as_str().unwrap().to_string();
    let written = tenant.counter("filesWritten").await;

    // A newer edit, a new file, and a file whose source is now older.
    write_files(
        &share,
        &[("changed.txt", b"new content".to_vec())],
        t0 + Duration::hours(1),
    );
    write_files(&share, &[("dir/new.txt", b"brand new".to_vec())], t0);
    set_mtime(&share.join("older.txt"), t0 - Duration::days(1));

    let rerun = rerun(&job, &tenant, &[]);
    let run = ferry(&state, &rerun).await;
    assert_eq!(run.code, 0, "{run:?}");
    let result = run.json();
    assert_eq!(
        (result["round"].as_u64(), result["copied"].as_u64()),
        (Some(1), Some(2)),
        "{result}"
    );
    assert_eq!(tenant.counter("filesWritten").await, written + 2);

    let items = read_csv(&report_dir(&state).join("ItemReport_R1.csv")).unwrap();
    let why = |name: &str| {
        let row = items
            .iter()
            .find(|r| r["Item name"] == name)
            .unwrap_or_else(|| panic!("{name} reported"));
        (row["Status"].clone(), row["Result category"].clone())
    };
    assert_eq!(why("changed.txt"), ("Migrated".into(), "".into()));
    assert_eq!(why("new.txt"), ("Migrated".into(), "".into()));
    assert_eq!(why("same.txt"), ("Skipped".into(), "UNCHANGED".into()));
    assert_eq!(why("inner.txt"), ("Skipped".into(), "UNCHANGED".into()));
    assert_eq!(
        why("older.txt"),
        ("Skipped".into(), "TARGET_IS_NEWER".into())
    );
    assert_eq!(why("dir"), ("Skipped".into(), "ALREADY_EXISTS".into()));
    assert_eq!(items.len(), 6);

    let (drive, listing) = tenant.listing("/sites/dest", "Documents", "").await;
    assert_eq!(
        tenant.download(&drive, &listing["changed.txt"].id).await,
        b"new content"
    );
}
