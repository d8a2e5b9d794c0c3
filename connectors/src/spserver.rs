//! A SharePoint Server (2013–SE) source over its REST API, signed in with Basic
//! authentication (`someone@example.com` + password).
//!
//! Requests ask for JSON light (`application/json;odata=nometadata`) and every
//! parser also understands the verbose shape (`{"d":{"results":[…],"__next":…}}`),
//! since SharePoint 2013 without the JSON light update answers verbose. Errors are
//! read in both shapes (`error` and `odata.error`).
//!
//! Enumeration reads the library's list items in pages of up to 5,000 (the list
//! view threshold) following `__next` / `odata.nextLink`; subtrees are filtered on
//! the client, because `FileRef` filters are not indexed on the server.

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use ferry_proto::ItemKind;
use futures_util::StreamExt;
use reqwest::Response;
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::auth::{CredentialCache, Secret};
use crate::http::{read_json, redact_url, Failure, Http, HttpConfig, HttpStats, Replay};
use crate::odata::{
    bool_field, collection, encode_component, entity, guid_field, num_field, odata_string,
    str_field,
};
use crate::{ByteStream, ConnectorError, SourceEntry, UnreadableEntry, WalkItem};

const ACCEPT: &str = "application/json;odata=nometadata";
const ITEM_FIELDS: &str =
    "Id,UniqueId,FileRef,FileLeafRef,FSObjType,File_x0020_Size,Created,Modified";

/// A web (site or subsite).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebInfo {
    pub id: Uuid,
    pub title: String,
    /// Absolute URL.
    pub url: String,
    pub server_relative_url: String,
}

/// A document library (BaseTemplate 101).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibraryInfo {
    pub id: Uuid,
    pub title: String,
    /// Server-relative URL of the root folder, e.g. `/sites/hr/Shared Documents`.
    pub root_folder: String,
    pub item_count: u64,
    pub hidden: bool,
}

/// A folder of a library, for splitting work by subtree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderInfo {
    /// Path relative to the library root.
    pub rel_path: String,
    /// Items directly in the folder (files and folders).
    pub item_count: u64,
}

/// A signed-in SharePoint Server site.
#[derive(Clone)]
pub struct SpServerSource {
    http: Http,
    site_url: String,
    user: String,
    auth: Secret,
    page_size: u32,
}

impl std::fmt::Debug for SpServerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpServerSource")
            .field("site_url", &self.site_url)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// SharePoint times: ISO 8601 with `Z`, or without a zone (then UTC).
fn time_field(v: &Value, k: &str) -> Option<DateTime<Utc>> {
    let s = str_field(v, k);
    if s.is_empty() {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

/// Path-segment key for sorting parents before children.
fn path_key(rel: &str) -> Vec<&str> {
    rel.split('/').collect()
}

pub(crate) fn web_info(v: &Value) -> WebInfo {
    let e = entity(v);
    WebInfo {
        id: guid_field(e, "Id").unwrap_or_default(),
        title: str_field(e, "Title").to_owned(),
        url: str_field(e, "Url").to_owned(),
        server_relative_url: str_field(e, "ServerRelativeUrl").to_owned(),
    }
}

/// A list entity (with `RootFolder` expanded, verbose or light) as a library.
pub(crate) fn library_info(l: &Value) -> LibraryInfo {
    LibraryInfo {
        id: guid_field(l, "Id").unwrap_or_default(),
        title: str_field(l, "Title").to_owned(),
        root_folder: l
            .get("RootFolder")
            .map(|r| str_field(entity(r), "ServerRelativeUrl").to_owned())
            .unwrap_or_default(),
        item_count: num_field(l, "ItemCount").unwrap_or(0),
        hidden: bool_field(l, "Hidden"),
    }
}

impl SpServerSource {
    /// Signs in to `site_url` and checks the credentials with `GET _api/web`.
    pub async fn connect(
        site_url: &str,
        user: &str,
        password: &str,
        http: HttpConfig,
    ) -> Result<Self, ConnectorError> {
        let site_url = site_url.trim_end_matches('/').to_owned();
        if reqwest::Url::parse(&site_url).is_err() {
            return Err(ConnectorError::NotFound {
                what: "The SharePoint Server site".to_owned(),
                location: site_url,
                hint: "the site URL is not a valid URL; give e.g. https://sharepoint.contoso.com/sites/hr".to_owned(),
            });
        }
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let src = Self {
            http: Http::new(http)?,
            site_url,
            user: user.to_owned(),
            auth: Secret::new(format!("Basic {token}")),
            page_size: 5000,
        };
        let url = format!(
            "{}/_api/web?$select=Id,Title,Url,ServerRelativeUrl",
            src.site_url
        );
        let resp = src.get(&url).await?;
        if !resp.status().is_success() {
            let schemes: Vec<String> = resp
                .headers()
                .get_all("www-authenticate")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(|v| v.split_whitespace().next())
                .map(str::to_owned)
                .collect();
            let f = Failure::read(&url, resp).await;
            let basic_offered =
                schemes.is_empty() || schemes.iter().any(|s| s.eq_ignore_ascii_case("basic"));
            return Err(match f.status {
                401 if !basic_offered => ConnectorError::Auth {
                    target: src.site_url.clone(),
                    message: format!(
                        "the server offers only {} sign-in and Ferry signs in with Basic; ask the farm admin to enable Basic authentication (over HTTPS) on the web application",
                        schemes.join(", ")
                    ),
                },
                401 | 403 => ConnectorError::Auth {
                    target: src.site_url.clone(),
                    message: format!("{} (as {user})", f.message),
                },
                404 => ConnectorError::NotFound {
                    what: "The SharePoint Server site".to_owned(),
                    location: src.site_url.clone(),
                    hint: "check the site URL (no trailing /_layouts or page name)".to_owned(),
                },
                _ => f.into_error("The SharePoint Server site"),
            });
        }
        // SharePoint answers `{any URL inside a web}/_api/web` with that web: a URL
        // that is not the web itself (a library, a folder, a missing subsite) is
        // refused with the nearest site as a hint.
        let v = read_json(&url, resp).await?;
        let web = web_info(&v);
        let asked = reqwest::Url::parse(&src.site_url)
            .map(|u| {
                percent_encoding::percent_decode_str(u.path())
                    .decode_utf8_lossy()
                    .trim_end_matches('/')
                    .to_owned()
            })
            .unwrap_or_default();
        let got = web.server_relative_url.trim_end_matches('/');
        if !web.server_relative_url.is_empty() && !asked.eq_ignore_ascii_case(got) {
            return Err(ConnectorError::NotFound {
                what: "The SharePoint Server site".to_owned(),
                location: src.site_url.clone(),
                hint: format!(
                    "there is no site at this URL; the nearest site is {} — give a site URL, not a library, folder or page",
                    if web.url.is_empty() { got } else { &web.url }
                ),
            });
        }
        tracing::info!(message = "Signed in to SharePoint Server.", site = %src.site_url, user = %user);
        Ok(src)
    }

    /// Like [`SpServerSource::connect`], remembering the password in `cache` so a site
    /// signed in to once is not prompted for again: with `password = None` the cached
    /// one is used (`Auth` error if there is none); a password that works is stored.
    pub async fn connect_cached(
        site_url: &str,
        user: &str,
        password: Option<&Secret>,
        cache: &CredentialCache,
        http: HttpConfig,
    ) -> Result<Self, ConnectorError> {
        let target = CredentialCache::sp_server_target(site_url, user);
        let (pw, from_cache) = match password {
            Some(p) => (p.clone(), false),
            None => (
                cache.get(&target)?.ok_or_else(|| ConnectorError::Auth {
                    target: site_url.to_owned(),
                    message: format!("no saved password for {user}; sign in once with a password"),
                })?,
                true,
            ),
        };
        match Self::connect(site_url, user, pw.expose(), http).await {
            Ok(s) => {
                if !from_cache {
                    cache.put(&target, &pw)?;
                }
                Ok(s)
            }
            Err(e @ ConnectorError::Auth { .. }) => {
                if from_cache {
                    let _ = cache.forget(&target);
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Items per list-item page (default 5,000, the list view threshold).
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = n.clamp(1, 5000);
        self
    }

    /// The site URL signed in to.
    pub fn site_url(&self) -> &str {
        &self.site_url
    }

    /// HTTP counters for reports and metrics.
    pub fn stats(&self) -> Arc<HttpStats> {
        self.http.stats.clone()
    }

    async fn get(&self, url: &str) -> Result<Response, ConnectorError> {
        self.http
            .send(url, Replay::Safe, || {
                self.http
                    .client
                    .get(url)
                    .header("Authorization", self.auth.expose())
                    .header("Accept", ACCEPT)
            })
            .await
    }

    async fn get_json(&self, url: &str, what: &str) -> Result<Value, ConnectorError> {
        let resp = self.get(url).await?;
        if !resp.status().is_success() {
            let f = Failure::read(url, resp).await;
            return Err(match f.status {
                401 => ConnectorError::Auth {
                    target: self.site_url.clone(),
                    message: f.message,
                },
                _ => f.into_error(what),
            });
        }
        read_json(url, resp).await
    }

    /// Every page of a collection.
    async fn get_all(&self, first: &str, what: &str) -> Result<Vec<Value>, ConnectorError> {
        let mut out = Vec::new();
        let mut url = first.to_owned();
        loop {
            let v = self.get_json(&url, what).await?;
            let (vals, next) = collection(&v);
            out.extend(vals);
            match next {
                Some(n) if n != url => url = self.absolute(&n),
                _ => return Ok(out),
            }
        }
    }

    /// Next links may be absolute or server-relative.
    fn absolute(&self, link: &str) -> String {
        if link.starts_with("http://") || link.starts_with("https://") {
            return link.to_owned();
        }
        match reqwest::Url::parse(&self.site_url).and_then(|b| b.join(link)) {
            Ok(u) => u.to_string(),
            Err(_) => link.to_owned(),
        }
    }

    fn api(web_url: &str, rest: &str) -> String {
        format!("{}/_api/{rest}", web_url.trim_end_matches('/'))
    }

    /// The web at `web_url`.
    pub async fn web(&self, web_url: &str) -> Result<WebInfo, ConnectorError> {
        let url = Self::api(web_url, "web?$select=Id,Title,Url,ServerRelativeUrl");
        let v = self.get_json(&url, "The site").await?;
        Ok(web_info(&v))
    }

    /// Direct subsites of `web_url`.
    pub async fn subsites(&self, web_url: &str) -> Result<Vec<WebInfo>, ConnectorError> {
        let url = Self::api(web_url, "web/webs?$select=Id,Title,Url,ServerRelativeUrl");
        let vals = self.get_all(&url, "The site").await?;
        Ok(vals.iter().map(web_info).collect())
    }

    /// Document libraries of `web_url` (hidden ones included, flagged).
    pub async fn libraries(&self, web_url: &str) -> Result<Vec<LibraryInfo>, ConnectorError> {
        let url = Self::api(
            web_url,
            "web/lists?$filter=BaseTemplate%20eq%20101&$expand=RootFolder&$select=Id,Title,ItemCount,Hidden,BaseTemplate,RootFolder/ServerRelativeUrl",
        );
        let vals = self.get_all(&url, "The site").await?;
        Ok(vals
            .iter()
            .filter(|l| num_field(l, "BaseTemplate").is_none_or(|t| t == 101))
            .map(library_info)
            .collect())
    }

    /// Every file and folder under `subtree` of the library (`""` = all; the subtree
    /// folder itself is not included), sorted so parents come before children (by
    /// path segments). Errors are the enumeration's (the listing failed: retry the
    /// chunk).
    pub async fn list_items(
        &self,
        web_url: &str,
        library: &LibraryInfo,
        subtree: &str,
    ) -> Result<Vec<SourceEntry>, ConnectorError> {
        let mut out = Vec::new();
        let mut pages = self.pages(web_url, library, subtree);
        while let Some(page) = pages.next_page(self).await? {
            out.extend(page);
        }
        out.sort_by(|a, b| path_key(&a.rel_path).cmp(&path_key(&b.rel_path)));
        Ok(out)
    }

    fn pages(&self, web_url: &str, library: &LibraryInfo, subtree: &str) -> Pages {
        self.pages_from(web_url, library, subtree, 1, None)
    }

    /// Pages of the items with ids in `start_id..end_id`: the server's own paging
    /// token (`$skiptoken=Paged=TRUE&p_ID={start_id - 1}`) starts the listing there,
    /// so a range costs only its own pages.
    fn pages_from(
        &self,
        web_url: &str,
        library: &LibraryInfo,
        subtree: &str,
        start_id: u64,
        end_id: Option<u64>,
    ) -> Pages {
        let skip = if start_id > 1 {
            format!("&$skiptoken=Paged%3DTRUE%26p_ID%3D{}", start_id - 1)
        } else {
            String::new()
        };
        Pages {
            end_id,
            next: Some(Self::api(
                web_url,
                &format!(
                    "web/lists(guid'{}')/items?$select={ITEM_FIELDS}&$top={}{skip}",
                    library.id, self.page_size
                ),
            )),
            root: library.root_folder.trim_end_matches('/').to_owned(),
            subtree: subtree.trim_matches('/').to_owned(),
            origin: reqwest::Url::parse(web_url)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default(),
        }
    }

    /// The library as a channel of [`WalkItem`]s, streamed page by page as the server
    /// answers: every entry comes after its parent folder (entries whose parent has
    /// not been seen yet wait for it, so memory holds only those). If the listing
    /// fails part-way, one [`UnreadableEntry`] for the subtree with code
    /// `enumeration_failed` ends the walk: treat it as a failure of the whole chunk
    /// (retry it), not of one item. [`SpServerSource::list_items`] returns the same
    /// entries sorted, with a typed error.
    pub fn walk(
        &self,
        web_url: &str,
        library: &LibraryInfo,
        subtree: &str,
    ) -> mpsc::Receiver<WalkItem> {
        let pages = self.pages(web_url, library, subtree);
        let base = subtree.trim_matches('/').to_lowercase();
        self.stream(library, pages, Some(base))
    }

    /// Runs an enumeration on a task, feeding a channel in parents-first order.
    fn stream(
        &self,
        library: &LibraryInfo,
        mut pages: Pages,
        base: Option<String>,
    ) -> mpsc::Receiver<WalkItem> {
        let (tx, rx) = mpsc::channel(1024);
        let this = self.clone();
        let library = library.clone();
        tokio::spawn(async move {
            let mut order = ParentsFirst {
                base,
                ..ParentsFirst::default()
            };
            let result = async {
                while let Some(page) = pages.next_page(&this).await? {
                    for e in page {
                        for ready in order.push(e) {
                            if tx.send(Ok(ready)).await.is_err() {
                                return Ok(false);
                            }
                        }
                    }
                }
                Ok::<_, ConnectorError>(true)
            }
            .await;
            match result {
                Ok(false) => {}
                Ok(true) => {
                    for e in order.finish() {
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(message = "Listing a SharePoint Server library failed.", library = %library.title, error = %e);
                    let _ = tx
                        .send(Err(UnreadableEntry {
                            rel_path: pages.subtree.clone(),
                            location: format!(
                                "{}{}",
                                pages.origin,
                                encode_component(&library.root_folder)
                            ),
                            message: e.to_string(),
                            code: "enumeration_failed".to_owned(),
                        }))
                        .await;
                }
            }
        });
        rx
    }

    /// The items whose list-item ids are in `start_id..end_id` (`None` = to the end),
    /// for splitting a huge library into item ranges that workers list
    /// independently. Within the range, entries come after their parent folders when
    /// both are in it; a file whose folder lies in another range comes without it
    /// ([`crate::graph::GraphDestination::upload`] creates missing parents).
    pub fn walk_range(
        &self,
        web_url: &str,
        library: &LibraryInfo,
        start_id: u64,
        end_id: Option<u64>,
    ) -> mpsc::Receiver<WalkItem> {
        let pages = self.pages_from(web_url, library, "", start_id.max(1), end_id);
        self.stream(library, pages, None)
    }

    /// The folders directly under `subtree` of the library (`""` = its root), with
    /// their direct item counts, for splitting a library into subtree chunks. The
    /// library's system `Forms` folder is left out.
    pub async fn child_folders(
        &self,
        web_url: &str,
        library: &LibraryInfo,
        subtree: &str,
    ) -> Result<Vec<FolderInfo>, ConnectorError> {
        let subtree = subtree.trim_matches('/');
        let root = library.root_folder.trim_end_matches('/');
        let folder = if subtree.is_empty() {
            root.to_owned()
        } else {
            format!("{root}/{subtree}")
        };
        let url = Self::api(
            web_url,
            &format!(
                "web/GetFolderByServerRelativeUrl({})/Folders?$select=Name,ItemCount,ServerRelativeUrl",
                odata_string(&folder)
            ),
        );
        let vals = self.get_all(&url, "The folder").await?;
        let mut out: Vec<FolderInfo> = vals
            .iter()
            .filter_map(|f| {
                let name = str_field(f, "Name");
                if name.is_empty() || (subtree.is_empty() && name.eq_ignore_ascii_case("Forms")) {
                    return None;
                }
                Some(FolderInfo {
                    rel_path: if subtree.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{subtree}/{name}")
                    },
                    item_count: num_field(f, "ItemCount").unwrap_or(0),
                })
            })
            .collect();
        out.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
        Ok(out)
    }

    /// Streams one file's content.
    pub async fn open(
        &self,
        web_url: &str,
        server_relative_url: &str,
    ) -> Result<ByteStream, ConnectorError> {
        let url = Self::api(
            web_url,
            &format!(
                "web/GetFileByServerRelativeUrl({})/$value",
                odata_string(server_relative_url)
            ),
        );
        let resp = self
            .http
            .send(&url, Replay::Safe, || {
                self.http
                    .client
                    .get(&url)
                    .header("Authorization", self.auth.expose())
            })
            .await?;
        if !resp.status().is_success() {
            let f = Failure::read(&url, resp).await;
            return Err(match f.status {
                401 => ConnectorError::Auth {
                    target: self.site_url.clone(),
                    message: f.message,
                },
                404 => ConnectorError::NotFound {
                    what: "The file".to_owned(),
                    location: server_relative_url.to_owned(),
                    hint: "it was deleted or moved after the library was listed".to_owned(),
                },
                _ => f.into_error("The file"),
            });
        }
        let shown = redact_url(&url);
        Ok(Box::pin(resp.bytes_stream().map(move |r| {
            r.map_err(|e| {
                std::io::Error::other(format!(
                    "reading {shown} failed: {}",
                    crate::http::error_chain(&e)
                ))
            })
        })))
    }

    /// A request digest for POSTs (`X-RequestDigest`), from `_api/contextinfo`.
    pub async fn form_digest(&self, web_url: &str) -> Result<Secret, ConnectorError> {
        let url = Self::api(web_url, "contextinfo");
        let resp = self
            .http
            .send(&url, Replay::Safe, || {
                self.http
                    .client
                    .post(&url)
                    .header("Authorization", self.auth.expose())
                    .header("Accept", ACCEPT)
                    .header("Content-Length", "0")
            })
            .await?;
        if !resp.status().is_success() {
            return Err(Failure::read(&url, resp).await.into_error("The site"));
        }
        let v = read_json(&url, resp).await?;
        let e = entity(&v);
        let e = e.get("GetContextWebInformation").unwrap_or(e);
        let d = str_field(e, "FormDigestValue");
        if d.is_empty() {
            return Err(ConnectorError::Protocol {
                url: redact_url(&url),
                message: "contextinfo answered without FormDigestValue".to_owned(),
            });
        }
        Ok(Secret::new(d))
    }
}

/// Paging state of one list-item enumeration.
struct Pages {
    next: Option<String>,
    root: String,
    subtree: String,
    origin: String,
    /// Stop at the first item with an id at or above this.
    end_id: Option<u64>,
}

impl Pages {
    /// The next page's entries under the subtree; `None` after the last page.
    async fn next_page(
        &mut self,
        src: &SpServerSource,
    ) -> Result<Option<Vec<SourceEntry>>, ConnectorError> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        let v = src.get_json(&url, "The library").await?;
        let (vals, next) = collection(&v);
        self.next = next.filter(|n| *n != url).map(|n| src.absolute(&n));
        let mut out = Vec::with_capacity(vals.len());
        for it in &vals {
            if let Some(end) = self.end_id {
                let id = num_field(it, "Id").or_else(|| num_field(it, "ID"));
                if id.is_some_and(|id| id >= end) {
                    // Items come in id order: the range is done.
                    self.next = None;
                    break;
                }
            }
            let file_ref = str_field(it, "FileRef");
            let Some(rel) = strip_prefix_ci(file_ref, &self.root)
                .and_then(|r| r.strip_prefix('/'))
                .map(str::to_owned)
            else {
                continue;
            };
            if rel.is_empty() {
                continue;
            }
            let inside = self.subtree.is_empty()
                || strip_prefix_ci(&rel, &self.subtree).is_some_and(|r| r.starts_with('/'));
            if !inside {
                continue;
            }
            let kind = if num_field(it, "FSObjType") == Some(1) {
                ItemKind::Folder
            } else {
                ItemKind::File
            };
            let name = rel.rsplit('/').next().unwrap_or(&rel);
            out.push(SourceEntry {
                size: if kind == ItemKind::File {
                    num_field(it, "File_x0020_Size").unwrap_or(0)
                } else {
                    0
                },
                kind,
                created: time_field(it, "Created"),
                modified: time_field(it, "Modified"),
                unique_id: guid_field(it, "UniqueId"),
                hidden: name.starts_with('.'),
                location: format!("{}{}", self.origin, encode_component(file_ref)),
                rel_path: rel,
            });
        }
        Ok(Some(out))
    }
}

/// Reorders a stream of entries so that each comes after its parent folder.
#[derive(Default)]
struct ParentsFirst {
    /// Folders already emitted (lower-case paths; SharePoint is case-insensitive).
    seen: std::collections::HashSet<String>,
    /// Entries waiting for their parent, by the parent's lower-case path.
    waiting: std::collections::HashMap<String, Vec<SourceEntry>>,
    /// The walk's base (the subtree, lower-case): its children are ready at once.
    base: Option<String>,
}

fn parent_of(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(p, _)| p)
}

impl ParentsFirst {
    /// Entries that can go out now (this one and any it unblocked).
    fn push(&mut self, e: SourceEntry) -> Vec<SourceEntry> {
        let parent = parent_of(&e.rel_path).to_lowercase();
        let ready = parent.is_empty()
            || self.seen.contains(&parent)
            || self.base.as_deref() == Some(parent.as_str());
        if !ready {
            self.waiting.entry(parent).or_default().push(e);
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut stack = vec![e];
        while let Some(e) = stack.pop() {
            if e.kind == ItemKind::Folder {
                let key = e.rel_path.to_lowercase();
                if let Some(mut kids) = self.waiting.remove(&key) {
                    kids.reverse();
                    stack.extend(kids);
                }
                self.seen.insert(key);
            }
            out.push(e);
        }
        out
    }

    /// What never found its parent (a subtree's direct children, or folders the
    /// account cannot see), parents first.
    fn finish(self) -> Vec<SourceEntry> {
        let mut rest: Vec<SourceEntry> = self.waiting.into_values().flatten().collect();
        rest.sort_by(|a, b| path_key(&a.rel_path).cmp(&path_key(&b.rel_path)));
        rest
    }
}

fn strip_prefix_ci<'a>(s: &'a str, p: &str) -> Option<&'a str> {
    (s.len() >= p.len() && s.is_char_boundary(p.len()) && s[..p.len()].eq_ignore_ascii_case(p))
        .then(|| &s[p.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: &str, folder: bool) -> SourceEntry {
        SourceEntry {
            rel_path: rel.to_owned(),
            kind: if folder {
                ItemKind::Folder
            } else {
                ItemKind::File
            },
            size: 0,
            created: None,
            modified: None,
            unique_id: None,
            hidden: false,
            location: String::new(),
        }
    }

    #[test]
    fn streamed_entries_wait_for_their_parents() {
        // Item-id order after moves: children listed before their folders.
        let mut order = ParentsFirst {
            base: Some("sub".to_owned()),
            ..ParentsFirst::default()
        };
        let mut out = Vec::new();
        for (rel, folder) in [
            ("Sub/A/B/c.txt", false),
            ("Sub/x.txt", false),
            ("Sub/A/B", true),
            ("Sub/A/d.txt", false),
            ("Sub/a", true),
            ("Sub/Orphan/e.txt", false),
        ] {
            out.extend(
                order
                    .push(entry(rel, folder))
                    .into_iter()
                    .map(|e| e.rel_path),
            );
        }
        out.extend(order.finish().into_iter().map(|e| e.rel_path));
        assert_eq!(
            out,
            [
                "Sub/x.txt",
                "Sub/a",
                "Sub/A/B",
                "Sub/A/B/c.txt",
                "Sub/A/d.txt",
                "Sub/Orphan/e.txt"
            ]
        );
    }

    #[test]
    fn parents_sort_first() {
        let mut v = vec!["A B/x", "A/b", "A", "A B", "A/b/c"];
        v.sort_by(|a, b| path_key(a).cmp(&path_key(b)));
        assert_eq!(v, ["A", "A/b", "A/b/c", "A B", "A B/x"]);
    }
}
