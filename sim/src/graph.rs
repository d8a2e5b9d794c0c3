//! Microsoft Graph drive API (`/v1.0/...` and SharePoint's `/_api/v2.0/...`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Method;
use axum::response::Response;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::error::{SimError, SimResult};
use crate::http::{empty, encode_path, encode_q, json_resp, random_token, read_json, Ctx, Sim};
use crate::ops::{self, Conflict, FsTimes};
use crate::store::{drive_id, graph_item_id, lib_of_drive, parse_item_id, split_path, State};

/// Graph timestamp format.
pub fn gtime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn b64url(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}
fn unb64url(s: &str) -> Option<String> {
    String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?,
    )
    .ok()
}

/// Graph site id of a web.
pub fn site_id(sim: &Sim, st: &State, web: Uuid) -> String {
    format!("{},{},{}", sim.hostname, st.webs[&web].site_id, web)
}

/// Absolute URL for a server-relative URL.
pub fn abs_url(sim: &Sim, server_rel: &str) -> String {
    format!("{}{}", sim.base_url, encode_path(server_rel))
}

fn user_ref(name: &str) -> Value {
    json!({"user": {"displayName": name}})
}

/// A driveItem.
pub fn item_json(sim: &Sim, st: &State, id: Uuid, _api_base: &str) -> Value {
    let it = &st.items[&id];
    let lib = &st.libs[&it.list_id];
    let web = &st.webs[&lib.web_id];
    let did = drive_id(st, lib.id);
    let gid = graph_item_id(id);
    if it.deleted {
        return json!({
            "id": gid, "name": it.name, "deleted": {"state": "deleted"},
            "parentReference": {"driveId": did, "driveType": "documentLibrary",
                "id": it.parent.map(graph_item_id)},
            "lastModifiedDateTime": gtime(it.modified),
        });
    }
    let mut v = json!({
        "createdDateTime": gtime(it.created),
        "eTag": format!("\"{{{}}},{}\"", id.to_string().to_uppercase(), it.etag_rev()),
        "id": gid,
        "lastModifiedDateTime": gtime(it.modified),
        "name": if it.parent.is_none() { "root".to_owned() } else { it.name.clone() },
        "webUrl": abs_url(sim, &st.item_url(id)),
        "cTag": format!("\"c:{{{}}},{}\"", id.to_string().to_uppercase(), it.version),
        "size": if it.folder { folder_size(st, id) } else { it.size },
        "createdBy": user_ref(&it.author),
        "lastModifiedBy": user_ref(&it.author),
        "fileSystemInfo": {"createdDateTime": gtime(it.created), "lastModifiedDateTime": gtime(it.modified)},
    });
    let m = v.as_object_mut().expect("object");
    let mut pref =
        json!({"driveType": "documentLibrary", "driveId": did, "siteId": site_id(sim, st, web.id)});
    if let Some(p) = it.parent {
        let pp = st.rel_path(p);
        pref["id"] = json!(graph_item_id(p));
        pref["name"] = json!(if st.items[&p].parent.is_none() {
            lib.title.clone()
        } else {
            st.items[&p].name.clone()
        });
        pref["path"] = json!(if pp.is_empty() {
            format!("/drives/{did}/root:")
        } else {
            format!("/drives/{did}/root:/{}", encode_path(&pp))
        });
    } else {
        m.insert("root".into(), json!({}));
    }
    m.insert("parentReference".into(), pref);
    if it.folder {
        m.insert("folder".into(), json!({"childCount": st.child_count(id)}));
    } else {
        m.insert(
            "file".into(),
            json!({"mimeType": mime_of(&it.name), "hashes": {"quickXorHash": it.qxh}}),
        );
    }
    let site = &st.sites[&web.site_id];
    m.insert(
        "sharepointIds".into(),
        json!({
            "listId": lib.id, "listItemId": it.item_id.to_string(), "listItemUniqueId": id,
            "siteId": site.id, "siteUrl": abs_url(sim, &web.url), "tenantId": sim.cfg.tenant_id, "webId": web.id,
        }),
    );
    v
}

fn folder_size(st: &State, id: Uuid) -> u64 {
    // Folders carry the aggregate size of their subtree (maintained on every write).
    st.items.get(&id).map_or(0, |i| i.size)
}

/// Rough MIME type by extension.
pub fn mime_of(name: &str) -> &'static str {
    match name
        .rsplit('.')
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("txt") => "text/plain",
        Some("pdf") => "application/pdf",
        Some("docx") => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Some("xlsx") => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        Some("pptx") => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("json") => "application/json",
        Some("csv") => "text/csv",
        Some("html" | "htm") => "text/html",
        _ => "application/octet-stream",
    }
}

/// A site resource.
pub fn site_json(sim: &Sim, st: &State, web: Uuid) -> Value {
    let w = &st.webs[&web];
    let site = &st.sites[&w.site_id];
    let mut v = json!({
        "createdDateTime": gtime(w.created),
        "description": w.description,
        "id": site_id(sim, st, web),
        "lastModifiedDateTime": gtime(w.created),
        "name": if w.url == "/" { String::new() } else { w.url.rsplit('/').next().unwrap_or("").to_owned() },
        "webUrl": abs_url(sim, &w.url),
        "displayName": w.title,
        "siteCollection": {"hostname": sim.hostname},
        "sharepointIds": {"siteId": site.id, "siteUrl": abs_url(sim, &w.url), "tenantId": sim.cfg.tenant_id, "webId": web},
    });
    if w.url == "/" {
        v["root"] = json!({});
    }
    v
}

/// A list resource (document libraries only).
pub fn list_json(sim: &Sim, st: &State, lib: Uuid) -> Value {
    let l = &st.libs[&lib];
    let w = &st.webs[&l.web_id];
    json!({
        "createdDateTime": gtime(l.created),
        "description": l.description,
        "id": l.id,
        "lastModifiedDateTime": gtime(st.items[&l.root].modified),
        "name": l.url_name,
        "displayName": l.title,
        "webUrl": abs_url(sim, &st.lib_url(lib)),
        "list": {"contentTypesEnabled": false, "hidden": false, "template": "documentLibrary"},
        "parentReference": {"siteId": site_id(sim, st, w.id)},
    })
}

/// A drive resource.
pub fn drive_json(sim: &Sim, st: &State, lib: Uuid) -> Value {
    let l = &st.libs[&lib];
    let w = &st.webs[&l.web_id];
    let used = folder_size(st, l.root);
    json!({
        "createdDateTime": gtime(l.created),
        "description": l.description,
        "id": drive_id(st, lib),
        "lastModifiedDateTime": gtime(st.items[&l.root].modified),
        "name": l.title,
        "webUrl": abs_url(sim, &st.lib_url(lib)),
        "driveType": "documentLibrary",
        "createdBy": user_ref("System Account"),
        "owner": {"group": {"displayName": format!("{} Owners", w.title)}},
        "quota": {"deleted": 0, "remaining": 27_487_790_694_400u64.saturating_sub(used), "state": "normal", "total": 27_487_790_694_400u64, "used": used},
        "sharePointIds": {"listId": l.id, "siteId": w.site_id, "siteUrl": abs_url(sim, &w.url), "tenantId": sim.cfg.tenant_id, "webId": w.id},
    })
}

fn select(v: Value, sel: Option<&str>) -> Value {
    let Some(sel) = sel.filter(|s| !s.trim().is_empty()) else {
        return v;
    };
    let keys: Vec<&str> = sel.split(',').map(str::trim).collect();
    match v {
        Value::Object(m) => {
            let mut o = Map::new();
            for (k, val) in m {
                if k.starts_with("@odata") || keys.iter().any(|s| s.eq_ignore_ascii_case(&k)) {
                    o.insert(k, val);
                }
            }
            Value::Object(o)
        }
        o => o,
    }
}

fn not_found() -> SimError {
    SimError::NotFound("The resource could not be found.".into())
}

fn live(st: &State, id: Uuid) -> SimResult<()> {
    match st.items.get(&id) {
        Some(i) if !i.deleted => Ok(()),
        _ => Err(SimError::NotFound("Item not found".into())),
    }
}

fn site_ready(st: &State, web: Uuid) -> bool {
    st.webs
        .get(&web)
        .and_then(|w| st.sites.get(&w.site_id))
        .is_some_and(|s| s.ready_at.is_none_or(|t| t <= Utc::now()))
}

/// Handle one Graph request. `rest` starts with `/`.
pub fn handle<'a>(
    sim: &'a Arc<Sim>,
    ctx: &'a Ctx,
    prefix: &'a str,
    rest: &'a str,
    body: Body,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = SimResult<Response>> + Send + 'a>> {
    Box::pin(async move {
        // `/v1.0` requests have an empty prefix; `/_api/v2.0` ones carry `v2:{web}`.
        let api_base = match prefix.strip_prefix("v2:") {
            Some(p) => format!("{}{}/_api/v2.0", sim.base_url, encode_path(p)),
            None => format!("{}/v1.0", sim.base_url),
        };
        if let Some(p) = prefix.strip_prefix("v2:").filter(|p| !p.is_empty()) {
            // `{web}/_api/v2.0/...` of a web that does not exist is 404, not its ancestor's.
            let st = sim.store.read();
            crate::sprest::web_at(sim, &st, p)
                .map_err(|_| SimError::NotFound("Requested site could not be found".into()))?;
        }
        let lower = rest.to_ascii_lowercase();
        if lower == "/$batch" {
            return batch(sim, ctx, prefix, body).await;
        }
        if let Some(r) = strip_ci(rest, "/sites") {
            return sites(sim, ctx, r, &api_base, body).await;
        }
        if let Some(r) = strip_ci(rest, "/drives/") {
            let (did, tail) = r.split_once('/').map_or((r, ""), |(a, b)| (a, b));
            let lib = {
                let st = sim.store.read();
                let lib = lib_of_drive(&st, did)
                    .ok_or_else(|| SimError::NotFound("The drive could not be found.".into()))?;
                if !site_ready(&st, st.libs[&lib].web_id) {
                    return Err(SimError::NotFound("The drive could not be found.".into()));
                }
                lib
            };
            return drive(sim, ctx, lib, tail, &api_base, body).await;
        }
        Err(SimError::InvalidRequest(format!(
            "Unsupported segment in '{rest}'."
        )))
    })
}

fn strip_ci<'a>(s: &'a str, p: &str) -> Option<&'a str> {
    crate::http::strip_prefix_ci(s, p)
}

async fn sites(
    sim: &Arc<Sim>,
    ctx: &Ctx,
    r: &str,
    api_base: &str,
    body: Body,
) -> SimResult<Response> {
    // r: "", "/root", "/{host}", "/{host}:/{path}[:][/tail]", "/{id}[/tail]"
    let r = r.strip_prefix('/').unwrap_or(r);
    let host_header = ctx
        .header("host")
        .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
    let host_ok = |h: &str| {
        h.eq_ignore_ascii_case(&sim.hostname)
            || host_header.as_deref() == Some(&h.to_ascii_lowercase())
    };
    let (web, tail): (Uuid, String) = {
        let st = sim.store.read();
        let root_web = st.web_by_url.get("/").copied().ok_or_else(not_found)?;
        if r.is_empty() {
            return Err(SimError::InvalidRequest(
                "Listing all sites requires search; not supported.".into(),
            ));
        }
        if let Some(t) = strip_ci(r, "root") {
            (root_web, t.to_owned())
        } else if let Some((host, after)) = r
            .split_once(":/")
            .or_else(|| r.strip_suffix(':').map(|h| (h, "")))
            .filter(|(h, _)| !h.contains(['/', ',']))
        {
            if !host_ok(host) {
                return Err(SimError::NotFound(
                    "Requested site could not be found".into(),
                ));
            }
            let (path, tail) = match after.split_once(':') {
                Some((p, t)) => (p.to_owned(), t.to_owned()),
                None => (after.to_owned(), String::new()),
            };
            let segs = split_path(&path)?;
            let url = format!("/{}", segs.join("/")).to_lowercase();
            let w =
                st.web_by_url.get(&url).copied().ok_or_else(|| {
                    SimError::NotFound("Requested site could not be found".into())
                })?;
            (w, tail)
        } else {
            let (id, tail) = r
                .split_once('/')
                .map_or((r, String::new()), |(a, b)| (a, format!("/{b}")));
            let parts: Vec<&str> = id.split(',').collect();
            let w = match parts.as_slice() {
                [h] if host_ok(h) => root_web,
                [h, s] if host_ok(h) => Uuid::try_parse(s)
                    .ok()
                    .and_then(|s| st.sites.get(&s))
                    .map(|s| s.root_web)
                    .ok_or_else(not_found)?,
                [h, _, w] if host_ok(h) => Uuid::try_parse(w)
                    .ok()
                    .filter(|w| st.webs.contains_key(w))
                    .ok_or_else(not_found)?,
                _ => {
                    return Err(SimError::NotFound(
                        "Requested site could not be found".into(),
                    ))
                }
            };
            (w, tail)
        }
    };
    {
        let st = sim.store.read();
        if !site_ready(&st, web) {
            return Err(SimError::NotFound(
                "Requested site could not be found".into(),
            ));
        }
    }
    let tail_l = tail.to_ascii_lowercase();
    if let Some(r) = tail
        .get("/drives/".len()..)
        .filter(|_| tail_l.starts_with("/drives/"))
    {
        let (did, t) = r.split_once('/').unwrap_or((r, ""));
        let lib = {
            let st = sim.store.read();
            lib_of_drive(&st, did)
                .filter(|l| st.libs[l].web_id == web)
                .ok_or_else(|| SimError::NotFound("The drive could not be found.".into()))?
        };
        return drive(sim, ctx, lib, t, api_base, body).await;
    }
    if tail_l == "/drive" || tail_l.starts_with("/drive/") {
        let lib = default_lib(&sim.store.read(), web)?;
        let t = tail
            .get("/drive".len()..)
            .unwrap_or("")
            .trim_start_matches('/')
            .to_owned();
        return drive(sim, ctx, lib, &t, api_base, body).await;
    }
    let st = sim.store.read();
    match (ctx.method.clone(), tail_l.as_str()) {
        (Method::GET, "") => Ok(json_resp(
            200,
            &select(site_json(sim, &st, web), ctx.q("$select")),
        )),
        (Method::GET, "/drives") => {
            let mut libs: Vec<_> = st
                .libs
                .values()
                .filter(|l| l.web_id == web && l.base_template == 101)
                .collect();
            libs.sort_by_key(|l| l.created);
            let v: Vec<Value> = libs
                .iter()
                .map(|l| select(drive_json(sim, &st, l.id), ctx.q("$select")))
                .collect();
            Ok(json_resp(
                200,
                &json!({"@odata.context": format!("{api_base}/$metadata#drives"), "value": v}),
            ))
        }
        (Method::GET, "/lists") => {
            let mut libs: Vec<_> = st.libs.values().filter(|l| l.web_id == web).collect();
            libs.sort_by_key(|l| l.created);
            let v: Vec<Value> = libs
                .iter()
                .map(|l| select(list_json(sim, &st, l.id), ctx.q("$select")))
                .collect();
            Ok(json_resp(200, &json!({"value": v})))
        }
        (Method::GET, t) if t.starts_with("/lists/") => {
            let rest = &tail["/lists/".len()..];
            let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
            let lib = Uuid::try_parse(id.trim_matches(['{', '}']))
                .ok()
                .filter(|l| st.libs.get(l).is_some_and(|x| x.web_id == web))
                .or_else(|| {
                    st.libs
                        .values()
                        .find(|l| l.web_id == web && l.title.eq_ignore_ascii_case(id))
                        .map(|l| l.id)
                })
                .ok_or_else(|| SimError::NotFound("The list could not be found.".into()))?;
            match sub.to_ascii_lowercase().as_str() {
                "" => Ok(json_resp(
                    200,
                    &select(list_json(sim, &st, lib), ctx.q("$select")),
                )),
                "drive" => Ok(json_resp(
                    200,
                    &select(drive_json(sim, &st, lib), ctx.q("$select")),
                )),
                _ => Err(SimError::InvalidRequest(format!(
                    "Unsupported list segment '{sub}'."
                ))),
            }
        }
        (Method::GET, "/sites") => {
            let mut ws: Vec<_> = st.webs.values().filter(|w| w.parent == Some(web)).collect();
            ws.sort_by(|a, b| a.url.cmp(&b.url));
            let v: Vec<Value> = ws.iter().map(|w| site_json(sim, &st, w.id)).collect();
            Ok(json_resp(200, &json!({"value": v})))
        }
        _ => Err(SimError::InvalidRequest(format!(
            "Unsupported site segment '{tail}'."
        ))),
    }
}

fn default_lib(st: &State, web: Uuid) -> SimResult<Uuid> {
    let mut libs: Vec<_> = st
        .libs
        .values()
        .filter(|l| l.web_id == web && l.base_template == 101)
        .collect();
    libs.sort_by_key(|l| {
        (
            !l.url_name.eq_ignore_ascii_case("Shared Documents"),
            l.created,
        )
    });
    libs.first()
        .map(|l| l.id)
        .ok_or_else(|| SimError::NotFound("The site has no document library.".into()))
}

/// Where an item-addressing expression points.
enum Addr {
    Existing(Uuid),
    /// Path below `base` that does not (fully) exist.
    Missing {
        base: Uuid,
        segs: Vec<String>,
    },
}

/// Parse `root[:/path:][/action]` or `items/{id}[:/path:][/action]`.
fn parse_addr(st: &State, lib: Uuid, tail: &str) -> SimResult<(Addr, String)> {
    let root = st.libs[&lib].root;
    let (base, after) = if let Some(a) = strip_ci(tail, "root") {
        (root, a)
    } else if let Some(a) = strip_ci(tail, "items/") {
        let end = a.find([':', '/']).unwrap_or(a.len());
        let id_s = &a[..end];
        let id = if id_s.eq_ignore_ascii_case("root") {
            Some(root)
        } else {
            parse_item_id(id_s)
        };
        let id = id
            .filter(|i| {
                st.items
                    .get(i)
                    .is_some_and(|x| x.list_id == lib && !x.deleted)
            })
            .ok_or_else(|| SimError::NotFound("Item not found".into()))?;
        (id, &a[end..])
    } else {
        return Err(SimError::InvalidRequest(format!(
            "Unsupported drive segment '{tail}'."
        )));
    };
    if let Some(p) = after.strip_prefix(':') {
        let (path, action) = match p.find(':') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, ""),
        };
        let segs = split_path(path)?;
        return Ok((
            match st.walk(base, &segs) {
                Some(id) => Addr::Existing(id),
                None => Addr::Missing { base, segs },
            },
            action.trim_start_matches('/').to_owned(),
        ));
    }
    Ok((
        Addr::Existing(base),
        after.trim_start_matches('/').to_owned(),
    ))
}

fn author(ctx: &Ctx, sim: &Sim) -> String {
    match ctx.principal.as_ref().and_then(|p| p.user.clone()) {
        Some(u) => sim.display_name(&u),
        None => "SharePoint App".to_owned(),
    }
}

fn times_from(v: &Value) -> SimResult<FsTimes> {
    let f = |k: &str| -> SimResult<Option<DateTime<Utc>>> {
        match v.get(k).and_then(Value::as_str) {
            None => Ok(None),
            Some(s) => DateTime::parse_from_rfc3339(s)
                .map(|d| Some(d.with_timezone(&Utc)))
                .map_err(|_| SimError::InvalidRequest(format!("Invalid timestamp '{s}'."))),
        }
    };
    Ok(FsTimes {
        created: f("createdDateTime")?,
        modified: f("lastModifiedDateTime")?,
    })
}

async fn drive(
    sim: &Arc<Sim>,
    ctx: &Ctx,
    lib: Uuid,
    tail: &str,
    api_base: &str,
    body: Body,
) -> SimResult<Response> {
    if tail.is_empty() {
        if ctx.method != Method::GET {
            return Err(SimError::MethodNotAllowed);
        }
        let st = sim.store.read();
        return Ok(json_resp(
            200,
            &select(drive_json(sim, &st, lib), ctx.q("$select")),
        ));
    }
    let (addr, action) = {
        let st = sim.store.read();
        parse_addr(&st, lib, tail)?
    };
    let action_l = action.to_ascii_lowercase();
    // `If-Match` (eTag or cTag) on writes: 412 `resourceModified` when the item changed.
    if let Some(want) = ctx.header("if-match").filter(|_| ctx.method != Method::GET) {
        let ok = match &addr {
            Addr::Existing(id) => {
                let st = sim.store.read();
                let it = &st.items[id];
                let u = id.to_string().to_uppercase();
                let tags = [
                    format!("{{{u}}},{}", it.etag_rev()),
                    format!("c:{{{u}}},{}", it.version),
                ];
                // Entity tags are quoted and contain commas: take the quoted strings
                // (or the whole value when unquoted).
                let quoted: Vec<&str> = want.split('"').skip(1).step_by(2).collect();
                let cands = if quoted.is_empty() {
                    vec![want.trim()]
                } else {
                    quoted
                };
                want.trim() == "*"
                    || cands
                        .iter()
                        .any(|w| tags.iter().any(|t| t.eq_ignore_ascii_case(w)))
            }
            Addr::Missing { .. } => false,
        };
        if !ok {
            crate::http::drain(body).await;
            return Err(SimError::PreconditionFailed(
                "ETag does not match the current item's value.".into(),
            ));
        }
    }
    let conflict_q = ctx
        .q("@microsoft.graph.conflictBehavior")
        .map(str::to_owned);
    let did = drive_id(&sim.store.read(), lib);
    match (ctx.method.clone(), action_l.as_str()) {
        (Method::GET, "") => {
            let Addr::Existing(id) = addr else {
                return Err(SimError::NotFound("Item not found".into()));
            };
            let st = sim.store.read();
            let mut v = item_json(sim, &st, id, api_base);
            if !st.items[&id].folder {
                let tok = download_token(sim, id);
                v["@microsoft.graph.downloadUrl"] = json!(download_url(sim, id, &tok));
            }
            Ok(json_resp(200, &select(v, ctx.q("$select"))))
        }
        (Method::GET, "children") => {
            let Addr::Existing(id) = addr else {
                return Err(SimError::NotFound("Item not found".into()));
            };
            children(sim, ctx, id, api_base, &did, tail)
        }
        (Method::GET, a) if a == "delta" || (a.starts_with("delta(") && a.ends_with(')')) => {
            let Addr::Existing(_) = addr else {
                return Err(SimError::NotFound("Item not found".into()));
            };
            // `delta`, `delta()` and `delta(token='...')` are all Graph spellings.
            let inner = action.get(6..action.len().saturating_sub(1)).unwrap_or("");
            let token = inner
                .split_once('=')
                .map(|(_, v)| v.trim().trim_matches('\'').to_owned())
                .filter(|v| !v.is_empty());
            delta(sim, ctx, lib, api_base, &did, token)
        }
        (Method::GET, "content") => {
            let Addr::Existing(id) = addr else {
                return Err(SimError::NotFound("Item not found".into()));
            };
            let it = sim.store.read().items[&id].clone();
            if it.folder {
                return Err(SimError::InvalidRequest("Folders have no content.".into()));
            }
            if sim.cfg.download_redirect {
                let tok = download_token(sim, id);
                return Ok(Response::builder()
                    .status(302)
                    .header("location", download_url(sim, id, &tok))
                    .body(Body::empty())
                    .unwrap_or_default());
            }
            ops::stream_blob(sim, &it, ctx.header("range"), true).await
        }
        (Method::PUT, "content") => {
            let conflict = Conflict::parse(conflict_q.as_deref(), Conflict::Replace)?;
            let au = author(ctx, sim);
            let (parent, name, replace) = match addr {
                Addr::Existing(id) => {
                    let st = sim.store.read();
                    let it = &st.items[&id];
                    if it.folder {
                        return Err(SimError::InvalidRequest(
                            "Cannot upload content to a folder.".into(),
                        ));
                    }
                    if tail.contains(':') {
                        (it.parent.unwrap_or(id), it.name.clone(), None)
                    } else {
                        (it.parent.unwrap_or(id), it.name.clone(), Some(id))
                    }
                }
                Addr::Missing { base, segs } => {
                    let (name, dirs) = segs.split_last().ok_or_else(not_found)?;
                    crate::store::check_name(name)?;
                    for d in dirs {
                        crate::store::check_name(d)?;
                    }
                    let parent = ops::ensure_folders(sim, base, dirs, &au)?;
                    (parent, name.clone(), None)
                }
            };
            if let Some(cl) = ctx
                .header("content-length")
                .and_then(|v| v.parse::<u64>().ok())
            {
                if cl > sim.cfg.max_simple_upload_bytes {
                    return Err(SimError::TooLarge(
                        "The file is too large for a simple upload; use an upload session.".into(),
                    ));
                }
            }
            let len = ctx
                .header("content-length")
                .and_then(|v| v.parse::<u64>().ok());
            let w = ops::write_blob_sized(sim, body, sim.cfg.max_simple_upload_bytes, len).await?;
            match ops::commit_file(
                sim,
                parent,
                &name,
                conflict,
                replace,
                &w,
                FsTimes::default(),
                &au,
            ) {
                Ok((id, created, old)) => {
                    if let Some(o) = old {
                        ops::drop_blobs(sim, vec![o]).await;
                    }
                    let st = sim.store.read();
                    Ok(json_resp(
                        if created { 201 } else { 200 },
                        &item_json(sim, &st, id, api_base),
                    ))
                }
                Err(e) => {
                    ops::drop_blobs(sim, vec![w.blob]).await;
                    Err(e)
                }
            }
        }
        (Method::POST, "createuploadsession") => {
            let v = read_json(sim, body).await?;
            let item = v.get("item").cloned().unwrap_or(json!({}));
            let conflict = Conflict::parse(
                item.get("@microsoft.graph.conflictBehavior")
                    .and_then(Value::as_str)
                    .or(conflict_q.as_deref()),
                Conflict::Replace,
            )?;
            let times = times_from(item.get("fileSystemInfo").unwrap_or(&Value::Null))?;
            let total = item.get("fileSize").and_then(Value::as_u64);
            let defer = v
                .get("deferCommit")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let au = author(ctx, sim);
            let (parent, name, replace) = match addr {
                Addr::Existing(id) => {
                    let st = sim.store.read();
                    let it = &st.items[&id];
                    if it.folder {
                        return Err(SimError::InvalidRequest(
                            "Cannot upload content to a folder.".into(),
                        ));
                    }
                    if tail.contains(':') {
                        (it.parent.unwrap_or(id), it.name.clone(), None)
                    } else {
                        (it.parent.unwrap_or(id), it.name.clone(), Some(id))
                    }
                }
                Addr::Missing { base, segs } => {
                    let (name, dirs) = segs.split_last().ok_or_else(not_found)?;
                    crate::store::check_name(name)?;
                    for d in dirs {
                        crate::store::check_name(d)?;
                    }
                    let parent = ops::ensure_folders(sim, base, dirs, &au)?;
                    (parent, name.clone(), None)
                }
            };
            crate::upload::create(
                sim,
                parent,
                name,
                replace,
                conflict,
                times,
                total,
                defer,
                au,
                api_base.to_owned(),
            )
        }
        (Method::POST, "children") => {
            let Addr::Existing(parent) = addr else {
                return Err(SimError::NotFound("Item not found".into()));
            };
            let v = read_json(sim, body).await?;
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| SimError::InvalidRequest("A name is required.".into()))?;
            if v.get("folder").is_none() {
                return Err(SimError::InvalidRequest(
                    "Only folders can be created here; use an upload for files.".into(),
                ));
            }
            let conflict = Conflict::parse(
                v.get("@microsoft.graph.conflictBehavior")
                    .and_then(Value::as_str)
                    .or(conflict_q.as_deref()),
                Conflict::Fail,
            )?;
            let (id, created) = ops::create_folder(sim, parent, name, conflict, &author(ctx, sim))?;
            let st = sim.store.read();
            Ok(json_resp(
                if created { 201 } else { 200 },
                &item_json(sim, &st, id, api_base),
            ))
        }
        (Method::PATCH, "") => {
            let Addr::Existing(id) = addr else {
                return Err(SimError::NotFound("Item not found".into()));
            };
            let v = read_json(sim, body).await?;
            if !v.is_object() {
                return Err(SimError::InvalidRequest(
                    "The body must be a JSON object.".into(),
                ));
            }
            let name = v.get("name").and_then(Value::as_str);
            let new_parent = match v.get("parentReference") {
                Some(p) if p.get("id").is_some() => {
                    let pid = p["id"].as_str().and_then(|s| {
                        let st = sim.store.read();
                        if s.eq_ignore_ascii_case("root") {
                            Some(st.libs[&lib].root)
                        } else {
                            parse_item_id(s)
                        }
                    });
                    Some(pid.ok_or_else(|| {
                        SimError::InvalidRequest("Invalid parentReference.id.".into())
                    })?)
                }
                Some(p) if p.get("path").is_some() => {
                    let path = p["path"].as_str().unwrap_or("");
                    let rel = path.split_once("root:").map_or("", |(_, r)| r);
                    let segs = split_path(&crate::http::decode_path(rel)?)?;
                    let st = sim.store.read();
                    Some(st.walk(st.libs[&lib].root, &segs).ok_or_else(|| {
                        SimError::NotFound("The destination folder does not exist.".into())
                    })?)
                }
                _ => None,
            };
            let times = times_from(v.get("fileSystemInfo").unwrap_or(&Value::Null))?;
            let conflict = Conflict::parse(
                v.get("@microsoft.graph.conflictBehavior")
                    .and_then(Value::as_str)
                    .or(conflict_q.as_deref()),
                Conflict::Fail,
            )?;
            ops::update_item(sim, id, name, new_parent, times, conflict)?;
            let st = sim.store.read();
            Ok(json_resp(200, &item_json(sim, &st, id, api_base)))
        }
        (Method::DELETE, "") => {
            let Addr::Existing(id) = addr else {
                return Err(SimError::NotFound("Item not found".into()));
            };
            ops::delete_item(sim, id).await?;
            Ok(empty(204))
        }
        (Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE, _) => Err(
            SimError::InvalidRequest(format!("Unsupported action '{action}'.")),
        ),
        _ => Err(SimError::MethodNotAllowed),
    }
}

fn page_size(ctx: &Ctx, default: usize) -> SimResult<usize> {
    match ctx.q("$top") {
        None => Ok(default),
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .map(|n| n.min(999))
            .ok_or_else(|| SimError::InvalidRequest(format!("Invalid $top value '{t}'."))),
    }
}

fn children(
    sim: &Sim,
    ctx: &Ctx,
    id: Uuid,
    api_base: &str,
    did: &str,
    tail: &str,
) -> SimResult<Response> {
    let st = sim.store.read();
    live(&st, id)?;
    if !st.items[&id].folder {
        return Err(SimError::InvalidRequest("The item is not a folder.".into()));
    }
    let top = page_size(ctx, sim.cfg.children_page_size)?;
    let after = match ctx.q("$skiptoken") {
        Some(t) => Some(
            unb64url(t).ok_or_else(|| SimError::InvalidRequest("Invalid $skiptoken.".into()))?,
        ),
        None => None,
    };
    let empty_map = Default::default();
    let ch = st.children.get(&id).unwrap_or(&empty_map);
    let iter: Box<dyn Iterator<Item = (&String, &Uuid)>> = match &after {
        Some(a) => Box::new(ch.range::<String, _>((
            std::ops::Bound::Excluded(a.clone()),
            std::ops::Bound::Unbounded,
        ))),
        None => Box::new(ch.iter()),
    };
    let mut vals = Vec::new();
    let mut last = None;
    let mut more = false;
    for (k, cid) in iter {
        if vals.len() == top {
            more = true;
            break;
        }
        vals.push(select(
            item_json(sim, &st, *cid, api_base),
            ctx.q("$select"),
        ));
        last = Some(k.clone());
    }
    let mut out = json!({"@odata.context": format!("{api_base}/$metadata#drives('{did}')/items"), "value": vals});
    if more {
        let path = format!("/drives/{did}/{}", tail);
        let mut link = format!(
            "{api_base}{}?$top={top}&$skiptoken={}",
            encode_path(&path),
            b64url(&last.unwrap_or_default())
        );
        if let Some(s) = ctx.q("$select") {
            link.push_str(&format!("&$select={}", encode_q(s)));
        }
        out["@odata.nextLink"] = json!(link);
    }
    Ok(json_resp(200, &out))
}

fn delta(
    sim: &Sim,
    ctx: &Ctx,
    lib: Uuid,
    api_base: &str,
    did: &str,
    token: Option<String>,
) -> SimResult<Response> {
    let st = sim.store.read();
    let top = page_size(ctx, sim.cfg.delta_page_size)?;
    let link_base = format!("{api_base}/drives/{did}/root/delta");
    // Tokens: "latest"; "i{seq}" = initial enumeration continuing after seq; "{seq}" = changes after seq.
    let (initial, since) = match token.as_deref().or(ctx.q("token")) {
        None => (true, 0),
        Some(t) if t.eq_ignore_ascii_case("latest") => {
            return Ok(json_resp(
                200,
                &json!({"value": [], "@odata.deltaLink": format!("{link_base}?token={}", st.seq)}),
            ));
        }
        Some(t) => {
            let (initial, n) = match t.strip_prefix('i') {
                Some(n) => (true, n),
                None => (false, t),
            };
            match n.parse::<u64>() {
                Ok(n) if n <= st.seq => (initial, n),
                // 410 Gone + `Location` of a fresh enumeration, as Graph answers.
                _ => {
                    let err = SimError::ResyncRequired(
                        "The delta token is not valid; resync required.".into(),
                    );
                    let mut r = crate::http::error_response(ctx, &err);
                    if let Ok(v) = axum::http::HeaderValue::from_str(&link_base) {
                        r.headers_mut().insert("location", v);
                    }
                    return Ok(r);
                }
            }
        }
    };
    let mut vals = Vec::new();
    let mut last = since;
    let mut more = false;
    if let Some(m) = st.by_seq.get(&lib) {
        for (seq, id) in m.range(since + 1..) {
            if vals.len() == top {
                more = true;
                break;
            }
            last = *seq;
            let it = &st.items[id];
            if initial && it.deleted {
                continue;
            }
            let mut v = item_json(sim, &st, *id, api_base);
            // "The parentReference property on items will not include a value for path"
            // in delta responses (renames do not return descendants): track by id.
            if let Some(p) = v.get_mut("parentReference").and_then(Value::as_object_mut) {
                p.remove("path");
            }
            vals.push(select(v, ctx.q("$select")));
        }
    }
    let mut out = json!({"@odata.context": format!("{api_base}/$metadata#Collection(driveItem)"), "value": vals});
    if more {
        let tok = if initial {
            format!("i{last}")
        } else {
            last.to_string()
        };
        out["@odata.nextLink"] = json!(format!("{link_base}?token={tok}&$top={top}"));
    } else {
        out["@odata.deltaLink"] = json!(format!("{link_base}?token={}", st.seq));
    }
    Ok(json_resp(200, &out))
}

/// Issue a pre-authorised download token for an item.
pub fn download_token(sim: &Sim, id: Uuid) -> String {
    let tok = random_token();
    let mut m = sim
        .download_tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if m.len() > 100_000 {
        let now = Instant::now();
        m.retain(|_, (_, exp)| *exp > now);
    }
    m.insert(
        tok.clone(),
        (id, Instant::now() + Duration::from_secs(3600)),
    );
    tok
}

/// The pre-authorised download URL.
pub fn download_url(sim: &Sim, id: Uuid, tok: &str) -> String {
    format!(
        "{}/_layouts/15/download.aspx?UniqueId={}&tempauth={}",
        sim.base_url, id, tok
    )
}

/// `GET /_layouts/15/download.aspx?UniqueId=..&tempauth=..` (no Authorization needed).
pub async fn predownload(sim: &Arc<Sim>, ctx: &Ctx) -> SimResult<Response> {
    let tok = ctx.q("tempauth").unwrap_or("");
    let id = ctx
        .q("uniqueid")
        .and_then(|s| Uuid::try_parse(s.trim_matches(['{', '}'])).ok());
    let ok = {
        let m = sim
            .download_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        matches!((m.get(tok), id), (Some((i, exp)), Some(id)) if *i == id && *exp > Instant::now())
    };
    if !ok {
        return Err(SimError::Unauthenticated(
            "The download URL is not valid or has expired.".into(),
        ));
    }
    let it = sim.store.read().items.get(&id.unwrap_or_default()).cloned();
    match it {
        Some(it) if !it.deleted && !it.folder => {
            ops::stream_blob(sim, &it, ctx.header("range"), true).await
        }
        _ => Err(SimError::NotFound("The file no longer exists.".into())),
    }
}

async fn batch(sim: &Arc<Sim>, ctx: &Ctx, prefix: &str, body: Body) -> SimResult<Response> {
    if ctx.method != Method::POST {
        return Err(SimError::MethodNotAllowed);
    }
    let v = read_json(sim, body).await?;
    let reqs = v
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| SimError::InvalidRequest("The batch has no requests array.".into()))?;
    if reqs.len() > 20 {
        return Err(SimError::InvalidRequest(
            "The number of batch requests exceeds 20.".into(),
        ));
    }
    let mut ids = std::collections::HashSet::new();
    for r in reqs {
        let id = r.get("id").and_then(|i| {
            i.as_str()
                .map(str::to_owned)
                .or_else(|| i.as_u64().map(|n| n.to_string()))
        });
        let id =
            id.ok_or_else(|| SimError::InvalidRequest("Every batch request needs an id.".into()))?;
        if !ids.insert(id) {
            return Err(SimError::InvalidRequest(
                "Batch request ids must be unique.".into(),
            ));
        }
    }
    let mut statuses: std::collections::HashMap<String, u16> = Default::default();
    let mut out = Vec::new();
    for r in reqs {
        let id = r
            .get("id")
            .and_then(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .or_else(|| i.as_u64().map(|n| n.to_string()))
            })
            .unwrap_or_default();
        let deps: Vec<String> = r
            .get("dependsOn")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for d in &deps {
            if !statuses.contains_key(d) {
                return Err(SimError::InvalidRequest(format!(
                    "Request '{id}' depends on '{d}', which does not precede it."
                )));
            }
        }
        if deps
            .iter()
            .any(|d| !(200..300).contains(statuses.get(d).unwrap_or(&0)))
        {
            statuses.insert(id.clone(), 424);
            out.push(json!({"id": id, "status": 424, "headers": {}, "body": {"error": {"code": "failedDependency", "message": "A dependency failed."}}}));
            continue;
        }
        let method = r
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("GET")
            .to_ascii_uppercase();
        let url = r.get("url").and_then(Value::as_str).unwrap_or("");
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let path = format!("/{}", path.trim_start_matches('/'));
        let path = crate::http::decode_path(&path)?;
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| SimError::InvalidRequest("Invalid method.".into()))?;
        let mut inner = ctx.clone();
        inner.method = method.clone();
        inner.query = crate::http::parse_query(query);
        if let Some(h) = r.get("headers").and_then(Value::as_object) {
            for (k, val) in h {
                if let (Ok(n), Some(Ok(v))) = (
                    axum::http::HeaderName::from_bytes(k.as_bytes()),
                    val.as_str().map(axum::http::HeaderValue::from_str),
                ) {
                    inner.headers.insert(n, v);
                }
            }
        }
        let body = match r.get("body") {
            Some(Value::String(s)) => Body::from(s.clone()),
            Some(b) => Body::from(serde_json::to_vec(b).unwrap_or_default()),
            None => Body::empty(),
        };
        let res = match sim.charge(
            &ctx.principal
                .as_ref()
                .map(|p| p.app.clone())
                .unwrap_or_default(),
            crate::http::cost_of(&method, &path.to_ascii_lowercase()),
        ) {
            Err(e) => Err(e),
            Ok(_) if path.eq_ignore_ascii_case("/$batch") => Err(SimError::InvalidRequest(
                "Nested batches are not allowed.".into(),
            )),
            Ok(_) => handle(sim, &inner, prefix, &path, body).await,
        };
        let resp = crate::http::finish(&inner, res);
        let status = resp.status().as_u16();
        let mut headers = Map::new();
        for (k, v) in resp.headers() {
            if let Ok(s) = v.to_str() {
                headers.insert(k.as_str().to_owned(), json!(s));
            }
        }
        let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024)
            .await
            .unwrap_or_default();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!(base64::engine::general_purpose::STANDARD.encode(&bytes)))
        };
        statuses.insert(id.clone(), status);
        let mut o = json!({"id": id, "status": status, "headers": headers});
        if !body.is_null() {
            o["body"] = body;
        }
        out.push(o);
    }
    Ok(json_resp(200, &json!({"responses": out})))
}
