//! The connectors over real HTTP against the in-process emulator, and over real files.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use ferry_connectors::auth::{
    CredentialCache, DestinationSignIn, Secret, StaticToken, TokenProvider, TokenSource,
};
use ferry_connectors::fileshare::FileShareSource;
use ferry_connectors::graph::{GraphConfig, GraphDestination, FRAGMENT_MULTIPLE};
use ferry_connectors::spserver::SpServerSource;
use ferry_connectors::{ConnectorError, HttpConfig, SourceEntry, UnreadableEntry, WalkItem};
use ferry_proto::ItemKind;
use ferry_sim::{Farm, ItemSpec, LibSpec, SiteSpec, ThrottleConfig, WebSpec};

async fn drain(
    mut rx: tokio::sync::mpsc::Receiver<WalkItem>,
) -> (Vec<SourceEntry>, Vec<UnreadableEntry>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(it) = rx.recv().await {
            match it {
                Ok(e) => ok.push(e),
                Err(u) => bad.push(u),
            }
        }
    })
    .await;
    assert!(all.is_ok(), "the walk did not finish");
    (ok, bad)
}

// ---------------------------------------------------------------- file share

#[tokio::test]
async fn fileshare_walk_orders_reports_and_never_hangs() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    std::fs::create_dir_all(r.join("A/B/C")).unwrap();
    std::fs::create_dir_all(r.join("Z")).unwrap();
    std::fs::create_dir_all(r.join(".config")).unwrap();
    std::fs::write(r.join("A/B/C/deep.txt"), b"deep").unwrap();
    std::fs::write(r.join("A/empty.bin"), b"").unwrap();
    std::fs::write(r.join("Z/Ünïcødé ✓ 日本.txt"), "ü".repeat(10)).unwrap();
    std::fs::write(r.join(".hidden"), b"h").unwrap();
    std::fs::write(r.join("top.txt"), b"0123456789").unwrap();
    // A loop: A/B/up -> A.
    symlink(r.join("A"), r.join("A/B/up")).unwrap();
    // A link to a file is followed; a dangling one is reported.
    symlink(r.join("top.txt"), r.join("Z/link-to-top")).unwrap();
    symlink(r.join("nowhere"), r.join("Z/dangling")).unwrap();
    // A FIFO would block a reader forever: reported, never opened.
    let fifo = std::process::Command::new("mkfifo")
        .arg(r.join("Z/pipe"))
        .status();
    let have_fifo = fifo.map(|s| s.success()).unwrap_or(false);

    let src = FileShareSource::new(r).unwrap();
    let (ok, bad) = drain(src.walk("")).await;
    let paths: Vec<&str> = ok.iter().map(|e| e.rel_path.as_str()).collect();
    assert_eq!(
        paths,
        [
            ".config",
            ".hidden",
            "A",
            "A/B",
            "A/B/C",
            "A/B/C/deep.txt",
            "A/empty.bin",
            "Z",
            "Z/link-to-top",
            "Z/Ünïcødé ✓ 日本.txt",
            "top.txt"
        ]
    );
    let by: HashMap<&str, &SourceEntry> = ok.iter().map(|e| (e.rel_path.as_str(), e)).collect();
    assert_eq!(by["A/B"].kind, ItemKind::Folder);
    assert_eq!(by["A/empty.bin"].size, 0);
    assert_eq!(by["A/empty.bin"].kind, ItemKind::File);
    assert_eq!(by["Z/link-to-top"].size, 10);
    assert_eq!(by["Z/Ünïcødé ✓ 日本.txt"].size, 20);
    assert!(by[".hidden"].hidden && by[".config"].hidden && !by["top.txt"].hidden);
    assert!(by["top.txt"].modified.is_some());
    assert!(by["top.txt"].unique_id.is_none());
    assert!(by["top.txt"].location.ends_with("/top.txt"));

    let codes: HashMap<&str, &str> = bad
        .iter()
        .map(|u| (u.rel_path.as_str(), u.code.as_str()))
        .collect();
    assert_eq!(codes.get("A/B/up"), Some(&"symlinked_folder"), "{bad:?}");
    assert_eq!(
        codes.get("Z/dangling"),
        Some(&"dangling_symlink"),
        "{bad:?}"
    );
    if have_fifo {
        assert_eq!(codes.get("Z/pipe"), Some(&"not_a_regular_file"), "{bad:?}");
        // Opening it directly is refused instead of blocking.
        let r = tokio::time::timeout(Duration::from_secs(5), src.open("Z/pipe")).await;
        assert!(matches!(r, Ok(Err(ConnectorError::Io { .. }))));
    }

    assert_eq!(src.child_folders("").await.unwrap(), [".config", "A", "Z"]);
    assert_eq!(src.child_folders("A").await.unwrap(), ["A/B"]);
    // A subtree: only what is under it.
    let (sub, _) = drain(src.walk("A/B")).await;
    let sub: Vec<&str> = sub.iter().map(|e| e.rel_path.as_str()).collect();
    assert_eq!(sub, ["A/B/C", "A/B/C/deep.txt"]);
    let (none, missing) = drain(src.walk("nope")).await;
    assert!(none.is_empty() && missing.len() == 1);
}

#[tokio::test]
async fn fileshare_open_streams_and_refuses_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes_of(1_000_003, 7);
    std::fs::create_dir(dir.path().join("d")).unwrap();
    std::fs::write(dir.path().join("d/big # 100%.bin"), &data).unwrap();
    std::fs::write(dir.path().join("secret"), b"outside").unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::rename(dir.path().join("d"), share.join("d")).unwrap();

    let src = FileShareSource::new(&share).unwrap();
    let got = collect(src.open("d/big # 100%.bin").await.unwrap()).await;
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    for bad in [
        "../secret",
        "/etc/passwd",
        "d/../../secret",
        "",
        "d//x",
        "./d",
    ] {
        assert!(
            matches!(src.open(bad).await, Err(ConnectorError::Io { .. })),
            "{bad} was not refused"
        );
    }
    assert!(matches!(
        src.open("d").await,
        Err(ConnectorError::Io { .. })
    ));
    // Not through a symlinked folder either (the walk does not follow them).
    std::os::unix::fs::symlink(dir.path(), share.join("out")).unwrap();
    assert!(matches!(
        src.open("out/secret").await,
        Err(ConnectorError::Io { .. })
    ));

    match FileShareSource::new(dir.path().join("missing")) {
        Err(ConnectorError::NotFound { hint, .. }) => assert!(hint.contains("mounted")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        FileShareSource::new(dir.path().join("secret")),
        Err(ConnectorError::NotFound { .. })
    ));
}

// ---------------------------------------------------------------- SharePoint Server

fn file(path: &str, content: &str) -> ItemSpec {
    ItemSpec {
        path: path.to_owned(),
        content: Some(content.to_owned()),
        ..Default::default()
    }
}

fn hr_farm() -> Farm {
    let mut items = vec![
        ItemSpec {
            path: "Folder A".to_owned(),
            folder: true,
            ..Default::default()
        },
        file(
            "Folder A/O'Neil #1 100%.txt",
            "apostrophe, hash and percent",
        ),
        file("Folder A/Sub/Ünïcødé ✓.txt", "unicode"),
        file("top.txt", "top"),
        ItemSpec {
            path: "Folder A/big.bin".to_owned(),
            size: Some(700_001),
            created: Some(Utc.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).unwrap()),
            modified: Some(Utc.with_ymd_and_hms(2021, 6, 7, 8, 9, 10).unwrap()),
            ..Default::default()
        },
        ItemSpec {
            path: "empty.txt".to_owned(),
            content: Some(String::new()),
            ..Default::default()
        },
    ];
    for i in 0..23 {
        items.push(file(&format!("Many/f{i:02}.txt"), &format!("file {i}")));
    }
    Farm {
        sites: vec![SiteSpec {
            url: "/sites/hr".to_owned(),
            title: Some("Human Resources".to_owned()),
            libraries: vec![
                LibSpec {
                    title: "Documents".to_owned(),
                    items,
                    ..Default::default()
                },
                LibSpec {
                    title: "Policies".to_owned(),
                    items: vec![file("p.txt", "policy")],
                    ..Default::default()
                },
            ],
            webs: vec![
                WebSpec {
                    url: "benefits".to_owned(),
                    title: Some("Benefits".to_owned()),
                    webs: vec![WebSpec {
                        url: "dental".to_owned(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                WebSpec {
                    url: "payroll".to_owned(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
    }
}

async fn hr_sim() -> (TestSim, SpServerSource, String) {
    let sim = TestSim::start_with(|c| c.farm = Some(hr_farm())).await;
    let site = sim.url("/sites/hr");
    let src = SpServerSource::connect(&site, USER, PASSWORD, HttpConfig::default())
        .await
        .expect("sign in");
    (sim, src, site)
}

#[tokio::test]
async fn spserver_subsites_libraries_and_paged_walk() {
    let (sim, src, site) = hr_sim().await;
    let web = src.web(&site).await.unwrap();
    assert_eq!(web.title, "Human Resources");
    assert_eq!(web.server_relative_url, "/sites/hr");
    assert_eq!(web.url, site);

    let subs = src.subsites(&site).await.unwrap();
    let mut names: Vec<&str> = subs
        .iter()
        .map(|w| w.server_relative_url.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["/sites/hr/benefits", "/sites/hr/payroll"]);
    let benefits = subs.iter().find(|w| w.title == "Benefits").unwrap();
    let nested = src.subsites(&benefits.url).await.unwrap();
    assert_eq!(nested.len(), 1);
    assert_eq!(nested[0].server_relative_url, "/sites/hr/benefits/dental");

    let libs = src.libraries(&site).await.unwrap();
    let docs = libs
        .iter()
        .find(|l| l.title == "Documents")
        .expect("Documents");
    assert_eq!(docs.root_folder, "/sites/hr/Shared Documents");
    assert!(libs.iter().any(|l| l.title == "Policies"));
    assert!(docs.item_count >= 30, "{docs:?}");

    // Pages of 7: the 31 items (with the implicit folders "Folder A/Sub" and "Many")
    // take 5 pages.
    let before = src.stats().snapshot().requests;
    let paged = src.clone().with_page_size(7);
    let (ok, bad) = drain(paged.walk(&site, docs, "")).await;
    assert!(bad.is_empty(), "{bad:?}");
    let pages = paged.stats().snapshot().requests - before;
    assert!(pages >= 5, "only {pages} requests");
    assert_eq!(
        ok.len(),
        31,
        "{:?}",
        ok.iter().map(|e| &e.rel_path).collect::<Vec<_>>()
    );
    // Parents first, every entry once.
    let mut seen = std::collections::HashSet::new();
    for e in &ok {
        if let Some((parent, _)) = e.rel_path.rsplit_once('/') {
            assert!(seen.contains(parent), "{} before its parent", e.rel_path);
        }
        assert!(seen.insert(e.rel_path.clone()), "{} twice", e.rel_path);
        assert!(e.unique_id.is_some());
        assert!(e.location.starts_with(&sim.base));
    }
    let by: HashMap<&str, &SourceEntry> = ok.iter().map(|e| (e.rel_path.as_str(), e)).collect();
    assert_eq!(by["Folder A"].kind, ItemKind::Folder);
    assert_eq!(by["Folder A/Sub"].kind, ItemKind::Folder);
    assert_eq!(by["Folder A/big.bin"].size, 700_001);
    assert_eq!(by["empty.txt"].size, 0);
    assert_eq!(
        by["Folder A/big.bin"].modified,
        Some(Utc.with_ymd_and_hms(2021, 6, 7, 8, 9, 10).unwrap())
    );
    assert_eq!(
        by["Folder A/big.bin"].created,
        Some(Utc.with_ymd_and_hms(2020, 1, 2, 3, 4, 5).unwrap())
    );

    // Item ranges: disjoint, together everything; a late range reads only its pages.
    let mut union = Vec::new();
    for (from, to) in [(1, Some(11)), (11, Some(21)), (21, None)] {
        let before = paged.stats().snapshot().requests;
        let (part, bad) = drain(paged.walk_range(&site, docs, from, to)).await;
        assert!(bad.is_empty(), "{bad:?}");
        let cost = paged.stats().snapshot().requests - before;
        assert!(cost <= 3, "range {from}.. took {cost} requests");
        union.extend(part.into_iter().map(|e| e.rel_path));
    }
    union.sort();
    let mut all: Vec<String> = ok.iter().map(|e| e.rel_path.clone()).collect();
    all.sort();
    assert_eq!(union, all);

    // Folders to split by.
    let top = src.child_folders(&site, docs, "").await.unwrap();
    let top: Vec<(&str, u64)> = top
        .iter()
        .map(|f| (f.rel_path.as_str(), f.item_count))
        .collect();
    assert_eq!(top, [("Folder A", 3), ("Many", 23)]);
    let inner = src.child_folders(&site, docs, "Folder A").await.unwrap();
    assert_eq!(inner.len(), 1);
    assert_eq!(inner[0].rel_path, "Folder A/Sub");

    // A subtree.
    let sub = paged.list_items(&site, docs, "Folder A").await.unwrap();
    let sub: Vec<&str> = sub.iter().map(|e| e.rel_path.as_str()).collect();
    assert_eq!(
        sub,
        [
            "Folder A/O'Neil #1 100%.txt",
            "Folder A/Sub",
            "Folder A/Sub/Ünïcødé ✓.txt",
            "Folder A/big.bin"
        ]
    );
    sim.stop().await;
}

#[tokio::test]
async fn spserver_download_streams_exact_content() {
    let (sim, src, site) = hr_sim().await;
    for (path, want) in [
        (
            "Folder A/O'Neil #1 100%.txt",
            "apostrophe, hash and percent",
        ),
        ("Folder A/Sub/Ünïcødé ✓.txt", "unicode"),
        ("empty.txt", ""),
    ] {
        let url = format!("/sites/hr/Shared Documents/{path}");
        let got = collect(src.open(&site, &url).await.unwrap()).await;
        assert_eq!(String::from_utf8(got).unwrap(), want, "{path}");
    }
    let big = collect(
        src.open(&site, "/sites/hr/Shared Documents/Folder A/big.bin")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(big.len(), 700_001);
    assert!(matches!(
        src.open(&site, "/sites/hr/Shared Documents/none.txt").await,
        Err(ConnectorError::NotFound { .. })
    ));
    let digest = src.form_digest(&site).await.unwrap();
    assert!(!digest.expose().is_empty());
    assert_eq!(format!("{digest:?}"), "Secret(***)");
    sim.stop().await;
}

#[tokio::test]
async fn spserver_sign_in_errors() {
    let (sim, _src, site) = hr_sim().await;
    match SpServerSource::connect(&site, USER, "wrong", HttpConfig::default()).await {
        Err(ConnectorError::Auth { .. }) => {}
        other => panic!("expected Auth, got {other:?}"),
    }
    match SpServerSource::connect(
        &sim.url("/sites/nope"),
        USER,
        PASSWORD,
        HttpConfig::default(),
    )
    .await
    {
        Err(ConnectorError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    match SpServerSource::connect(
        &sim.url("/sites/hr/Shared%20Documents"),
        USER,
        PASSWORD,
        HttpConfig::default(),
    )
    .await
    {
        Err(ConnectorError::NotFound { hint, .. }) => assert!(hint.contains("/sites/hr"), "{hint}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let quick = HttpConfig {
        max_attempts: 2,
        base_backoff: Duration::from_millis(10),
        ..HttpConfig::default()
    };
    let dead = format!("http://127.0.0.1:{}/sites/hr", dead_port());
    match SpServerSource::connect(&dead, USER, PASSWORD, quick).await {
        Err(e @ ConnectorError::Unreachable { .. }) => assert!(e.is_transient()),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    sim.stop().await;
}

#[tokio::test]
async fn spserver_password_is_cached_encrypted() {
    let (sim, _src, site) = hr_sim().await;
    let state = tempfile::tempdir().unwrap();
    let cache = CredentialCache::open(state.path()).unwrap();
    // Nothing cached yet: the user must be asked.
    assert!(matches!(
        SpServerSource::connect_cached(&site, USER, None, &cache, HttpConfig::default()).await,
        Err(ConnectorError::Auth { .. })
    ));
    let pw = Secret::new(PASSWORD);
    SpServerSource::connect_cached(&site, USER, Some(&pw), &cache, HttpConfig::default())
        .await
        .unwrap();
    // Next time (another process: reopen the cache), no password is needed.
    let again = CredentialCache::open(state.path()).unwrap();
    SpServerSource::connect_cached(&site, USER, None, &again, HttpConfig::default())
        .await
        .unwrap();
    let raw = std::fs::read(state.path().join("credentials.bin")).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("someone@example.com"));
    sim.stop().await;
}

// ---------------------------------------------------------------- Graph

#[tokio::test]
async fn graph_resolve_library_and_not_found_lists_names() {
    let sim = TestSim::start_with(|c| c.farm = Some(hr_farm())).await;
    let g = sim.graph();
    let site = sim.url("/sites/hr");
    let by_name = g.resolve_library(&site, "Documents").await.unwrap();
    let by_url = g.resolve_library(&site, "Shared Documents").await.unwrap();
    let by_case = g
        .resolve_library(&site, "shared%20documents")
        .await
        .unwrap();
    assert_eq!(by_name, by_url);
    assert_eq!(by_name, by_case);
    assert!(by_name.site_id.contains(','));
    assert!(
        by_name.web_url.ends_with("/sites/hr/Shared%20Documents"),
        "{}",
        by_name.web_url
    );
    let libs = g.libraries(&site).await.unwrap();
    assert_eq!(libs.len(), 2);
    match g.resolve_library(&site, "Missing").await {
        Err(ConnectorError::NotFound { hint, .. }) => {
            assert!(
                hint.contains("Documents") && hint.contains("Policies"),
                "{hint}"
            )
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        g.resolve_library(&sim.url("/sites/none"), "Documents")
            .await,
        Err(ConnectorError::NotFound { .. })
    ));
    // Root site collection.
    g.resolve_library(&sim.base, "Documents").await.unwrap();
    sim.stop().await;
}

#[tokio::test]
async fn graph_ensure_folder_is_idempotent_and_concurrent() {
    let sim = TestSim::start().await;
    let site = sim.base.clone();
    let g = Arc::new(sim.graph());
    let drive = g.resolve_library(&site, "Documents").await.unwrap();
    let a = g.ensure_folder(&drive, "One/Two #2/Drei ü").await.unwrap();
    let b = g.ensure_folder(&drive, "One/Two #2/Drei ü").await.unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(a.kind, ItemKind::Folder);
    assert_eq!(a.rel_path, "One/Two #2/Drei ü");
    // Fresh destinations (no cache) racing for the same new folders.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let g2 = sim.graph();
        let d = drive.clone();
        tasks.push(tokio::spawn(async move {
            g2.ensure_folder(&d, "Race/Deep/Er").await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap().expect("ensure_folder under a race").id);
    }
    assert_eq!(ids.len(), 1);
    let found = g
        .item_by_path(&drive, "Race/Deep/Er")
        .await
        .unwrap()
        .unwrap();
    assert!(ids.contains(&found.id));
    // Root.
    let root = g.ensure_folder(&drive, "").await.unwrap();
    assert_eq!(root.rel_path, "");
    sim.stop().await;
}

#[tokio::test]
async fn graph_uploads_small_session_and_empty_with_times_and_hashes() {
    let sim = TestSim::start().await;
    let g = sim.graph_with(|c| {
        c.small_upload_limit = 400_000;
        c.fragment_size = FRAGMENT_MULTIPLE;
    });
    let drive = g.resolve_library(&sim.base, "Documents").await.unwrap();
    let created = Utc.with_ymd_and_hms(2019, 3, 4, 5, 6, 7).unwrap();
    let modified = Utc.with_ymd_and_hms(2022, 8, 9, 10, 11, 12).unwrap();

    // Small, with a name that needs encoding; parents created on the way.
    let small = bytes_of(123_457, 1);
    let name = "New Folder/Ünï #1 100% c.txt";
    let it = g
        .upload(
            &drive,
            name,
            small.len() as u64,
            stream_of(small.clone(), 10_000),
            Some(created),
            Some(modified),
        )
        .await
        .unwrap();
    assert_eq!(it.size, small.len() as u64);
    assert_eq!(it.quick_xor_hash.as_deref(), Some(qxh(&small).as_str()));
    assert_eq!(it.modified, Some(modified));

    // Larger than the small limit: 4 fragments of 327,680 (the last one short), fed in
    // pieces that straddle fragment boundaries.
    let big = bytes_of(3 * FRAGMENT_MULTIPLE as usize + 4_321, 2);
    let before = g.stats().snapshot().requests;
    let it = g
        .upload(
            &drive,
            "New Folder/big.bin",
            big.len() as u64,
            stream_of(big.clone(), 100_003),
            Some(created),
            Some(modified),
        )
        .await
        .unwrap();
    let requests = g.stats().snapshot().requests - before;
    assert!(
        requests >= 5,
        "expected a session and 4 fragments, saw {requests} requests"
    );
    assert_eq!(it.size, big.len() as u64);
    assert_eq!(it.quick_xor_hash.as_deref(), Some(qxh(&big).as_str()));

    // Empty.
    let it = g
        .upload(
            &drive,
            "empty.txt",
            0,
            stream_of(Vec::new(), 1),
            None,
            Some(modified),
        )
        .await
        .unwrap();
    assert_eq!(it.size, 0);
    assert_eq!(it.quick_xor_hash.as_deref(), Some(qxh(&[]).as_str()));
    // Times repaired afterwards.
    let fixed = g
        .set_file_times(&drive, &it.id, "empty.txt", Some(created), Some(modified))
        .await
        .unwrap();
    assert_eq!(
        (fixed.created, fixed.modified),
        (Some(created), Some(modified))
    );

    // Read back: times preserved, content hash as sent.
    for (path, data) in [(name, &small), ("New Folder/big.bin", &big)] {
        let back = g.item_by_path(&drive, path).await.unwrap().expect(path);
        assert_eq!(back.created, Some(created), "{path}");
        assert_eq!(back.modified, Some(modified), "{path}");
        assert_eq!(back.quick_xor_hash.as_deref(), Some(qxh(data).as_str()));
        assert_eq!(back.kind, ItemKind::File);
        let by_id = g.item_by_id(&drive, &back.id).await.unwrap().unwrap();
        assert_eq!(by_id.rel_path, path);
    }

    // Replacing keeps working; a file that lies about its size is refused.
    g.upload(
        &drive,
        "New Folder/big.bin",
        5,
        stream_of(b"short".to_vec(), 2),
        None,
        None,
    )
    .await
    .unwrap();
    assert!(matches!(
        g.upload(
            &drive,
            "liar.bin",
            500_000,
            stream_of(bytes_of(400_000, 3), 65_536),
            None,
            None
        )
        .await,
        Err(ConnectorError::Io { .. })
    ));
    assert!(matches!(
        g.upload(
            &drive,
            "liar2.bin",
            10,
            stream_of(bytes_of(11, 3), 4),
            None,
            None
        )
        .await,
        Err(ConnectorError::Io { .. })
    ));
    assert!(g.item_by_path(&drive, "liar.bin").await.unwrap().is_none());
    sim.stop().await;
}

#[tokio::test]
async fn graph_move_item_and_scan() {
    let sim = TestSim::start().await;
    let g = sim.graph();
    let drive = g.resolve_library(&sim.base, "Documents").await.unwrap();
    for p in ["a/x.txt", "a/b/y.txt", "c d/z #.txt", "top.txt"] {
        g.upload(&drive, p, 3, stream_of(b"abc".to_vec(), 2), None, None)
            .await
            .unwrap();
    }
    g.ensure_folder(&drive, "empty folder").await.unwrap();
    let all = g.scan(&drive, "").await.unwrap();
    let paths: Vec<&str> = all.iter().map(|i| i.rel_path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "a",
            "a/b",
            "a/b/y.txt",
            "a/x.txt",
            "c d",
            "c d/z #.txt",
            "empty folder",
            "top.txt"
        ]
    );
    let sub = g.scan(&drive, "a").await.unwrap();
    let sub: Vec<&str> = sub.iter().map(|i| i.rel_path.as_str()).collect();
    assert_eq!(sub, ["a/b", "a/b/y.txt", "a/x.txt"]);

    let x = all.iter().find(|i| i.rel_path == "a/x.txt").unwrap();
    let moved = g
        .move_item(&drive, &x.id, "moved/here/renamed x.txt")
        .await
        .unwrap();
    assert_eq!(moved.id, x.id);
    assert_eq!(moved.rel_path, "moved/here/renamed x.txt");
    assert!(g.item_by_path(&drive, "a/x.txt").await.unwrap().is_none());
    let back = g.item_by_id(&drive, &x.id).await.unwrap().unwrap();
    assert_eq!(back.rel_path, "moved/here/renamed x.txt");
    // Moving a folder: its children follow.
    let a = all.iter().find(|i| i.rel_path == "a").unwrap();
    g.move_item(&drive, &a.id, "c d/a2").await.unwrap();
    let after = g.scan(&drive, "c d").await.unwrap();
    let after: Vec<&str> = after.iter().map(|i| i.rel_path.as_str()).collect();
    assert_eq!(
        after,
        ["c d/a2", "c d/a2/b", "c d/a2/b/y.txt", "c d/z #.txt"]
    );
    // A taken name is refused.
    let top = g.item_by_path(&drive, "top.txt").await.unwrap().unwrap();
    assert!(matches!(
        g.move_item(&drive, &top.id, "c d/z #.txt").await,
        Err(ConnectorError::Rejected { status: 409, .. })
    ));
    assert!(g.item_by_id(&drive, "nope").await.unwrap().is_none());
    sim.stop().await;
}

#[tokio::test]
async fn graph_throttling_waits_retry_after_and_completes() {
    let sim = TestSim::start_with(|c| {
        c.throttle = ThrottleConfig {
            ru_per_minute: Some(6),
            window_secs: 1,
        };
    })
    .await;
    let g = sim.graph();
    let drive = g.resolve_library(&sim.base, "Documents").await.unwrap();
    for i in 0..4 {
        g.upload(
            &drive,
            &format!("t/f{i}.txt"),
            2,
            stream_of(b"ok".to_vec(), 1),
            None,
            None,
        )
        .await
        .unwrap();
    }
    let s = g.stats().snapshot();
    assert!(s.throttled_waits > 0, "{s:?}");
    assert!(s.throttled_ms >= 1000 * s.throttled_waits.min(1), "{s:?}");
    assert_eq!(g.scan(&drive, "t").await.unwrap().len(), 4);

    // Concurrent uploads through one destination: all finish; one 429 pauses them all.
    let g = Arc::new(g);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (g, d) = (g.clone(), drive.clone());
        tasks.push(tokio::spawn(async move {
            g.upload(
                &d,
                &format!("c/f{i}.txt"),
                1,
                stream_of(b"c".to_vec(), 1),
                None,
                None,
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("upload under throttling");
    }
    let counters: serde_json::Value = reqwest::get(sim.url("/_sim/counters"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let s = g.stats().snapshot();
    assert_eq!(
        counters["throttled"].as_u64(),
        Some(s.throttled_waits),
        "{counters} {s:?}"
    );
    eprintln!("throttling: {s:?}");
    sim.stop().await;
}

#[tokio::test]
async fn graph_bad_token_is_auth_error() {
    let sim = TestSim::start().await;
    let g = GraphDestination::new(
        GraphConfig {
            graph_base: sim.graph_base(),
            ..GraphConfig::default()
        },
        Arc::new(StaticToken(Secret::new("not-a-token"))),
    )
    .unwrap();
    match g.resolve_library(&sim.base, "Documents").await {
        Err(ConnectorError::Auth { .. }) => {}
        other => panic!("expected Auth, got {other:?}"),
    }
    sim.stop().await;
}

// ---------------------------------------------------------------- sign-in

#[tokio::test]
async fn auth_client_secret_and_wrong_secret() {
    let sim = TestSim::start().await;
    let tp = sim.tokens();
    let t1 = tp.token().await.unwrap();
    let t2 = tp.token().await.unwrap();
    assert_eq!(t1, t2, "the token is cached");
    assert_eq!(tp.stats().snapshot().requests, 1);
    let bad = TokenProvider::new(
        &sim.base,
        SCOPE,
        DestinationSignIn::ClientSecret {
            tenant: TENANT.to_owned(),
            client_id: "ferry".to_owned(),
            secret: Secret::new("wrong-secret"),
        },
        None,
    )
    .unwrap();
    match bad.token().await {
        Err(ConnectorError::Auth { message, .. }) => assert!(!message.contains("wrong-secret")),
        other => panic!("expected Auth, got {other:?}"),
    }
    // Secrets never show in Debug.
    let dbg = format!("{:?}", sim.secret_sign_in());
    assert!(!dbg.contains("ferry-secret"), "{dbg}");
    sim.stop().await;
}

#[tokio::test]
async fn auth_password_grant_refreshes_from_the_cache() {
    let sim = TestSim::start().await;
    let state = tempfile::tempdir().unwrap();
    let sign_in = DestinationSignIn::Password {
        tenant: TENANT.to_owned(),
        client_id: "ferry".to_owned(),
        username: USER.to_owned(),
        password: Secret::new(PASSWORD),
    };
    let tp = TokenProvider::new(
        &sim.base,
        SCOPE,
        sign_in,
        Some(CredentialCache::open(state.path()).unwrap()),
    )
    .unwrap();
    let token = tp.token().await.unwrap();
    // The token works against Graph.
    let g = GraphDestination::new(
        GraphConfig {
            graph_base: sim.graph_base(),
            ..GraphConfig::default()
        },
        Arc::new(StaticToken(Secret::new(token))),
    )
    .unwrap();
    g.resolve_library(&sim.base, "Documents").await.unwrap();
    // A refresh token was stored, encrypted.
    let cache = CredentialCache::open(state.path()).unwrap();
    let rt = cache
        .get(&tp.cache_target())
        .unwrap()
        .expect("refresh token cached");
    let raw = std::fs::read(state.path().join("credentials.bin")).unwrap();
    assert!(!raw
        .windows(rt.expose().len())
        .any(|w| w == rt.expose().as_bytes()));

    // Another process with a wrong password still signs in: from the refresh token.
    let tp2 = TokenProvider::new(
        &sim.base,
        SCOPE,
        DestinationSignIn::Password {
            tenant: TENANT.to_owned(),
            client_id: "ferry".to_owned(),
            username: USER.to_owned(),
            password: Secret::new("forgotten"),
        },
        Some(cache),
    )
    .unwrap();
    tp2.token()
        .await
        .expect("signed in from the cached refresh token");
    sim.stop().await;
}

#[tokio::test]
async fn auth_device_code_approved_via_admin_endpoint() {
    let sim = TestSim::start().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tp = TokenProvider::new(
        &sim.base,
        SCOPE,
        DestinationSignIn::DeviceCode {
            tenant: TENANT.to_owned(),
            client_id: "ferry".to_owned(),
        },
        None,
    )
    .unwrap()
    .on_device_code(move |p| {
        let _ = tx.send(p.clone());
    });
    let approve_url = sim.url("/_sim/devicecode/approve");
    let approver = tokio::spawn(async move {
        let prompt = rx.recv().await.expect("prompt");
        assert!(prompt.message.contains(&prompt.user_code));
        let http = reqwest::Client::new();
        let r = http
            .post(&approve_url)
            .json(&serde_json::json!({"user_code": prompt.user_code, "upn": USER}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    });
    let token = tokio::time::timeout(Duration::from_secs(30), tp.token())
        .await
        .expect("device code finished")
        .unwrap();
    approver.await.unwrap();
    assert!(!token.is_empty());
    sim.stop().await;
}

#[tokio::test]
async fn auth_certificate_assertion() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=ferry-test",
            "-days",
            "1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    let Ok(out) = made else {
        eprintln!("openssl not available; certificate sign-in not exercised");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fp = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let fp = String::from_utf8(fp.stdout).unwrap();
    let thumb: String = fp.split('=').nth(1).unwrap().trim().replace(':', "");
    let sim = TestSim::start_with(|c| {
        c.apps.push(ferry_sim::AppRegistration {
            client_id: "ferry-cert".to_owned(),
            secret: None,
            certificate_thumbprint: Some(thumb),
        })
    })
    .await;
    let sign_in = |cert_pem| DestinationSignIn::Certificate {
        tenant: TENANT.to_owned(),
        client_id: "ferry-cert".to_owned(),
        key_pem: key.clone(),
        cert_pem,
    };
    let tp = TokenProvider::new(&sim.base, SCOPE, sign_in(cert.clone()), None).unwrap();
    tp.token().await.expect("certificate sign-in");
    // Another certificate (wrong thumbprint) is refused.
    let other = dir.path().join("other.pem");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-key"])
        .arg(&key)
        .args(["-subj", "/CN=other", "-days", "2", "-out"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success());
    let tp = TokenProvider::new(&sim.base, SCOPE, sign_in(other), None).unwrap();
    assert!(matches!(tp.token().await, Err(ConnectorError::Auth { .. })));
    sim.stop().await;
}

#[tokio::test]
async fn credential_cache_round_trip_is_encrypted_at_rest() {
    let state = tempfile::tempdir().unwrap();
    let cache = CredentialCache::open(state.path()).unwrap();
    let target = CredentialCache::sp_server_target(
        "https://sp.contoso.com/sites/HR/",
        "Someone@Example.com",
    );
    assert!(cache.get(&target).unwrap().is_none());
    cache
        .put(&target, &Secret::new("hunter2-very-secret"))
        .unwrap();
    cache.put("other", &Secret::new("second")).unwrap();
    assert_eq!(
        cache.get(&target).unwrap().unwrap().expose(),
        "hunter2-very-secret"
    );
    let raw = std::fs::read(state.path().join("credentials.bin")).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        !text.contains("hunter2") && !text.contains("sp.contoso.com"),
        "clear text in the cache file"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["credentials.bin", "credentials.key"] {
            let mode = std::fs::metadata(state.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{f} is readable by others: {mode:o}");
        }
    }
    // Same key file: readable after reopening; forget removes one entry only.
    let reopened = CredentialCache::open(state.path()).unwrap();
    assert_eq!(
        reopened.get(&target).unwrap().unwrap().expose(),
        "hunter2-very-secret"
    );
    reopened.forget(&target).unwrap();
    assert!(cache.get(&target).unwrap().is_none());
    assert_eq!(cache.get("other").unwrap().unwrap().expose(), "second");
    // Another key cannot read it.
    std::fs::write(
        state.path().join("credentials.key"),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )
    .unwrap();
    let wrong = CredentialCache::open(state.path()).unwrap();
    assert!(matches!(
        wrong.get("other"),
        Err(ConnectorError::Auth { .. })
    ));
}

#[tokio::test]
async fn transient_server_errors_are_retried_with_backoff() {
    let sim = TestSim::start_with(|c| {
        c.faults.error_500_share = 0.15;
        c.faults.error_503_share = 0.1;
        c.faults.retry_after_secs = 0;
    })
    .await;
    let g = sim.graph_with(|c| {
        c.max_attempts = 20;
        c.base_backoff = Duration::from_millis(20);
    });
    let drive = g.resolve_library(&sim.base, "Documents").await.unwrap();
    for i in 0..5 {
        g.upload(
            &drive,
            &format!("f/{i}.txt"),
            1,
            stream_of(b"x".to_vec(), 1),
            None,
            None,
        )
        .await
        .unwrap();
    }
    let s = g.stats().snapshot();
    assert!(s.retries + s.throttled_waits > 0, "{s:?}");
    assert_eq!(g.scan(&drive, "f").await.unwrap().len(), 5);
    sim.stop().await;
}

#[tokio::test]
async fn token_source_is_object_safe() {
    let t: Arc<dyn TokenSource> = Arc::new(StaticToken(Secret::new("x")));
    assert_eq!(t.token().await.unwrap(), "x");
    let _ = poll_until(Duration::from_secs(1), || async { Some(()) }).await;
}

#[tokio::test]
async fn graph_upload_recreates_a_vanished_parent() {
    let sim = TestSim::start().await;
    let g = sim.graph();
    let drive = g.resolve_library(&sim.base, "Documents").await.unwrap();
    g.upload(
        &drive,
        "gone/x.txt",
        1,
        stream_of(b"x".to_vec(), 1),
        None,
        None,
    )
    .await
    .unwrap();
    // Someone deletes the folder behind our back (our folder cache still has it).
    let folder = g.item_by_path(&drive, "gone").await.unwrap().unwrap();
    let token = sim.tokens().token().await.unwrap();
    let r = reqwest::Client::new()
        .delete(format!(
            "{}/drives/{}/items/{}",
            sim.graph_base(),
            drive.drive_id,
            folder.id
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    for (name, size) in [("gone/y.txt", 1usize), ("gone/z.bin", 5_000_000)] {
        let it = g
            .upload(
                &drive,
                name,
                size as u64,
                stream_of(bytes_of(size, 9), 65_536),
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(it.rel_path, name);
        if name == "gone/y.txt" {
            // Recreated: a different folder now.
            let again = g.item_by_path(&drive, "gone").await.unwrap().unwrap();
            assert_ne!(again.id, folder.id);
        }
    }
    sim.stop().await;
}

/// Scan cost on a 20,000-file library: delta for the whole drive, `children` for a
/// subtree. Run with `--run-ignored all` to see the numbers.
#[tokio::test]
#[ignore = "measurement, ~20 s"]
async fn measure_scan_20000() {
    let mut items = Vec::new();
    for f in 0..400 {
        for i in 0..50 {
            items.push(ItemSpec {
                path: format!("All/F{f:03}/file {i:02}.txt"),
                content: Some(String::new()),
                ..Default::default()
            });
        }
    }
    let t = std::time::Instant::now();
    let sim = TestSim::start_with(|c| {
        c.farm = Some(Farm {
            sites: vec![SiteSpec {
                url: "/sites/big".to_owned(),
                libraries: vec![LibSpec {
                    title: "Documents".to_owned(),
                    items,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    })
    .await;
    eprintln!("seeded 20,401 items in {:?}", t.elapsed());
    let g = sim.graph();
    let drive = g
        .resolve_library(&sim.url("/sites/big"), "Documents")
        .await
        .unwrap();
    for latency_ms in [0u64, 50] {
        let r = reqwest::Client::new()
            .put(sim.url("/_sim/settings"))
            .json(&serde_json::json!({"faults": {"latency_ms": latency_ms}}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        for (label, subtree) in [("delta (whole drive)", ""), ("children (subtree)", "All")] {
            let before = g.stats().snapshot().requests;
            let t = std::time::Instant::now();
            let items = g.scan(&drive, subtree).await.unwrap();
            eprintln!(
                "latency {latency_ms} ms, {label}: {} items, {} requests, {:?}",
                items.len(),
                g.stats().snapshot().requests - before,
                t.elapsed()
            );
        }
    }
    sim.stop().await;
}

#[tokio::test]
async fn graph_upload_url_gets_no_authorization_header() {
    let (sim, rec) = Recorder::start_sim().await;
    let g = sim.graph_with(|c| {
        c.small_upload_limit = 0;
        c.fragment_size = FRAGMENT_MULTIPLE;
    });
    let drive = g.resolve_library(&sim.base, "Documents").await.unwrap();
    let data = bytes_of(2 * FRAGMENT_MULTIPLE as usize + 10, 4);
    let it = g
        .upload(
            &drive,
            "via proxy.bin",
            data.len() as u64,
            stream_of(data.clone(), 50_000),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(it.quick_xor_hash.as_deref(), Some(qxh(&data).as_str()));
    let fragments = rec.requests_starting("PUT /_api/v2.0/uploadSession");
    assert_eq!(fragments.len(), 3, "{fragments:?}");
    for f in &fragments {
        let lower = f.to_ascii_lowercase();
        assert!(
            !lower.contains("\r\nauthorization:"),
            "Authorization sent to the upload URL:\n{f}"
        );
        assert!(lower.contains("\r\ncontent-range: bytes "), "{f}");
    }
    // The API calls themselves are authorised.
    let api = rec.requests_starting("POST /v1.0/drives/");
    assert!(api.iter().all(|h| h
        .to_ascii_lowercase()
        .contains("\r\nauthorization: bearer ")));
    sim.stop().await;
}

#[tokio::test]
async fn auth_renews_tokens_before_they_expire() {
    let sim = TestSim::start_with(|c| c.token_lifetime_secs = 2).await;
    let tp = Arc::new(
        TokenProvider::new(
            &sim.base,
            SCOPE,
            DestinationSignIn::Password {
                tenant: TENANT.to_owned(),
                client_id: "ferry".to_owned(),
                username: USER.to_owned(),
                password: Secret::new(PASSWORD),
            },
            None,
        )
        .unwrap(),
    );
    let first = tp.token().await.unwrap();
    let tp2 = tp.clone();
    let renewed = poll_until(Duration::from_secs(10), || {
        let tp = tp2.clone();
        let first = first.clone();
        async move { tp.token().await.ok().filter(|t| *t != first) }
    })
    .await;
    // The renewed token works (with a destination using the same provider).
    let g = GraphDestination::new(
        GraphConfig {
            graph_base: sim.graph_base(),
            ..GraphConfig::default()
        },
        tp.clone(),
    )
    .unwrap();
    g.resolve_library(&sim.base, "Documents").await.unwrap();
    assert!(!renewed.is_empty());
    // A sign-in, then at least one renewal.
    assert!(tp.stats().snapshot().requests >= 2);
    sim.stop().await;
}

/// Upload throughput against the emulator (debug build, loopback): many small files
/// with concurrency, one large file through an upload session. Run with
/// `--run-ignored all` to see the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn measure_uploads() {
    let sim = TestSim::start().await;
    let g = Arc::new(sim.graph());
    let drive = g.resolve_library(&sim.base, "Documents").await.unwrap();
    g.ensure_folder(&drive, "small").await.unwrap();
    for concurrency in [1usize, 8] {
        let n = 400;
        let t = std::time::Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut tasks = Vec::new();
        for i in 0..n {
            let (g, d, sem) = (g.clone(), drive.clone(), sem.clone());
            tasks.push(tokio::spawn(async move {
                let _p = sem.acquire().await.unwrap();
                g.upload(
                    &d,
                    &format!("small/c{concurrency}-{i}.txt"),
                    4096,
                    stream_of(bytes_of(4096, i as u64), 4096),
                    None,
                    None,
                )
                .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "{n} x 4 KiB, concurrency {concurrency}: {:.0} files/s",
            n as f64 / secs
        );
    }
    let size = 64 * 1024 * 1024;
    let data = bytes_of(size, 5);
    let t = std::time::Instant::now();
    g.upload(
        &drive,
        "large.bin",
        size as u64,
        stream_of(data, 256 * 1024),
        None,
        None,
    )
    .await
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "64 MiB via upload session (10 MiB fragments): {:.0} MB/s",
        size as f64 / 1e6 / secs
    );
    sim.stop().await;
}

// ---------------------------------------------------------------- site structure

mod sites {
    use super::*;
    use ferry_connectors::sites::{tenant_root, CreateSite, Provisioning};
    use uuid::Uuid;

    fn team_site(sim: &TestSim, path: &str) -> CreateSite {
        CreateSite {
            title: format!("Site {path}"),
            url: sim.url(path),
            lcid: 1033,
            web_template: "STS#3".to_owned(),
            owner: Some(USER.to_owned()),
            description: "made by the tests".to_owned(),
        }
    }

    #[tokio::test]
    async fn sites_ensure_site_waits_for_provisioning_and_is_idempotent() {
        let sim = TestSim::start_with(|c| c.provisioning_delay_secs = 0.7).await;
        let sites = sim.sites();
        let root = tenant_root(&sim.url("/sites/alpha"));
        assert_eq!(root, sim.base);
        let alpha = team_site(&sim, "/sites/alpha");

        let made = sites
            .ensure_site(&root, &alpha, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(made.status, Provisioning::Ready);
        assert!(!made.existed);
        assert!(made.site_id.is_some());
        assert_eq!(made.site_url, alpha.url);
        // Ready means usable: Graph finds its default library.
        let drive = sim
            .graph()
            .resolve_library(&alpha.url, "Documents")
            .await
            .unwrap();
        assert_eq!(drive.library, "Documents");
        let web = sites.web(&alpha.url).await.unwrap().expect("the root web");
        assert_eq!(web.server_relative_url, "/sites/alpha");
        assert_eq!(web.title, "Site /sites/alpha");

        // Again: the same site, reported as existing.
        let again = sites
            .ensure_site(&root, &alpha, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(again.status, Provisioning::Ready);
        assert!(again.existed);
        assert_eq!(again.site_id, made.site_id);

        // A site left provisioning by an interrupted run is waited for.
        let beta = team_site(&sim, "/sites/beta");
        let started = sites.create_site(&root, &beta).await.unwrap();
        assert_eq!(started.status, Provisioning::Provisioning);
        assert_eq!(
            sites.site_status(&root, &beta.url).await.unwrap().status,
            Provisioning::Provisioning
        );
        assert_eq!(sites.web(&beta.url).await.unwrap(), None);
        let waited = sites
            .ensure_site(&root, &beta, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(waited.status, Provisioning::Ready);
        assert!(waited.existed);
        assert_eq!(waited.site_id, started.site_id);

        // Out of patience: a transient error naming the URL; the next run finishes.
        let gamma = team_site(&sim, "/sites/gamma");
        let err = sites
            .ensure_site(&root, &gamma, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectorError::NotReady { .. }), "{err:?}");
        assert!(err.is_transient());
        assert!(err.to_string().contains("/sites/gamma"), "{err}");
        let done = sites
            .ensure_site(&root, &gamma, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(done.existed);
        assert_eq!(
            sites.site_status(&root, &gamma.url).await.unwrap().status,
            Provisioning::Ready
        );
        assert_eq!(
            sites
                .site_status(&root, &sim.url("/sites/never"))
                .await
                .unwrap()
                .status,
            Provisioning::NotFound
        );
        sim.stop().await;
    }

    #[tokio::test]
    async fn sites_subsites_and_libraries_are_idempotent() {
        let sim = TestSim::start().await;
        let sites = sim.sites();
        let site = team_site(&sim, "/sites/hr");
        sites
            .ensure_site(&sim.base, &site, Duration::from_secs(30))
            .await
            .unwrap();

        let (projects, existed) = sites
            .ensure_subsite(&site.url, "projects", "Projects", "STS#3", 1033)
            .await
            .unwrap();
        assert!(!existed);
        assert_eq!(projects.server_relative_url, "/sites/hr/projects");
        assert_eq!(projects.title, "Projects");
        let (again, existed) = sites
            .ensure_subsite(&site.url, "projects", "Projects", "STS#3", 1033)
            .await
            .unwrap();
        assert!(existed);
        assert_eq!(again.id, projects.id);

        // Nested.
        let projects_url = sim.url("/sites/hr/projects");
        let (alpha, existed) = sites
            .ensure_subsite(&projects_url, "alpha", "Alpha", "STS#3", 1033)
            .await
            .unwrap();
        assert!(!existed);
        assert_eq!(alpha.server_relative_url, "/sites/hr/projects/alpha");
        assert_eq!(
            sites
                .web(&sim.url("/sites/hr/projects/alpha"))
                .await
                .unwrap()
                .map(|w| w.id),
            Some(alpha.id)
        );
        // A missing web is None, not its nearest ancestor.
        assert_eq!(
            sites.web(&sim.url("/sites/hr/missing")).await.unwrap(),
            None
        );
        // A missing parent is an error, and nothing lands on its ancestor.
        let err = sites
            .ensure_subsite(&sim.url("/sites/hr/missing"), "child", "C", "STS#3", 1033)
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectorError::NotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("/sites/hr/missing"), "{err}");
        assert_eq!(sites.web(&sim.url("/sites/hr/child")).await.unwrap(), None);

        // Libraries.
        let (reports, existed) = sites
            .ensure_library(&projects_url, "Reports")
            .await
            .unwrap();
        assert!(!existed);
        assert_eq!(reports.title, "Reports");
        assert_eq!(reports.root_folder, "/sites/hr/projects/Reports");
        let (again, existed) = sites
            .ensure_library(&projects_url, "reports")
            .await
            .unwrap();
        assert!(existed);
        assert_eq!(again.id, reports.id);
        // The default library by its URL name.
        let (docs, existed) = sites
            .ensure_library(&projects_url, "Shared Documents")
            .await
            .unwrap();
        assert!(existed);
        assert_eq!(docs.title, "Documents");
        // Graph sees the new library of the subsite.
        let drive = sim
            .graph()
            .resolve_library(&projects_url, "Reports")
            .await
            .unwrap();
        assert_eq!(drive.library, "Reports");
        let err = sites
            .ensure_library(&sim.url("/sites/hr/missing"), "Reports")
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectorError::NotFound { .. }), "{err:?}");
        sim.stop().await;
    }

    #[tokio::test]
    async fn sites_hubs_register_list_join_and_leave() {
        let sim = TestSim::start().await;
        let sites = sim.sites();
        let hub_site = team_site(&sim, "/sites/hub");
        let member = team_site(&sim, "/sites/member");
        for s in [&hub_site, &member] {
            sites
                .ensure_site(&sim.base, s, Duration::from_secs(30))
                .await
                .unwrap();
        }
        assert!(sites.hub_sites(&sim.base).await.unwrap().is_empty());

        let (hub, existed) = sites.register_hub(&hub_site.url).await.unwrap();
        assert!(!existed);
        assert_eq!(hub.site_url, hub_site.url);
        assert_eq!(hub.title, "Site /sites/hub");
        let (again, existed) = sites.register_hub(&hub_site.url).await.unwrap();
        assert!(existed);
        assert_eq!(again.id, hub.id);
        let hubs = sites.hub_sites(&sim.base).await.unwrap();
        assert_eq!(hubs, vec![hub.clone()]);
        let info = sites.site_info(&hub_site.url).await.unwrap();
        assert!(info.is_hub);
        assert_eq!(Some(info.id), hub.site_id);

        let before = sites.site_info(&member.url).await.unwrap();
        assert!(!before.is_hub);
        assert_eq!(before.hub_site_id, None);
        sites.join_hub(&member.url, hub.id).await.unwrap();
        assert_eq!(
            sites.site_info(&member.url).await.unwrap().hub_site_id,
            Some(hub.id)
        );
        // Joining again sends nothing but the check.
        let requests = sites.stats().snapshot().requests;
        sites.join_hub(&member.url, hub.id).await.unwrap();
        assert_eq!(sites.stats().snapshot().requests, requests + 1);
        // The all-zero GUID leaves.
        sites.join_hub(&member.url, Uuid::nil()).await.unwrap();
        assert_eq!(
            sites.site_info(&member.url).await.unwrap().hub_site_id,
            None
        );
        sites.join_hub(&member.url, Uuid::nil()).await.unwrap();
        // An unknown hub.
        let err = sites
            .join_hub(&member.url, Uuid::new_v4())
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectorError::NotFound { .. }), "{err:?}");

        // Hubs are site collections: a subsite or a missing site is refused, and the
        // nearest site collection (here the tenant root) is left alone.
        sites
            .ensure_subsite(&member.url, "sub", "Sub", "STS#3", 1033)
            .await
            .unwrap();
        for url in [sim.url("/sites/member/sub"), sim.url("/sites/nothing")] {
            let err = sites.register_hub(&url).await.unwrap_err();
            assert!(matches!(err, ConnectorError::NotFound { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("nearest") || msg.contains("no site collection"),
                "{err}"
            );
        }
        assert!(!sites.site_info(&sim.base).await.unwrap().is_hub);
        assert_eq!(sites.hub_sites(&sim.base).await.unwrap().len(), 1);
        sim.stop().await;
    }

    #[tokio::test]
    async fn sites_structure_completes_under_throttling() {
        let sim = TestSim::start_with(|c| {
            c.throttle = ThrottleConfig {
                ru_per_minute: Some(6),
                window_secs: 1,
            };
        })
        .await;
        let sites = sim.sites();
        let site = team_site(&sim, "/sites/busy");
        let made = sites
            .ensure_site(&sim.base, &site, Duration::from_secs(30))
            .await
            .unwrap();
        assert!(!made.existed);
        let (_, existed) = sites
            .ensure_subsite(&site.url, "a", "A", "STS#3", 1033)
            .await
            .unwrap();
        assert!(!existed);
        let (_, existed) = sites
            .ensure_library(&sim.url("/sites/busy/a"), "Archive")
            .await
            .unwrap();
        assert!(!existed);
        let (hub, existed) = sites.register_hub(&site.url).await.unwrap();
        assert!(!existed);
        assert_eq!(sites.hub_sites(&sim.base).await.unwrap(), vec![hub]);
        let s = sites.stats().snapshot();
        assert!(s.throttled_waits > 0, "{s:?}");
        sim.stop().await;
    }

    #[tokio::test]
    async fn sites_bad_urls_give_clear_errors() {
        let sim = TestSim::start().await;
        let sites = sim.sites();
        let check = |err: ConnectorError, needle: &str| {
            assert!(err.to_string().contains(needle), "{needle} not in: {err}");
        };
        let mut bad = team_site(&sim, "/sites/x");
        bad.url = "not a url".to_owned();
        let err = sites
            .ensure_site(&sim.base, &bad, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectorError::NotFound { .. }), "{err:?}");
        check(err, "not a url");
        // Another host than the tenant's.
        bad.url = "https://elsewhere.example.com/sites/x".to_owned();
        let err = sites.create_site(&sim.base, &bad).await.unwrap_err();
        check(err, "elsewhere.example.com");
        // Not a managed path: the service's own reason.
        let deep = team_site(&sim, "/sites/a/b");
        let err = sites
            .ensure_site(&sim.base, &deep, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ConnectorError::Rejected { status: 400, .. }),
            "{err:?}"
        );
        check(err, "/sites/name");
        // A URL taken by a subsite of the root site collection.
        sites
            .ensure_subsite(&sim.base, "teams", "Teams", "STS#3", 1033)
            .await
            .unwrap();
        sites
            .ensure_subsite(&sim.url("/teams"), "taken", "Taken", "STS#3", 1033)
            .await
            .unwrap();
        let taken = team_site(&sim, "/teams/taken");
        let err = sites
            .ensure_site(&sim.base, &taken, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ConnectorError::Rejected { code, .. } if code == "urlTaken"),
            "{err:?}"
        );
        check(err, "/teams/taken");
        // No such site collection.
        let err = sites.site_info(&sim.url("/sites/nope")).await.unwrap_err();
        check(err, "/sites/nope");
        // Nobody listening.
        let dead = format!("http://127.0.0.1:{}", dead_port());
        let quick = sim.sites_with(|h| {
            h.max_attempts = 2;
            h.base_backoff = Duration::from_millis(10);
        });
        let err = quick.hub_sites(&dead).await.unwrap_err();
        assert!(matches!(err, ConnectorError::Unreachable { .. }), "{err:?}");
        sim.stop().await;
    }
}
