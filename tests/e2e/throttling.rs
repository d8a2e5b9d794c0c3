//! With the tenant's resource-unit budget on, a job still completes: it waits
//! as told by Retry-After, and the report counts the waits.

use ferry_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_job_completes_and_counts_waits() {
    let tenant = Sim::start(tenant_farm("/sites/dest", &["Documents"], &[]), |c| {
        c.throttle.ru_per_minute = Some(40);
        c.throttle.window_secs = 1;
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let share = work.path().join("share");
    let files: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| (format!("f{i}.txt"), bytes(100, i)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
    write_files(&share, &refs, "2020-01-01T00:00:00Z".parse().unwrap());
    let state = work.path().join("state");
    let args = migrate_share(&share, &tenant, "/sites/dest", "Documents", &[]);
    let run = ferry(&state, &args).await;
    assert_eq!(run.code, 0, "{run:?}");
    let result = run.json();
    assert_eq!(result["copied"], 30, "{result}");
    let waits = result["throttled_waits"].as_u64().unwrap();
    assert!(
        waits > 0,
        "the budget was exceeded and waited out: {result}"
    );
    assert!(tenant.counter("throttled").await >= waits);
    let summary = read_csv(&report_dir(&state).join("SummaryReport_R0.csv")).unwrap();
    let all = summary.iter().find(|r| r["Source"] == "(all)").unwrap();
    assert_eq!(all["Throttled waits"], waits.to_string());
    let (_, listing) = tenant.listing("/sites/dest", "Documents", "").await;
    assert_eq!(files_of(&listing).len(), 30);
}
