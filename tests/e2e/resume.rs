//! Kill the migration process part-way (a real SIGKILL), resume it, and get
//! exactly what an uninterrupted run gets, with no file uploaded twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_tests::*;

const FILES: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_run_resumes_to_the_same_destination_without_reuploading() {
    // Latency on every request makes the run last long enough to interrupt.
    let tenant = Sim::start(tenant_farm("/sites/dest", &["Documents"], &[]), |c| {
        c.faults.latency_ms = 10
    })
    .await;
    let reference = Sim::start(tenant_farm("/sites/dest", &["Documents"], &[]), |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let share = work.path().join("share");
    let when: DateTime<Utc> = "2021-09-09T09:09:09Z".parse().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..FILES)
        .map(|i| {
            (
                format!("folder{}/file{i:04}.bin", i % 6),
                bytes(1024 + i, i as u8),
            )
        })
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
    write_files(&share, &refs, when);

    let args = |sim: &Sim| {
        migrate_share(
            &share,
            sim,
            "/sites/dest",
            "Documents",
            &["--workers", "1", "--concurrency", "4"],
        )
    };

    // The run to interrupt.
    let state = work.path().join("state");
    let mut child = ferry_command(&state, &args(&tenant))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("100 files uploaded", Duration::from_secs(90), || async {
        tenant.counter("filesWritten").await >= 100
    })
    .await
    .unwrap();
    // While it runs: status can read the state, and a second run is refused.
    let run = ferry(&state, &["status".into(), "--json".into()]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()[0]["state"], "running", "{run:?}");
    let mut second = vec!["resume".to_string()];
    second.extend(sign_in(&tenant));
    let run = ferry(&state, &second).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("in use by another ferry process"),
        "{}",
        run.stderr
    );
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "killed, not finished");
    let at_kill = tenant.counter("filesWritten").await;
    assert!(
        at_kill < FILES as u64,
        "the kill came part-way ({at_kill} of {FILES})"
    );

    // Status shows the paused job with what remains.
    let run = ferry(&state, &["status".into(), "--json".into()]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let jobs = run.json();
    assert_eq!(jobs[0]["state"], "paused", "{jobs}");

    // Resume finishes it.
    let mut resume = vec!["resume".to_string(), "--json".into()];
    resume.extend(sign_in(&tenant));
    let run = ferry(&state, &resume).await;
    assert_eq!(run.code, 0, "{run:?}");
    let result = run.json();
    assert_eq!(result["resumed"], true);
    assert_eq!(
        tenant.counter("filesWritten").await,
        FILES as u64,
        "every file written exactly once"
    );

    // Same destination as an uninterrupted run.
    let ref_state = work.path().join("ref-state");
    let run = ferry(&ref_state, &args(&reference)).await;
    assert_eq!(run.code, 0, "{run:?}");
    let (_, got) = tenant.listing("/sites/dest", "Documents", "").await;
    let (_, want) = reference.listing("/sites/dest", "Documents", "").await;
    assert_eq!(files_of(&got), files_of(&want));
    assert_eq!(files_of(&got).len(), FILES);
    assert!(got
        .values()
        .all(|i| i.kind == ferry_proto::ItemKind::Folder || i.modified == Some(when)));

    // And the report accounts for every item once.
    let items = read_csv(&report_dir(&state).join("ItemReport_R0.csv")).unwrap();
    assert_eq!(items.len(), FILES + 6);
    assert!(
        items.iter().all(|r| r["Status"] == "Migrated"),
        "{:?}",
        items.iter().find(|r| r["Status"] != "Migrated")
    );
}
