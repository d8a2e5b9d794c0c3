//! Jobs from SPMT's bulk task files: the 8-column CSV and the JSON file.

use ferry_sim::{Farm, ItemSpec, LibSpec, SiteSpec};
use ferry_tests::*;

fn source_farm() -> Farm {
    Farm {
        sites: vec![SiteSpec {
            url: "/sites/src".into(),
            libraries: vec![LibSpec {
                title: "Specs".into(),
                items: vec![
                    ItemSpec {
                        path: "Drafts/one.txt".into(),
                        content: Some("one".into()),
                        ..Default::default()
                    },
                    ItemSpec {
                        path: "two.txt".into(),
                        content: Some("two".into()),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_and_json_task_files_run_as_jobs() {
    let farm = Sim::start(source_farm(), |_| {}).await;
    let tenant = Sim::start(tenant_farm("/sites/dst", &["Documents"], &[]), |_| {}).await;
    let work = tempfile::tempdir().unwrap();
    let share = work.path().join("share");
    write_files(
        &share,
        &[("a.txt", b"a".to_vec()), ("d/b.txt", b"b".to_vec())],
        "2020-01-01T00:00:00Z".parse().unwrap(),
    );

    // CSV: a file-share row into a subfolder, and a SharePoint library row
    // (a quoted field, CRLF line ends, a blank line, a BOM).
    let csv = format!(
        "\u{feff}{share},,,{dst},Documents,FromShare,,\r\n\r\n\"{src}\",Specs,,{dst},Documents,\"From, Specs\",,\r\n",
        share = share.display(),
        src = farm.site("/sites/src"),
        dst = tenant.site("/sites/dst"),
    );
    let tasks = work.path().join("tasks.csv");
    std::fs::write(&tasks, csv).unwrap();
    let mut args: Vec<String> = vec![
        "migrate".into(),
        "--json".into(),
        "--tasks".into(),
        tasks.display().to_string(),
        "--source-user".into(),
        "someone@example.com".into(),
    ];
    args.extend(sign_in(&tenant));
    let run = ferry(&work.path().join("state-csv"), &args).await;
    assert_eq!(run.code, 0, "{run:?}");
    let (_, listing) = tenant.listing("/sites/dst", "Documents", "").await;
    let files: Vec<String> = files_of(&listing).into_keys().collect();
    assert_eq!(
        files,
        vec![
            "From, Specs/Drafts/one.txt",
            "From, Specs/two.txt",
            "FromShare/a.txt",
            "FromShare/d/b.txt"
        ]
    );

    // JSON: the same share into another folder; Items.Lists maps the library.
    let json = serde_json::json!({"Tasks": [
        {"SourcePath": share.display().to_string(), "TargetPath": tenant.site("/sites/dst"),
         "TargetList": "Documents", "TargetListRelativePath": "FromJson"},
        {"SourcePath": farm.site("/sites/src"), "TargetPath": tenant.site("/sites/dst"),
         "Items": {"Lists": [{"SourceList": "Specs", "TargetList": "Documents", "TargetListRelativePath": "JsonSpecs"}]}}
    ]});
    let tasks = work.path().join("tasks.json");
    std::fs::write(&tasks, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    args[3] = tasks.display().to_string();
    let run = ferry(&work.path().join("state-json"), &args).await;
    assert_eq!(run.code, 0, "{run:?}");
    let (_, listing) = tenant.listing("/sites/dst", "Documents", "").await;
    let files = files_of(&listing);
    for f in [
        "FromJson/a.txt",
        "FromJson/d/b.txt",
        "JsonSpecs/Drafts/one.txt",
        "JsonSpecs/two.txt",
    ] {
        assert!(files.contains_key(f), "{f} in {files:?}");
    }
}
