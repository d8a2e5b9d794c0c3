//! A person signs in with a device code through the CLI; the next run does
//! not ask again (the refresh token is cached, encrypted).

use std::time::Duration;

use ferry_tests::*;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_sign_in_once_then_cached() {
    let tenant = Sim::start(tenant_farm("/sites/dest", &["Documents"], &[]), |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let share = work.path().join("share");
    write_files(
        &share,
        &[("a.txt", b"a".to_vec())],
        "2020-01-01T00:00:00Z".parse().unwrap(),
    );
    let state = work.path().join("state");
    let args = migrate_share(
        &share,
        &tenant,
        "/sites/dest",
        "Documents",
        &["--device-code"],
    );
    let mut child = ferry_command(&state, &args)
        .env_remove("FERRY_CLIENT_SECRET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // The CLI tells the person where to go and which code to enter.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let code = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("enter the code ").nth(1) {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("no device-code prompt on stderr");
    })
    .await
    .expect("a prompt within a minute");
    let approved = client()
        .post(format!("{}/_sim/devicecode/approve", tenant.base))
        .json(&serde_json::json!({"user_code": code, "upn": "someone@example.com"}))
        .send()
        .await
        .unwrap();
    assert!(approved.status().is_success());
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    drain.await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["copied"], 1);

    // Again, with no prompt answered: the cached sign-in is used.
    let job = result["job"].as_str().unwrap().to_string();
    let again = rerun(&job, &tenant, &["--device-code"]);
    let mut cmd = ferry_command(&state, &again);
    cmd.env_remove("FERRY_CLIENT_SECRET");
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("enter the code"),
        "prompted again: {stderr}"
    );
}
