//! File share → SharePoint Online.

use chrono::{DateTime, Utc};
use ferry_tests::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_share_to_spo_keeps_content_names_and_times() {
    let tenant = Sim::start(tenant_farm("/sites/dest", &["Documents"], &[]), |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let share = work.path().join("share");
    let big = bytes(2 * 1024 * 1024 + 12_345, 7); // > simple limit below: 7 fragments
    let when = t("2022-03-04T05:06:07Z");
    let long_dir = format!("{}/{}", "d".repeat(150), "e".repeat(150));
    write_files(
        &share,
        &[
            ("A/B/C/deep.txt", b"deep".to_vec()),
            ("empty.txt", Vec::new()),
            ("big.bin", big.clone()),
            ("Ünïcødé 文件 ✓.txt", b"unicode".to_vec()),
            ("bad:name?.txt", b"bad".to_vec()),
            ("CON", b"reserved".to_vec()),
            (
                &format!(
                    "{long_dir}/long-enough-to-pass-400-characters-{}.txt",
                    "x".repeat(60)
                ),
                b"long".to_vec(),
            ),
        ],
        when,
    );
    let state = work.path().join("state");
    let args = migrate_share(
        &share,
        &tenant,
        "/sites/dest",
        "Documents",
        &[
            "--to-folder",
            "Imported",
            "--small-upload-limit",
            "327680",
            "--fragment-size",
            "327680",
        ],
    );
    let run = ferry(&state, &args).await;
    assert_eq!(run.code, 2, "item failures give exit code 2: {run:?}");
    let result = run.json();
    assert_eq!(result["failed"], 2, "{result}");
    assert_eq!(result["state"], "completed with failures");

    let (drive, listing) = tenant.listing("/sites/dest", "Documents", "Imported").await;
    let files = files_of(&listing);
    for (path, size) in [
        ("Imported/A/B/C/deep.txt", 4),
        ("Imported/empty.txt", 0),
        ("Imported/big.bin", big.len() as u64),
        ("Imported/Ünïcødé 文件 ✓.txt", 7),
        ("Imported/bad_name_.txt", 3),
    ] {
        assert_eq!(
            files.get(path).map(|f| f.0),
            Some(size),
            "{path} in {files:?}"
        );
        let item = &listing[path];
        assert_eq!(item.modified, Some(when), "{path}: modified time preserved");
    }
    assert!(listing.contains_key("Imported/A/B/C"), "nested folders");
    assert!(
        !files
            .keys()
            .any(|k| k.contains("CON") || k.contains("long-enough")),
        "{files:?}"
    );
    // Content and hash of the multi-fragment upload.
    let item = &listing["Imported/big.bin"];
    assert_eq!(item.quick_xor_hash.as_deref(), Some(qxh(&big).as_str()));
    assert_eq!(tenant.download(&drive, &item.id).await, big);

    // Every item is in the report, failures with their reasons.
    let dir = report_dir(&state);
    let items = read_csv(&dir.join("ItemReport_R0.csv")).unwrap();
    assert_eq!(
        items.len(),
        12,
        "7 files + A, A/B, A/B/C and the two long folders: {items:#?}"
    );
    let failed: Vec<_> = items.iter().filter(|r| r["Status"] == "Failed").collect();
    assert_eq!(failed.len(), 2, "{failed:#?}");
    let con = failed
        .iter()
        .find(|r| r["Item name"] == "CON")
        .expect("CON reported");
    assert!(
        con["Message"].to_lowercase().contains("reserved"),
        "{con:?}"
    );
    let long = failed
        .iter()
        .find(|r| r["Item name"].starts_with("long-enough"))
        .expect("long path reported");
    assert!(long["Message"].contains("400"), "{long:?}");
    let summary = read_csv(&dir.join("FailureSummary_R0.csv")).unwrap();
    assert_eq!(summary.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_names_can_be_skipped_and_scan_only_copies_nothing() {
    let tenant = Sim::start(tenant_farm("/sites/dest", &["Documents"], &[]), |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let share = work.path().join("share");
    write_files(
        &share,
        &[
            ("ok.txt", b"ok".to_vec()),
            ("bad|name.txt", b"bad".to_vec()),
        ],
        t("2023-01-01T00:00:00Z"),
    );
    for (folder, extra) in [("Skip", "--invalid-names=skip"), ("Scan", "--scan-only")] {
        let state = work.path().join(format!("state-{folder}"));
        let args = migrate_share(
            &share,
            &tenant,
            "/sites/dest",
            "Documents",
            &["--to-folder", folder, extra],
        );
        let run = ferry(&state, &args).await;
        assert_eq!(run.code, 0, "{run:?}");
        let items = read_csv(&report_dir(&state).join("ItemReport_R0.csv")).unwrap();
        let bad = items
            .iter()
            .find(|r| r["Item name"] == "bad|name.txt")
            .unwrap();
        assert_eq!(bad["Status"], "Skipped", "{bad:?}");
        let want = if folder == "Skip" {
            "INVALID_NAME"
        } else {
            "SCAN_ONLY"
        };
        assert_eq!(bad["Result category"], want);
    }
    let (_, listing) = tenant.listing("/sites/dest", "Documents", "").await;
    let files = files_of(&listing);
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        vec!["Skip/ok.txt"],
        "scan-only copied nothing"
    );
}
