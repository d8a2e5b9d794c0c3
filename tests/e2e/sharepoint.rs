//! SharePoint Server → SharePoint Online: several libraries, a subsite
//! (classic structure), GUID matching across a rename at the source.

use ferry_sim::{Farm, ItemSpec, LibSpec, SiteSpec, WebSpec};
use ferry_tests::*;

fn item(path: &str, content: &str) -> ItemSpec {
    ItemSpec {
        path: path.into(),
        content: Some(content.into()),
        modified: Some("2023-06-01T12:00:00Z".parse().unwrap()),
        created: Some("2023-05-01T12:00:00Z".parse().unwrap()),
        ..Default::default()
    }
}

fn source_farm() -> Farm {
    Farm {
        sites: vec![SiteSpec {
            url: "/sites/src".into(),
            libraries: vec![
                LibSpec {
                    title: "Documents".into(),
                    items: vec![
                        item("b.txt", "bee"),
                        item("Folder/a.docx", "ay"),
                        item("Folder/Sub/c.txt", "sea"),
                    ],
                    ..Default::default()
                },
                LibSpec {
                    title: "Specs".into(),
                    items: vec![item("spec.pdf", "spec")],
                    ..Default::default()
                },
            ],
            webs: vec![WebSpec {
                url: "team".into(),
                libraries: vec![LibSpec {
                    title: "Documents".into(),
                    items: vec![item("t.txt", "team")],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharepoint_server_site_with_subsites_and_a_renamed_file() {
    let farm = Sim::start(source_farm(), |_| {}).await;
    let tenant = Sim::start(
        tenant_farm("/sites/dst", &["Documents", "Specs"], &["team"]),
        |_| {},
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let mut args = vec![
        "migrate".to_string(),
        "--json".into(),
        "--from".into(),
        farm.site("/sites/src"),
        "--to".into(),
        tenant.site("/sites/dst"),
        "--source-user".into(),
        "someone@example.com".into(),
    ];
    args.extend(sign_in(&tenant));
    let run = ferry(&state, &args).await;
    assert_eq!(run.code, 0, "{run:?}");
    let job = run.json()["job"].as_str().unwrap().to_string();

    let (docs_drive, docs) = tenant.listing("/sites/dst", "Documents", "").await;
    assert_eq!(
        files_of(&docs).keys().cloned().collect::<Vec<_>>(),
        vec!["Folder/Sub/c.txt", "Folder/a.docx", "b.txt"]
    );
    let (_, specs) = tenant.listing("/sites/dst", "Specs", "").await;
    assert!(specs.contains_key("spec.pdf"));
    let (_, team) = tenant.listing("/sites/dst/team", "Documents", "").await;
    assert!(
        team.contains_key("t.txt"),
        "subsite library migrated (classic)"
    );
    assert_eq!(
        tenant
            .download(&docs_drive, &docs["Folder/Sub/c.txt"].id)
            .await,
        b"sea"
    );
    let first_id = docs["b.txt"].id.clone();
    let written = tenant.counter("filesWritten").await;

    // At the source: rename a file (SharePoint bumps its Modified time, so it
    // is re-sent — into the same destination item), and move another one
    // keeping its Modified time (the destination item just moves).
    let g = farm.graph();
    let src_drive = g
        .resolve_library(&farm.site("/sites/src"), "Documents")
        .await
        .unwrap();
    let b = g.item_by_path(&src_drive, "b.txt").await.unwrap().unwrap();
    g.move_item(&src_drive, &b.id, "Folder/b renamed.txt")
        .await
        .unwrap();
    let a = g
        .item_by_path(&src_drive, "Folder/a.docx")
        .await
        .unwrap()
        .unwrap();
    let drive_url = format!("{}/v1.0/drives/{}", farm.base, src_drive.drive_id);
    let token = token(&farm.base).await;
    let root: serde_json::Value = client()
        .get(format!("{drive_url}/root"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = client()
        .patch(format!("{drive_url}/items/{}", a.id))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "parentReference": {"id": root["id"]},
            "fileSystemInfo": {"lastModifiedDateTime": "2023-06-01T12:00:00Z"}
        }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    let a_dest_id = docs["Folder/a.docx"].id.clone();

    let mut rerun = vec![
        "migrate".to_string(),
        "--json".into(),
        "--job".into(),
        job,
        "--source-user".into(),
        "someone@example.com".into(),
    ];
    rerun.extend(sign_in(&tenant));
    // Not given the source password this time: a site signed in to once is
    // not prompted for again (the cache is encrypted).
    let out = ferry_command(&state, &rerun)
        .env_remove("FERRY_SOURCE_PASSWORD")
        .output()
        .await
        .unwrap();
    let run = Run::from_output(out);
    assert_eq!(run.code, 0, "{run:?}");
    for entry in std::fs::read_dir(&state).unwrap().flatten() {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            for secret in [&b"ferry-secret"[..], &b"password"[..]] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret),
                    "{} holds a secret in clear text",
                    entry.path().display()
                );
            }
        }
    }
    let result = run.json();
    assert_eq!(result["round"], 1);
    assert_eq!(
        result["copied"], 1,
        "only the renamed (newer) file is sent: {result}"
    );
    assert_eq!(tenant.counter("filesWritten").await, written + 1);

    let (_, docs) = tenant.listing("/sites/dst", "Documents", "").await;
    let files = files_of(&docs);
    assert_eq!(
        files.keys().cloned().collect::<Vec<_>>(),
        vec!["Folder/Sub/c.txt", "Folder/b renamed.txt", "a.docx"],
        "no duplicates, nothing left at the old paths"
    );
    assert_eq!(
        docs["Folder/b renamed.txt"].id, first_id,
        "the same destination item, moved and updated"
    );
    assert_eq!(
        docs["a.docx"].id, a_dest_id,
        "the same destination item, moved"
    );
    let items = read_csv(&report_dir(&state).join("ItemReport_R1.csv")).unwrap();
    let row = items
        .iter()
        .find(|r| r["Item name"] == "a.docx")
        .expect("reported");
    assert_eq!(row["Result category"], "MOVED_TO_MATCH_SOURCE", "{row:?}");
    let row = items
        .iter()
        .find(|r| r["Item name"] == "b renamed.txt")
        .expect("reported");
    assert_eq!(row["Status"], "Migrated", "{row:?}");
}
