//! The `/_sim/...` admin surface for tests and rehearsals (no authentication: bind it
//! to a trusted interface).
//!
//! - `GET  /_sim/health` → `{"status":"ok"}`
//! - `GET  /_sim/state` → every site, web, library, item and hub as JSON
//! - `POST /_sim/reset` → wipe all state and content, re-create the root site and seed
//! - `GET|PUT /_sim/settings` → throttle/fault/provisioning settings
//! - `GET  /_sim/counters` → requests, throttled, faults, uploaded/downloaded bytes
//! - `POST /_sim/devicecode/approve` `{"user_code","upn"}` → approve a device login
//! - `POST /_sim/import` `{"dir","library_url"}` → import a local folder
//! - `POST /_sim/flush` → wait until metadata is durable

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};

use crate::config::Settings;
use crate::error::{SimError, SimResult};
use crate::http::{json_resp, read_json, Ctx, Sim};

/// Handle `/_sim/...`.
pub async fn handle(sim: &Arc<Sim>, ctx: &Ctx, path: &str, body: Body) -> SimResult<Response> {
    // `health` stays open: it is the readiness probe and reveals nothing.
    let is_health = path
        .trim_end_matches('/')
        .eq_ignore_ascii_case("/_sim/health");
    if let Some(want) = sim.cfg.admin_token.as_ref().filter(|_| !is_health) {
        let given = ctx
            .header("authorization")
            .and_then(|a| crate::http::strip_prefix_ci(a, "bearer "))
            .unwrap_or("");
        if given.len() != want.len() || !given.bytes().zip(want.bytes()).all(|(a, b)| a == b) {
            crate::http::drain(body).await;
            return Err(SimError::Unauthenticated(
                "The admin surface requires the admin token.".into(),
            ));
        }
    }
    let p = path.trim_end_matches('/').to_ascii_lowercase();
    match (ctx.method.clone(), p.as_str()) {
        (Method::GET, "/_sim/health") => Ok(json_resp(
            200,
            &json!({"status": "ok", "baseUrl": sim.base_url, "hostname": sim.hostname}),
        )),
        (Method::GET, "/_sim/state") => Ok(json_resp(200, &state(sim))),
        (Method::GET, "/_sim/counters") => {
            let c = &sim.counters;
            Ok(json_resp(
                200,
                &json!({
                    "requests": c.requests.load(Ordering::Relaxed),
                    "throttled": c.throttled.load(Ordering::Relaxed),
                    "faults": c.faults.load(Ordering::Relaxed),
                    "uploadedBytes": c.uploaded_bytes.load(Ordering::Relaxed),
                    "downloadedBytes": c.downloaded_bytes.load(Ordering::Relaxed),
                    "filesWritten": c.files_written.load(Ordering::Relaxed),
                }),
            ))
        }
        (Method::GET, "/_sim/settings") => {
            let s = sim
                .settings
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            Ok(json_resp(200, &serde_json::to_value(s).unwrap_or_default()))
        }
        (Method::PUT, "/_sim/settings") => {
            let v = read_json(sim, body).await?;
            let s: Settings = serde_json::from_value(v)
                .map_err(|e| SimError::InvalidRequest(format!("Invalid settings: {e}")))?;
            *sim.settings.write().unwrap_or_else(|e| e.into_inner()) = s.clone();
            sim.windows
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            tracing::info!(message = "Settings changed.", throttle = ?s.throttle.ru_per_minute, error_503_share = s.faults.error_503_share);
            Ok(json_resp(200, &serde_json::to_value(s).unwrap_or_default()))
        }
        (Method::POST, "/_sim/reset") => {
            let sim2 = sim.clone();
            tokio::task::spawn_blocking(move || -> SimResult<()> {
                sim2.store.clear();
                crate::seed::init_root(&sim2)?;
                if let Some(f) = &sim2.cfg.farm {
                    crate::seed::apply_farm(&sim2, f)?;
                }
                sim2.store.flush();
                Ok(())
            })
            .await
            .map_err(|e| SimError::Store(e.to_string()))??;
            sim.uploads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            tracing::info!(message = "State reset.");
            Ok(json_resp(200, &json!({"status": "reset"})))
        }
        (Method::POST, "/_sim/flush") => {
            let sim2 = sim.clone();
            tokio::task::spawn_blocking(move || sim2.store.flush())
                .await
                .map_err(|e| SimError::Store(e.to_string()))?;
            Ok(json_resp(200, &json!({"status": "flushed"})))
        }
        (Method::POST, "/_sim/devicecode/approve") => {
            let v = read_json(sim, body).await?;
            let code = v.get("user_code").and_then(Value::as_str).unwrap_or("");
            let upn = v.get("upn").and_then(Value::as_str).unwrap_or("");
            if crate::identity::approve(sim, code, upn) {
                Ok(json_resp(200, &json!({"approved": true})))
            } else {
                Err(SimError::NotFound(
                    "No pending device code with that user code, or unknown user.".into(),
                ))
            }
        }
        (Method::POST, "/_sim/import") => {
            let v = read_json(sim, body).await?;
            let dir = v
                .get("dir")
                .and_then(Value::as_str)
                .ok_or_else(|| SimError::InvalidRequest("dir is required".into()))?
                .to_owned();
            let url = v
                .get("library_url")
                .and_then(Value::as_str)
                .ok_or_else(|| SimError::InvalidRequest("library_url is required".into()))?
                .to_owned();
            let sim2 = sim.clone();
            let n = tokio::task::spawn_blocking(move || {
                crate::seed::import_into(&sim2, std::path::Path::new(&dir), &url)
            })
            .await
            .map_err(|e| SimError::Store(e.to_string()))??;
            Ok(json_resp(200, &json!({"imported": n})))
        }
        (Method::GET, "/_sim/devicelogin") => Ok(json_resp(
            200,
            &json!({"message": "This emulator has no sign-in page: approve the code with POST /_sim/devicecode/approve {\"user_code\",\"upn\"}."}),
        )),
        _ => Err(SimError::NotFound(format!(
            "No admin endpoint at '{path}'."
        ))),
    }
}

fn state(sim: &Sim) -> Value {
    let st = sim.store.read();
    let mut sites: Vec<Value> = st
        .sites
        .values()
        .map(|s| json!({"id": s.id, "url": s.url, "rootWebId": s.root_web, "hubSiteId": s.hub_site_id, "provisioning": s.ready_at.is_some_and(|t| t > chrono::Utc::now())}))
        .collect();
    sites.sort_by(|a, b| a["url"].as_str().cmp(&b["url"].as_str()));
    let mut webs: Vec<Value> = st
        .webs
        .values()
        .map(|w| json!({"id": w.id, "siteId": w.site_id, "parentId": w.parent, "url": w.url, "title": w.title, "graphId": crate::graph::site_id(sim, &st, w.id)}))
        .collect();
    webs.sort_by(|a, b| a["url"].as_str().cmp(&b["url"].as_str()));
    let mut libs: Vec<Value> = st
        .libs
        .values()
        .map(|l| json!({"id": l.id, "webId": l.web_id, "title": l.title, "url": st.lib_url(l.id), "driveId": crate::store::drive_id(&st, l.id), "rootId": crate::store::graph_item_id(l.root)}))
        .collect();
    libs.sort_by(|a, b| a["url"].as_str().cmp(&b["url"].as_str()));
    let mut items: Vec<Value> = st
        .items
        .values()
        .filter(|i| !i.deleted && i.parent.is_some())
        .map(|i| {
            json!({"uniqueId": i.unique_id, "listId": i.list_id, "itemId": i.item_id, "url": st.item_url(i.unique_id),
                "folder": i.folder, "size": i.size, "quickXorHash": i.qxh, "created": i.created, "modified": i.modified})
        })
        .collect();
    items.sort_by(|a, b| a["url"].as_str().cmp(&b["url"].as_str()));
    let hubs: Vec<Value> = st
        .hubs
        .values()
        .map(|h| json!({"id": h.id, "siteId": h.site_id, "siteUrl": h.site_url, "title": h.title}))
        .collect();
    json!({"sites": sites, "webs": webs, "libraries": libs, "items": items, "hubs": hubs})
}
