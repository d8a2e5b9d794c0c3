//! Bad input gives one clear error naming what to fix, a non-zero exit, and
//! no half-made job.

use ferry_tests::*;

async fn expect_error(state: &std::path::Path, args: Vec<String>, needles: &[&str]) {
    let run = ferry(state, &args).await;
    assert_eq!(run.code, 1, "{run:?}");
    let err = run.stderr.to_lowercase();
    for n in needles {
        assert!(
            err.contains(&n.to_lowercase()),
            "stderr should mention {n:?}: {}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_named_and_leaves_no_half_job() {
    let farm = Sim::start(tenant_farm("/sites/src", &["Documents"], &[]), |_| {}).await;
    let tenant = Sim::start(tenant_farm("/sites/dest", &["Documents"], &[]), |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let share = work.path().join("share");
    write_files(
        &share,
        &[("a.txt", b"a".to_vec())],
        "2020-01-01T00:00:00Z".parse().unwrap(),
    );
    let with_sign_in = |mut a: Vec<String>, sim: &Sim| {
        a.extend(sign_in(sim));
        a
    };

    // A malformed task file: the file and line are named.
    let tasks = work.path().join("tasks.csv");
    std::fs::write(
        &tasks,
        format!(
            "{},,,{},Documents,,,\nonly,three,columns\n",
            share.display(),
            tenant.site("/sites/dest")
        ),
    )
    .unwrap();
    expect_error(
        &state,
        with_sign_in(
            vec![
                "migrate".into(),
                "--tasks".into(),
                tasks.display().to_string(),
            ],
            &tenant,
        ),
        &["tasks.csv", "line 2"],
    )
    .await;

    // An unreachable source.
    expect_error(
        &state,
        with_sign_in(
            vec![
                "migrate".into(),
                "--from".into(),
                "http://127.0.0.1:9/sites/x".into(),
                "--to".into(),
                tenant.site("/sites/dest"),
                "--source-user".into(),
                "someone@example.com".into(),
            ],
            &tenant,
        ),
        &["127.0.0.1:9"],
    )
    .await;

    // Wrong source password.
    let mut args = vec![
        "migrate".into(),
        "--from".into(),
        farm.site("/sites/src"),
        "--to".into(),
        tenant.site("/sites/dest"),
        "--source-user".into(),
        "someone@example.com".into(),
        "--source-password".into(),
        "wrong".into(),
    ];
    args.extend(sign_in(&tenant));
    expect_error(&state, args, &["sign"]).await;

    // Wrong destination secret.
    let mut args = vec![
        "migrate".into(),
        "--from".into(),
        share.display().to_string(),
        "--to".into(),
        tenant.site("/sites/dest"),
        "--to-library".into(),
        "Documents".into(),
    ];
    args.extend(sign_in(&tenant));
    args.extend(["--client-secret".into(), "not-the-secret".into()]);
    expect_error(&state, args, &["sign-in"]).await;

    // A missing destination library: the error lists the ones there are.
    let args = with_sign_in(
        vec![
            "migrate".into(),
            "--from".into(),
            share.display().to_string(),
            "--to".into(),
            tenant.site("/sites/dest"),
            "--to-library".into(),
            "Nope".into(),
        ],
        &tenant,
    );
    expect_error(&state, args, &["Nope", "Documents"]).await;

    // A missing source folder.
    let args = with_sign_in(
        vec![
            "migrate".into(),
            "--from".into(),
            work.path().join("missing").display().to_string(),
            "--to".into(),
            tenant.site("/sites/dest"),
            "--to-library".into(),
            "Documents".into(),
        ],
        &tenant,
    );
    expect_error(&state, args, &["missing"]).await;

    // None of that left a job behind; the state is usable.
    let run = ferry(&state, &["status".into(), "--json".into()]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json().as_array().map(Vec::len), Some(0));
    assert_eq!(tenant.counter("filesWritten").await, 0);
}
