//! End-to-end tests of the emulator over real HTTP. One binary; every test starts its
//! own instance on 127.0.0.1:0 with its own temp data dir.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use ferry_sim::{Farm, ItemSpec, LibSpec, SiteSpec, WebSpec};
use reqwest::Method;
use serde_json::{json, Value};

const VERBOSE: &str = "application/json;odata=verbose";
const NOMETA: &str = "application/json;odata=nometadata";

fn hr_farm() -> Farm {
    let mut items = vec![
        ItemSpec {
            path: "Policies/2024/handbook.pdf".into(),
            size: Some(100_000),
            ..Default::default()
        },
        ItemSpec {
            path: "readme.txt".into(),
            content: Some("hello from HR".into()),
            unique_id: Some("0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9".parse().unwrap()),
            created: Some("2020-01-02T03:04:05Z".parse().unwrap()),
            modified: Some("2021-06-07T08:09:10Z".parse().unwrap()),
            ..Default::default()
        },
        ItemSpec {
            path: "Empty".into(),
            folder: true,
            ..Default::default()
        },
    ];
    for i in 0..5 {
        items.push(ItemSpec {
            path: format!("Policies/p{i}.txt"),
            size: Some(10 + i),
            ..Default::default()
        });
    }
    Farm {
        sites: vec![SiteSpec {
            url: "/sites/hr".into(),
            title: Some("HR".into()),
            libraries: vec![
                LibSpec {
                    title: "Documents".into(),
                    items,
                    ..Default::default()
                },
                LibSpec {
                    title: "Archive".into(),
                    ..Default::default()
                },
            ],
            webs: vec![WebSpec {
                url: "benefits".into(),
                title: Some("Benefits".into()),
                webs: vec![WebSpec {
                    url: "dental".into(),
                    ..Default::default()
                }],
                libraries: vec![LibSpec {
                    title: "Forms".into(),
                    items: vec![ItemSpec {
                        path: "claim.docx".into(),
                        size: Some(2048),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn hr() -> TestSim {
    TestSim::start_with(|c| c.farm = Some(hr_farm())).await
}

// ---------------------------------------------------------------- identity

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_discovery_client_credentials_and_401s() {
    let sim = TestSim::start().await;
    let r = sim
        .http
        .get(sim.url(&format!(
            "/{}/v2.0/.well-known/openid-configuration",
            sim.cfg.tenant_id
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["token_endpoint"]
        .as_str()
        .unwrap()
        .ends_with("/oauth2/v2.0/token"));
    assert!(v["device_authorization_endpoint"].is_string());

    // Bad secret, unknown client, unknown tenant.
    let bad = |secret: &'static str, client: &'static str, tenant: &'static str| {
        let sim = &sim;
        async move {
            let r = sim
                .http
                .post(sim.url(&format!("/{tenant}/oauth2/v2.0/token")))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client),
                    ("client_secret", secret),
                ])
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = bad("nope", "ferry", "common").await;
    assert_eq!(s, 401);
    assert_eq!(v["error"], "invalid_client");
    let (s, v) = bad("x", "unknown", "contoso.onmicrosoft.com").await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "unauthorized_client");
    let (s, v) = bad("ferry-secret", "ferry", "other-tenant").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_tenant")));

    let tok = sim.token().await;
    assert!(tok.len() >= 32);
    // Graph without / with a bogus token.
    let r = sim
        .http
        .get(sim.url("/v1.0/sites/root"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_graph_error(&r.json().await.unwrap(), "InvalidAuthenticationToken");
    let (s, v) = sim.get_json("bogus", "/v1.0/sites/root").await;
    assert_eq!(s, 401);
    assert_graph_error(&v, "InvalidAuthenticationToken");
    let (s, _) = sim.get_json(&tok, "/v1.0/sites/root").await;
    assert_eq!(s, 200);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_expired_token_is_rejected() {
    let sim = TestSim::start_with(|c| c.token_lifetime_secs = 0).await;
    let tok = sim.token().await;
    let (s, v) = sim.get_json(&tok, "/v1.0/sites/root").await;
    assert_eq!(s, 401);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("expired"),
        "{v}"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_ropc_device_code_refresh_and_certificate() {
    let sim = TestSim::start_with(|c| {
        c.apps.push(ferry_sim::AppRegistration {
            client_id: "cert-app".into(),
            secret: None,
            certificate_thumbprint: Some("a1b2c3".into()),
        })
    })
    .await;
    let tok_ep = sim.url("/common/oauth2/v2.0/token");
    // ROPC
    let r = sim
        .http
        .post(&tok_ep)
        .form(&[
            ("grant_type", "password"),
            ("client_id", "ferry"),
            ("username", "someone@example.com"),
            ("password", "password"),
            (
                "scope",
                "offline_access https://graph.microsoft.com/.default",
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let rt = v["refresh_token"].as_str().unwrap().to_owned();
    let r = sim
        .http
        .post(&tok_ep)
        .form(&[
            ("grant_type", "password"),
            ("client_id", "ferry"),
            ("username", "someone@example.com"),
            ("password", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    // Refresh (single use).
    let r = sim
        .http
        .post(&tok_ep)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "ferry"),
            ("refresh_token", &rt),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let (s, _) = sim
        .get_json(v["access_token"].as_str().unwrap(), "/v1.0/sites/root")
        .await;
    assert_eq!(s, 200);
    let r = sim
        .http
        .post(&tok_ep)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "ferry"),
            ("refresh_token", &rt),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Device code: pending until approved.
    let r = sim
        .http
        .post(sim.url("/common/oauth2/v2.0/devicecode"))
        .form(&[("client_id", "ferry"), ("scope", "Files.ReadWrite.All")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let dc: Value = r.json().await.unwrap();
    let device_code = dc["device_code"].as_str().unwrap().to_owned();
    let poll_once = || async {
        let r = sim
            .http
            .post(&tok_ep)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", "ferry"),
                ("device_code", &device_code),
            ])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    let (s, v) = poll_once().await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    sim.admin(
        Method::POST,
        "/_sim/devicecode/approve",
        Some(json!({"user_code": dc["user_code"], "upn": "someone@example.com"})),
    )
    .await;
    let v = poll("device code token", Duration::from_secs(5), || async {
        let (s, v) = poll_once().await;
        (s == 200).then_some(v)
    })
    .await;
    assert!(v["access_token"].is_string() && v["refresh_token"].is_string());

    // Certificate: an RS256 JWT whose iss/sub is the client id, x5t matching the thumbprint.
    let b64 = |v: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    let x5t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xa1u8, 0xb2, 0xc3]);
    let exp = chrono::Utc::now().timestamp() + 600;
    let jwt = |iss: &str, x5t: &str| {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            b64(json!({"alg": "RS256", "typ": "JWT", "x5t": x5t})),
            b64(json!({"iss": iss, "sub": iss, "aud": tok_ep, "exp": exp, "jti": "1"}))
        )
    };
    let cert = |assertion: String| {
        let sim = &sim;
        let tok_ep = tok_ep.clone();
        async move {
            sim.http
                .post(&tok_ep)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", "cert-app"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(cert(jwt("cert-app", &x5t)).await, 200);
    assert_eq!(cert(jwt("cert-app", "AAAA")).await, 401);
    assert_eq!(cert(jwt("someone-else", &x5t)).await, 401);
    assert_eq!(cert("not-a-jwt".into()).await, 400);
    sim.stop().await;
}

// ---------------------------------------------------------------- SharePoint REST

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sp_rest_webs_lists_folders_files_verbose_and_nometadata() {
    let sim = hr().await;
    // contextinfo
    let r = sim
        .http
        .post(sim.url("/sites/hr/_api/contextinfo"))
        .basic_auth("someone@example.com", Some("password"))
        .header("accept", VERBOSE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["d"]["GetContextWebInformation"]["FormDigestValue"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    assert_eq!(
        v["d"]["GetContextWebInformation"]["FormDigestTimeoutSeconds"],
        1800
    );

    let (s, v) = sim.sp_get("/sites/hr/_api/web", VERBOSE).await;
    assert_eq!(s, 200);
    assert_eq!(v["d"]["Title"], "HR");
    assert_eq!(v["d"]["ServerRelativeUrl"], "/sites/hr");
    assert_eq!(v["d"]["__metadata"]["type"], "SP.Web");
    let (_, v) = sim.sp_get("/sites/hr/_api/web", NOMETA).await;
    assert_eq!(v["Title"], "HR");
    assert!(v.get("__metadata").is_none() && v.get("d").is_none());

    // Subsites (direct children only) and nested.
    let (_, v) = sim.sp_get("/sites/hr/_api/web/webs", VERBOSE).await;
    let webs = v["d"]["results"].as_array().unwrap();
    assert_eq!(webs.len(), 1);
    assert_eq!(webs[0]["ServerRelativeUrl"], "/sites/hr/benefits");
    let (_, v) = sim.sp_get("/sites/hr/benefits/_api/web/webs", NOMETA).await;
    assert_eq!(
        v["value"][0]["ServerRelativeUrl"],
        "/sites/hr/benefits/dental"
    );

    // Libraries with filter + expand.
    let (s, v) = sim.sp_get("/sites/hr/_api/web/lists?$filter=BaseTemplate%20eq%20101&$expand=RootFolder&$select=Id,Title,BaseTemplate,ItemCount,RootFolder/ServerRelativeUrl", VERBOSE).await;
    assert_eq!(s, 200, "{v}");
    let lists = v["d"]["results"].as_array().unwrap();
    assert_eq!(lists.len(), 2);
    let docs = lists.iter().find(|l| l["Title"] == "Documents").unwrap();
    assert_eq!(
        docs["RootFolder"]["ServerRelativeUrl"],
        "/sites/hr/Shared Documents"
    );
    assert_eq!(docs["ItemCount"], 10);
    let list_id = docs["Id"].as_str().unwrap().to_owned();
    let (_, v) = sim
        .sp_get(
            "/sites/hr/_api/web/lists?$filter=BaseTemplate%20eq%20100",
            NOMETA,
        )
        .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 0);
    let (s, v) = sim
        .sp_get(
            &format!("/sites/hr/_api/web/lists(guid'{list_id}')"),
            NOMETA,
        )
        .await;
    assert_eq!((s, v["Title"].as_str()), (200, Some("Documents")));
    let (s, v) = sim
        .sp_get("/sites/hr/_api/web/lists/getbytitle('Archive')", VERBOSE)
        .await;
    assert_eq!((s, v["d"]["BaseTemplate"].as_u64()), (200, Some(101)));
    assert!(v["d"]["RootFolder"]["__deferred"]["uri"].is_string());

    // Folders and files.
    let f =
        "/sites/hr/_api/web/GetFolderByServerRelativeUrl('/sites/hr/Shared%20Documents/Policies')";
    let (s, v) = sim.sp_get(f, VERBOSE).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["d"]["Name"], "Policies");
    assert_eq!(v["d"]["ItemCount"], 6);
    let (_, v) = sim.sp_get(&format!("{f}/Files"), VERBOSE).await;
    let files = v["d"]["results"].as_array().unwrap();
    assert_eq!(files.len(), 5);
    assert_eq!(files[0]["__metadata"]["type"], "SP.File");
    assert_eq!(files[0]["Length"], "10");
    let (_, v) = sim.sp_get(&format!("{f}/Folders"), NOMETA).await;
    assert_eq!(v["value"][0]["Name"], "2024");
    let (_, v) = sim
        .sp_get(&format!("{f}?$expand=Files,Folders"), VERBOSE)
        .await;
    assert_eq!(v["d"]["Files"]["results"].as_array().unwrap().len(), 5);
    assert_eq!(v["d"]["Folders"]["results"][0]["Name"], "2024");
    let (_, v) = sim
        .sp_get(&format!("{f}?$expand=Files,Folders"), NOMETA)
        .await;
    assert_eq!(v["Files"].as_array().unwrap().len(), 5);
    let (_, v) = sim.sp_get(&format!("{f}/ListItemAllFields"), NOMETA).await;
    assert_eq!(v["FSObjType"], "1");
    assert_eq!(v["FileRef"], "/sites/hr/Shared Documents/Policies");

    let file =
        "/sites/hr/_api/web/GetFileByServerRelativeUrl('/sites/hr/Shared%20Documents/readme.txt')";
    let (_, v) = sim.sp_get(file, NOMETA).await;
    assert_eq!(v["UniqueId"], "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9");
    assert_eq!(v["TimeCreated"], "2020-01-02T03:04:05Z");
    assert_eq!(v["TimeLastModified"], "2021-06-07T08:09:10Z");
    assert_eq!(v["Length"], "13");
    let r = sim
        .http
        .get(sim.url(&format!("{file}/$value")))
        .basic_auth("someone@example.com", Some("password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from HR");
    // A quote in a name is doubled in the expression.
    let (s, v) = sim.sp_get("/sites/hr/_api/web/GetFileByServerRelativeUrl('/sites/hr/Shared%20Documents/it''s%20missing.txt')", VERBOSE).await;
    assert_eq!(s, 404);
    assert_eq!(
        v["error"]["code"],
        "-2147024894, System.IO.FileNotFoundException"
    );
    assert_eq!(v["error"]["message"]["lang"], "en-US");
    let (s, v) = sim.sp_get("/sites/hr/_api/web/GetFileByServerRelativeUrl('/sites/hr/Shared%20Documents/nope.txt')", NOMETA).await;
    assert_eq!(s, 404);
    assert!(v["odata.error"]["message"]["value"].is_string(), "{v}");
    // Large file streamed.
    let r = sim
        .http
        .get(sim.url("/sites/hr/_api/web/GetFileByServerRelativeUrl('/sites/hr/Shared%20Documents/Policies/2024/handbook.pdf')/$value"))
        .basic_auth("someone@example.com", Some("password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 100_000);
    // Bearer works on SharePoint REST too.
    let tok = sim.token().await;
    let r = sim
        .http
        .get(sim.url("/sites/hr/_api/web"))
        .bearer_auth(&tok)
        .header("accept", NOMETA)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sp_rest_list_items_paging_verbose_and_nometadata() {
    let items: Vec<ItemSpec> = (0..250)
        .map(|i| ItemSpec {
            path: format!("f/{i:03}.txt"),
            size: Some(3),
            ..Default::default()
        })
        .collect();
    let sim = TestSim::start_with(|c| {
        c.farm = Some(Farm {
            sites: vec![SiteSpec {
                url: "/sites/big".into(),
                libraries: vec![LibSpec {
                    title: "Documents".into(),
                    items,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    })
    .await;
    let (_, v) = sim
        .sp_get("/sites/big/_api/web/lists/getbytitle('Documents')", NOMETA)
        .await;
    let id = v["Id"].as_str().unwrap().to_owned();
    let sel = "$select=Id,UniqueId,FileRef,FileLeafRef,FSObjType,File_x0020_Size,Created,Modified";
    // Verbose: default page of 100, follow __next.
    let mut url = sim.url(&format!(
        "/sites/big/_api/web/lists(guid'{id}')/items?{sel}"
    ));
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = sim
            .http
            .get(&url)
            .basic_auth("someone@example.com", Some("password"))
            .header("accept", VERBOSE)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        pages += 1;
        for it in v["d"]["results"].as_array().unwrap() {
            assert!(it["__metadata"]["type"]
                .as_str()
                .unwrap()
                .starts_with("SP.Data."));
            assert!(it.get("GUID").is_none(), "$select applies");
            seen.push(it["Id"].as_u64().unwrap());
        }
        match v["d"]["__next"].as_str() {
            Some(n) => {
                assert!(n.contains("skiptoken=Paged%3dTRUE%26p_ID%3d"), "{n}");
                url = n.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 251, "250 files + 1 folder");
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 251);
    // nometadata with $top=120 and odata.nextLink.
    let mut url = sim.url(&format!(
        "/sites/big/_api/web/lists(guid'{id}')/items?{sel}&$top=120"
    ));
    let mut count = 0;
    let mut pages = 0;
    loop {
        let (s, v) = {
            let r = sim
                .http
                .get(&url)
                .basic_auth("someone@example.com", Some("password"))
                .header("accept", NOMETA)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        };
        assert_eq!(s, 200);
        pages += 1;
        let vals = v["value"].as_array().unwrap();
        count += vals.len();
        if let Some(f) = vals.iter().find(|x| x["FileLeafRef"] == "007.txt") {
            assert_eq!(f["FSObjType"], "0");
            assert_eq!(f["File_x0020_Size"], "3");
            assert_eq!(f["FileRef"], "/sites/big/Shared Documents/f/007.txt");
        }
        match v["odata.nextLink"].as_str() {
            Some(n) => url = n.to_owned(),
            None => break,
        }
    }
    assert_eq!((pages, count), (3, 251));
    // $filter on list items (files only), paging keeps the filter.
    let mut url = sim.url(&format!("/sites/big/_api/web/lists(guid'{id}')/items?$select=Id,FSObjType&$filter=FSObjType%20eq%200&$top=200"));
    let mut files = 0;
    loop {
        let r = sim
            .http
            .get(&url)
            .basic_auth("someone@example.com", Some("password"))
            .header("accept", NOMETA)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        for it in v["value"].as_array().unwrap() {
            assert_eq!(it["FSObjType"], "0");
            files += 1;
        }
        match v["odata.nextLink"].as_str() {
            Some(n) => url = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(files, 250);
    // Explicit skiptoken.
    let (s, v) = sim.sp_get(&format!("/sites/big/_api/web/lists(guid'{id}')/items?$skiptoken=Paged%3DTRUE%26p_ID%3D249&$select=Id"), NOMETA).await;
    assert_eq!(s, 200);
    assert_eq!(v["value"].as_array().unwrap().len(), 2);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sp_rest_basic_auth_rejections_and_digest() {
    let sim = hr().await;
    let r = sim
        .http
        .get(sim.url("/sites/hr/_api/web"))
        .header("accept", VERBOSE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("Basic"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["error"]["code"],
        "-2147024891, System.UnauthorizedAccessException"
    );
    let r = sim
        .http
        .get(sim.url("/sites/hr/_api/web"))
        .basic_auth("someone@example.com", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = sim
        .http
        .get(sim.url("/sites/hr/_api/web"))
        .basic_auth("nobody@example.com", Some("password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = sim
        .http
        .get(sim.url("/sites/hr/_api/web"))
        .header("authorization", "Basic !!!notbase64")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = sim
        .http
        .get(sim.url("/sites/hr/_api/web"))
        .header("authorization", "Negotiate abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // DOMAIN\user form is accepted.
    let r = sim
        .http
        .get(sim.url("/sites/hr/_api/web"))
        .basic_auth("EXAMPLE\\someone@example.com", Some("password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // POST without a digest → 403; with one → 201.
    let body =
        json!({"__metadata": {"type": "SP.List"}, "BaseTemplate": 101, "Title": "Contracts"});
    let r = sim
        .http
        .post(sim.url("/sites/hr/_api/web/lists"))
        .basic_auth("someone@example.com", Some("password"))
        .header("accept", VERBOSE)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = sim
        .http
        .post(sim.url("/sites/hr/_api/contextinfo"))
        .basic_auth("someone@example.com", Some("password"))
        .header("accept", NOMETA)
        .send()
        .await
        .unwrap();
    let digest = r.json::<Value>().await.unwrap()["FormDigestValue"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = sim
        .http
        .post(sim.url("/sites/hr/_api/web/lists"))
        .basic_auth("someone@example.com", Some("password"))
        .header("accept", VERBOSE)
        .header("x-requestdigest", &digest)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["d"]["Title"], "Contracts");
    sim.stop().await;
}

// ---------------------------------------------------------------- Graph

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_sites_drives_items_by_path_and_id() {
    let sim = TestSim::start_with(|c| {
        c.farm = Some(hr_farm());
        c.hostname = Some("contoso.sharepoint.com".into());
    })
    .await;
    let tok = sim.token().await;
    // Configured hostname and the Host header's host are both accepted.
    let (s, site) = sim
        .get_json(&tok, "/v1.0/sites/contoso.sharepoint.com:/sites/hr")
        .await;
    assert_eq!(s, 200, "{site}");
    let (s, _) = sim.get_json(&tok, "/v1.0/sites/127.0.0.1:/sites/hr:").await;
    assert_eq!(s, 200);
    let (s, v) = sim
        .get_json(&tok, "/v1.0/sites/evil.example.com:/sites/hr")
        .await;
    assert_eq!(s, 404);
    assert_graph_error(&v, "itemNotFound");
    let id = site["id"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = id.split(',').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], "contoso.sharepoint.com");
    assert_eq!(site["displayName"], "HR");
    let (s, v) = sim.get_json(&tok, &format!("/v1.0/sites/{id}")).await;
    assert_eq!((s, v["id"].as_str()), (200, Some(id.as_str())));
    let (_, v) = sim.get_json(&tok, &format!("/v1.0/sites/{id}/sites")).await;
    assert_eq!(v["value"][0]["displayName"], "Benefits");
    let (_, v) = sim
        .get_json(
            &tok,
            "/v1.0/sites/contoso.sharepoint.com:/sites/hr/benefits/dental",
        )
        .await;
    assert!(v["id"].is_string());

    let (_, drives) = sim
        .get_json(&tok, &format!("/v1.0/sites/{id}/drives"))
        .await;
    let drives = drives["value"].as_array().unwrap();
    assert_eq!(drives.len(), 2);
    assert!(drives.iter().all(|d| d["driveType"] == "documentLibrary"));
    let (_, d) = sim.get_json(&tok, &format!("/v1.0/sites/{id}/drive")).await;
    assert_eq!(d["name"], "Documents");
    let did = d["id"].as_str().unwrap().to_owned();
    let (s, d2) = sim.get_json(&tok, &format!("/v1.0/drives/{did}")).await;
    assert_eq!((s, d2["id"].as_str()), (200, Some(did.as_str())));

    let (s, root) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root"))
        .await;
    assert_eq!(s, 200);
    assert!(root["root"].is_object());
    assert_eq!(root["folder"]["childCount"], 3);
    let (s, f) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root:/readme.txt"))
        .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["size"], 13);
    assert_eq!(f["file"]["hashes"]["quickXorHash"], qxh(b"hello from HR"));
    assert_eq!(
        f["sharepointIds"]["listItemUniqueId"],
        "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
    );
    for k in ["listId", "listItemId", "siteId", "siteUrl", "webId"] {
        assert!(f["sharepointIds"][k].is_string(), "{k}: {f}");
    }
    assert_eq!(f["parentReference"]["driveId"], did.as_str());
    assert_eq!(f["parentReference"]["id"], root["id"]);
    assert_eq!(f["parentReference"]["path"], format!("/drives/{did}/root:"));
    assert_eq!(
        f["fileSystemInfo"]["lastModifiedDateTime"],
        "2021-06-07T08:09:10Z"
    );
    assert!(f["@microsoft.graph.downloadUrl"].is_string());
    let fid = f["id"].as_str().unwrap().to_owned();
    let (s, f2) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/items/{fid}"))
        .await;
    assert_eq!((s, f2["name"].as_str()), (200, Some("readme.txt")));
    // items/{id}:/relpath
    let (_, pol) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root:/Policies"))
        .await;
    let pid = pol["id"].as_str().unwrap();
    let (s, h) = sim
        .get_json(
            &tok,
            &format!("/v1.0/drives/{did}/items/{pid}:/2024/handbook.pdf"),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        h["parentReference"]["path"],
        format!("/drives/{did}/root:/Policies/2024")
    );
    assert_eq!(h["size"], 100_000);
    // $select
    let (_, sel) = sim
        .get_json(
            &tok,
            &format!("/v1.0/drives/{did}/items/{fid}?$select=id,name"),
        )
        .await;
    assert_eq!(sel.as_object().unwrap().len(), 2, "{sel}");
    // Missing item.
    let (s, v) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root:/nope.txt"))
        .await;
    assert_eq!(s, 404);
    assert_graph_error(&v, "itemNotFound");
    // Download: 302 to a pre-authorised URL that works without Authorization.
    let r = sim
        .http
        .get(sim.url(&format!("/v1.0/drives/{did}/items/{fid}/content")))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    let r = sim.http.get(&loc).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from HR");
    let r = sim
        .http
        .get(&loc)
        .header("range", "bytes=6-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.text().await.unwrap(), "from");
    let r = sim
        .http
        .get(loc.replace("tempauth=", "tempauth=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The same API under SharePoint's /_api/v2.0 (root and site-relative).
    let (s, v) = sim
        .get_json(&tok, &format!("/_api/v2.0/drives/{did}/root:/readme.txt"))
        .await;
    assert_eq!((s, v["id"].as_str()), (200, Some(fid.as_str())));
    let (s, v) = sim
        .get_json(
            &tok,
            &format!("/sites/hr/_api/v2.0/drives/{did}/items/{fid}"),
        )
        .await;
    assert_eq!((s, v["name"].as_str()), (200, Some("readme.txt")));
    let (s, v) = sim
        .get_json(&tok, "/_api/v2.0/sites/contoso.sharepoint.com:/sites/hr")
        .await;
    assert_eq!((s, v["id"].as_str()), (200, Some(id.as_str())));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_children_paging() {
    let sim = TestSim::start().await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    for i in 0..25 {
        let (s, _) = sim
            .put_content(
                &tok,
                &format!("/v1.0/drives/{did}/root:/many/f{i:02}.txt:/content"),
                vec![b'x'; i],
            )
            .await;
        assert_eq!(s, 201);
    }
    let mut url = sim.url(&format!("/v1.0/drives/{did}/root:/many:/children?$top=10"));
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let r = sim.http.get(&url).bearer_auth(&tok).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        pages += 1;
        for it in v["value"].as_array().unwrap() {
            names.push(it["name"].as_str().unwrap().to_owned());
        }
        match v["@odata.nextLink"].as_str() {
            Some(n) => {
                assert!(n.contains("skiptoken"));
                url = n.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 25);
    assert_eq!(names[0], "f00.txt");
    assert_eq!(names[24], "f24.txt");
    // By id, default page.
    let (_, many) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root:/many"))
        .await;
    assert_eq!(
        many["size"], 300,
        "folders report the aggregate size of their subtree"
    );
    assert_eq!(many["folder"]["childCount"], 25);
    let (_, root) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root"))
        .await;
    assert_eq!(root["size"], 300);
    let (_, v) = sim
        .get_json(
            &tok,
            &format!(
                "/v1.0/drives/{did}/items/{}/children",
                many["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 25);
    assert!(v.get("@odata.nextLink").is_none());
    let (s, v) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root/children?$top=abc"))
        .await;
    assert_eq!(s, 400);
    assert_graph_error(&v, "invalidRequest");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_delta_paging_tokens_and_changes() {
    let sim = TestSim::start().await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    for i in 0..12 {
        sim.put_content(
            &tok,
            &format!("/v1.0/drives/{did}/root:/d/f{i}.txt:/content"),
            vec![1; 4],
        )
        .await;
    }
    // Initial sync in pages of 5.
    let mut url = sim.url(&format!("/v1.0/drives/{did}/root/delta?$top=5"));
    let mut ids = std::collections::HashSet::new();
    let mut pages = 0;
    let delta_link = loop {
        let r = sim.http.get(&url).bearer_auth(&tok).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        pages += 1;
        for it in v["value"].as_array().unwrap() {
            ids.insert(it["id"].as_str().unwrap().to_owned());
        }
        if let Some(n) = v["@odata.nextLink"].as_str() {
            assert!(v.get("@odata.deltaLink").is_none());
            url = n.to_owned();
        } else {
            break v["@odata.deltaLink"].as_str().unwrap().to_owned();
        }
    };
    assert_eq!(ids.len(), 14, "root + folder + 12 files");
    assert!(pages >= 3);
    // Nothing changed → empty.
    let r = sim
        .http
        .get(&delta_link)
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["value"].as_array().unwrap().len(), 0);
    // Changes: a new file, a rename, a delete.
    sim.put_content(
        &tok,
        &format!("/v1.0/drives/{did}/root:/d/new.txt:/content"),
        b"n".to_vec(),
    )
    .await;
    let (_, f0) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root:/d/f0.txt"))
        .await;
    let r = sim
        .http
        .patch(sim.url(&format!(
            "/v1.0/drives/{did}/items/{}",
            f0["id"].as_str().unwrap()
        )))
        .bearer_auth(&tok)
        .json(&json!({"name": "renamed.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, f1) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root:/d/f1.txt"))
        .await;
    let r = sim
        .http
        .delete(sim.url(&format!(
            "/v1.0/drives/{did}/items/{}",
            f1["id"].as_str().unwrap()
        )))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let v: Value = sim
        .http
        .get(&delta_link)
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vals = v["value"].as_array().unwrap();
    let names: Vec<&str> = vals.iter().filter_map(|x| x["name"].as_str()).collect();
    assert!(
        names.contains(&"new.txt") && names.contains(&"renamed.txt"),
        "{v}"
    );
    let del = vals
        .iter()
        .find(|x| x["id"] == f1["id"])
        .expect("deleted item in delta");
    assert_eq!(del["deleted"]["state"], "deleted");
    assert!(v["@odata.deltaLink"].is_string());
    // token=latest → empty page + deltaLink.
    let (s, v) = sim
        .get_json(
            &tok,
            &format!("/v1.0/drives/{did}/root/delta(token='latest')"),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["value"].as_array().unwrap().len(), 0);
    let latest = v["@odata.deltaLink"].as_str().unwrap().to_owned();
    sim.put_content(
        &tok,
        &format!("/v1.0/drives/{did}/root:/later.txt:/content"),
        b"l".to_vec(),
    )
    .await;
    let v: Value = sim
        .http
        .get(&latest)
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["value"].as_array().unwrap().len(),
        2,
        "new file + its parent root: {v}"
    );
    let r = sim
        .http
        .get(sim.url(&format!("/v1.0/drives/{did}/root/delta?token=999999")))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 410);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .ends_with("/root/delta"));
    assert_graph_error(&r.json().await.unwrap(), "resyncRequired");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_simple_upload_conflicts_folders_patch_delete() {
    let sim = TestSim::start().await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    // Upload by path creates missing folders.
    let (s, a) = sim
        .put_content(
            &tok,
            &format!("/v1.0/drives/{did}/root:/x/y/a.txt:/content"),
            b"one".to_vec(),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["file"]["hashes"]["quickXorHash"], qxh(b"one"));
    let aid = a["id"].as_str().unwrap().to_owned();
    let parent = a["parentReference"]["id"].as_str().unwrap().to_owned();
    // Default replace → 200, same id.
    let (s, a2) = sim
        .put_content(
            &tok,
            &format!("/v1.0/drives/{did}/items/{parent}:/a.txt:/content"),
            b"two!".to_vec(),
        )
        .await;
    assert_eq!(
        (s, a2["id"].as_str(), a2["size"].as_u64()),
        (200, Some(aid.as_str()), Some(4))
    );
    assert_ne!(a2["eTag"], a["eTag"]);
    // fail → 409 nameAlreadyExists.
    let (s, v) = sim.put_content(&tok, &format!("/v1.0/drives/{did}/items/{parent}:/a.txt:/content?@microsoft.graph.conflictBehavior=fail"), b"3".to_vec()).await;
    assert_eq!(s, 409);
    assert_graph_error(&v, "nameAlreadyExists");
    // rename → "a 1.txt".
    let (s, v) = sim.put_content(&tok, &format!("/v1.0/drives/{did}/items/{parent}:/a.txt:/content?@microsoft.graph.conflictBehavior=rename"), b"3".to_vec()).await;
    assert_eq!((s, v["name"].as_str()), (201, Some("a 1.txt")));
    // items/{id}/content replaces.
    let (s, v) = sim
        .put_content(
            &tok,
            &format!("/v1.0/drives/{did}/items/{aid}/content"),
            b"replaced".to_vec(),
        )
        .await;
    assert_eq!((s, v["size"].as_u64()), (200, Some(8)));
    let r = sim
        .http
        .get(sim.url(&format!("/v1.0/drives/{did}/items/{aid}/content")))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        sim.http
            .get(loc)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "replaced"
    );
    // Empty file.
    let (s, v) = sim
        .put_content(
            &tok,
            &format!("/v1.0/drives/{did}/root:/empty.bin:/content"),
            vec![],
        )
        .await;
    assert_eq!((s, v["size"].as_u64()), (201, Some(0)));
    assert_eq!(v["file"]["hashes"]["quickXorHash"], qxh(b""));

    // Create folder with conflict behaviours.
    let mk = |body: Value| {
        let sim = &sim;
        let tok = tok.clone();
        let did = did.clone();
        async move {
            let r = sim
                .http
                .post(sim.url(&format!("/v1.0/drives/{did}/root/children")))
                .bearer_auth(&tok)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, f) =
        mk(json!({"name": "Reports", "folder": {}, "@microsoft.graph.conflictBehavior": "fail"}))
            .await;
    assert_eq!(s, 201);
    assert_eq!(f["folder"]["childCount"], 0);
    let (s, v) =
        mk(json!({"name": "Reports", "folder": {}, "@microsoft.graph.conflictBehavior": "fail"}))
            .await;
    assert_eq!(s, 409);
    assert_graph_error(&v, "nameAlreadyExists");
    let (s, v) =
        mk(json!({"name": "Reports", "folder": {}, "@microsoft.graph.conflictBehavior": "rename"}))
            .await;
    assert_eq!((s, v["name"].as_str()), (201, Some("Reports 1")));
    let (s, v) = mk(
        json!({"name": "Reports", "folder": {}, "@microsoft.graph.conflictBehavior": "replace"}),
    )
    .await;
    assert_eq!((s, v["id"].as_str()), (200, f["id"].as_str()));
    let (s, v) = mk(json!({"name": "bad:name", "folder": {}})).await;
    assert_eq!(s, 400);
    assert_graph_error(&v, "invalidRequest");

    // PATCH: rename + move + timestamps.
    let body = json!({"name": "moved.txt", "parentReference": {"id": f["id"]}, "fileSystemInfo": {"createdDateTime": "2019-01-01T00:00:00Z", "lastModifiedDateTime": "2019-02-03T04:05:06Z"}});
    let r = sim
        .http
        .patch(sim.url(&format!("/v1.0/drives/{did}/items/{aid}")))
        .bearer_auth(&tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["name"], "moved.txt");
    assert_eq!(
        v["parentReference"]["path"],
        format!("/drives/{did}/root:/Reports")
    );
    assert_eq!(
        v["fileSystemInfo"]["lastModifiedDateTime"],
        "2019-02-03T04:05:06Z"
    );
    assert_eq!(
        v["fileSystemInfo"]["createdDateTime"],
        "2019-01-01T00:00:00Z"
    );
    assert_eq!(v["lastModifiedDateTime"], "2019-02-03T04:05:06Z");
    // Rename onto an existing name → 409; folder into itself → 400.
    sim.put_content(
        &tok,
        &format!("/v1.0/drives/{did}/root:/Reports/other.txt:/content"),
        b"o".to_vec(),
    )
    .await;
    let r = sim
        .http
        .patch(sim.url(&format!("/v1.0/drives/{did}/items/{aid}")))
        .bearer_auth(&tok)
        .json(&json!({"name": "other.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = sim
        .http
        .patch(sim.url(&format!(
            "/v1.0/drives/{did}/items/{}",
            f["id"].as_str().unwrap()
        )))
        .bearer_auth(&tok)
        .json(&json!({"parentReference": {"id": f["id"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Malformed JSON.
    let r = sim
        .http
        .patch(sim.url(&format!("/v1.0/drives/{did}/items/{aid}")))
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_graph_error(&r.json().await.unwrap(), "invalidRequest");
    // DELETE folder (recursive), then 404.
    let r = sim
        .http
        .delete(sim.url(&format!(
            "/v1.0/drives/{did}/items/{}",
            f["id"].as_str().unwrap()
        )))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, _) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/items/{aid}"))
        .await;
    assert_eq!(s, 404);
    let (s, _) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root:/Reports/other.txt"))
        .await;
    assert_eq!(s, 404);
    sim.stop().await;
}

async fn create_session(sim: &TestSim, tok: &str, path: &str, body: Value) -> (u16, Value) {
    let r = sim
        .http
        .post(sim.url(path))
        .bearer_auth(tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap())
}

async fn put_fragment(
    sim: &TestSim,
    url: &str,
    data: &[u8],
    start: usize,
    total: usize,
) -> (u16, Value) {
    let end = start + data.len() - 1;
    let r = sim
        .http
        .put(url)
        .header("content-range", format!("bytes {start}-{end}/{total}"))
        .header("content-length", data.len())
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_upload_session_many_fragments() {
    let sim = TestSim::start().await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    let frag = 327_680;
    let total = frag * 12 + 12_345;
    let data = bytes(total, 7);
    let (s, sess) = create_session(
        &sim,
        &tok,
        &format!("/v1.0/drives/{did}/root:/big/video.bin:/createUploadSession"),
        json!({"item": {"@microsoft.graph.conflictBehavior": "fail", "name": "video.bin", "fileSystemInfo": {"lastModifiedDateTime": "2022-02-02T02:02:02Z"}}}),
    )
    .await;
    assert_eq!(s, 200, "{sess}");
    let url = sess["uploadUrl"].as_str().unwrap().to_owned();
    assert!(url.contains("tempauth="));
    assert!(sess["expirationDateTime"].is_string());
    assert_eq!(sess["nextExpectedRanges"][0], "0-");
    let mut off = 0;
    let mut last = Value::Null;
    let mut n = 0;
    while off < total {
        let len = frag.min(total - off);
        let (s, v) = put_fragment(&sim, &url, &data[off..off + len], off, total).await;
        n += 1;
        off += len;
        if off < total {
            assert_eq!(s, 202, "{v}");
            assert_eq!(v["nextExpectedRanges"][0], format!("{off}-{}", total - 1));
            assert!(v["expirationDateTime"].is_string());
            // GET = status.
            if n == 3 {
                let v: Value = sim
                    .http
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(v["nextExpectedRanges"][0], format!("{off}-{}", total - 1));
            }
        } else {
            assert_eq!(s, 201, "{v}");
            last = v;
        }
    }
    assert_eq!(n, 13);
    assert_eq!(last["size"], total as u64);
    assert_eq!(last["name"], "video.bin");
    assert_eq!(last["file"]["hashes"]["quickXorHash"], qxh(&data));
    assert_eq!(
        last["fileSystemInfo"]["lastModifiedDateTime"],
        "2022-02-02T02:02:02Z"
    );
    // Read back.
    let r = sim
        .http
        .get(sim.url(&format!(
            "/v1.0/drives/{did}/items/{}/content",
            last["id"].as_str().unwrap()
        )))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let got = sim
        .http
        .get(r.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), total);
    assert!(got[..] == data[..]);
    // The session is gone after completion.
    let r = sim.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let counters = sim.admin(Method::GET, "/_sim/counters", None).await;
    assert!(counters["uploadedBytes"].as_u64().unwrap() >= total as u64);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_upload_session_errors() {
    let sim = TestSim::start().await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    let frag = 327_680;
    let data = bytes(frag * 3, 3);
    let total = data.len();
    let new = |name: &'static str, conflict: &'static str| {
        let sim = &sim;
        let tok = tok.clone();
        let did = did.clone();
        async move {
            let (s, v) = create_session(
                sim,
                &tok,
                &format!("/v1.0/drives/{did}/root:/{name}:/createUploadSession"),
                json!({"item": {"@microsoft.graph.conflictBehavior": conflict}}),
            )
            .await;
            assert_eq!(s, 200);
            v["uploadUrl"].as_str().unwrap().to_owned()
        }
    };
    let url = new("e.bin", "replace").await;
    // Wrong token in the URL → 401; no Authorization needed otherwise.
    let bad = url.replace("tempauth=", "tempauth=0");
    let (s, v) = put_fragment(&sim, &bad, &data[..frag], 0, total).await;
    assert_eq!(s, 401);
    assert_graph_error(&v, "InvalidAuthenticationToken");
    // Skipping ahead → 416.
    let (s, v) = put_fragment(&sim, &url, &data[frag..2 * frag], frag, total).await;
    assert_eq!(s, 416);
    assert_graph_error(&v, "invalidRange");
    let (s, _) = put_fragment(&sim, &url, &data[..frag], 0, total).await;
    assert_eq!(s, 202);
    // Overlap → 416.
    let (s, _) = put_fragment(&sim, &url, &data[..frag], 0, total).await;
    assert_eq!(s, 416);
    // Not a multiple of 320 KiB (and not last) → 400.
    let (s, v) = put_fragment(&sim, &url, &data[frag..frag + 1000], frag, total).await;
    assert_eq!(s, 400);
    assert_graph_error(&v, "invalidRequest");
    // Malformed / missing Content-Range → 400; total mismatch → 400.
    let r = sim
        .http
        .put(&url)
        .header("content-range", "bytes=zz")
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = sim.http.put(&url).body(vec![0u8; 10]).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let (s, _) = put_fragment(&sim, &url, &data[frag..2 * frag], frag, total + 1).await;
    assert_eq!(s, 400);
    // Content-Length ≠ range length → 400.
    let r = sim
        .http
        .put(&url)
        .header(
            "content-range",
            format!("bytes {frag}-{}/{total}", 2 * frag - 1),
        )
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The session is still usable after rejected headers? It was rejected before any byte was read.
    let v: Value = sim
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["nextExpectedRanges"][0], format!("{frag}-{}", total - 1));
    // DELETE cancels.
    let r = sim.http.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = sim.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Conflict at commit with fail → 409 nameAlreadyExists.
    sim.put_content(
        &tok,
        &format!("/v1.0/drives/{did}/root:/taken.bin:/content"),
        b"x".to_vec(),
    )
    .await;
    let url = new("taken.bin", "fail").await;
    let (s, _) = put_fragment(&sim, &url, &data[..frag], 0, frag + 10).await;
    assert_eq!(s, 202);
    let (s, v) = put_fragment(&sim, &url, &data[frag..frag + 10], frag, frag + 10).await;
    assert_eq!(s, 409);
    assert_graph_error(&v, "nameAlreadyExists");
    // replace with an existing file → 200 on the last fragment.
    let url = new("taken.bin", "replace").await;
    let (s, v) = put_fragment(&sim, &url, &data[..100], 0, 100).await;
    assert_eq!((s, v["size"].as_u64()), (200, Some(100)));
    // Oversized fragment (≥ 60 MiB) is refused from the header alone.
    let url = new("huge.bin", "replace").await;
    let r = sim
        .http
        .put(&url)
        .header(
            "content-range",
            format!("bytes 0-{}/{}", 60 * 1024 * 1024 - 1, 100 * 1024 * 1024),
        )
        .header("content-length", "0")
        .body(Vec::<u8>::new())
        .send()
        .await
        .unwrap();
    assert!(r.status() == 413 || r.status() == 400, "{}", r.status());
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_batch_with_depends_on() {
    let sim = TestSim::start().await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    let body = json!({"requests": [
        {"id": "1", "method": "POST", "url": format!("/drives/{did}/root/children"), "headers": {"content-type": "application/json"}, "body": {"name": "B", "folder": {}}},
        {"id": "2", "method": "GET", "url": format!("/drives/{did}/root:/B"), "dependsOn": ["1"]},
        {"id": "3", "method": "GET", "url": format!("/drives/{did}/root:/missing")},
        {"id": "4", "method": "GET", "url": format!("/drives/{did}/root"), "dependsOn": ["3"]},
    ]});
    let r = sim
        .http
        .post(sim.url("/v1.0/$batch"))
        .bearer_auth(&tok)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let by = |id: &str| {
        v["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by("1")["status"], 201);
    assert_eq!(by("2")["status"], 200);
    assert_eq!(by("2")["body"]["name"], "B");
    assert_eq!(by("3")["status"], 404);
    assert_eq!(by("3")["body"]["error"]["code"], "itemNotFound");
    assert_eq!(by("4")["status"], 424);
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/sites/root"}))
        .collect();
    let r = sim
        .http
        .post(sim.url("/v1.0/$batch"))
        .bearer_auth(&tok)
        .json(&json!({"requests": many}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    sim.stop().await;
}

// ---------------------------------------------------------------- throttling and faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_answers_429_with_retry_after_and_ratelimit_headers() {
    let sim = TestSim::start_with(|c| c.throttle.ru_per_minute = Some(10)).await;
    let tok = sim.token().await;
    let mut statuses = Vec::new();
    let mut throttled = None;
    let mut warned = false;
    for _ in 0..12 {
        let r = sim
            .http
            .get(sim.url("/v1.0/sites/root"))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 200 && r.headers().contains_key("ratelimit-remaining") {
            warned = true;
        }
        if r.status() == 429 && throttled.is_none() {
            let h = r.headers().clone();
            throttled = Some((h, r.json::<Value>().await.unwrap()));
        }
    }
    assert_eq!(&statuses[..10], &[200; 10], "1 RU each, budget 10");
    assert_eq!(statuses[10], 429);
    assert!(warned, "RateLimit headers appear once 80% is used");
    let (h, v) = throttled.unwrap();
    let ra: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&ra));
    assert_eq!(h["ratelimit-limit"], "10");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert!(h.contains_key("ratelimit-reset"));
    assert_graph_error(&v, "activityLimitReached");
    // Budgets are per app: a Basic-auth user has its own.
    let (s, _) = sim.sp_get("/_api/web", NOMETA).await;
    assert_eq!(s, 200);
    let c = sim.admin(Method::GET, "/_sim/counters", None).await;
    assert!(c["throttled"].as_u64().unwrap() >= 2);
    // Turn it off at runtime.
    sim.admin(Method::PUT, "/_sim/settings", Some(json!({})))
        .await;
    let (s, _) = sim.get_json(&tok, "/v1.0/sites/root").await;
    assert_eq!(s, 200);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_is_deterministic_per_seed() {
    async fn run(seed: u64) -> Vec<u16> {
        let sim = TestSim::start_with(|c| {
            c.seed = seed;
            c.faults.error_503_share = 0.3;
            c.faults.error_500_share = 0.1;
            c.faults.retry_after_secs = 2;
        })
        .await;
        let tok = sim.token().await;
        let mut out = Vec::new();
        for _ in 0..40 {
            let r = sim
                .http
                .get(sim.url("/v1.0/sites/root"))
                .bearer_auth(&tok)
                .send()
                .await
                .unwrap();
            if r.status() == 503 {
                assert_eq!(r.headers()["retry-after"], "2");
                assert_graph_error(&r.json().await.unwrap(), "serviceNotAvailable");
                out.push(503);
            } else {
                out.push(r.status().as_u16());
            }
        }
        let c = sim.admin(Method::GET, "/_sim/counters", None).await;
        assert_eq!(
            c["faults"].as_u64().unwrap() as usize,
            out.iter().filter(|s| **s != 200).count()
        );
        sim.stop().await;
        out
    }
    let a = run(7).await;
    let b = run(7).await;
    assert_eq!(a, b);
    assert!(
        a.contains(&503) && a.contains(&500) && a.contains(&200),
        "{a:?}"
    );
    let c = run(8).await;
    assert_ne!(a, c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_latency_applies() {
    let sim = TestSim::start_with(|c| c.faults.latency_ms = 150).await;
    let tok = sim.token().await;
    let t = std::time::Instant::now();
    let (s, _) = sim.get_json(&tok, "/v1.0/sites/root").await;
    assert_eq!(s, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    sim.stop().await;
}

// ---------------------------------------------------------------- provisioning and hubs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_provisioning_hubs_subsites_and_libraries() {
    let sim = TestSim::start_with(|c| c.provisioning_delay_secs = 0.3).await;
    let tok = sim.token().await;
    let post = |p: String, body: Value| {
        let sim = &sim;
        let tok = tok.clone();
        async move {
            let r = sim
                .http
                .post(sim.url(&p))
                .bearer_auth(&tok)
                .header("accept", "application/json;odata.metadata=none")
                .header("odata-version", "4.0")
                .json(&body)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let site_url = format!("{}/sites/finance", sim.base);
    let req = json!({"request": {"Title": "Finance", "Url": site_url, "Lcid": 1033, "WebTemplate": "STS#3", "Owner": "someone@example.com"}});
    let (s, v) = post("/_api/SPSiteManager/create".into(), req.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["SiteStatus"], 1, "provisioning");
    let site_id = v["SiteId"].as_str().unwrap().to_owned();
    // While provisioning the site is not served.
    let (s, _) = sim
        .get_json(&tok, "/v1.0/sites/127.0.0.1:/sites/finance")
        .await;
    assert_eq!(s, 404);
    let status_url = format!("/_api/SPSiteManager/status?url='{}'", site_url);
    let v = poll("site ready", Duration::from_secs(5), || async {
        let r = sim
            .http
            .get(sim.url(&status_url))
            .bearer_auth(&tok)
            .header("accept", NOMETA)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        (v["SiteStatus"] == 2).then_some(v)
    })
    .await;
    assert_eq!(v["SiteId"], site_id.as_str());
    assert_eq!(v["SiteUrl"], site_url.as_str());
    let (_, v) = post("/_api/SPSiteManager/create".into(), req).await;
    assert_eq!(v["SiteStatus"], 4, "URL exists");
    let r = sim
        .http
        .get(sim.url("/_api/SPSiteManager/status?url='/sites/nothing'"))
        .bearer_auth(&tok)
        .header("accept", NOMETA)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["SiteStatus"], 0);
    let (s, v) = sim
        .get_json(&tok, "/v1.0/sites/127.0.0.1:/sites/finance")
        .await;
    assert_eq!((s, v["displayName"].as_str()), (200, Some("Finance")));

    // Hubs.
    let (s, hub) = post("/sites/finance/_api/site/RegisterHubSite".into(), json!({})).await;
    assert_eq!(s, 200, "{hub}");
    let hub_id = hub["ID"].as_str().unwrap().to_owned();
    assert_eq!(hub["SiteId"], site_id.as_str());
    assert_eq!(hub["Title"], "Finance");
    let (s, _) = post("/sites/finance/_api/site/RegisterHubSite".into(), json!({})).await;
    assert_eq!(s, 400, "already a hub");
    let (_, v) = post(
        "/_api/SPSiteManager/create".into(),
        json!({"request": {"Title": "AP", "Url": format!("{}/sites/ap", sim.base)}}),
    )
    .await;
    assert_eq!(v["SiteStatus"], 1);
    poll("ap ready", Duration::from_secs(5), || async {
        let r = sim
            .http
            .get(sim.url("/_api/SPSiteManager/status?url='/sites/ap'"))
            .bearer_auth(&tok)
            .header("accept", NOMETA)
            .send()
            .await
            .unwrap();
        (r.json::<Value>().await.unwrap()["SiteStatus"] == 2).then_some(())
    })
    .await;
    let (s, _) = post(
        format!("/sites/ap/_api/site/JoinHubSite('{hub_id}')"),
        json!({}),
    )
    .await;
    assert_eq!(s, 204);
    let (_, v) = sim.get_json(&tok, "/sites/ap/_api/site").await;
    assert_eq!(v["d"]["HubSiteId"], hub_id.as_str(), "{v}");
    let (s, _) = post(
        "/sites/ap/_api/site/JoinHubSite('00000000-0000-0000-0000-000000000000')".into(),
        json!({}),
    )
    .await;
    assert_eq!(s, 204);
    let r = sim
        .http
        .get(sim.url("/sites/ap/_api/site"))
        .bearer_auth(&tok)
        .header("accept", NOMETA)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["HubSiteId"],
        "00000000-0000-0000-0000-000000000000"
    );
    let (s, _) = post(
        format!(
            "/sites/ap/_api/site/JoinHubSite('{}')",
            uuid::Uuid::new_v4()
        ),
        json!({}),
    )
    .await;
    assert_eq!(s, 404);
    let r = sim
        .http
        .get(sim.url("/_api/HubSites"))
        .bearer_auth(&tok)
        .header("accept", NOMETA)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    assert_eq!(v["value"][0]["ID"], hub_id.as_str());

    // Subsite + library (classic structure).
    let (s, w) = post("/sites/finance/_api/web/webs/add".into(), json!({"parameters": {"__metadata": {"type": "SP.WebCreationInformation"}, "Url": "payroll", "Title": "Payroll", "WebTemplate": "STS#0", "Language": 1033, "UseSamePermissionsAsParentSite": true}})).await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["ServerRelativeUrl"], "/sites/finance/payroll");
    // A taken web URL: SharePoint's SPException (HRESULT 0x800700B7), HTTP 500.
    let (s, v) = post(
        "/sites/finance/_api/web/webs/add".into(),
        json!({"parameters": {"Url": "payroll", "Title": "Again"}}),
    )
    .await;
    assert_eq!(s, 500, "{v}");
    assert_eq!(
        v["odata.error"]["code"], "-2147024713, Microsoft.SharePoint.SPException",
        "{v}"
    );
    assert_eq!(
        v["odata.error"]["message"]["value"],
        "The Web site address \"/sites/finance/payroll\" is already in use.",
        "{v}"
    );
    let (s, l) = post(
        "/sites/finance/payroll/_api/web/lists".into(),
        json!({"BaseTemplate": 101, "Title": "Pay Slips", "Description": "d"}),
    )
    .await;
    assert_eq!(s, 201, "{l}");
    let (s, _) = post(
        "/sites/finance/payroll/_api/web/lists".into(),
        json!({"BaseTemplate": 101, "Title": "Pay Slips"}),
    )
    .await;
    assert_eq!(s, 409);
    let (_, v) = sim
        .get_json(&tok, "/v1.0/sites/127.0.0.1:/sites/finance/payroll")
        .await;
    let (_, drives) = sim
        .get_json(
            &tok,
            &format!("/v1.0/sites/{}/drives", v["id"].as_str().unwrap()),
        )
        .await;
    let names: Vec<&str> = drives["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Documents", "Pay Slips"]);
    let (_, d) = sim
        .get_json(
            &tok,
            &format!(
                "/v1.0/drives/{}/root",
                drives["value"][1]["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(
        d["webUrl"],
        format!("{}/sites/finance/payroll/Pay%20Slips", sim.base)
    );
    // Bad URL.
    let (s, _) = post(
        "/_api/SPSiteManager/create".into(),
        json!({"request": {"Title": "x", "Url": format!("{}/sites/../etc", sim.base)}}),
    )
    .await;
    assert_eq!(s, 400);
    sim.stop().await;
}

// ---------------------------------------------------------------- persistence, seeding, hostile input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_content_and_metadata() {
    let mut sim = hr().await;
    let tok = sim.token().await;
    let (_, site) = sim.get_json(&tok, "/v1.0/sites/127.0.0.1:/sites/hr").await;
    let (_, d) = sim
        .get_json(
            &tok,
            &format!("/v1.0/sites/{}/drive", site["id"].as_str().unwrap()),
        )
        .await;
    let did = d["id"].as_str().unwrap().to_owned();
    let data = bytes(700_000, 9);
    let (s, sess) = create_session(
        &sim,
        &tok,
        &format!("/v1.0/drives/{did}/root:/keep/big.bin:/createUploadSession"),
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, big) = put_fragment(
        &sim,
        sess["uploadUrl"].as_str().unwrap(),
        &data,
        0,
        data.len(),
    )
    .await;
    assert_eq!(s, 201);
    let r = sim
        .http
        .patch(sim.url(&format!(
            "/v1.0/drives/{did}/items/{}",
            big["id"].as_str().unwrap()
        )))
        .bearer_auth(&tok)
        .json(&json!({"fileSystemInfo": {"lastModifiedDateTime": "2018-08-08T08:08:08Z"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, small) = sim
        .put_content(
            &tok,
            &format!("/v1.0/drives/{did}/root:/keep/small.txt:/content"),
            b"small".to_vec(),
        )
        .await;
    let (_, deleted) = sim
        .put_content(
            &tok,
            &format!("/v1.0/drives/{did}/root:/keep/gone.txt:/content"),
            b"gone".to_vec(),
        )
        .await;
    sim.http
        .delete(sim.url(&format!(
            "/v1.0/drives/{did}/items/{}",
            deleted["id"].as_str().unwrap()
        )))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let (_, delta) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root/delta?token=latest"))
        .await;
    let before = sim.admin(Method::GET, "/_sim/state", None).await;

    sim.restart().await;
    let after = sim.admin(Method::GET, "/_sim/state", None).await;
    assert_eq!(before, after);
    let tok = sim.token().await;
    let (s, b2) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root:/keep/big.bin"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b2["id"], big["id"]);
    assert_eq!(b2["file"]["hashes"]["quickXorHash"], qxh(&data));
    assert_eq!(
        b2["sharepointIds"],
        big["sharepointIds"]
            .clone()
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.insert("siteUrl".into(), json!(format!("{}/sites/hr", sim.base)));
                Value::Object(o)
            })
            .unwrap()
    );
    assert_eq!(
        b2["fileSystemInfo"]["lastModifiedDateTime"],
        "2018-08-08T08:08:08Z"
    );
    let r = sim
        .http
        .get(sim.url(&format!(
            "/v1.0/drives/{did}/items/{}/content",
            small["id"].as_str().unwrap()
        )))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(
        sim.http
            .get(r.headers()["location"].to_str().unwrap())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "small"
    );
    let r = sim
        .http
        .get(sim.url(&format!(
            "/v1.0/drives/{did}/items/{}/content",
            big["id"].as_str().unwrap()
        )))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let got = sim
        .http
        .get(r.headers()["location"].to_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got[..] == data[..]);
    // Seeded content and the SP side survive too.
    let r = sim.http.get(sim.url("/sites/hr/_api/web/GetFileByServerRelativeUrl('/sites/hr/Shared%20Documents/readme.txt')/$value")).basic_auth("someone@example.com", Some("password")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello from HR");
    // Delta tokens stay valid across restarts.
    let link = delta["@odata.deltaLink"]
        .as_str()
        .unwrap()
        .split("/v1.0")
        .nth(1)
        .unwrap()
        .to_owned();
    let (s, v) = sim.get_json(&tok, &format!("/v1.0{link}")).await;
    assert_eq!((s, v["value"].as_array().unwrap().len()), (200, 0));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeding_is_deterministic_and_local_import_works() {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("sub/deeper")).unwrap();
    std::fs::write(src.path().join("top.txt"), b"top").unwrap();
    std::fs::write(src.path().join("sub/deeper/leaf.bin"), bytes(5000, 1)).unwrap();
    std::fs::write(src.path().join("bad:name.txt"), b"skipped").unwrap();
    let s1 = TestSim::start_with(|c| {
        c.farm = Some(hr_farm());
        c.imports.push(ferry_sim::Import {
            dir: src.path().to_path_buf(),
            library_url: "/sites/hr/Archive".into(),
        });
    })
    .await;
    let s2 = TestSim::start_with(|c| c.farm = Some(hr_farm())).await;
    let state1 = s1.admin(Method::GET, "/_sim/state", None).await;
    let state2 = s2.admin(Method::GET, "/_sim/state", None).await;
    let h = |st: &Value, url: &str| {
        st["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["url"] == url)
            .map(|i| i["quickXorHash"].clone())
    };
    let p = "/sites/hr/Shared Documents/Policies/2024/handbook.pdf";
    assert!(h(&state1, p).is_some());
    assert_eq!(
        h(&state1, p),
        h(&state2, p),
        "generated content is deterministic"
    );
    assert_eq!(
        h(&state1, "/sites/hr/Archive/sub/deeper/leaf.bin").unwrap(),
        json!(qxh(&bytes(5000, 1)))
    );
    assert!(h(&state1, "/sites/hr/Archive/top.txt").is_some());
    assert!(h(&state1, "/sites/hr/Archive/bad:name.txt").is_none());
    // Admin import + reset.
    let r = s2
        .http
        .post(s2.url("/_sim/import"))
        .json(&json!({"dir": src.path(), "library_url": "/sites/hr/Shared Documents/Nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the target folder must exist");
    let v = s2
        .admin(
            Method::POST,
            "/_sim/import",
            Some(json!({"dir": src.path(), "library_url": "/sites/hr/Shared Documents/Empty"})),
        )
        .await;
    assert_eq!(v["imported"], 2);
    s2.admin(Method::POST, "/_sim/reset", None).await;
    let st = s2.admin(Method::GET, "/_sim/state", None).await;
    assert_eq!(st["sites"].as_array().unwrap().len(), 2);
    s1.stop().await;
    s2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_and_inputs_are_rejected_without_escaping_the_data_dir() {
    let sim = hr().await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    let addr = sim.handle.as_ref().unwrap().addr;
    let auth = format!("Bearer {tok}");
    let graph_bad = [
        format!("/v1.0/drives/{did}/root:/../../etc/passwd:/content"),
        format!("/v1.0/drives/{did}/root:/%2e%2e/%2e%2e/x.txt:/content"),
        format!("/v1.0/drives/{did}/root:/a%5c..%5cb.txt:/content"),
        format!("/v1.0/drives/{did}/root:/a\\b.txt:/content"),
        format!("/v1.0/drives/{did}/root:/ok/%2E%2E%2F%2E%2E%2Fescape.txt:/content"),
        format!("/v1.0/drives/{did}/root:/nul%00byte.txt:/content"),
        format!("/v1.0/drives/{did}/root:/%ff%fe.txt:/content"),
        format!("/v1.0/drives/{did}/root:/./x.txt:/content"),
        format!("/_api/v2.0/drives/{did}/root:/..%2f..%2fx.txt:/createUploadSession"),
    ];
    for p in &graph_bad {
        let method = if p.ends_with("createUploadSession") {
            "POST"
        } else {
            "PUT"
        };
        let (s, v) = raw(addr, method, p, &[("Authorization", &auth)], b"evil").await;
        assert_eq!(s, 400, "{p}: {s} {v}");
        assert_eq!(v["error"]["code"], "invalidRequest", "{p}: {v}");
    }
    let sp_bad = [
        "/sites/hr/_api/web/GetFileByServerRelativeUrl('/sites/hr/Shared%20Documents/../../../etc/passwd')/$value",
        "/sites/hr/_api/web/GetFileByServerRelativeUrl('/sites/hr/Shared%20Documents/%2e%2e/x')",
        "/sites/hr/_api/web/GetFolderByServerRelativeUrl('..\\..\\windows')",
        "/sites/hr/_api/web/GetFolderByServerRelativeUrl('unterminated)",
        "/sites/hr/_api/web/lists(guid'not-a-guid')",
        "/sites/%2e%2e/%2e%2e/_api/web",
        "/sites/../../_api/web",
    ];
    for p in sp_bad {
        let (s, v) = raw(
            addr,
            "GET",
            p,
            &[("Authorization", &auth), ("Accept", VERBOSE)],
            b"",
        )
        .await;
        assert_eq!(s, 400, "{p}: {s} {v}");
        assert!(
            v["error"]["code"].as_str().unwrap().contains("Exception"),
            "{p}: {v}"
        );
    }
    // Normalised by the client to `/sites/_api/web`: harmless — no web there
    // (404), or the nearest one with the old fallback; never outside the farm.
    let (s, _) = sim.sp_get("/sites/hr/../_api/web", NOMETA).await;
    assert!(s == 200 || s == 404, "{s}");
    // Malformed JSON and oversized JSON.
    let r = sim
        .http
        .post(sim.url(&format!("/v1.0/drives/{did}/root/children")))
        .bearer_auth(&tok)
        .body("[1,2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let huge = vec![b' '; 5 * 1024 * 1024];
    let r = sim
        .http
        .post(sim.url(&format!("/v1.0/drives/{did}/root/children")))
        .bearer_auth(&tok)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Oversized header → rejected by the HTTP layer, server keeps serving.
    let r = sim
        .http
        .get(sim.url("/v1.0/sites/root"))
        .bearer_auth(&tok)
        .header("x-big", "a".repeat(1024 * 1024))
        .send()
        .await;
    if let Ok(r) = r {
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let (s, _) = sim.get_json(&tok, "/v1.0/sites/root").await;
    assert_eq!(s, 200);
    // Simple upload over the limit.
    let small = TestSim::start_with(|c| c.max_simple_upload_bytes = 1000).await;
    let tok2 = small.token().await;
    let did2 = small.root_drive(&tok2).await;
    let (s, v) = small
        .put_content(
            &tok2,
            &format!("/v1.0/drives/{did2}/root:/big.bin:/content"),
            vec![0; 5000],
        )
        .await;
    assert_eq!(s, 413, "{v}");
    small.stop().await;
    // Nothing was written outside the data dir: only our three entries exist.
    let mut names: Vec<String> = std::fs::read_dir(sim.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["blobs", "sim.redb", "uploads"]);
    for e in std::fs::read_dir(sim.dir.path().join("blobs")).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            n.len() == 32 && n.chars().all(|c| c.is_ascii_hexdigit()),
            "{n}"
        );
    }
    assert!(!sim.dir.path().parent().unwrap().join("x.txt").exists());
    sim.stop().await;
}

// ---------------------------------------------------------------- third-party client

async fn run_python(script: &str, args: Vec<String>) -> (bool, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.success() && stdout.contains("ALL OK"),
        format!("stdout:\n{stdout}\nstderr:\n{stderr}"),
    )
}

/// Runs the unmodified PyPI package `office365-rest-python-client` (3.3.x) against the
/// emulator (SharePoint REST + Graph). Fails (does not skip) when python3 or the package
/// is missing: CI installs it with `pip install "office365-rest-python-client==3.3.0"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_office365_python_client() {
    let sim = hr().await;
    let work = tempfile::tempdir().unwrap();
    let (ok, out) = run_python(
        "office365_client.py",
        vec![sim.base.clone(), work.path().display().to_string()],
    )
    .await;
    assert!(ok, "office365-rest-python-client run failed (pip install \"office365-rest-python-client==3.3.0\")\n{out}");
    // The client really uploaded through the emulator.
    let st = sim.admin(Method::GET, "/_sim/state", None).await;
    let large = st["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["url"] == "/sites/hr/Shared Documents/large.bin")
        .expect("large.bin");
    assert!(large["size"].as_u64().unwrap() > 7_000_000);
    sim.stop().await;
}

/// Runs Microsoft's Kiota-generated `msgraph-sdk` (PyPI 1.x) against the emulator's Graph
/// surface: strict model parsing, paging, delta(), uploads, PATCH, ODataError.
/// CI: `pip install "msgraph-sdk==1.65.0"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_msgraph_sdk_python() {
    let sim = hr().await;
    let (ok, out) = run_python("msgraph_sdk_client.py", vec![sim.base.clone()]).await;
    assert!(
        ok,
        "msgraph-sdk run failed (pip install \"msgraph-sdk==1.65.0\")\n{out}"
    );
    let st = sim.admin(Method::GET, "/_sim/state", None).await;
    assert!(st["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["url"] == "/sites/hr/Shared Documents/sdk/large.bin"));
    sim.stop().await;
}

// ---------------------------------------------------------------- more Graph / SP write paths

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_defer_commit_and_direct_download() {
    let sim = TestSim::start_with(|c| c.download_redirect = false).await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    let data = bytes(327_680 + 500, 4);
    let (s, sess) = create_session(
        &sim,
        &tok,
        &format!("/_api/v2.0/drives/{did}/root:/deferred.bin:/createUploadSession"),
        json!({"deferCommit": true, "item": {"fileSize": data.len()}}),
    )
    .await;
    assert_eq!(s, 200);
    let url = sess["uploadUrl"].as_str().unwrap().to_owned();
    let (s, _) = put_fragment(&sim, &url, &data[..327_680], 0, data.len()).await;
    assert_eq!(s, 202);
    let (s, v) = put_fragment(&sim, &url, &data[327_680..], 327_680, data.len()).await;
    assert_eq!(s, 202, "deferred: no item until the explicit commit");
    assert_eq!(v["nextExpectedRanges"].as_array().unwrap().len(), 0);
    let (s, _) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root:/deferred.bin"))
        .await;
    assert_eq!(s, 404);
    let r = sim.http.post(&url).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let item: Value = r.json().await.unwrap();
    assert_eq!(item["file"]["hashes"]["quickXorHash"], qxh(&data));
    // download_redirect = false → 200 stream straight from /content, with Range support.
    let r = sim
        .http
        .get(sim.url(&format!(
            "/v1.0/drives/{did}/items/{}/content",
            item["id"].as_str().unwrap()
        )))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap()[..] == data[..]);
    let r = sim
        .http
        .get(sim.url(&format!("/v1.0/drives/{did}/root:/deferred.bin:/content")))
        .bearer_auth(&tok)
        .header("range", "bytes=-100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap()[..] == data[data.len() - 100..]);
    // Replace an existing file's content through items/{id}/createUploadSession.
    let (s, sess) = create_session(
        &sim,
        &tok,
        &format!(
            "/v1.0/drives/{did}/items/{}/createUploadSession",
            item["id"].as_str().unwrap()
        ),
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = put_fragment(&sim, sess["uploadUrl"].as_str().unwrap(), b"tiny", 0, 4).await;
    assert_eq!(
        (s, v["id"].as_str(), v["size"].as_u64()),
        (200, item["id"].as_str(), Some(4))
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sp_rest_file_add_folder_add_and_delete() {
    let sim = hr().await;
    let tok = sim.token().await;
    let folder = "/sites/hr/_api/web/GetFolderByServerRelativeUrl('/sites/hr/Shared%20Documents')";
    let r = sim
        .http
        .post(sim.url(&format!(
            "{folder}/Folders/add('/sites/hr/Shared%20Documents/New%20Folder')"
        )))
        .bearer_auth(&tok)
        .header("accept", VERBOSE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["d"]["ServerRelativeUrl"],
        "/sites/hr/Shared Documents/New Folder"
    );
    let add = |over: bool, body: &'static str| {
        let sim = &sim;
        let tok = tok.clone();
        async move {
            let r = sim
                .http
                .post(sim.url(&format!("/sites/hr/_api/web/GetFolderByServerRelativeUrl('/sites/hr/Shared%20Documents/New%20Folder')/Files/add(url='a.txt',overwrite={over})")))
                .bearer_auth(&tok)
                .header("accept", NOMETA)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = add(false, "first").await;
    assert_eq!((s, v["Length"].as_str()), (200, Some("5")));
    let (s, v) = add(false, "again").await;
    assert_eq!(s, 409, "{v}");
    assert!(v["odata.error"]["code"]
        .as_str()
        .unwrap()
        .contains("SPException"));
    let (s, v) = add(true, "second!").await;
    assert_eq!((s, v["Length"].as_str()), (200, Some("7")));
    let file = "/sites/hr/_api/web/GetFileByServerRelativeUrl('/sites/hr/Shared%20Documents/New%20Folder/a.txt')";
    let r = sim
        .http
        .get(sim.url(&format!("{file}/$value")))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "second!");
    // Visible through Graph with the same UniqueId.
    let (_, g) = sim
        .get_json(
            &tok,
            "/v1.0/sites/127.0.0.1:/sites/hr:/drive/root:/New Folder/a.txt",
        )
        .await;
    assert_eq!(g["sharepointIds"]["listItemUniqueId"], v["UniqueId"]);
    let r = sim
        .http
        .post(sim.url(file))
        .bearer_auth(&tok)
        .header("x-http-method", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, _) = sim.sp_get(file, NOMETA).await;
    assert_eq!(s, 404);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_source_farm_and_destination_tenant() {
    let src = hr().await;
    let dst = TestSim::start_with(|c| c.hostname = Some("contoso.sharepoint.com".into())).await;
    assert_ne!(src.base, dst.base);
    // Read from the SharePoint Server side with Basic auth…
    let r = src
        .http
        .get(src.url("/sites/hr/_api/web/GetFileByServerRelativeUrl('/sites/hr/Shared%20Documents/Policies/2024/handbook.pdf')/$value"))
        .basic_auth("someone@example.com", Some("password"))
        .send()
        .await
        .unwrap();
    let content = r.bytes().await.unwrap();
    // …write to the SharePoint Online side with its own token.
    let dtok = dst.token().await;
    let stok = src.token().await;
    let (s, _) = dst.get_json(&stok, "/v1.0/sites/root").await;
    assert_eq!(s, 401, "tokens are per instance");
    let (s, site) = dst
        .get_json(&dtok, "/v1.0/sites/contoso.sharepoint.com:/")
        .await;
    assert_eq!(s, 200);
    assert!(site["id"]
        .as_str()
        .unwrap()
        .starts_with("contoso.sharepoint.com,"));
    let did = dst.root_drive(&dtok).await;
    let (s, v) = dst
        .put_content(
            &dtok,
            &format!("/v1.0/drives/{did}/root:/Policies/2024/handbook.pdf:/content"),
            content.to_vec(),
        )
        .await;
    assert_eq!(s, 201);
    let (_, sv) = src
        .get_json(
            &stok,
            "/v1.0/sites/127.0.0.1:/sites/hr:/drive/root:/Policies/2024/handbook.pdf",
        )
        .await;
    assert_eq!(
        v["file"]["hashes"]["quickXorHash"],
        sv["file"]["hashes"]["quickXorHash"]
    );
    src.stop().await;
    dst.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lenient_fragment_sizes_when_configured() {
    let sim = TestSim::start_with(|c| c.strict_fragment_multiple = false).await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    let data = bytes(2_000_000 * 2 + 7, 5);
    let (_, sess) = create_session(
        &sim,
        &tok,
        &format!("/v1.0/drives/{did}/root:/odd.bin:/createUploadSession"),
        json!({}),
    )
    .await;
    let url = sess["uploadUrl"].as_str().unwrap().to_owned();
    assert_eq!(
        put_fragment(&sim, &url, &data[..2_000_000], 0, data.len())
            .await
            .0,
        202
    );
    assert_eq!(
        put_fragment(
            &sim,
            &url,
            &data[2_000_000..4_000_000],
            2_000_000,
            data.len()
        )
        .await
        .0,
        202
    );
    let (s, v) = put_fragment(&sim, &url, &data[4_000_000..], 4_000_000, data.len()).await;
    assert_eq!(s, 201);
    assert_eq!(v["file"]["hashes"]["quickXorHash"], qxh(&data));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_yields_5xx() {
    let sim = hr().await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    let addr = sim.handle.as_ref().unwrap().addr;
    let auth = format!("Bearer {tok}");
    let (_, lists) = sim
        .sp_get("/sites/hr/_api/web/lists/getbytitle('Documents')", NOMETA)
        .await;
    let lid = lists["Id"].as_str().unwrap().to_owned();
    let paths = vec![
        format!("/sites/hr/_api/web/lists(guid'{lid}')/items?$skiptoken=Paged%3DTRUE%26p_ID%3D18446744073709551615"),
        format!("/sites/hr/_api/web/lists(guid'{lid}')/items?$top=99999999999999999999999"),
        format!("/sites/hr/_api/web/lists(guid'{lid}')/items?$skiptoken=garbage"),
        format!("/sites/hr/_api/web/lists(guid'{lid}')/items(99999999999999999999)"),
        "/sites/hr/_api/web/lists?$filter=BaseTemplate%20gt%20100".into(),
        "/sites/hr/_api/web/lists?$filter=%27".into(),
        "/sites/hr/_api/web/GetFolderByServerRelativeUrl(@a)?@a=nope".into(),
        "/sites/hr/_api/web/GetFolderByServerRelativeUrl(@a)/Files".into(),
        "/sites/hr/_api/web/GetFileByServerRelativeUrl('')/$value".into(),
        "/sites/hr/_api/".into(),
        "/sites/hr/_api".into(),
        "/sites/hr/_api/web/webs/add".into(),
        "/sites/hr/_api/web/((((".into(),
        "/sites/hr/_api/web/lists(guid'{00000000-0000-0000-0000-000000000000}')".into(),
        "/_api/SPSiteManager/status".into(),
        "/_api/SPSiteManager/status?url='%ff'".into(),
        "/v1.0/".into(),
        "/v1.0/sites/".into(),
        "/v1.0/sites/,,,".into(),
        "/v1.0/sites/127.0.0.1,not-a-guid,also-not".into(),
        "/v1.0/drives/b!!!".into(),
        "/v1.0/drives/b!AAAA/root".into(),
        format!("/v1.0/drives/{did}/items/zzz"),
        format!("/v1.0/drives/{did}/items/"),
        format!("/v1.0/drives/{did}/root:"),
        format!("/v1.0/drives/{did}/root::"),
        format!("/v1.0/drives/{did}/root:/:/children"),
        format!("/v1.0/drives/{did}/root/delta?token=i99999999999999999999999"),
        format!("/v1.0/drives/{did}/root/delta?token=-1"),
        format!("/v1.0/drives/{did}/root/children?$skiptoken=%%%"),
        format!("/v1.0/drives/{did}/root/children?$skiptoken=____"),
        format!("/v1.0/drives/{did}/root/nonsense"),
        "/_api/v2.0/uploadSession?guid='x'&tempauth=y".into(),
        "/_layouts/15/download.aspx?UniqueId=zz".into(),
        "/nothing/here".into(),
        "/_sim/nothing".into(),
    ];
    for p in &paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "MERGE"] {
            let (s, v) = raw(
                addr,
                method,
                p,
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                ],
                b"{\"name\":",
            )
            .await;
            assert!(
                (400..500).contains(&s) || (200..300).contains(&s),
                "{method} {p}: {s} {v}"
            );
        }
    }
    // Hostile Content-Range values on a real session.
    let (_, sess) = create_session(
        &sim,
        &tok,
        &format!("/v1.0/drives/{did}/root:/cr.bin:/createUploadSession"),
        json!({}),
    )
    .await;
    let url = sess["uploadUrl"].as_str().unwrap();
    let path = &url[sim.base.len()..];
    for cr in [
        "bytes 5-3/10",
        "bytes 0-18446744073709551615/18446744073709551616",
        "bytes 0-0/0",
        "bytes -1-2/3",
        "bytes 0-1/*",
        "items 0-1/2",
        "bytes 0-1/2/3",
    ] {
        let (s, v) = raw(addr, "PUT", path, &[("Content-Range", cr)], b"ab").await;
        assert!((400..500).contains(&s), "{cr}: {s} {v}");
    }
    let (s, _) = sim.get_json(&tok, "/v1.0/sites/root").await;
    assert_eq!(s, 200);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_fragment_can_be_retried() {
    use tokio::io::AsyncWriteExt;
    let sim = TestSim::start().await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    let frag = 327_680;
    let data = bytes(frag * 2 + 99, 11);
    let total = data.len();
    let (_, sess) = create_session(
        &sim,
        &tok,
        &format!("/v1.0/drives/{did}/root:/retry.bin:/createUploadSession"),
        json!({}),
    )
    .await;
    let url = sess["uploadUrl"].as_str().unwrap().to_owned();
    assert_eq!(
        put_fragment(&sim, &url, &data[..frag], 0, total).await.0,
        202
    );
    // Second fragment: the connection dies after 1000 of 327,680 bytes.
    let addr = sim.handle.as_ref().unwrap().addr;
    let path = &url[sim.base.len()..];
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {frag}\r\nContent-Range: bytes {frag}-{}/{total}\r\n\r\n", 2 * frag - 1);
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&data[frag..frag + 1000]).await.unwrap();
    drop(s);
    // The session still expects the second fragment from its start.
    let v = poll("session status", Duration::from_secs(5), || async {
        let v: Value = sim
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (v["nextExpectedRanges"][0] == format!("{frag}-{}", total - 1)).then_some(v)
    })
    .await;
    assert!(v["expirationDateTime"].is_string());
    assert_eq!(
        put_fragment(&sim, &url, &data[frag..2 * frag], frag, total)
            .await
            .0,
        202
    );
    let (s, item) = put_fragment(&sim, &url, &data[2 * frag..], 2 * frag, total).await;
    assert_eq!(s, 201, "{item}");
    assert_eq!(item["file"]["hashes"]["quickXorHash"], qxh(&data));
    assert_eq!(item["size"], total as u64);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_protects_the_admin_surface() {
    let sim = TestSim::start_with(|c| c.admin_token = Some("s3cret-admin".into())).await;
    let r = sim.http.get(sim.url("/_sim/state")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = sim
        .http
        .post(sim.url("/_sim/reset"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = sim
        .http
        .get(sim.url("/_sim/state"))
        .bearer_auth("s3cret-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = sim.http.get(sim.url("/_sim/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    sim.stop().await;
}

/// Sign an RS256 client assertion with a fixture key (PKCS#8 PEM).
fn signed_assertion(key_pem: &str, cert_pem: &str, client_id: &str, aud: &str) -> String {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let der = |pem: &str, label: &str| {
        let b: String = pem
            .split(&format!("-----BEGIN {label}-----"))
            .nth(1)
            .unwrap()
            .split("-----END")
            .next()
            .unwrap()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        STANDARD.decode(b).unwrap()
    };
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der(key_pem, "PRIVATE KEY")).unwrap();
    let thumb = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &der(cert_pem, "CERTIFICATE"),
    );
    let now = chrono::Utc::now().timestamp();
    let head = URL_SAFE_NO_PAD.encode(
        json!({"alg": "RS256", "typ": "JWT", "x5t": URL_SAFE_NO_PAD.encode(thumb.as_ref())})
            .to_string(),
    );
    let claims = URL_SAFE_NO_PAD.encode(json!({"aud": aud, "iss": client_id, "sub": client_id, "jti": "x", "nbf": now, "exp": now + 600}).to_string());
    let input = format!("{head}.{claims}");
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_assertions_are_signature_checked_when_a_certificate_is_registered() {
    let fx = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let read = |n: &str| std::fs::read_to_string(fx.join(n)).unwrap();
    let (app_key, app_cert, other_key, other_cert) = (
        read("app-key.pem"),
        read("app-cert.pem"),
        read("other-key.pem"),
        read("other-cert.pem"),
    );
    let cert = app_cert.clone();
    let sim = TestSim::start_with(move |c| {
        c.apps.push(ferry_sim::AppRegistration {
            client_id: "cert-app".into(),
            secret: None,
            certificate_thumbprint: None,
        });
        c.app_certificates.push(ferry_sim::AppCertificate {
            client_id: "cert-app".into(),
            certificate_pem: cert,
        });
    })
    .await;
    let ep = sim.url("/common/oauth2/v2.0/token");
    let send = |assertion: String| {
        let sim = &sim;
        let ep = ep.clone();
        async move {
            let r = sim
                .http
                .post(&ep)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", "cert-app"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = send(signed_assertion(&app_key, &app_cert, "cert-app", &ep)).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = sim
        .get_json(v["access_token"].as_str().unwrap(), "/v1.0/sites/root")
        .await;
    assert_eq!(s, 200);
    // Signed by another key, presenting another certificate → refused.
    let (s, v) = send(signed_assertion(&other_key, &other_cert, "cert-app", &ep)).await;
    assert_eq!(s, 401, "{v}");
    // Signed by another key but claiming the registered certificate's thumbprint → bad signature.
    let (s, v) = send(signed_assertion(&other_key, &app_cert, "cert-app", &ep)).await;
    assert_eq!(s, 401);
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("bad signature"),
        "{v}"
    );
    // A tampered payload → bad signature.
    let good = signed_assertion(&app_key, &app_cert, "cert-app", &ep);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        json!({"iss": "cert-app", "sub": "cert-app", "exp": chrono::Utc::now().timestamp() + 999})
            .to_string(),
    );
    let (s, _) = send(parts.join(".")).await;
    assert_eq!(s, 401);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_and_name_rules() {
    let sim = TestSim::start().await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    // 200 concurrent uploads into the same (auto-created) folders.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (http, url, tok) = (
            sim.http.clone(),
            sim.url(&format!(
                "/v1.0/drives/{did}/root:/conc/sub{}/f{i}.bin:/content",
                i % 3
            )),
            tok.clone(),
        );
        tasks.push(tokio::spawn(async move {
            http.put(url)
                .bearer_auth(tok)
                .body(vec![i as u8; 100 + i])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s == 201, "{s}");
    }
    let (_, conc) = sim
        .get_json(&tok, &format!("/v1.0/drives/{did}/root:/conc"))
        .await;
    assert_eq!(
        conc["folder"]["childCount"], 3,
        "one folder per name despite the races"
    );
    let total: u64 = (0..200u64).map(|i| 100 + i).sum();
    assert_eq!(conc["size"], total);
    let mut n = 0;
    for k in 0..3 {
        let (_, v) = sim
            .get_json(
                &tok,
                &format!("/v1.0/drives/{did}/root:/conc/sub{k}:/children?$top=999"),
            )
            .await;
        n += v["value"].as_array().unwrap().len();
    }
    assert_eq!(n, 200);
    // SharePoint Online name rules.
    for bad in [
        "a%3Ab.txt",
        "%20lead.txt",
        "trail.txt%20",
        "_vti_x.txt",
        "q%3F.txt",
        "pipe%7C.txt",
        "star*.txt",
        "lt%3C.txt",
    ] {
        let (s, v) = sim
            .put_content(
                &tok,
                &format!("/v1.0/drives/{did}/root:/{bad}:/content"),
                b"x".to_vec(),
            )
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    // Decoded server-relative path of 400+ characters.
    let long = format!(
        "/v1.0/drives/{did}/root:/{}/{}.txt:/content",
        "d".repeat(200),
        "f".repeat(200)
    );
    let (s, v) = sim.put_content(&tok, &long, b"x".to_vec()).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("400"),
        "{v}"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_lists_and_transfer_url_faults() {
    let sim = hr().await;
    let tok = sim.token().await;
    let (_, site) = sim.get_json(&tok, "/v1.0/sites/127.0.0.1:/sites/hr").await;
    let sid = site["id"].as_str().unwrap().to_owned();
    let (s, lists) = sim
        .get_json(&tok, &format!("/v1.0/sites/{sid}/lists"))
        .await;
    assert_eq!(s, 200);
    let arr = lists["value"].as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert!(arr
        .iter()
        .all(|l| l["list"]["template"] == "documentLibrary"));
    let docs = arr
        .iter()
        .find(|l| l["displayName"] == "Documents")
        .unwrap();
    let (s, d) = sim
        .get_json(
            &tok,
            &format!(
                "/v1.0/sites/{sid}/lists/{}/drive",
                docs["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!((s, d["name"].as_str()), (200, Some("Documents")));
    let did = d["id"].as_str().unwrap().to_owned();
    let (_, sess) = create_session(
        &sim,
        &tok,
        &format!("/v1.0/drives/{did}/root:/t.bin:/createUploadSession"),
        json!({}),
    )
    .await;
    let url = sess["uploadUrl"].as_str().unwrap().to_owned();
    // All API requests fail; transfer URLs are exempt by default…
    let mut f = ferry_sim::FaultConfig {
        error_503_share: 1.0,
        retry_after_secs: 3,
        ..Default::default()
    };
    sim.admin(Method::PUT, "/_sim/settings", Some(json!({"faults": f})))
        .await;
    let (s, _) = sim.get_json(&tok, "/v1.0/sites/root").await;
    assert_eq!(s, 503);
    let (s, _) = put_fragment(&sim, &url, &[1u8; 327_680], 0, 327_690).await;
    assert_eq!(s, 202);
    // …unless asked for.
    f.transfer_urls = true;
    sim.admin(Method::PUT, "/_sim/settings", Some(json!({"faults": f})))
        .await;
    let r = sim
        .http
        .put(&url)
        .header("content-range", "bytes 327680-327689/327690")
        .body(vec![2u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "3");
    sim.admin(Method::PUT, "/_sim/settings", Some(json!({})))
        .await;
    let (s, v) = put_fragment(&sim, &url, &[2u8; 10], 327_680, 327_690).await;
    assert_eq!(s, 201, "{v}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_sessions_survive_a_restart() {
    let mut sim = TestSim::start().await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    let frag = 327_680;
    let data = bytes(frag * 3 + 77, 21);
    let total = data.len();
    let (_, sess) = create_session(
        &sim,
        &tok,
        &format!("/v1.0/drives/{did}/root:/resume.bin:/createUploadSession"),
        json!({}),
    )
    .await;
    let url = sess["uploadUrl"].as_str().unwrap().to_owned();
    assert_eq!(
        put_fragment(&sim, &url, &data[..frag], 0, total).await.0,
        202
    );
    assert_eq!(
        put_fragment(&sim, &url, &data[frag..2 * frag], frag, total)
            .await
            .0,
        202
    );
    // A cancelled session must not come back.
    let (_, gone) = create_session(
        &sim,
        &tok,
        &format!("/v1.0/drives/{did}/root:/gone.bin:/createUploadSession"),
        json!({}),
    )
    .await;
    let gone = gone["uploadUrl"].as_str().unwrap().to_owned();
    assert_eq!(sim.http.delete(&gone).send().await.unwrap().status(), 204);

    sim.restart_same_port().await;
    let v: Value = sim
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["nextExpectedRanges"][0],
        format!("{}-{}", 2 * frag, total - 1)
    );
    assert_eq!(sim.http.get(&gone).send().await.unwrap().status(), 404);
    assert_eq!(
        put_fragment(&sim, &url, &data[2 * frag..3 * frag], 2 * frag, total)
            .await
            .0,
        202
    );
    let (s, item) = put_fragment(&sim, &url, &data[3 * frag..], 3 * frag, total).await;
    assert_eq!(s, 201, "{item}");
    assert_eq!(
        item["file"]["hashes"]["quickXorHash"],
        qxh(&data),
        "hash rebuilt from the part file"
    );
    // Completed sessions do not come back either.
    sim.restart_same_port().await;
    assert_eq!(sim.http.get(&url).send().await.unwrap().status(), 404);
    let names: Vec<String> = std::fs::read_dir(sim.dir.path().join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.is_empty(), "{names:?}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_preconditions_on_writes() {
    let sim = TestSim::start().await;
    let tok = sim.token().await;
    let did = sim.root_drive(&tok).await;
    let (_, a) = sim
        .put_content(
            &tok,
            &format!("/v1.0/drives/{did}/root:/m.txt:/content"),
            b"v1".to_vec(),
        )
        .await;
    let id = a["id"].as_str().unwrap().to_owned();
    let (etag, ctag) = (
        a["eTag"].as_str().unwrap().to_owned(),
        a["cTag"].as_str().unwrap().to_owned(),
    );
    // Rename with the current eTag → ok; eTag changes, cTag (content) does not.
    let r = sim
        .http
        .patch(sim.url(&format!("/v1.0/drives/{did}/items/{id}")))
        .bearer_auth(&tok)
        .header("if-match", &etag)
        .json(&json!({"name": "m2.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_ne!(b["eTag"], etag.as_str());
    assert_eq!(b["cTag"], ctag.as_str());
    // The old eTag no longer matches.
    let r = sim
        .http
        .patch(sim.url(&format!("/v1.0/drives/{did}/items/{id}")))
        .bearer_auth(&tok)
        .header("if-match", &etag)
        .json(&json!({"name": "m3.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    assert_graph_error(&r.json().await.unwrap(), "resourceModified");
    let r = sim
        .http
        .put(sim.url(&format!("/v1.0/drives/{did}/items/{id}/content")))
        .bearer_auth(&tok)
        .header("if-match", "\"{00000000-0000-0000-0000-000000000000},1\"")
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    // The cTag works for content replacement; then DELETE with a stale tag fails.
    let r = sim
        .http
        .put(sim.url(&format!("/v1.0/drives/{did}/items/{id}/content")))
        .bearer_auth(&tok)
        .header("if-match", &ctag)
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = sim
        .http
        .delete(sim.url(&format!("/v1.0/drives/{did}/items/{id}")))
        .bearer_auth(&tok)
        .header("if-match", &ctag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let r = sim
        .http
        .delete(sim.url(&format!("/v1.0/drives/{did}/items/{id}")))
        .bearer_auth(&tok)
        .header("if-match", "*")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    sim.stop().await;
}

// ---------------------------------------------------------------- fidelity fixes

/// POST JSON to a SharePoint REST URL with a bearer token (JSON light answers).
async fn sp_post(sim: &TestSim, tok: &str, p: &str, body: Value) -> (u16, Value) {
    let r = sim
        .http
        .post(sim.url(p))
        .bearer_auth(tok)
        .header("accept", "application/json;odata.metadata=none")
        .header("odata-version", "4.0")
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// GET a SharePoint REST URL with a bearer token and an `Accept`.
async fn sp_get_bearer(sim: &TestSim, tok: &str, p: &str, accept: &str) -> (u16, Value) {
    let r = sim
        .http
        .get(sim.url(p))
        .bearer_auth(tok)
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn delegated_token(sim: &TestSim) -> String {
    let r = sim
        .http
        .post(sim.url("/common/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", "ferry"),
            ("username", "someone@example.com"),
            ("password", "password"),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_site_collections_and_subsites_are_404_not_an_ancestor() {
    let sim = TestSim::start_with(|c| {
        c.farm = Some(hr_farm());
        c.nearest_web_fallback = false;
    })
    .await;
    let tok = sim.token().await;
    for p in [
        "/sites/nope/_api/web",
        "/sites/nope/_api/site",
        "/teams/nope/_api/web",
        "/sites/hr/missing/_api/web",
        "/sites/hr/benefits/missing/_api/site",
    ] {
        let (s, v) = sp_get_bearer(&sim, &tok, p, VERBOSE).await;
        assert_eq!(s, 404, "{p}: {v}");
        assert_eq!(
            v["error"]["code"], "-2147024894, System.IO.FileNotFoundException",
            "{p}: {v}"
        );
        assert_eq!(
            v["error"]["message"]["value"], "File Not Found.",
            "{p}: {v}"
        );
        let (s, v) = sp_get_bearer(&sim, &tok, p, NOMETA).await;
        assert_eq!(s, 404, "{p}: {v}");
        assert_eq!(
            v["odata.error"]["code"], "-2147024894, System.IO.FileNotFoundException",
            "{p}: {v}"
        );
    }
    // Writes to a missing site act on nothing (no subsite lands on the root).
    let (s, _) = sp_post(
        &sim,
        &tok,
        "/sites/nope/_api/web/webs/add",
        json!({"parameters": {"Url": "child", "Title": "C"}}),
    )
    .await;
    assert_eq!(s, 404);
    let (s, v) = sp_post(
        &sim,
        &tok,
        "/sites/nope/_api/site/RegisterHubSite",
        json!({}),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (_, v) = sp_get_bearer(&sim, &tok, "/_api/web/webs", NOMETA).await;
    assert_eq!(v["value"].as_array().unwrap().len(), 0, "{v}");
    let (_, v) = sp_get_bearer(&sim, &tok, "/_api/HubSites", NOMETA).await;
    assert_eq!(v["value"].as_array().unwrap().len(), 0, "{v}");
    // Existing webs (and a path into one of their libraries) are served.
    for (p, url) in [
        ("/sites/hr/_api/web", "/sites/hr"),
        (
            "/sites/hr/benefits/dental/_api/web",
            "/sites/hr/benefits/dental",
        ),
        ("/sites/hr/Shared%20Documents/_api/web", "/sites/hr"),
        ("/_api/web", "/"),
    ] {
        let (s, v) = sp_get_bearer(&sim, &tok, p, NOMETA).await;
        assert_eq!(s, 200, "{p}: {v}");
        assert_eq!(v["ServerRelativeUrl"], url, "{p}: {v}");
    }
    // Graph: itemNotFound, by path and under `{web}/_api/v2.0`.
    let (s, v) = sim
        .get_json(&tok, "/v1.0/sites/127.0.0.1:/sites/nope")
        .await;
    assert_eq!(s, 404);
    assert_graph_error(&v, "itemNotFound");
    let (s, v) = sim
        .get_json(&tok, "/v1.0/sites/127.0.0.1:/sites/hr/missing")
        .await;
    assert_eq!(s, 404);
    assert_graph_error(&v, "itemNotFound");
    let did = sim.root_drive(&tok).await;
    let (s, v) = sim
        .get_json(&tok, &format!("/sites/nope/_api/v2.0/drives/{did}/root"))
        .await;
    assert_eq!(s, 404, "{v}");
    assert_graph_error(&v, "itemNotFound");
    let (s, _) = sim
        .get_json(&tok, &format!("/sites/hr/_api/v2.0/drives/{did}/root"))
        .await;
    assert_eq!(s, 200);
    sim.stop().await;

    // The historical nearest-ancestor answer, on request (see Config).
    let legacy = TestSim::start_with(|c| {
        c.farm = Some(hr_farm());
        c.nearest_web_fallback = true;
    })
    .await;
    let tok = legacy.token().await;
    let (s, v) = sp_get_bearer(&legacy, &tok, "/sites/nope/_api/web", NOMETA).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ServerRelativeUrl"], "/");
    // Graph never fell back.
    let (s, v) = legacy
        .get_json(&tok, "/v1.0/sites/127.0.0.1:/sites/nope")
        .await;
    assert_eq!(s, 404);
    assert_graph_error(&v, "itemNotFound");
    legacy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_string_literals_unescape_quotes_and_ignore_case() {
    let sim = TestSim::start().await;
    let tok = sim.token().await;
    for t in ["O'Neil Docs", "Docs and Forms", "Plain"] {
        let (s, v) = sp_post(
            &sim,
            &tok,
            "/_api/web/lists",
            json!({"BaseTemplate": 101, "Title": t}),
        )
        .await;
        assert_eq!(s, 201, "{t}: {v}");
    }
    let titles = |f: &'static str| {
        let sim = &sim;
        let tok = tok.clone();
        async move {
            let r = sim
                .http
                .get(sim.url("/_api/web/lists"))
                .query(&[("$filter", f), ("$select", "Title")])
                .bearer_auth(&tok)
                .header("accept", NOMETA)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{f}");
            let v: Value = r.json().await.unwrap();
            let mut t: Vec<String> = v["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["Title"].as_str().unwrap().to_owned())
                .collect();
            t.sort();
            t
        }
    };
    assert_eq!(titles("Title eq 'O''Neil Docs'").await, ["O'Neil Docs"]);
    assert_eq!(titles("Title eq 'o''neil DOCS'").await, ["O'Neil Docs"]);
    assert_eq!(
        titles("Title eq 'docs AND forms'").await,
        ["Docs and Forms"]
    );
    assert_eq!(
        titles("BaseTemplate eq 101 and Title eq 'PLAIN'").await,
        ["Plain"]
    );
    assert_eq!(
        titles("Title ne 'o''neil docs' and Title ne 'Documents'").await,
        ["Docs and Forms", "Plain"]
    );
    assert!(titles("Title eq 'O''Neil'").await.is_empty());
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_manager_acts_only_on_its_own_tenant_and_url_exists_has_no_id() {
    let sim = hr().await;
    let other = TestSim::start().await;
    let tok = sim.token().await;
    // Another host, and this address on another port (another instance = tenant).
    for url in [
        "https://other.example.com/sites/elsewhere".to_owned(),
        other.url("/sites/elsewhere"),
    ] {
        let (s, v) = sp_post(
            &sim,
            &tok,
            "/_api/SPSiteManager/create",
            json!({"request": {"Title": "E", "Url": url, "WebTemplate": "STS#3", "Owner": "someone@example.com"}}),
        )
        .await;
        assert_eq!(s, 200, "{url}: {v}");
        assert_eq!(
            v,
            json!({"SiteId": "", "SiteStatus": 3, "SiteUrl": ""}),
            "{url}"
        );
    }
    for t in [&sim, &other] {
        let (_, v) = sp_get_bearer(
            t,
            &t.token().await,
            &format!(
                "/_api/SPSiteManager/status?url='{}'",
                t.url("/sites/elsewhere")
            ),
            NOMETA,
        )
        .await;
        assert_eq!(v["SiteStatus"], 0, "nothing created: {v}");
    }
    // Status of a URL on another host: not found, even where the path exists here.
    for url in [
        "https://other.example.com/sites/hr".to_owned(),
        other.url("/sites/hr"),
    ] {
        let (s, v) = sp_get_bearer(
            &sim,
            &tok,
            &format!("/_api/SPSiteManager/status?url='{url}'"),
            NOMETA,
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(v["SiteStatus"], 0, "{url}: {v}");
        assert_eq!(v["SiteUrl"], "", "{v}");
    }
    let (_, v) = sp_get_bearer(
        &sim,
        &tok,
        &format!("/_api/SPSiteManager/status?url='{}'", sim.url("/sites/hr")),
        NOMETA,
    )
    .await;
    assert_eq!(v["SiteStatus"], 2, "{v}");
    assert_eq!(v["SiteUrl"], sim.url("/sites/hr"));
    // Status 4 ("URL exists") carries no SiteId or SiteUrl, in both shapes.
    let req =
        json!({"request": {"Title": "HR", "Url": sim.url("/sites/hr"), "WebTemplate": "STS#3"}});
    let (s, v) = sp_post(&sim, &tok, "/_api/SPSiteManager/create", req.clone()).await;
    assert_eq!(s, 200);
    assert_eq!(v, json!({"SiteId": "", "SiteStatus": 4, "SiteUrl": ""}));
    let r = sim
        .http
        .post(sim.url("/_api/SPSiteManager/create"))
        .bearer_auth(&tok)
        .header("accept", VERBOSE)
        .json(&req)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["d"]["Create"]["SiteStatus"], 4, "{v}");
    assert_eq!(v["d"]["Create"]["SiteId"], "", "{v}");
    assert_eq!(v["d"]["Create"]["SiteUrl"], "", "{v}");
    other.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_sites_stay_consistent_when_joined_left_and_unregistered() {
    let sim = TestSim::start_with(|c| {
        c.farm = Some(Farm {
            sites: vec![
                SiteSpec {
                    url: "/sites/hub".into(),
                    ..Default::default()
                },
                SiteSpec {
                    url: "/sites/member".into(),
                    ..Default::default()
                },
            ],
        })
    })
    .await;
    let tok = sim.token().await;
    let site = |p: &'static str| {
        let sim = &sim;
        let tok = tok.clone();
        async move {
            let (s, v) = sp_get_bearer(sim, &tok, &format!("{p}/_api/site"), NOMETA).await;
            assert_eq!(s, 200, "{v}");
            (
                v["IsHubSite"].as_bool().unwrap(),
                v["HubSiteId"].as_str().unwrap().to_owned(),
            )
        }
    };
    let nil = "00000000-0000-0000-0000-000000000000";
    let (s, h) = sp_post(
        &sim,
        &tok,
        "/sites/hub/_api/site/RegisterHubSite",
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{h}");
    let hub_id = h["ID"].as_str().unwrap().to_owned();
    assert_eq!(site("/sites/hub").await, (true, hub_id.clone()));
    // Leaving (all-zero id) or joining another hub is refused on a hub site itself.
    for target in [nil.to_owned(), hub_id.clone()] {
        let (s, v) = sp_post(
            &sim,
            &tok,
            &format!("/sites/hub/_api/site/JoinHubSite('{target}')"),
            json!({}),
        )
        .await;
        if target == nil {
            assert_eq!(s, 400, "{v}");
            assert_eq!(
                v["odata.error"]["message"]["value"], "This site is already a HubSite.",
                "{v}"
            );
        } else {
            // Joining its own hub changes nothing.
            assert_eq!(s, 204, "{v}");
        }
        assert_eq!(site("/sites/hub").await, (true, hub_id.clone()));
    }
    let (s, _) = sp_post(
        &sim,
        &tok,
        &format!("/sites/member/_api/site/JoinHubSite('{hub_id}')"),
        json!({}),
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(site("/sites/member").await, (false, hub_id.clone()));
    // Unregistering leaves no site pointing at the hub that is gone.
    let (s, _) = sp_post(
        &sim,
        &tok,
        "/sites/hub/_api/site/UnRegisterHubSite",
        json!({}),
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(site("/sites/hub").await, (false, nil.to_owned()));
    assert_eq!(site("/sites/member").await, (false, nil.to_owned()));
    // A site that is no longer a hub can leave/join again.
    let (s, _) = sp_post(
        &sim,
        &tok,
        &format!("/sites/hub/_api/site/JoinHubSite('{nil}')"),
        json!({}),
    )
    .await;
    assert_eq!(s, 204);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_only_site_creation_needs_an_owner_when_configured() {
    let strict = TestSim::start_with(|c| c.require_owner_for_app_only = true).await;
    let app = strict.token().await;
    let user = delegated_token(&strict).await;
    let create = |sim: &'static str, tok: String, owner: Option<&'static str>| {
        let s = &strict;
        async move {
            let mut r = json!({"Title": sim, "Url": s.url(&format!("/sites/{sim}")), "WebTemplate": "STS#3"});
            if let Some(o) = owner {
                r["Owner"] = json!(o);
            }
            sp_post(s, &tok, "/_api/SPSiteManager/create", json!({"request": r})).await
        }
    };
    for owner in [None, Some(""), Some("  ")] {
        let (s, v) = create("noowner", app.clone(), owner).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v, json!({"SiteId": "", "SiteStatus": 3, "SiteUrl": ""}));
    }
    let (_, v) = sp_get_bearer(
        &strict,
        &app,
        &format!(
            "/_api/SPSiteManager/status?url='{}'",
            strict.url("/sites/noowner")
        ),
        NOMETA,
    )
    .await;
    assert_eq!(v["SiteStatus"], 0, "nothing created: {v}");
    let (_, v) = create("withowner", app.clone(), Some("someone@example.com")).await;
    assert_eq!(v["SiteStatus"], 2, "{v}");
    // Delegated callers default to themselves as owner.
    let (_, v) = create("delegated", user, None).await;
    assert_eq!(v["SiteStatus"], 2, "{v}");
    strict.stop().await;

    // Off on request (these tests' default config turns it off).
    let lenient = TestSim::start().await;
    let tok = lenient.token().await;
    let (_, v) = sp_post(
        &lenient,
        &tok,
        "/_api/SPSiteManager/create",
        json!({"request": {"Title": "A", "Url": lenient.url("/sites/a"), "WebTemplate": "STS#3"}}),
    )
    .await;
    assert_eq!(v["SiteStatus"], 2, "{v}");
    lenient.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_urls_refuse_an_authorization_header() {
    let sim = TestSim::start().await;
    let tok = sim.token().await;
    let (s, v) = create_session(
        &sim,
        &tok,
        "/v1.0/sites/root/drive/root:/leak.bin:/createUploadSession",
        json!({"item": {"name": "leak.bin"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let url = v["uploadUrl"].as_str().unwrap().to_owned();
    let data = bytes(1000, 7);
    for auth in [format!("Bearer {tok}"), "Bearer nonsense".to_owned()] {
        let r = sim
            .http
            .put(&url)
            .header("authorization", &auth)
            .header("content-range", "bytes 0-999/1000")
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "InvalidAuthenticationToken", "{v}");
        let r = sim
            .http
            .get(&url)
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Nothing was written: the session still expects byte 0; without the header it works.
    let r = sim.http.get(&url).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["nextExpectedRanges"], json!(["0-"]), "{v}");
    let (s, v) = put_fragment(&sim, &url, &data, 0, 1000).await;
    assert!(s == 200 || s == 201, "{s} {v}");
    assert_eq!(v["size"], 1000);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_items_carry_no_parent_path() {
    let sim = hr().await;
    let tok = sim.token().await;
    let (_, site) = sim.get_json(&tok, "/v1.0/sites/127.0.0.1:/sites/hr").await;
    let (_, drive) = sim
        .get_json(
            &tok,
            &format!("/v1.0/sites/{}/drive", site["id"].as_str().unwrap()),
        )
        .await;
    let did = drive["id"].as_str().unwrap().to_owned();
    let mut link = format!("/v1.0/drives/{did}/root/delta?$top=2");
    let mut seen = 0;
    loop {
        let (s, v) = sim.get_json(&tok, &link).await;
        assert_eq!(s, 200, "{v}");
        for it in v["value"].as_array().unwrap() {
            seen += 1;
            let pref = &it["parentReference"];
            assert!(pref.get("path").is_none(), "{it}");
            assert!(pref["driveId"].is_string(), "{it}");
            if it.get("root").is_none() {
                assert!(pref["id"].is_string(), "{it}");
                // Elsewhere the path is there.
                let (s, full) = sim
                    .get_json(
                        &tok,
                        &format!("/v1.0/drives/{did}/items/{}", it["id"].as_str().unwrap()),
                    )
                    .await;
                assert_eq!(s, 200);
                assert!(
                    full["parentReference"]["path"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("/drives/{did}/root:")),
                    "{full}"
                );
            }
        }
        match v["@odata.nextLink"].as_str() {
            Some(n) => link = n.strip_prefix(&sim.base).unwrap().to_owned(),
            None => break,
        }
    }
    assert!(seen >= 4, "{seen}");
    // `$select=parentReference` does not bring it back either.
    let (_, v) = sim
        .get_json(
            &tok,
            &format!("/v1.0/drives/{did}/root/delta?$select=id,parentReference"),
        )
        .await;
    for it in v["value"].as_array().unwrap() {
        assert!(it["parentReference"].get("path").is_none(), "{it}");
    }
    sim.stop().await;
}
