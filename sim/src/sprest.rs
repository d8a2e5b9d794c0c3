//! SharePoint REST (`{web}/_api/...`): webs, lists, folders, files, list items,
//! contextinfo, site creation (SPSiteManager) and hubs. Verbose or JSON light by `Accept`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Method;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::error::{SimError, SimResult};
use crate::http::{
    empty, encode_path, encode_q, random_token, read_json, sp_json, Ctx, Flavor, Sim,
};
use crate::ops::{self, Conflict, FsTimes};
use crate::store::{join_url, norm_url, split_path, State};

/// SharePoint timestamp format.
fn sptime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// One parsed path segment: `name(arg)`.
#[derive(Debug)]
struct Seg {
    name: String,
    arg: Option<String>,
}

/// Split at `/` outside single quotes.
fn tokenize(rest: &str) -> SimResult<Vec<Seg>> {
    let mut segs = Vec::new();
    let mut cur = String::new();
    let mut inq = false;
    let mut depth = 0i32;
    let chars: Vec<char> = rest.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            inq = !inq;
            cur.push(c);
        } else if !inq && c == '(' {
            depth += 1;
            cur.push(c);
        } else if !inq && c == ')' {
            depth -= 1;
            cur.push(c);
        } else if c == '/' && !inq && depth == 0 {
            if !cur.is_empty() {
                segs.push(cur.clone());
            }
            cur.clear();
        } else {
            cur.push(c);
        }
        i += 1;
    }
    if inq || depth != 0 {
        return Err(SimError::InvalidRequest(
            "The expression has unbalanced quotes or parentheses.".into(),
        ));
    }
    if !cur.is_empty() {
        segs.push(cur);
    }
    segs.into_iter()
        .map(|s| match s.find('(') {
            Some(i) if s.ends_with(')') => Ok(Seg {
                name: s[..i].to_owned(),
                arg: Some(s[i + 1..s.len() - 1].to_owned()),
            }),
            Some(_) => Err(SimError::InvalidRequest(format!(
                "The segment '{s}' is malformed."
            ))),
            None => Ok(Seg { name: s, arg: None }),
        })
        .collect()
}

/// Parse a string argument: `'a''b'`, `decodedurl='..'`, `url='..'`, or `@alias`.
fn str_arg(ctx: &Ctx, arg: &str) -> SimResult<String> {
    let a = arg.trim();
    let a = match a.split_once('=') {
        Some((k, v)) if !k.contains('\'') => v.trim(),
        _ => a,
    };
    let a_owned;
    let a = if let Some(alias) = a.strip_prefix('@') {
        a_owned = ctx
            .q(&format!("@{alias}"))
            .ok_or_else(|| {
                SimError::InvalidRequest(format!("The parameter alias @{alias} is missing."))
            })?
            .to_owned();
        a_owned.as_str()
    } else {
        a
    };
    let inner = a
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .ok_or_else(|| SimError::InvalidRequest(format!("Expected a quoted string, got '{a}'.")))?;
    Ok(inner.replace("''", "'"))
}

/// Named arguments `k='v',k2=true`.
fn named_args(arg: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut inq = false;
    for c in arg.chars().chain(std::iter::once(',')) {
        if c == '\'' {
            inq = !inq;
        }
        if c == ',' && !inq {
            if let Some((k, v)) = cur.split_once('=') {
                let v = v.trim();
                let v = v
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .map_or_else(|| v.to_owned(), |s| s.replace("''", "'"));
                out.push((k.trim().to_ascii_lowercase(), v));
            }
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    out
}

fn guid_arg(ctx: &Ctx, arg: &str) -> SimResult<Uuid> {
    let a = arg.trim();
    let s = match a.strip_prefix("guid") {
        Some(r) => r.trim_matches('\'').to_owned(),
        None => str_arg(ctx, a).unwrap_or_else(|_| a.to_owned()),
    };
    Uuid::try_parse(s.trim_matches(['{', '}']))
        .map_err(|_| SimError::InvalidRequest(format!("'{arg}' is not a valid GUID.")))
}

#[derive(Debug, Clone, Copy)]
enum Obj {
    Web(Uuid),
    Webs(Uuid),
    Lists(Uuid),
    List(Uuid),
    Items(Uuid),
    Item(Uuid),
    Folder(Uuid),
    Files(Uuid),
    Folders(Uuid),
    File(Uuid),
    Site(Uuid),
}

struct Out<'a> {
    sim: &'a Sim,
    st: &'a State,
    verbose: bool,
}

impl Out<'_> {
    fn api(&self, web: Uuid) -> String {
        let w = &self.st.webs[&web];
        format!(
            "{}{}/_api",
            self.sim.base_url,
            encode_path(if w.url == "/" { "" } else { &w.url })
        )
    }
    fn meta(&self, m: &mut Map<String, Value>, uri: &str, ty: &str, id: Option<Uuid>) {
        if self.verbose {
            let mut md = json!({"id": uri, "uri": uri, "type": ty});
            if let Some(i) = id {
                let version = self.st.items.get(&i).map_or(1, |it| it.version);
                md["etag"] = json!(format!("\"{version}\""));
            }
            m.insert("__metadata".into(), md);
        }
    }
    fn deferred(&self, m: &mut Map<String, Value>, name: &str, uri: String) {
        if self.verbose {
            m.insert(name.into(), json!({"__deferred": {"uri": uri}}));
        }
    }
    fn web(&self, web: Uuid) -> Value {
        let w = &self.st.webs[&web];
        let uri = format!("{}/Web", self.api(web));
        let mut m = Map::new();
        self.meta(&mut m, &uri, "SP.Web", None);
        self.deferred(&mut m, "Lists", format!("{uri}/Lists"));
        self.deferred(&mut m, "Webs", format!("{uri}/Webs"));
        self.deferred(&mut m, "RootFolder", format!("{uri}/RootFolder"));
        let o = json!({
            "Created": sptime(w.created), "Description": w.description, "Id": w.id, "Language": 1033,
            "LastItemModifiedDate": sptime(w.created), "ServerRelativeUrl": w.url, "Title": w.title,
            "Url": format!("{}{}", self.sim.base_url, encode_path(if w.url == "/" { "" } else { &w.url })),
            "WebTemplate": w.template.split('#').next().unwrap_or("STS"), "Configuration": 0,
        });
        m.extend(o.as_object().cloned().unwrap_or_default());
        Value::Object(m)
    }
    fn list(&self, lib: Uuid, expand_root: bool) -> Value {
        let l = &self.st.libs[&lib];
        let uri = format!("{}/Web/Lists(guid'{}')", self.api(l.web_id), l.id);
        let mut m = Map::new();
        self.meta(&mut m, &uri, "SP.List", None);
        self.deferred(&mut m, "Items", format!("{uri}/Items"));
        if expand_root {
            m.insert("RootFolder".into(), self.folder(l.root));
        } else {
            self.deferred(&mut m, "RootFolder", format!("{uri}/RootFolder"));
        }
        let root = &self.st.items[&l.root];
        let o = json!({
            "BaseTemplate": l.base_template, "BaseType": 1, "Created": sptime(l.created), "Description": l.description,
            "EntityTypeName": entity_name(&l.url_name), "Hidden": false, "Id": l.id, "ItemCount": self.st.item_count(lib),
            "LastItemModifiedDate": sptime(root.modified), "Title": l.title, "EnableVersioning": true,
            "ParentWebUrl": self.st.webs[&l.web_id].url,
        });
        m.extend(o.as_object().cloned().unwrap_or_default());
        Value::Object(m)
    }
    fn folder(&self, id: Uuid) -> Value {
        let it = &self.st.items[&id];
        let url = self.st.item_url(id);
        let web = self.st.libs[&it.list_id].web_id;
        let uri = format!(
            "{}/Web/GetFolderByServerRelativeUrl('{}')",
            self.api(web),
            encode_q(&url.replace('\'', "''"))
        );
        let mut m = Map::new();
        self.meta(&mut m, &uri, "SP.Folder", None);
        self.deferred(&mut m, "Files", format!("{uri}/Files"));
        self.deferred(&mut m, "Folders", format!("{uri}/Folders"));
        self.deferred(
            &mut m,
            "ListItemAllFields",
            format!("{uri}/ListItemAllFields"),
        );
        let o = json!({
            "Exists": true, "IsWOPIEnabled": false, "ItemCount": self.st.child_count(id), "Name": if it.parent.is_none() { self.st.libs[&it.list_id].url_name.clone() } else { it.name.clone() },
            "ProgID": null, "ServerRelativeUrl": url, "TimeCreated": sptime(it.created), "TimeLastModified": sptime(it.modified),
            "UniqueId": it.unique_id, "WelcomePage": "",
        });
        m.extend(o.as_object().cloned().unwrap_or_default());
        Value::Object(m)
    }
    fn file(&self, id: Uuid) -> Value {
        let it = &self.st.items[&id];
        let url = self.st.item_url(id);
        let web = self.st.libs[&it.list_id].web_id;
        let uri = format!(
            "{}/Web/GetFileByServerRelativeUrl('{}')",
            self.api(web),
            encode_q(&url.replace('\'', "''"))
        );
        let mut m = Map::new();
        self.meta(&mut m, &uri, "SP.File", None);
        self.deferred(&mut m, "Author", format!("{uri}/Author"));
        self.deferred(&mut m, "ModifiedBy", format!("{uri}/ModifiedBy"));
        self.deferred(
            &mut m,
            "ListItemAllFields",
            format!("{uri}/ListItemAllFields"),
        );
        let o = json!({
            "CheckInComment": "", "CheckOutType": 2, "ContentTag": format!("{{{}}},{},{}", it.unique_id.to_string().to_uppercase(), it.version, it.version),
            "CustomizedPageStatus": 0, "ETag": format!("\"{{{}}},{}\"", it.unique_id.to_string().to_uppercase(), it.etag_rev()),
            "Exists": true, "IrmEnabled": false, "Length": it.size.to_string(), "Level": 1, "LinkingUri": null, "LinkingUrl": "",
            "MajorVersion": it.version, "MinorVersion": 0, "Name": it.name, "ServerRelativeUrl": url,
            "TimeCreated": sptime(it.created), "TimeLastModified": sptime(it.modified), "Title": null,
            "UIVersion": it.version * 512, "UIVersionLabel": format!("{}.0", it.version), "UniqueId": it.unique_id,
        });
        m.extend(o.as_object().cloned().unwrap_or_default());
        Value::Object(m)
    }
    fn list_item(&self, id: Uuid, sel: Option<&[String]>) -> Value {
        let it = &self.st.items[&id];
        let l = &self.st.libs[&it.list_id];
        let url = self.st.item_url(id);
        let uri = format!(
            "{}/Web/Lists(guid'{}')/Items({})",
            self.api(l.web_id),
            l.id,
            it.item_id
        );
        let mut m = Map::new();
        self.meta(
            &mut m,
            &uri,
            &format!("SP.Data.{}Item", entity_name(&l.url_name)),
            Some(id),
        );
        let dir = url.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
        let full = json!({
            "FileSystemObjectType": if it.folder { 1 } else { 0 }, "Id": it.item_id, "ID": it.item_id,
            "ContentTypeId": if it.folder { "0x0120" } else { "0x0101" }, "Title": null,
            "GUID": Uuid::from_u128(it.unique_id.as_u128().rotate_left(17)), "UniqueId": it.unique_id,
            "FileRef": url, "FileLeafRef": it.name, "FileDirRef": dir,
            "FSObjType": if it.folder { "1" } else { "0" }, "File_x0020_Size": if it.folder { Value::Null } else { json!(it.size.to_string()) },
            "Created": sptime(it.created), "Modified": sptime(it.modified), "AuthorId": 1, "EditorId": 1,
            "OData__UIVersionString": format!("{}.0", it.version), "SMTotalFileStreamSize": it.size.to_string(),
        });
        for (k, v) in full.as_object().cloned().unwrap_or_default() {
            if sel.is_none_or(|s| s.iter().any(|x| x.eq_ignore_ascii_case(&k))) {
                m.insert(k, v);
            }
        }
        if self.verbose && sel.is_none() {
            self.deferred(
                &mut m,
                if it.folder { "Folder" } else { "File" },
                format!("{uri}/{}", if it.folder { "Folder" } else { "File" }),
            );
        }
        Value::Object(m)
    }
}

/// `Shared Documents` → `Shared_x0020_DocumentsItem` style entity names.
fn entity_name(url_name: &str) -> String {
    let mut s = String::new();
    for c in url_name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            s.push(c);
        } else {
            s.push_str(&format!("_x{:04x}_", c as u32));
        }
    }
    s
}

fn wrap_entity(verbose: bool, v: Value) -> Value {
    if verbose {
        json!({"d": v})
    } else {
        v
    }
}

fn wrap_coll(verbose: bool, vals: Vec<Value>, next: Option<String>) -> Value {
    if verbose {
        let mut d = json!({"results": vals});
        if let Some(n) = next {
            d["__next"] = json!(n);
        }
        json!({"d": d})
    } else {
        let mut o = json!({"value": vals});
        if let Some(n) = next {
            o["odata.nextLink"] = json!(n);
        }
        o
    }
}

/// Apply `$select` (keeps `__metadata`) to a light or verbose entity.
fn select(v: Value, sel: Option<&[String]>) -> Value {
    let Some(sel) = sel else { return v };
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| {
                    k == "__metadata"
                        || sel.iter().any(|s| {
                            s.eq_ignore_ascii_case(k)
                                || s.split('/')
                                    .next()
                                    .is_some_and(|p| p.eq_ignore_ascii_case(k))
                        })
                })
                .collect(),
        ),
        o => o,
    }
}

/// Split `s` at `sep` (ASCII case-insensitive) outside single-quoted literals.
fn split_outside_quotes<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut inq = false;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            inq = !inq;
        } else if !inq
            && s.get(i..i + sep.len())
                .is_some_and(|t| t.eq_ignore_ascii_case(sep))
        {
            out.push(&s[start..i]);
            i += sep.len();
            start = i;
            continue;
        }
        i += 1;
    }
    out.push(&s[start..]);
    out
}

/// Simple `$filter`: `A eq B [and C eq D]` against entity properties. String literals
/// are OData's: `'O''Neil'` is `O'Neil`. String comparison ignores case, as SharePoint's
/// (its content database collation is case-insensitive).
fn filter_ok(v: &Value, f: Option<&str>) -> SimResult<bool> {
    let Some(f) = f else { return Ok(true) };
    for clause in split_outside_quotes(f.trim(), " and ") {
        let clause = clause.trim();
        let parts: Vec<&str> = clause.splitn(3, ' ').collect();
        let [field, op, val] = parts.as_slice() else {
            return Err(SimError::InvalidRequest(format!(
                "The $filter expression '{clause}' is not supported."
            )));
        };
        let actual = v.get(*field).cloned().unwrap_or(Value::Null);
        let val = val.trim();
        let expected: Value = if let Some(s) = val
            .strip_prefix('\'')
            .and_then(|s| s.strip_suffix('\''))
            .filter(|s| !s.replace("''", "").contains('\''))
        {
            json!(s.replace("''", "'"))
        } else if let Ok(n) = val.parse::<i64>() {
            json!(n)
        } else if val == "true" || val == "false" {
            json!(val == "true")
        } else {
            return Err(SimError::InvalidRequest(format!(
                "The $filter value '{val}' is not supported."
            )));
        };
        let eq = match (actual.as_str(), expected.as_str()) {
            (Some(a), Some(e)) => a.to_lowercase() == e.to_lowercase(),
            _ => {
                actual == expected
                    || actual.as_str().map(str::to_owned)
                        == expected.as_i64().map(|n| n.to_string())
            }
        };
        let ok = match op.to_ascii_lowercase().as_str() {
            "eq" => eq,
            "ne" => !eq,
            _ => {
                return Err(SimError::InvalidRequest(format!(
                    "The $filter operator '{op}' is not supported."
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn site_ready(st: &State, web: Uuid) -> bool {
    st.sites
        .get(&st.webs[&web].site_id)
        .is_some_and(|s| s.ready_at.is_none_or(|t| t <= Utc::now()))
}

/// The web that `{prefix}/_api/...` addresses. A URL that is not an existing web is
/// 404 (`System.IO.FileNotFoundException`, "File Not Found."), as SharePoint Online
/// answers for a missing site collection under a managed path; a missing subsite is
/// 404 too, so no client can be led into acting on an ancestor. A path into one of
/// the web's libraries (`{web}/Shared Documents/_api/...`) addresses the web.
/// `Config::nearest_web_fallback` restores the old nearest-ancestor answer.
pub fn web_at(sim: &Sim, st: &State, prefix: &str) -> SimResult<Uuid> {
    let segs = split_path(prefix)?;
    let not_found = || SimError::NotFound("File Not Found.".into());
    let (web, rest) = st
        .web_for_url(&format!("/{}", segs.join("/")))
        .ok_or_else(not_found)?;
    if rest.is_empty()
        || sim.cfg.nearest_web_fallback
        || st.lib_by_url_name(web, &rest[0]).is_some()
    {
        Ok(web)
    } else {
        Err(not_found())
    }
}

/// Handle `{prefix}/_api/{rest}`.
pub async fn handle(
    sim: &Arc<Sim>,
    ctx: &Ctx,
    prefix: &str,
    rest: &str,
    body: Body,
) -> SimResult<Response> {
    let verbose = ctx.flavor == Flavor::SpVerbose;
    let web = {
        let st = sim.store.read();
        let web = web_at(sim, &st, prefix)?;
        if !site_ready(&st, web) {
            return Err(SimError::NotFound(
                "The site is not available (provisioning).".into(),
            ));
        }
        web
    };
    let segs = tokenize(rest)?;
    let first = segs
        .first()
        .map(|s| s.name.to_ascii_lowercase())
        .unwrap_or_default();
    // Method override used by SharePoint clients.
    let method = match ctx
        .header("x-http-method")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("MERGE" | "PATCH") => Method::PATCH,
        Some("DELETE") => Method::DELETE,
        Some("PUT") => Method::PUT,
        _ => ctx.method.clone(),
    };
    if method != Method::GET && first != "contextinfo" {
        check_digest(sim, ctx)?;
    }
    match first.as_str() {
        "contextinfo" if method == Method::POST => return contextinfo(sim, ctx, web, verbose),
        "spsitemanager" => return site_manager(sim, ctx, &segs, verbose, body).await,
        "hubsites" if method == Method::GET => {
            let st = sim.store.read();
            let mut hubs: Vec<_> = st.hubs.values().collect();
            hubs.sort_by(|a, b| a.site_url.cmp(&b.site_url));
            let vals = hubs.iter().map(|h| hub_json(sim, verbose, h)).collect();
            return Ok(sp_json(ctx.flavor, 200, &wrap_coll(verbose, vals, None)));
        }
        "site" if segs.len() == 2 && method == Method::POST => {
            return hub_ops(sim, ctx, web, &segs[1], verbose)
        }
        _ => {}
    }
    let step = navigate(sim, ctx, web, &segs, &first, &method, verbose)?;
    match step {
        Step::Json(r) => Ok(r),
        Step::Stream(it) => ops::stream_blob(sim, &it, ctx.header("range"), false).await,
        Step::Mutate(obj, action) => mutate(sim, ctx, obj, method, action, verbose, body).await,
    }
}

enum Step {
    Json(Response),
    Stream(Box<crate::store::Item>),
    Mutate(Obj, Option<(String, Option<String>)>),
}

fn navigate(
    sim: &Sim,
    ctx: &Ctx,
    web: Uuid,
    segs: &[Seg],
    first: &str,
    method: &Method,
    verbose: bool,
) -> SimResult<Step> {
    // Navigate.
    let st = sim.store.read();
    let out = Out {
        sim,
        st: &st,
        verbose,
    };
    let mut obj = match first {
        "web" => Obj::Web(web),
        "site" => Obj::Site(st.webs[&web].site_id),
        _ => {
            return Err(SimError::InvalidRequest(format!(
                "Unsupported resource '{first}'."
            )))
        }
    };
    let mut value = false;
    let mut trailing_action: Option<(String, Option<String>)> = None;
    for (idx, seg) in segs.iter().enumerate().skip(1) {
        let n = seg.name.to_ascii_lowercase();
        let a = seg.arg.as_deref();
        obj = match (obj, n.as_str(), a) {
            (Obj::Web(w), "webs", None) => Obj::Webs(w),
            (Obj::Web(w), "lists", None) => Obj::Lists(w),
            (Obj::Web(w), "lists", Some(a)) => {
                let id = guid_arg(ctx, a)?;
                match st.libs.get(&id) {
                    Some(l) if l.web_id == w => Obj::List(id),
                    _ => {
                        return Err(SimError::NotFound(format!(
                            "List '{id}' does not exist at site with URL '{}'.",
                            st.webs[&w].url
                        )))
                    }
                }
            }
            (Obj::Web(w), "getlist", Some(a)) => {
                let url = str_arg(ctx, a)?;
                let r = st.resolve(&url)?;
                match (r.lib, r.item) {
                    (Some(l), Some(i)) if i == st.libs[&l].root && st.libs[&l].web_id == w => {
                        Obj::List(l)
                    }
                    _ => return Err(SimError::NotFound("List does not exist.".into())),
                }
            }
            (Obj::Lists(w), "getbytitle", Some(a)) => {
                let t = str_arg(ctx, a)?;
                let l = st
                    .libs
                    .values()
                    .find(|l| l.web_id == w && l.title.eq_ignore_ascii_case(&t));
                Obj::List(l.map(|l| l.id).ok_or_else(|| {
                    SimError::NotFound(format!(
                        "List '{t}' does not exist at site with URL '{}'.",
                        st.webs[&w].url
                    ))
                })?)
            }
            (Obj::Lists(w), "getbyid", Some(a)) => {
                let id = guid_arg(ctx, a)?;
                match st.libs.get(&id) {
                    Some(l) if l.web_id == w => Obj::List(id),
                    _ => return Err(SimError::NotFound("List does not exist.".into())),
                }
            }
            (
                Obj::Web(_),
                "getfolderbyserverrelativeurl" | "getfolderbyserverrelativepath",
                Some(a),
            ) => {
                let url = str_arg(ctx, a)?;
                let r = st.resolve(&url)?;
                match r.item {
                    Some(i) if st.items[&i].folder => Obj::Folder(i),
                    _ => return Err(SimError::NotFound("File Not Found.".into())),
                }
            }
            (
                Obj::Web(_),
                "getfilebyserverrelativeurl" | "getfilebyserverrelativepath",
                Some(a),
            ) => {
                let url = str_arg(ctx, a)?;
                let r = st.resolve(&url)?;
                match r.item {
                    Some(i) if !st.items[&i].folder => Obj::File(i),
                    _ => return Err(SimError::NotFound("File Not Found.".into())),
                }
            }
            (Obj::Web(w), "rootfolder", None) => {
                let l = st
                    .libs
                    .values()
                    .find(|l| l.web_id == w)
                    .ok_or_else(|| SimError::NotFound("No root folder.".into()))?;
                Obj::Folder(l.root)
            }
            (Obj::List(l), "rootfolder", None) => Obj::Folder(st.libs[&l].root),
            (Obj::List(l), "items", None) => Obj::Items(l),
            (Obj::List(l), "items", Some(a)) | (Obj::List(l), "getitembyid", Some(a)) => {
                let n: u64 = a
                    .trim()
                    .trim_matches('\'')
                    .parse()
                    .map_err(|_| SimError::InvalidRequest("Invalid item id.".into()))?;
                let id = st.by_item_id.get(&l).and_then(|m| m.get(&n)).copied();
                Obj::Item(id.ok_or_else(|| {
                    SimError::InvalidRequest(format!(
                        "Item does not exist. It may have been deleted by another user. ({n})"
                    ))
                })?)
            }
            (Obj::Items(_), _, _) if n.parse::<u64>().is_ok() => {
                return Err(SimError::InvalidRequest("Use items(id).".into()));
            }
            (Obj::Folder(f), "files", None) => Obj::Files(f),
            (Obj::Folder(f), "folders", None) => Obj::Folders(f),
            (Obj::Folder(f), "listitemallfields", None)
            | (Obj::File(f), "listitemallfields", None) => Obj::Item(f),
            (Obj::Folder(f), "parentfolder", None) | (Obj::File(f), "parentfolder", None) => {
                Obj::Folder(
                    st.items[&f]
                        .parent
                        .ok_or_else(|| SimError::NotFound("No parent folder.".into()))?,
                )
            }
            (Obj::Item(i), "file", None) if !st.items[&i].folder => Obj::File(i),
            (Obj::Item(i), "folder", None) if st.items[&i].folder => Obj::Folder(i),
            (Obj::File(f), "$value", None) => {
                value = true;
                Obj::File(f)
            }
            (o @ (Obj::Webs(_) | Obj::Files(_) | Obj::Folders(_)), "add", _)
                if idx == segs.len() - 1 && (a.is_none() || !matches!(o, Obj::Webs(_))) =>
            {
                trailing_action = Some(("add".into(), a.map(str::to_owned)));
                o
            }
            _ => {
                return Err(SimError::InvalidRequest(format!(
                    "The resource segment '{}' is not supported here.",
                    seg.name
                )));
            }
        };
    }
    let sel: Option<Vec<String>> = ctx.q("$select").map(|s| {
        s.split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect()
    });
    let sel = sel.as_deref();
    let f = ctx.flavor;
    // Mutations.
    if *method != Method::GET {
        return Ok(Step::Mutate(obj, trailing_action));
    }
    if value {
        let Obj::File(id) = obj else {
            return Err(SimError::NotFound("File Not Found.".into()));
        };
        return Ok(Step::Stream(Box::new(st.items[&id].clone())));
    }
    let v = match obj {
        Obj::Web(w) => wrap_entity(verbose, select(out.web(w), sel)),
        Obj::Site(s) => {
            let site = &st.sites[&s];
            let hub = site.hub_site_id;
            let is_hub = st.hubs.values().any(|h| h.site_id == s);
            let mut m = Map::new();
            out.meta(
                &mut m,
                &format!("{}/Site", out.api(site.root_web)),
                "SP.Site",
                None,
            );
            m.extend(
                json!({"Id": s, "ServerRelativeUrl": site.url, "Url": format!("{}{}", sim.base_url, encode_path(if site.url == "/" { "" } else { &site.url })),
                    "IsHubSite": is_hub, "HubSiteId": hub})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            );
            wrap_entity(verbose, select(Value::Object(m), sel))
        }
        Obj::Webs(w) => {
            let mut ws: Vec<_> = st.webs.values().filter(|x| x.parent == Some(w)).collect();
            ws.sort_by(|a, b| a.url.cmp(&b.url));
            wrap_coll(
                verbose,
                ws.iter().map(|x| select(out.web(x.id), sel)).collect(),
                None,
            )
        }
        Obj::Lists(w) => {
            let expand = ctx
                .q("$expand")
                .is_some_and(|e| e.to_ascii_lowercase().contains("rootfolder"));
            let mut ls: Vec<_> = st.libs.values().filter(|l| l.web_id == w).collect();
            ls.sort_by_key(|l| l.created);
            let mut vals = Vec::new();
            for l in ls {
                let full = out.list(l.id, expand);
                if filter_ok(&full, ctx.q("$filter"))? {
                    vals.push(select(full, sel));
                }
            }
            wrap_coll(verbose, vals, None)
        }
        Obj::List(l) => {
            let expand = ctx
                .q("$expand")
                .is_some_and(|e| e.to_ascii_lowercase().contains("rootfolder"));
            wrap_entity(verbose, select(out.list(l, expand), sel))
        }
        Obj::Folder(i) => {
            let mut f = out.folder(i);
            let expand = ctx.q("$expand").unwrap_or("").to_ascii_lowercase();
            for (key, want_folders) in [("Files", false), ("Folders", true)] {
                if expand
                    .split(',')
                    .any(|e| e.trim() == key.to_ascii_lowercase())
                {
                    let vals: Vec<Value> = st
                        .children
                        .get(&i)
                        .map(|c| {
                            c.values()
                                .filter(|id| st.items[id].folder == want_folders)
                                .map(|id| {
                                    if want_folders {
                                        out.folder(*id)
                                    } else {
                                        out.file(*id)
                                    }
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    f[key] = if verbose {
                        json!({"results": vals})
                    } else {
                        json!(vals)
                    };
                }
            }
            if expand.split(',').any(|e| e.trim() == "listitemallfields") {
                f["ListItemAllFields"] = out.list_item(i, None);
            }
            wrap_entity(verbose, select(f, sel))
        }
        Obj::File(i) => wrap_entity(verbose, select(out.file(i), sel)),
        Obj::Item(i) => wrap_entity(verbose, out.list_item(i, sel)),
        Obj::Files(fo) | Obj::Folders(fo) => {
            let want_folders = matches!(obj, Obj::Folders(_));
            let vals = st
                .children
                .get(&fo)
                .map(|c| {
                    c.values()
                        .filter(|id| st.items[id].folder == want_folders)
                        .map(|id| {
                            select(
                                if want_folders {
                                    out.folder(*id)
                                } else {
                                    out.file(*id)
                                },
                                sel,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            wrap_coll(verbose, vals, None)
        }
        Obj::Items(l) => {
            let top = match ctx.q("$top") {
                Some(t) => t
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .map(|n| n.min(5000))
                    .ok_or_else(|| SimError::InvalidRequest(format!("Invalid $top '{t}'.")))?,
                None => sim.cfg.items_page_size,
            };
            let after = match ctx.q("$skiptoken") {
                Some(t) => parse_skiptoken(t)?,
                None => 0,
            };
            let mut vals = Vec::new();
            let mut last = 0;
            let mut more = false;
            if let Some(m) = st.by_item_id.get(&l) {
                let filter = ctx.q("$filter");
                for (n, id) in m.range(after.saturating_add(1)..) {
                    if vals.len() == top {
                        more = true;
                        break;
                    }
                    if filter.is_some() && !filter_ok(&out.list_item(*id, None), filter)? {
                        continue;
                    }
                    vals.push(out.list_item(*id, sel));
                    last = *n;
                }
            }
            let next = more.then(|| {
                let lib = &st.libs[&l];
                let mut u = format!("{}/Web/Lists(guid'{}')/items?%24skiptoken=Paged%3dTRUE%26p_ID%3d{last}&%24top={top}", out.api(lib.web_id), l);
                if let Some(s) = ctx.q("$select") {
                    u.push_str(&format!("&%24select={}", encode_q(s)));
                }
                if let Some(f) = ctx.q("$filter") {
                    u.push_str(&format!("&%24filter={}", encode_q(f)));
                }
                u
            });
            wrap_coll(verbose, vals, next)
        }
    };
    Ok(Step::Json(sp_json(f, 200, &v)))
}

fn parse_skiptoken(t: &str) -> SimResult<u64> {
    let bad = || SimError::InvalidRequest(format!("The $skiptoken '{t}' is not valid."));
    let decoded = percent_encoding::percent_decode_str(t)
        .decode_utf8_lossy()
        .into_owned();
    for part in decoded.split('&') {
        if let Some((k, v)) = part.split_once('=') {
            if k.eq_ignore_ascii_case("p_ID") {
                return v.parse().map_err(|_| bad());
            }
        }
    }
    Err(bad())
}

fn check_digest(sim: &Sim, ctx: &Ctx) -> SimResult<()> {
    let Some(p) = &ctx.principal else {
        return Ok(());
    };
    if !p.basic {
        return Ok(());
    }
    let d = ctx.header("x-requestdigest").unwrap_or("");
    let ok = sim
        .digests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(d)
        .is_some_and(|exp| *exp > std::time::Instant::now());
    if ok {
        Ok(())
    } else {
        Err(SimError::AccessDenied(
            "The security validation for this page is invalid and might be corrupted. Please use your web browser's Back button to try your operation again.".into(),
        ))
    }
}

fn contextinfo(sim: &Sim, ctx: &Ctx, web: Uuid, verbose: bool) -> SimResult<Response> {
    let digest = format!(
        "0x{},{}",
        random_token().to_uppercase(),
        Utc::now().format("%d %b %Y %H:%M:%S -0000")
    );
    {
        let mut d = sim.digests.lock().unwrap_or_else(|e| e.into_inner());
        if d.len() > 50_000 {
            let now = std::time::Instant::now();
            d.retain(|_, e| *e > now);
        }
        d.insert(
            digest.clone(),
            std::time::Instant::now() + std::time::Duration::from_secs(1800),
        );
    }
    let st = sim.store.read();
    let w = &st.webs[&web];
    let site = &st.sites[&w.site_id];
    let body = json!({
        "FormDigestTimeoutSeconds": 1800, "FormDigestValue": digest, "LibraryVersion": "16.0.0.0",
        "SiteFullUrl": format!("{}{}", sim.base_url, encode_path(if site.url == "/" { "" } else { &site.url })),
        "WebFullUrl": format!("{}{}", sim.base_url, encode_path(if w.url == "/" { "" } else { &w.url })),
        "SupportedSchemaVersions": if verbose { json!({"__metadata": {"type": "Collection(Edm.String)"}, "results": ["14.0.0.0", "15.0.0.0"]}) } else { json!(["14.0.0.0", "15.0.0.0"]) },
    });
    let v = if verbose {
        let mut b = body;
        b["__metadata"] = json!({"type": "SP.ContextWebInformation"});
        json!({"d": {"GetContextWebInformation": b}})
    } else {
        body
    };
    Ok(sp_json(ctx.flavor, 200, &v))
}

fn hub_json(sim: &Sim, verbose: bool, h: &crate::store::Hub) -> Value {
    let mut v = json!({"ID": h.id, "SiteId": h.site_id, "SiteUrl": h.site_url, "Title": h.title, "Description": null, "LogoUrl": null, "ParentHubSiteId": Uuid::nil()});
    if verbose {
        v["__metadata"] = json!({"id": format!("{}/_api/HubSites/GetById?hubSiteId='{}'", sim.base_url, h.id), "type": "SP.HubSite"});
    }
    v
}

fn hub_ops(sim: &Sim, ctx: &Ctx, web: Uuid, seg: &Seg, verbose: bool) -> SimResult<Response> {
    let mut st = sim.store.write();
    let site_id = st.webs[&web].site_id;
    let name = seg.name.to_ascii_lowercase();
    match name.as_str() {
        "registerhubsite" => {
            if st.hubs.values().any(|h| h.site_id == site_id) {
                return Err(SimError::InvalidRequest(
                    "This site is already a hub site.".into(),
                ));
            }
            let site = st.sites[&site_id].clone();
            let title = st.webs[&site.root_web].title.clone();
            let h = crate::store::Hub {
                id: site_id,
                site_id,
                site_url: format!(
                    "{}{}",
                    sim.base_url,
                    encode_path(if site.url == "/" { "" } else { &site.url })
                ),
                title,
            };
            let id = h.id;
            st.hubs.insert(id, h.clone());
            st.save_hub(id);
            if let Some(s) = st.sites.get_mut(&site_id) {
                s.hub_site_id = id;
            }
            st.save_site(site_id);
            sim.store.commit(&mut st);
            Ok(sp_json(
                ctx.flavor,
                200,
                &wrap_entity(verbose, hub_json(sim, verbose, &h)),
            ))
        }
        "unregisterhubsite" => {
            let id = st
                .hubs
                .values()
                .find(|h| h.site_id == site_id)
                .map(|h| h.id)
                .ok_or_else(|| SimError::InvalidRequest("This site is not a hub site.".into()))?;
            st.delete_hub(id);
            // Nothing keeps pointing at a hub that is gone: the former hub and its
            // members are left with no hub (`HubSiteId` all zeros).
            let members: Vec<Uuid> = st
                .sites
                .values()
                .filter(|s| s.hub_site_id == id)
                .map(|s| s.id)
                .collect();
            for m in members {
                if let Some(s) = st.sites.get_mut(&m) {
                    s.hub_site_id = Uuid::nil();
                }
                st.save_site(m);
            }
            sim.store.commit(&mut st);
            Ok(empty(204))
        }
        "joinhubsite" => {
            let hub = guid_arg(ctx, seg.arg.as_deref().unwrap_or(""))?;
            if !hub.is_nil() && !st.hubs.contains_key(&hub) {
                return Err(SimError::NotFound(format!(
                    "Hub site '{hub}' does not exist."
                )));
            }
            if let Some(own) = st
                .hubs
                .values()
                .find(|h| h.site_id == site_id)
                .map(|h| h.id)
            {
                // A hub site's HubSiteId is its own hub id. Joining it to that is a no-op;
                // joining it elsewhere or leaving is refused, as SharePoint refuses to
                // associate a hub site ("This site is already a HubSite.").
                if hub == own {
                    return Ok(empty(204));
                }
                return Err(SimError::Sp {
                    status: 400,
                    code: "-2146232832, Microsoft.SharePoint.SPException",
                    message: "This site is already a HubSite.".into(),
                });
            }
            if let Some(s) = st.sites.get_mut(&site_id) {
                s.hub_site_id = hub;
            }
            st.save_site(site_id);
            sim.store.commit(&mut st);
            Ok(empty(204))
        }
        _ => Err(SimError::InvalidRequest(format!(
            "Unsupported site operation '{}'.",
            seg.name
        ))),
    }
}

async fn site_manager(
    sim: &Arc<Sim>,
    ctx: &Ctx,
    segs: &[Seg],
    verbose: bool,
    body: Body,
) -> SimResult<Response> {
    let op = segs
        .get(1)
        .map(|s| s.name.to_ascii_lowercase())
        .unwrap_or_default();
    let status_of = |st: &State, url: &str| -> (Uuid, u8) {
        let u = norm_url(url).to_lowercase();
        match st.sites.values().find(|s| s.url.to_lowercase() == u) {
            Some(s) if s.ready_at.is_some_and(|t| t > Utc::now()) => (s.id, 1),
            Some(s) => (s.id, 2),
            None => (Uuid::nil(), 0),
        }
    };
    // The server-relative path of `url` when it is on this tenant; `None` for an
    // absolute URL on another host (or another port: two instances on one address
    // are two tenants).
    let host_header = ctx.header("host").map(str::to_ascii_lowercase);
    let base_authority = sim
        .base_url
        .split_once("://")
        .map_or(sim.base_url.as_str(), |(_, r)| r)
        .trim_end_matches('/')
        .to_ascii_lowercase();
    let local_rel = |url: &str| -> Option<String> {
        let u = url.trim();
        let lower = u.to_ascii_lowercase();
        let path = if let Some(r) = ["https://", "http://"]
            .iter()
            .find_map(|p| lower.starts_with(p).then(|| &u[p.len()..]))
        {
            let (authority, path) = r.find('/').map_or((r, "/"), |i| (&r[..i], &r[i..]));
            let a = authority.to_ascii_lowercase();
            let ours = a == base_authority
                || host_header.as_deref() == Some(a.as_str())
                || (!a.contains(':') && a == sim.hostname.to_ascii_lowercase());
            if !ours {
                return None;
            }
            path
        } else {
            u
        };
        Some(norm_url(
            &percent_encoding::percent_decode_str(path).decode_utf8_lossy(),
        ))
    };
    let reply = |fname: &str, id: Uuid, status: u8, url: &str| -> Response {
        let abs = format!(
            "{}{}",
            sim.base_url,
            encode_path(if url == "/" { "" } else { url })
        );
        // 0: nil id, no URL. 3 (error) and 4 (URL exists, `create` only): empty id and
        // URL, as the service answers (SharePoint/sp-dev-docs#7416 for 4).
        let mut o = match status {
            0 => json!({"SiteId": Uuid::nil(), "SiteStatus": 0, "SiteUrl": ""}),
            3 | 4 => json!({"SiteId": "", "SiteStatus": status, "SiteUrl": ""}),
            _ => json!({"SiteId": id, "SiteStatus": status, "SiteUrl": abs}),
        };
        let v = if verbose {
            o["__metadata"] = json!({"type": "Microsoft.SharePoint.Portal.SPSiteCreationResponse"});
            json!({"d": {fname: o}})
        } else {
            o
        };
        sp_json(ctx.flavor, 200, &v)
    };
    match (ctx.method.clone(), op.as_str()) {
        (Method::POST, "create") => {
            let v = read_json(sim, body).await?;
            let r = v.get("request").ok_or_else(|| {
                SimError::InvalidRequest("The body needs a 'request' object.".into())
            })?;
            let url = r
                .get("Url")
                .and_then(Value::as_str)
                .ok_or_else(|| SimError::InvalidRequest("request.Url is required.".into()))?;
            let title = r.get("Title").and_then(Value::as_str).unwrap_or("");
            let template = r
                .get("WebTemplate")
                .and_then(Value::as_str)
                .unwrap_or("STS#3");
            let Some(rel) = local_rel(url) else {
                // A URL on another host is not in this tenant: nothing is created.
                tracing::info!(message = "Site creation refused: the URL is not in this tenant.");
                return Ok(reply("Create", Uuid::nil(), 3, ""));
            };
            let app_only = ctx
                .principal
                .as_ref()
                .is_some_and(|p| p.user.is_none() && !p.basic);
            let owner = r
                .get("Owner")
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or("");
            if sim.cfg.require_owner_for_app_only && app_only && owner.is_empty() {
                // "If you use an app-only context to create the site collection the
                // Owner property is required": the service reports SiteStatus 3.
                tracing::info!(message = "Site creation refused: app-only without Owner.");
                return Ok(reply("Create", Uuid::nil(), 3, ""));
            }
            let segs = split_path(&rel)?;
            for s in &segs {
                crate::store::check_name(s)?;
            }
            if segs.len() != 2
                || !["sites", "teams"].contains(&segs[0].to_ascii_lowercase().as_str())
            {
                return Err(SimError::InvalidRequest(format!(
                    "The site URL '{url}' must be /sites/name or /teams/name."
                )));
            }
            let mut st = sim.store.write();
            let (id, status) = status_of(&st, &rel);
            if status != 0 || st.web_by_url.contains_key(&rel.to_lowercase()) {
                return Ok(reply("Create", id, 4, &rel));
            }
            let delay = sim
                .settings
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .provisioning_delay_secs;
            let ready_at =
                (delay > 0.0).then(|| Utc::now() + Duration::milliseconds((delay * 1000.0) as i64));
            let id = st.create_site(&rel, title, template, ready_at)?;
            if let Some(d) = r.get("Description").and_then(Value::as_str) {
                let rw = st.sites[&id].root_web;
                if let Some(w) = st.webs.get_mut(&rw) {
                    w.description = d.to_owned();
                }
                st.save_web(rw);
            }
            sim.store.commit(&mut st);
            tracing::info!(message = "Site collection created.", url = %rel, provisioning = ready_at.is_some());
            Ok(reply(
                "Create",
                id,
                if ready_at.is_some() { 1 } else { 2 },
                &rel,
            ))
        }
        (Method::GET, "status") => {
            let url = ctx
                .q("url")
                .ok_or_else(|| SimError::InvalidRequest("The url parameter is required.".into()))?;
            let url = url.trim().trim_matches('\'');
            let Some(rel) = local_rel(url) else {
                // Not in this tenant: no site there.
                return Ok(reply("Status", Uuid::nil(), 0, ""));
            };
            let st = sim.store.read();
            let (id, status) = status_of(&st, &rel);
            Ok(reply("Status", id, status, &rel))
        }
        _ => Err(SimError::InvalidRequest(
            "Unsupported SPSiteManager operation.".into(),
        )),
    }
}

async fn mutate(
    sim: &Arc<Sim>,
    ctx: &Ctx,
    obj: Obj,
    method: Method,
    action: Option<(String, Option<String>)>,
    verbose: bool,
    body: Body,
) -> SimResult<Response> {
    let author = ctx
        .principal
        .as_ref()
        .and_then(|p| p.user.clone())
        .map_or_else(|| "SharePoint App".to_owned(), |u| sim.display_name(&u));
    match (obj, method, action) {
        (Obj::Webs(parent), Method::POST, Some(_)) => {
            let v = read_json(sim, body).await?;
            let p = v.get("parameters").unwrap_or(&v);
            let leaf = p
                .get("Url")
                .and_then(Value::as_str)
                .ok_or_else(|| SimError::InvalidRequest("parameters.Url is required.".into()))?;
            crate::store::check_name(leaf)?;
            if leaf.contains(' ') {
                return Err(SimError::InvalidRequest(
                    "The web URL may not contain spaces.".into(),
                ));
            }
            let title = p.get("Title").and_then(Value::as_str).unwrap_or(leaf);
            let template = p
                .get("WebTemplate")
                .and_then(Value::as_str)
                .unwrap_or("STS#3");
            let mut st = sim.store.write();
            let pw = st.webs[&parent].clone();
            let url = join_url(&pw.url, leaf);
            if st.web_for_url(&url).is_some_and(|(w, rest)| {
                w == parent && rest.len() == 1 && st.lib_by_url_name(parent, leaf).is_some()
            }) {
                return Err(SimError::NameAlreadyExists(format!(
                    "A list or library named '{leaf}' already exists at this URL."
                )));
            }
            if st.web_by_url.contains_key(&norm_url(&url).to_lowercase()) {
                // SPWebCollection.Add's SPException (HRESULT 0x800700B7,
                // ERROR_ALREADY_EXISTS), which SharePoint REST answers with 500.
                return Err(SimError::Sp {
                    status: 500,
                    code: "-2147024713, Microsoft.SharePoint.SPException",
                    message: format!(
                        "The Web site address \"{}\" is already in use.",
                        norm_url(&url)
                    ),
                });
            }
            let id = st.create_web(pw.site_id, Some(parent), &url, title, template)?;
            if let Some(d) = p.get("Description").and_then(Value::as_str) {
                if let Some(w) = st.webs.get_mut(&id) {
                    w.description = d.to_owned();
                }
                st.save_web(id);
            }
            st.create_library(id, Uuid::new_v4(), "Documents", "Shared Documents", "")?;
            sim.store.commit(&mut st);
            let out = Out {
                sim,
                st: &st,
                verbose,
            };
            Ok(sp_json(ctx.flavor, 200, &wrap_entity(verbose, out.web(id))))
        }
        (Obj::Lists(web), Method::POST, None) => {
            let v = read_json(sim, body).await?;
            let title = v
                .get("Title")
                .and_then(Value::as_str)
                .ok_or_else(|| SimError::InvalidRequest("Title is required.".into()))?;
            let tmpl = v.get("BaseTemplate").and_then(Value::as_u64).unwrap_or(101);
            if tmpl != 101 {
                return Err(SimError::InvalidRequest(
                    "Only document libraries (BaseTemplate 101) are supported.".into(),
                ));
            }
            let desc = v.get("Description").and_then(Value::as_str).unwrap_or("");
            let mut st = sim.store.write();
            let id = st.create_library(web, Uuid::new_v4(), title, title, desc)?;
            sim.store.commit(&mut st);
            let out = Out {
                sim,
                st: &st,
                verbose,
            };
            Ok(sp_json(
                ctx.flavor,
                201,
                &wrap_entity(verbose, out.list(id, false)),
            ))
        }
        (Obj::Folders(parent), Method::POST, Some((_, arg))) => {
            let url = arg.as_deref().map(|a| str_arg(ctx, a)).transpose()?;
            let url = match url {
                Some(u) => u,
                None => read_json(sim, body)
                    .await?
                    .get("ServerRelativeUrl")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            };
            let name = url
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_owned();
            let (id, _) = ops::create_folder(sim, parent, &name, Conflict::Replace, &author)?;
            let st = sim.store.read();
            let out = Out {
                sim,
                st: &st,
                verbose,
            };
            Ok(sp_json(
                ctx.flavor,
                200,
                &wrap_entity(verbose, out.folder(id)),
            ))
        }
        (Obj::Files(parent), Method::POST, Some((_, arg))) => {
            let args = named_args(arg.as_deref().unwrap_or(""));
            let get = |k: &str| args.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
            let url = get("url")
                .or_else(|| get("decodedurl"))
                .ok_or_else(|| SimError::InvalidRequest("url is required.".into()))?;
            let url = if let Some(alias) = url.strip_prefix('@') {
                ctx.q(&format!("@{alias}"))
                    .unwrap_or("")
                    .trim_matches('\'')
                    .to_owned()
            } else {
                url
            };
            let overwrite = get("overwrite").is_some_and(|v| v.eq_ignore_ascii_case("true"));
            let name = url.rsplit('/').next().unwrap_or("").to_owned();
            let w = ops::write_blob(sim, body, sim.cfg.max_simple_upload_bytes).await?;
            let conflict = if overwrite {
                Conflict::Replace
            } else {
                Conflict::Fail
            };
            match ops::commit_file(
                sim,
                parent,
                &name,
                conflict,
                None,
                &w,
                FsTimes::default(),
                &author,
            ) {
                Ok((id, _, old)) => {
                    if let Some(o) = old {
                        ops::drop_blobs(sim, vec![o]).await;
                    }
                    let st = sim.store.read();
                    let out = Out {
                        sim,
                        st: &st,
                        verbose,
                    };
                    Ok(sp_json(
                        ctx.flavor,
                        200,
                        &wrap_entity(verbose, out.file(id)),
                    ))
                }
                Err(e) => {
                    ops::drop_blobs(sim, vec![w.blob]).await;
                    Err(e)
                }
            }
        }
        (Obj::File(id) | Obj::Folder(id), Method::DELETE, None) => {
            ops::delete_item(sim, id).await?;
            Ok(empty(200))
        }
        _ => Err(SimError::MethodNotAllowed),
    }
}
