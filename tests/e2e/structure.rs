//! Site structure: keep classic, switch to modern (with and without hubs),
//! an edited plan with custom URLs, and colliding URLs rejected before
//! anything is created. Re-runs create nothing twice.

use ferry_sim::{Farm, ItemSpec, LibSpec, SiteSpec, WebSpec};
use ferry_tests::*;
use serde_json::Value;

fn docs(file: &str) -> Vec<LibSpec> {
    vec![LibSpec {
        title: "Documents".into(),
        items: vec![ItemSpec {
            path: file.into(),
            content: Some(file.into()),
            ..Default::default()
        }],
        ..Default::default()
    }]
}

/// /sites/src with subsites team (with team/sub) and proj.
fn farm() -> Farm {
    Farm {
        sites: vec![SiteSpec {
            url: "/sites/src".into(),
            title: Some("Source".into()),
            libraries: docs("root.txt"),
            webs: vec![
                WebSpec {
                    url: "team".into(),
                    title: Some("Team".into()),
                    libraries: docs("team.txt"),
                    webs: vec![WebSpec {
                        url: "sub".into(),
                        title: Some("Sub".into()),
                        libraries: docs("sub.txt"),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                WebSpec {
                    url: "proj".into(),
                    title: Some("Project".into()),
                    libraries: docs("proj.txt"),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
    }
}

fn tenant_sites() -> Farm {
    Farm {
        sites: vec![
            SiteSpec {
                url: "/sites/dst".into(),
                title: Some("Destination".into()),
                ..Default::default()
            },
            SiteSpec {
                url: "/sites/corp".into(),
                title: Some("Corp".into()),
                ..Default::default()
            },
        ],
    }
}

struct Env {
    farm: Sim,
    tenant: Sim,
    work: tempfile::TempDir,
}

async fn env() -> Env {
    Env {
        farm: Sim::start(farm(), |_| {}).await,
        tenant: Sim::start(tenant_sites(), |_| {}).await,
        work: tempfile::tempdir().unwrap(),
    }
}

impl Env {
    fn state(&self) -> std::path::PathBuf {
        self.work.path().join("state")
    }

    fn args(&self, command: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            command.into(),
            "--json".into(),
            "--from".into(),
            self.farm.site("/sites/src"),
            "--to".into(),
            self.tenant.site("/sites/dst"),
            "--source-user".into(),
            "someone@example.com".into(),
            // Signed in as an application: new site collections need an owner.
            "--site-owner".into(),
            "someone@example.com".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(sign_in(&self.tenant));
        a
    }

    /// The files of a destination site's Documents library.
    async fn files(&self, site: &str) -> Vec<String> {
        let (_, listing) = self.tenant.listing(site, "Documents", "").await;
        files_of(&listing).into_keys().collect()
    }

    /// SharePoint REST GET on the tenant, JSON light.
    async fn sp(&self, url: &str) -> Value {
        let token = token(&self.tenant.base).await;
        let resp = client()
            .get(url)
            .bearer_auth(token)
            .header("Accept", "application/json;odata=nometadata")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.json().await.unwrap()
    }

    async fn hub_of(&self, site: &str) -> (bool, String) {
        let v = self
            .sp(&format!(
                "{}/_api/site?$select=Id,IsHubSite,HubSiteId",
                self.tenant.site(site)
            ))
            .await;
        (
            v["IsHubSite"].as_bool().unwrap_or(false),
            v["HubSiteId"].as_str().unwrap_or_default().to_string(),
        )
    }

    /// SPSiteManager's status of a URL (0 = no such site).
    async fn site_status(&self, site: &str) -> u64 {
        let url = format!(
            "{}/_api/SPSiteManager/status?url='{}'",
            self.tenant.base,
            self.tenant.site(site)
        );
        self.sp(&url).await["SiteStatus"].as_u64().unwrap_or(99)
    }

    fn structure(&self, round: u32) -> Vec<std::collections::BTreeMap<String, String>> {
        read_csv(&report_dir(&self.state()).join(format!("StructureReport_R{round}.csv"))).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_classic_recreates_subsites_and_reruns_create_nothing() {
    let e = env().await;
    let run = ferry(&e.state(), &e.args("migrate", &[])).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(e.files("/sites/dst").await, vec!["root.txt"]);
    assert_eq!(e.files("/sites/dst/team").await, vec!["team.txt"]);
    assert_eq!(e.files("/sites/dst/team/sub").await, vec!["sub.txt"]);
    assert_eq!(e.files("/sites/dst/proj").await, vec!["proj.txt"]);
    let created: Vec<_> = e
        .structure(0)
        .into_iter()
        .filter(|r| r["Type"] == "Site" && r["Status"] == "Created")
        .map(|r| r["Destination"].clone())
        .collect();
    assert_eq!(created.len(), 3, "team, team/sub, proj: {created:?}");

    let job = run.json()["job"].as_str().unwrap().to_string();
    let mut again = vec![
        "migrate".to_string(),
        "--json".into(),
        "--job".into(),
        job,
        "--source-user".into(),
        "someone@example.com".into(),
    ];
    again.extend(sign_in(&e.tenant));
    let run = ferry(&e.state(), &again).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["copied"], 0);
    let r1 = e.structure(1);
    assert!(!r1.is_empty());
    assert!(
        r1.iter().all(|r| r["Status"] == "Already exists"),
        "nothing created twice: {r1:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_to_modern_promotes_level_one_subsites() {
    let e = env().await;
    let run = ferry(&e.state(), &e.args("migrate", &["--modern"])).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(e.files("/sites/dst").await, vec!["root.txt"]);
    assert_eq!(
        e.files("/sites/team").await,
        vec!["team.txt"],
        "promoted to a site collection"
    );
    assert_eq!(
        e.files("/sites/team/sub").await,
        vec!["sub.txt"],
        "deeper subsites stay under their promoted parent"
    );
    assert_eq!(e.files("/sites/proj").await, vec!["proj.txt"]);
    assert_eq!(e.site_status("/sites/team").await, 2);
    let (is_hub, hub) = e.hub_of("/sites/team").await;
    assert!(
        !is_hub && hub.trim_matches(['0', '-']).is_empty(),
        "no hub asked for: {hub}"
    );
    let job = run.json()["job"].as_str().unwrap().to_string();
    let mut again = vec![
        "migrate".to_string(),
        "--json".into(),
        "--job".into(),
        job,
        "--source-user".into(),
        "someone@example.com".into(),
    ];
    again.extend(sign_in(&e.tenant));
    let run = ferry(&e.state(), &again).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(e
        .structure(1)
        .iter()
        .all(|r| r["Status"] == "Already exists"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_with_the_destination_registered_as_hub() {
    let e = env().await;
    let run = ferry(
        &e.state(),
        &e.args("migrate", &["--modern", "--hub-register"]),
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let (is_hub, _) = e.hub_of("/sites/dst").await;
    assert!(is_hub, "the destination is a hub");
    let hub_id = e.sp(&format!("{}/_api/HubSites", e.tenant.base)).await["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| {
            h["SiteUrl"]
                .as_str()
                .unwrap_or_default()
                .ends_with("/sites/dst")
        })
        .map(|h| h["ID"].as_str().unwrap().to_string())
        .expect("hub listed");
    assert_eq!(e.hub_of("/sites/team").await.1, hub_id);
    assert_eq!(e.hub_of("/sites/proj").await.1, hub_id);
    let hubs: Vec<_> = e
        .structure(0)
        .into_iter()
        .filter(|r| r["Type"].starts_with("Hub"))
        .collect();
    assert_eq!(hubs.len(), 3, "one registration, two joins: {hubs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_joining_an_existing_hub_and_a_bad_hub_name() {
    let e = env().await;
    // Make /sites/corp a hub first, as an admin would have.
    let token = token(&e.tenant.base).await;
    let resp = client()
        .post(format!(
            "{}/_api/site/RegisterHubSite",
            e.tenant.site("/sites/corp")
        ))
        .bearer_auth(&token)
        .header("Accept", "application/json;odata=nometadata")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());

    // `ferry hubs` lists it by name.
    let mut hubs_args = vec![
        "hubs".to_string(),
        "--json".into(),
        "--to".into(),
        e.tenant.site("/sites/dst"),
    ];
    hubs_args.extend(sign_in(&e.tenant));
    let run = ferry(&e.state(), &hubs_args).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()[0]["title"], "Corp");

    // A wrong name is refused before anything is created, listing the choices.
    let run = ferry(
        &e.state(),
        &e.args("migrate", &["--modern", "--hub-join", "Nope"]),
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("Nope") && run.stderr.contains("Corp"),
        "{}",
        run.stderr
    );
    assert_eq!(e.site_status("/sites/team").await, 0, "nothing created");

    let run = ferry(
        &e.state(),
        &e.args("migrate", &["--modern", "--hub-join", "Corp"]),
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let corp_id = e.sp(&format!("{}/_api/HubSites", e.tenant.base)).await["value"][0]["ID"]
        .as_str()
        .unwrap()
        .to_string();
    for site in ["/sites/dst", "/sites/team", "/sites/proj"] {
        assert_eq!(e.hub_of(site).await.1, corp_id, "{site} joined Corp");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_plan_runs_with_custom_urls_and_collisions_are_rejected() {
    let e = env().await;
    let plan_path = e.work.path().join("plan.json");
    let mut args = e.args("plan", &["--modern"]);
    args.extend(["--out".into(), plan_path.display().to_string()]);
    let run = ferry(&e.state(), &args).await;
    assert_eq!(run.code, 0, "{run:?}");
    let mut plan: Value =
        serde_json::from_str(&std::fs::read_to_string(&plan_path).unwrap()).unwrap();
    let sites = plan["plan"]["sites"].as_array().unwrap().clone();
    let index = |leaf: &str| {
        sites
            .iter()
            .position(|s| s["source"].as_str().unwrap().ends_with(leaf))
            .unwrap()
    };
    let (team, sub, proj) = (index("/team"), index("/team/sub"), index("/proj"));
    assert_eq!(
        sites[team]["destination"],
        e.tenant.site("/sites/team"),
        "proposal"
    );
    let libs = plan["plan"]["libraries"].as_array().unwrap();
    assert!(
        libs.iter().all(|l| l["items"].as_u64() == Some(1)),
        "counted: {libs:#?}"
    );

    // A collision: two sites at one URL. Rejected before anything is created.
    let collide = e.work.path().join("collide.json");
    let mut bad = plan.clone();
    bad["plan"]["sites"][proj]["destination"] = Value::String(e.tenant.site("/sites/team"));
    std::fs::write(&collide, bad.to_string()).unwrap();
    let mut run_args: Vec<String> = vec![
        "migrate".into(),
        "--json".into(),
        "--plan".into(),
        collide.display().to_string(),
        "--source-user".into(),
        "someone@example.com".into(),
    ];
    run_args.extend(sign_in(&e.tenant));
    let run = ferry(&e.state(), &run_args).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!("sites[{proj}]"))
            && run.stderr.contains("also the destination"),
        "{}",
        run.stderr
    );
    assert_eq!(e.site_status("/sites/team").await, 0, "nothing created");

    // A custom URL for the promoted site and its subsite.
    plan["plan"]["sites"][team]["destination"] = Value::String(e.tenant.site("/sites/team-2024"));
    plan["plan"]["sites"][sub]["destination"] =
        Value::String(e.tenant.site("/sites/team-2024/archive"));
    std::fs::write(&plan_path, serde_json::to_string_pretty(&plan).unwrap()).unwrap();
    run_args[3] = plan_path.display().to_string();
    let run = ferry(&e.state(), &run_args).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(e.files("/sites/team-2024").await, vec!["team.txt"]);
    assert_eq!(e.files("/sites/team-2024/archive").await, vec!["sub.txt"]);
    assert_eq!(
        e.site_status("/sites/team").await,
        0,
        "the proposal was not used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_site_without_an_owner_says_what_to_add_and_resumes() {
    let e = env().await;
    // The same job, but without --site-owner: SharePoint Online refuses to
    // create a site collection for an application without an owner.
    let mut args = e.args("migrate", &["--modern"]);
    let at = args.iter().position(|a| a == "--site-owner").unwrap();
    args.drain(at..at + 2);
    let run = ferry(&e.state(), &args).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--site-owner"), "{}", run.stderr);

    // The job is paused, not lost: resume with an owner finishes it.
    let mut resume = vec![
        "resume".to_string(),
        "--json".into(),
        "--source-user".into(),
        "someone@example.com".into(),
        "--site-owner".into(),
        "someone@example.com".into(),
    ];
    resume.extend(sign_in(&e.tenant));
    let run = ferry(&e.state(), &resume).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(e.files("/sites/team").await, vec!["team.txt"]);
    assert_eq!(e.files("/sites/proj").await, vec!["proj.txt"]);
}
