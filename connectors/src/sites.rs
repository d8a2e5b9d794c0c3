//! SharePoint Online site structure over SharePoint REST: site collections
//! (`SPSiteManager`), subsites (`web/webs/add`), document libraries (`web/lists`) and
//! hubs (`RegisterHubSite`, `JoinHubSite`, `HubSites`) — what "keep classic" /
//! "switch to modern" and hub association need before any content moves.
//!
//! Every `ensure_*` / `register_hub` / `join_hub` is idempotent: it looks first, acts
//! only when needed, and treats the service's "already exists" answer to a lost race
//! as success. Re-runs and redelivered chunks therefore converge on the same
//! structure; the returned `existed` flag tells the caller (reports) which it was.
//!
//! ## URLs are checked before acting
//!
//! SharePoint answers `{any URL}/_api/web` and `{any URL}/_api/site` with the
//! *nearest* web or site collection (down to the tenant root `/`), and a POST to a
//! missing subsite's `_api` acts on its nearest existing ancestor. So every write
//! first confirms that the web or site collection at the given URL is really that
//! one (server-relative URL comparison); otherwise it fails with `NotFound` instead
//! of creating a subsite in the wrong place or registering the tenant root as a hub.
//!
//! ## Sign-in
//!
//! These endpoints need a token for SharePoint itself, not for Graph: scope
//! [`sharepoint_scope`] (`https://contoso.sharepoint.com/.default`). On a real tenant,
//! **app-only** SharePoint REST calls must be signed in with a **certificate**
//! ([`crate::auth::DestinationSignIn::Certificate`]): Entra ID issues a token for a
//! client secret, but SharePoint Online rejects app-only tokens obtained with a
//! secret ("Unsupported app only token", 401/403) — see Microsoft's "Granting access
//! via Azure AD App-Only" (learn.microsoft.com/sharepoint/dev/solution-guidance/
//! security-apponly-azuread) and "Avoiding Access Errors with SharePoint App-Only
//! Access" (Microsoft Tech Community, 2025). Delegated sign-ins (device code,
//! username + password) work with either. Creating sites app-only also requires
//! [`CreateSite::owner`] (Microsoft: "If you use an app-only context to create the
//! site collection the Owner property is required"), and `RegisterHubSite` needs
//! SharePoint administrator rights (app-only: `Sites.FullControl.All`).
//!
//! ## Answer shapes
//!
//! Requests ask for JSON light; every parser also reads the verbose shape
//! (`{"d":{…}}`, `{"d":{"Create":{…}}}`), via the helpers shared with the SharePoint
//! Server source. `SPSiteManager/create` answers status 4 ("URL exists") with empty
//! `SiteId` and `SiteUrl` on the real service; the status is then asked again.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::TokenSource;
use crate::http::{
    encode_segment, read_json, redact_url, Failure, Http, HttpConfig, HttpStats, Replay,
};
use crate::odata::{
    bool_field, collection, encode_component, entity, guid_field, num_field, str_field,
};
use crate::spserver::{library_info, web_info};
use crate::ConnectorError;

pub use crate::spserver::{LibraryInfo, WebInfo};

/// JSON light, as the SharePoint REST calls ask for it.
const ACCEPT: &str = "application/json;odata=nometadata";
/// What `SPSiteManager` is documented with.
const ACCEPT_V4: &str = "application/json;odata.metadata=none";

/// A site collection to create with `SPSiteManager/create`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateSite {
    pub title: String,
    /// Absolute URL, `https://contoso.sharepoint.com/sites/name` (or `/teams/name`).
    pub url: String,
    /// Language, e.g. 1033 (English).
    pub lcid: u32,
    /// `STS#3` (modern team site without a Microsoft 365 group) or
    /// `SITEPAGEPUBLISHING#0` (communication site).
    pub web_template: String,
    /// Owner's sign-in name (`someone@contoso.com`); required when signed in app-only,
    /// else the signed-in user owns the site.
    pub owner: Option<String>,
    pub description: String,
}

/// `SiteStatus` of `SPSiteManager`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provisioning {
    /// 0: no site at this URL.
    NotFound,
    /// 1: being created.
    Provisioning,
    /// 2: ready to use.
    Ready,
    /// 3: creation failed (also seen when a deleted site with this URL is in the
    /// tenant's recycle bin).
    Error,
    /// 4: the URL is taken (answer to `create` only).
    UrlExists,
}

impl Provisioning {
    /// The wire value `0..=4`; `None` for anything else.
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => Self::NotFound,
            1 => Self::Provisioning,
            2 => Self::Ready,
            3 => Self::Error,
            4 => Self::UrlExists,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            Self::NotFound => 0,
            Self::Provisioning => 1,
            Self::Ready => 2,
            Self::Error => 3,
            Self::UrlExists => 4,
        }
    }
}

/// A site collection's creation status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteStatus {
    /// `None` when the service did not say (status 0, or 4 on the real service).
    pub site_id: Option<Uuid>,
    pub status: Provisioning,
    /// Absolute URL (the one asked for when the service answers an empty one).
    pub site_url: String,
    /// The site was there before this call (set by [`SitesClient::ensure_site`]).
    pub existed: bool,
}

/// A hub site of the tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubSite {
    /// Hub id (the value sites join with; on SharePoint Online the hub's site id).
    pub id: Uuid,
    pub title: String,
    pub site_url: String,
    pub site_id: Option<Uuid>,
}

/// A site collection's identity and hub association.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteInfo {
    pub id: Uuid,
    /// Absolute URL of the site collection.
    pub url: String,
    /// The site collection is itself a hub.
    pub is_hub: bool,
    /// The hub it belongs to (a hub belongs to itself); `None` for none (all-zero GUID).
    pub hub_site_id: Option<Uuid>,
}

/// `scheme://host[:port]` of a URL: `https://contoso.sharepoint.com/sites/x` →
/// `https://contoso.sharepoint.com`. Unparseable input is returned up to its first
/// path `/`, so that the error comes from the request naming it.
pub fn tenant_root(site_url: &str) -> String {
    let s = site_url.trim();
    match reqwest::Url::parse(s) {
        Ok(u) if u.has_host() => {
            let mut out = format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default());
            if let Some(p) = u.port() {
                out.push_str(&format!(":{p}"));
            }
            out
        }
        _ => match s.find("://") {
            Some(i) => {
                let after = &s[i + 3..];
                let end = after.find(['/', '?', '#']).map_or(s.len(), |j| i + 3 + j);
                s[..end].to_owned()
            }
            None => s.trim_end_matches('/').to_owned(),
        },
    }
}

/// The token scope for SharePoint REST on the site's tenant:
/// `https://contoso.sharepoint.com/.default`. App-only sign-ins must use a
/// certificate for it on a real tenant (see the module documentation).
pub fn sharepoint_scope(site_url: &str) -> String {
    format!("{}/.default", tenant_root(site_url))
}

/// The decoded path of a URL without a trailing `/` (`""` for the root).
fn url_path(url: &str) -> String {
    let path = match reqwest::Url::parse(url.trim()) {
        Ok(u) => u.path().to_owned(),
        Err(_) => url.to_owned(),
    };
    percent_encoding::percent_decode_str(&path)
        .decode_utf8_lossy()
        .trim_end_matches('/')
        .to_owned()
}

/// Whether two URLs or server-relative paths name the same place (case-insensitive,
/// trailing `/` ignored).
fn same_path(a: &str, b: &str) -> bool {
    let p = |s: &str| {
        if s.starts_with('/') {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .trim_end_matches('/')
                .to_owned()
        } else {
            url_path(s)
        }
    };
    p(a).eq_ignore_ascii_case(&p(b))
}

/// An absolute http(s) URL, or an error naming it.
fn check_url(url: &str, what: &str) -> Result<String, ConnectorError> {
    let t = url.trim().trim_end_matches('/');
    match reqwest::Url::parse(t) {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.has_host() => Ok(t.to_owned()),
        _ => Err(ConnectorError::NotFound {
            what: what.to_owned(),
            location: url.to_owned(),
            hint: "the URL is not a valid absolute URL; give e.g. https://contoso.sharepoint.com/sites/team".to_owned(),
        }),
    }
}

fn api(web_url: &str, rest: &str) -> String {
    format!("{}/_api/{rest}", web_url.trim_end_matches('/'))
}

/// A GUID that is not all zeros.
fn non_nil(g: Option<Uuid>) -> Option<Uuid> {
    g.filter(|g| !g.is_nil())
}

fn hub_from(v: &Value) -> Option<HubSite> {
    let e = entity(v);
    // `{"d":{"RegisterHubSite":{…}}}` in some verbose answers.
    let e = e.get("RegisterHubSite").unwrap_or(e);
    let id = guid_field(e, "ID").or_else(|| guid_field(e, "Id"))?;
    Some(HubSite {
        id,
        title: str_field(e, "Title").to_owned(),
        site_url: str_field(e, "SiteUrl").to_owned(),
        site_id: non_nil(guid_field(e, "SiteId")),
    })
}

/// A "this name is taken" answer of SharePoint REST (409, or the SPException codes
/// and messages SharePoint uses for duplicate webs and lists).
fn is_already_exists(f: &Failure) -> bool {
    let m = f.message.to_ascii_lowercase();
    f.status == 409
        || f.code.contains("-2130575257")
        || f.code.contains("-2130575342")
        || f.code.contains("-2147024713")
        || m.contains("already exists")
        || m.contains("already in use")
        || m.contains("already a hub")
}

/// SharePoint Online creates, inspects and joins sites over its REST API with a
/// SharePoint-scoped bearer token.
pub struct SitesClient {
    http: Http,
    tokens: Arc<dyn TokenSource>,
    /// First wait between status polls while a site is provisioning.
    poll_first: Duration,
    /// Longest wait between status polls.
    poll_max: Duration,
}

impl std::fmt::Debug for SitesClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SitesClient")
            .field("poll_first", &self.poll_first)
            .field("poll_max", &self.poll_max)
            .finish_non_exhaustive()
    }
}

impl SitesClient {
    /// A client with tokens for scope [`sharepoint_scope`] of the tenant.
    pub fn new(tokens: Arc<dyn TokenSource>, http: HttpConfig) -> Result<Self, ConnectorError> {
        Ok(Self {
            http: Http::new(http)?,
            tokens,
            poll_first: Duration::from_millis(250),
            poll_max: Duration::from_secs(10),
        })
    }

    /// Waits between provisioning-status polls: `first`, doubling up to `max`.
    /// Default 250 ms up to 10 s.
    pub fn with_poll_interval(mut self, first: Duration, max: Duration) -> Self {
        self.poll_first = first.max(Duration::from_millis(1));
        self.poll_max = max.max(self.poll_first);
        self
    }

    /// HTTP counters (throttling waits, retries, requests) for reports and metrics.
    pub fn stats(&self) -> Arc<HttpStats> {
        self.http.stats.clone()
    }

    async fn request(
        &self,
        method: Method,
        url: &str,
        accept: &'static str,
        body: Option<&Value>,
        replay: Replay,
    ) -> Result<Response, ConnectorError> {
        let build = || -> RequestBuilder {
            let rb = self
                .http
                .client
                .request(method.clone(), url)
                .header("Accept", accept);
            let rb = if accept == ACCEPT_V4 {
                rb.header("odata-version", "4.0")
            } else {
                rb
            };
            match body {
                Some(v) => rb
                    .header("Content-Type", "application/json;odata=nometadata")
                    .body(v.to_string()),
                None if method == Method::POST => rb.header("Content-Length", "0"),
                None => rb,
            }
        };
        self.http
            .send_bearer(self.tokens.as_ref(), url, replay, build)
            .await
    }

    /// Maps a failed answer; an app-only token SharePoint refuses gets the reason.
    async fn failure(url: &str, resp: Response, what: &str) -> ConnectorError {
        let f = Failure::read(url, resp).await;
        if matches!(f.status, 401 | 403)
            && f.message
                .to_ascii_lowercase()
                .contains("unsupported app only token")
        {
            return ConnectorError::Auth {
                target: f.url,
                message: format!(
                    "{}: SharePoint accepts app-only tokens only from a certificate credential, not a client secret",
                    f.message
                ),
            };
        }
        f.into_error(what)
    }

    /// GET a JSON document; `Ok(None)` on 404.
    async fn get_opt(&self, url: &str, what: &str) -> Result<Option<Value>, ConnectorError> {
        let resp = self
            .request(Method::GET, url, ACCEPT, None, Replay::Safe)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(Self::failure(url, resp, what).await);
        }
        read_json(url, resp).await.map(Some)
    }

    /// Every page of a collection.
    async fn get_all(&self, first: &str, what: &str) -> Result<Vec<Value>, ConnectorError> {
        let mut out = Vec::new();
        let mut url = first.to_owned();
        loop {
            let v = self
                .get_opt(&url, what)
                .await?
                .ok_or_else(|| ConnectorError::NotFound {
                    what: what.to_owned(),
                    location: redact_url(&url),
                    hint: "the site does not exist (or is still being provisioned)".to_owned(),
                })?;
            let (vals, next) = collection(&v);
            out.extend(vals);
            match next {
                Some(n) if n != url => {
                    url = if n.starts_with("http://") || n.starts_with("https://") {
                        n
                    } else {
                        format!("{}{}", tenant_root(&url), n)
                    }
                }
                _ => return Ok(out),
            }
        }
    }

    fn status_from(url: &str, asked: &str, v: &Value) -> Result<SiteStatus, ConnectorError> {
        let e = entity(v);
        let e = e.get("Create").or_else(|| e.get("Status")).unwrap_or(e);
        let code = num_field(e, "SiteStatus").ok_or_else(|| ConnectorError::Protocol {
            url: redact_url(url),
            message: "the answer has no SiteStatus".to_owned(),
        })?;
        let status = Provisioning::from_code(code).ok_or_else(|| ConnectorError::Protocol {
            url: redact_url(url),
            message: format!("unknown SiteStatus {code}"),
        })?;
        let site_url = str_field(e, "SiteUrl");
        Ok(SiteStatus {
            site_id: non_nil(guid_field(e, "SiteId")),
            status,
            site_url: if site_url.is_empty() {
                asked.to_owned()
            } else {
                site_url.to_owned()
            },
            existed: status == Provisioning::UrlExists,
        })
    }

    /// `POST {tenant_root}/_api/SPSiteManager/create`. Not retried after an ambiguous
    /// failure (use [`SitesClient::ensure_site`] for that). `UrlExists` comes back as
    /// a status, not an error.
    pub async fn create_site(
        &self,
        tenant_root: &str,
        req: &CreateSite,
    ) -> Result<SiteStatus, ConnectorError> {
        let root = check_url(tenant_root, "The tenant")?;
        let site_url = check_url(&req.url, "The new site")?;
        if !self::tenant_root(&site_url).eq_ignore_ascii_case(&self::tenant_root(&root)) {
            return Err(ConnectorError::Rejected {
                url: site_url,
                status: 0,
                code: "invalidUrl".to_owned(),
                message: format!("the site URL is not on the tenant {root}"),
            });
        }
        let url = api(&self::tenant_root(&root), "SPSiteManager/create");
        let mut r = json!({
            "Title": req.title,
            "Url": site_url,
            "Lcid": req.lcid,
            "WebTemplate": req.web_template,
            "Description": req.description,
        });
        if let Some(o) = req.owner.as_deref().filter(|o| !o.is_empty()) {
            r["Owner"] = json!(o);
        }
        let body = json!({ "request": r });
        let resp = self
            .request(Method::POST, &url, ACCEPT_V4, Some(&body), Replay::Unsafe)
            .await?;
        if !resp.status().is_success() {
            return Err(Self::failure(&url, resp, "The tenant").await);
        }
        let v = read_json(&url, resp).await?;
        let s = Self::status_from(&url, &site_url, &v)?;
        tracing::info!(
            message = "Site collection creation requested.",
            site = %site_url,
            status = s.status.code()
        );
        Ok(s)
    }

    /// `GET {tenant_root}/_api/SPSiteManager/status?url='…'`.
    pub async fn site_status(
        &self,
        tenant_root: &str,
        site_url: &str,
    ) -> Result<SiteStatus, ConnectorError> {
        let root = check_url(tenant_root, "The tenant")?;
        let site_url = check_url(site_url, "The site")?;
        let url = format!(
            "{}?url={}",
            api(&self::tenant_root(&root), "SPSiteManager/status"),
            encode_component(&format!("'{}'", site_url.replace('\'', "''"))).replace('/', "%2F")
        );
        let resp = self
            .request(Method::GET, &url, ACCEPT_V4, None, Replay::Safe)
            .await?;
        if !resp.status().is_success() {
            return Err(Self::failure(&url, resp, "The tenant").await);
        }
        let v = read_json(&url, resp).await?;
        let mut s = Self::status_from(&url, &site_url, &v)?;
        s.existed = false;
        Ok(s)
    }

    /// Creates the site collection unless it exists, and waits (polling the status
    /// with a doubling interval) until it is ready. A site that was there already
    /// comes back `Ready` with `existed: true` (after waiting out its provisioning
    /// if a previous run left it provisioning). Errors name the URL: provisioning
    /// failed (`Rejected`, code `siteProvisioningFailed`), the URL is taken by
    /// something that is not a site collection (`Rejected`, code `urlTaken`), or
    /// still provisioning after `timeout` (`NotReady`, transient: retry later).
    ///
    /// Safe to interrupt: a re-run finds the site and continues waiting.
    pub async fn ensure_site(
        &self,
        tenant_root: &str,
        req: &CreateSite,
        timeout: Duration,
    ) -> Result<SiteStatus, ConnectorError> {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let first = match self.create_site(tenant_root, req).await {
            Ok(s) => s,
            Err(e) if e.is_transient() => {
                // The create may have been applied before the connection broke.
                match self.site_status(tenant_root, &req.url).await {
                    Ok(s) if s.status != Provisioning::NotFound => {
                        tracing::warn!(message = "Site creation answer lost; the site exists, continuing.", site = %req.url, error = %e);
                        s
                    }
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let existed = first.status == Provisioning::UrlExists;
        let site_url = req.url.trim().trim_end_matches('/').to_owned();
        let failed = |s: &SiteStatus| {
            ConnectorError::Rejected {
            url: site_url.clone(),
            status: 200,
            code: "siteProvisioningFailed".to_owned(),
            message: format!(
                "SharePoint reports SiteStatus {} (error) for the site; a deleted site with this URL may be in the tenant's recycle bin",
                s.status.code()
            ),
        }
        };
        match first.status {
            Provisioning::Ready => {
                return Ok(SiteStatus {
                    existed: false,
                    ..first
                })
            }
            Provisioning::Error => return Err(failed(&first)),
            _ => {}
        }
        let mut wait = self.poll_first;
        let mut polls = 0u32;
        loop {
            let s = self.site_status(tenant_root, &req.url).await?;
            polls += 1;
            match s.status {
                Provisioning::Ready => {
                    tracing::info!(
                        message = "Site collection ready.",
                        site = %site_url,
                        existed,
                        polls,
                        waited_ms = started.elapsed().as_millis() as u64
                    );
                    return Ok(SiteStatus {
                        site_id: s.site_id.or(first.site_id),
                        status: Provisioning::Ready,
                        site_url: s.site_url,
                        existed,
                    });
                }
                Provisioning::Error => return Err(failed(&s)),
                Provisioning::NotFound if existed => {
                    return Err(ConnectorError::Rejected {
                        url: site_url,
                        status: 200,
                        code: "urlTaken".to_owned(),
                        message: "the URL is taken but no site collection is there (a subsite, a deleted site in the recycle bin, or a reserved path); choose another URL".to_owned(),
                    })
                }
                // Just created: the status may lag behind the create.
                Provisioning::NotFound | Provisioning::Provisioning | Provisioning::UrlExists => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ConnectorError::NotReady {
                    url: site_url,
                    message: format!(
                        "still provisioning after {} s ({polls} status checks)",
                        started.elapsed().as_secs()
                    ),
                });
            }
            tokio::time::sleep(wait.min(deadline - now)).await;
            wait = (wait * 2).min(self.poll_max);
        }
    }

    /// `GET {web_url}/_api/web`: the web at exactly this URL, `None` when there is
    /// none (404, or SharePoint answered with an ancestor web).
    pub async fn web(&self, web_url: &str) -> Result<Option<WebInfo>, ConnectorError> {
        let web_url = check_url(web_url, "The site")?;
        let url = api(&web_url, "web?$select=Id,Title,Url,ServerRelativeUrl");
        let Some(v) = self.get_opt(&url, "The site").await? else {
            return Ok(None);
        };
        let w = web_info(&v);
        let here = if w.server_relative_url.is_empty() {
            &w.url
        } else {
            &w.server_relative_url
        };
        if w.id.is_nil() || !same_path(here, &web_url) {
            return Ok(None);
        }
        Ok(Some(w))
    }

    /// The web at `web_url`, or `NotFound` naming it.
    async fn web_required(&self, web_url: &str, what: &str) -> Result<WebInfo, ConnectorError> {
        self.web(web_url)
            .await?
            .ok_or_else(|| ConnectorError::NotFound {
                what: what.to_owned(),
                location: web_url.to_owned(),
                hint: "there is no site at this URL (or it is still being provisioned); create it first".to_owned(),
            })
    }

    /// The subsite `leaf` of `parent_web_url`, created (`web/webs/add`, same
    /// permissions as the parent) unless it exists. Returns it and whether it existed.
    pub async fn ensure_subsite(
        &self,
        parent_web_url: &str,
        leaf: &str,
        title: &str,
        template: &str,
        lcid: u32,
    ) -> Result<(WebInfo, bool), ConnectorError> {
        let leaf = leaf.trim().trim_matches('/');
        if leaf.is_empty() || leaf.contains('/') {
            return Err(ConnectorError::Rejected {
                url: parent_web_url.to_owned(),
                status: 0,
                code: "invalidName".to_owned(),
                message: format!(
                    "'{leaf}' is not a subsite URL name (one path segment, not empty)"
                ),
            });
        }
        let parent = check_url(parent_web_url, "The parent site")?;
        let child = format!("{parent}/{}", encode_segment(leaf));
        if let Some(w) = self.web(&child).await? {
            return Ok((w, true));
        }
        // Checked so that the POST cannot land on an ancestor of a missing parent.
        self.web_required(&parent, "The parent site").await?;
        let url = api(&parent, "web/webs/add");
        let body = json!({"parameters": {
            "Url": leaf,
            "Title": title,
            "Description": "",
            "WebTemplate": template,
            "Language": lcid,
            "UseSamePermissionsAsParentSite": true,
        }});
        let resp = self
            .request(Method::POST, &url, ACCEPT, Some(&body), Replay::Unsafe)
            .await?;
        if resp.status().is_success() {
            let v = read_json(&url, resp).await?;
            let w = web_info(&v);
            if w.id.is_nil() {
                // Odd answer; the web itself is the truth.
                return Ok((self.web_required(&child, "The new subsite").await?, false));
            }
            tracing::info!(message = "Subsite created.", site = %child);
            return Ok((w, false));
        }
        let f = Failure::read(&url, resp).await;
        let exists = is_already_exists(&f);
        if exists || f.status >= 500 {
            // Lost a race with another worker, or the answer was lost.
            if let Some(w) = self.web(&child).await? {
                return Ok((w, exists));
            }
        }
        Err(f.into_error("The parent site"))
    }

    /// Document libraries of a web (`RootFolder` expanded).
    async fn libraries(&self, web_url: &str) -> Result<Vec<LibraryInfo>, ConnectorError> {
        let url = api(
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

    /// The library titled `title` — or whose URL name is `title`, so "Shared
    /// Documents" finds the default "Documents" — created (BaseTemplate 101) unless it
    /// exists. Returns it and whether it existed.
    pub async fn ensure_library(
        &self,
        web_url: &str,
        title: &str,
    ) -> Result<(LibraryInfo, bool), ConnectorError> {
        let title = title.trim();
        if title.is_empty() {
            return Err(ConnectorError::Rejected {
                url: web_url.to_owned(),
                status: 0,
                code: "invalidName".to_owned(),
                message: "a library needs a title".to_owned(),
            });
        }
        let web_url = check_url(web_url, "The site")?;
        // Checked so that the POST cannot land on an ancestor of a missing web.
        self.web_required(&web_url, "The site").await?;
        let find = |libs: &[LibraryInfo]| {
            libs.iter()
                .find(|l| l.title.eq_ignore_ascii_case(title))
                .or_else(|| {
                    libs.iter().find(|l| {
                        l.root_folder
                            .trim_end_matches('/')
                            .rsplit('/')
                            .next()
                            .is_some_and(|n| n.eq_ignore_ascii_case(title))
                    })
                })
                .cloned()
        };
        if let Some(l) = find(&self.libraries(&web_url).await?) {
            return Ok((l, true));
        }
        let url = api(&web_url, "web/lists");
        let body = json!({"BaseTemplate": 101, "Title": title});
        let resp = self
            .request(Method::POST, &url, ACCEPT, Some(&body), Replay::Unsafe)
            .await?;
        if resp.status().is_success() {
            let v = read_json(&url, resp).await?;
            let id = guid_field(entity(&v), "Id");
            let libs = self.libraries(&web_url).await?;
            let made = libs
                .iter()
                .find(|l| Some(l.id) == id)
                .cloned()
                .or_else(|| find(&libs))
                .ok_or_else(|| ConnectorError::Protocol {
                    url: redact_url(&url),
                    message: format!("the library '{title}' was created but is not listed"),
                })?;
            tracing::info!(message = "Library created.", site = %web_url, library = %title);
            return Ok((made, false));
        }
        let f = Failure::read(&url, resp).await;
        let exists = is_already_exists(&f);
        if exists || f.status >= 500 {
            if let Some(l) = find(&self.libraries(&web_url).await?) {
                return Ok((l, exists));
            }
        }
        if exists {
            return Err(ConnectorError::Rejected {
                url: web_url,
                status: f.status,
                code: "nameAlreadyExists".to_owned(),
                message: format!(
                    "a list named '{title}' (or using its URL) exists and is not a document library: {}",
                    f.message
                ),
            });
        }
        Err(f.into_error("The site"))
    }

    /// `GET {tenant_root}/_api/HubSites`: every hub of the tenant.
    pub async fn hub_sites(&self, tenant_root: &str) -> Result<Vec<HubSite>, ConnectorError> {
        let root = check_url(tenant_root, "The tenant")?;
        let url = api(&self::tenant_root(&root), "HubSites");
        let vals = self.get_all(&url, "The tenant").await?;
        Ok(vals.iter().filter_map(hub_from).collect())
    }

    /// `GET {site_url}/_api/site`: the site collection at exactly `site_url` (a
    /// subsite URL or a missing site is `NotFound`, naming the nearest site collection).
    pub async fn site_info(&self, site_url: &str) -> Result<SiteInfo, ConnectorError> {
        let site_url = check_url(site_url, "The site collection")?;
        let url = api(
            &site_url,
            "site?$select=Id,Url,ServerRelativeUrl,IsHubSite,HubSiteId",
        );
        let not_found = |hint: String| ConnectorError::NotFound {
            what: "The site collection".to_owned(),
            location: site_url.clone(),
            hint,
        };
        let v = self
            .get_opt(&url, "The site collection")
            .await?
            .ok_or_else(|| {
                not_found(
                    "there is no site collection at this URL (or it is still being provisioned)"
                        .to_owned(),
                )
            })?;
        let e = entity(&v);
        let id = guid_field(e, "Id").ok_or_else(|| ConnectorError::Protocol {
            url: redact_url(&url),
            message: "the site answer has no Id".to_owned(),
        })?;
        let got = str_field(e, "Url");
        let here = match str_field(e, "ServerRelativeUrl") {
            "" => got,
            s => s,
        };
        if !same_path(here, &site_url) {
            return Err(not_found(format!(
                "this is not the URL of a site collection; the nearest one is {}",
                if got.is_empty() { here } else { got }
            )));
        }
        Ok(SiteInfo {
            id,
            url: if got.is_empty() {
                site_url.clone()
            } else {
                got.to_owned()
            },
            is_hub: bool_field(e, "IsHubSite"),
            hub_site_id: non_nil(guid_field(e, "HubSiteId")),
        })
    }

    /// The hub registered for this site collection.
    async fn hub_of(&self, info: &SiteInfo) -> Result<HubSite, ConnectorError> {
        let hubs = self.hub_sites(&tenant_root(&info.url)).await?;
        Ok(hubs
            .into_iter()
            .find(|h| h.site_id == Some(info.id) || same_path(&h.site_url, &info.url))
            .unwrap_or_else(|| HubSite {
                // Not listed yet (the hub list can lag): what the site itself says.
                id: info.hub_site_id.unwrap_or(info.id),
                title: String::new(),
                site_url: info.url.clone(),
                site_id: Some(info.id),
            }))
    }

    /// Registers the site collection as a hub (`POST _api/site/RegisterHubSite`),
    /// unless it is one already. Returns the hub and whether it existed.
    pub async fn register_hub(&self, site_url: &str) -> Result<(HubSite, bool), ConnectorError> {
        let info = self.site_info(site_url).await?;
        if info.is_hub {
            return Ok((self.hub_of(&info).await?, true));
        }
        let url = api(
            &check_url(site_url, "The site collection")?,
            "site/RegisterHubSite",
        );
        let resp = self
            .request(Method::POST, &url, ACCEPT, None, Replay::Unsafe)
            .await?;
        if resp.status().is_success() {
            let v = read_json(&url, resp).await?;
            let hub = match hub_from(&v) {
                Some(h) => h,
                None => self.hub_of(&self.site_info(site_url).await?).await?,
            };
            tracing::info!(message = "Site registered as a hub.", site = %info.url, hub_id = %hub.id);
            return Ok((hub, false));
        }
        let f = Failure::read(&url, resp).await;
        let exists = is_already_exists(&f);
        if exists || f.status >= 500 {
            let again = self.site_info(site_url).await?;
            if again.is_hub {
                return Ok((self.hub_of(&again).await?, exists));
            }
        }
        Err(f.into_error("The site collection"))
    }

    /// Associates the site collection with the hub `hub_id`
    /// (`POST _api/site/JoinHubSite('{hub_id}')`); the all-zero GUID leaves its hub.
    /// Nothing is sent when the site is already where it should be.
    pub async fn join_hub(&self, site_url: &str, hub_id: Uuid) -> Result<(), ConnectorError> {
        let info = self.site_info(site_url).await?;
        if info.hub_site_id == non_nil(Some(hub_id)) {
            return Ok(());
        }
        let url = api(
            &check_url(site_url, "The site collection")?,
            &format!("site/JoinHubSite('{hub_id}')"),
        );
        let resp = self
            .request(Method::POST, &url, ACCEPT, None, Replay::Safe)
            .await?;
        if resp.status().is_success() {
            tracing::info!(message = "Site hub association changed.", site = %info.url, hub_id = %hub_id);
            return Ok(());
        }
        let f = Failure::read(&url, resp).await;
        if f.status == 404 {
            return Err(ConnectorError::NotFound {
                what: format!("The hub site {hub_id}"),
                location: tenant_root(&info.url),
                hint: format!("pick a hub from the tenant's hub list ({})", f.message),
            });
        }
        Err(f.into_error("The site collection"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_roots() {
        let check =
            |input: &str, expected: &str| assert_eq!(tenant_root(input), expected, "{input}");
        check(
            "https://contoso.sharepoint.com/sites/x",
            "https://contoso.sharepoint.com",
        );
        check(
            "https://contoso.sharepoint.com",
            "https://contoso.sharepoint.com",
        );
        check(
            "https://Contoso.SharePoint.com/",
            "https://contoso.sharepoint.com",
        );
        check("http://127.0.0.1:8080/sites/x/sub", "http://127.0.0.1:8080");
        check(
            "https://contoso.sharepoint.com:443/sites/x",
            "https://contoso.sharepoint.com",
        );
        check("not a url/x", "not a url/x");
        assert_eq!(
            sharepoint_scope("https://contoso.sharepoint.com/sites/x"),
            "https://contoso.sharepoint.com/.default"
        );
    }

    #[test]
    fn paths_compare_decoded_and_case_insensitive() {
        let check = |a: &str, b: &str, same: bool| assert_eq!(same_path(a, b), same, "{a} {b}");
        check("/sites/A b", "http://h/sites/a%20B/", true);
        check("/", "http://h", true);
        check("/sites/x", "http://h/sites/x/sub", false);
        check("http://h/sites/x", "https://h/sites/X", true);
    }

    #[test]
    fn status_answers_of_both_shapes() {
        let check = |v: Value, status: Provisioning, id: Option<&str>, url: &str| {
            let s = SitesClient::status_from("u", "http://asked", &v).unwrap();
            assert_eq!(s.status, status);
            assert_eq!(s.site_id, id.map(|i| Uuid::try_parse(i).unwrap()));
            assert_eq!(s.site_url, url);
        };
        let g = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";
        check(
            json!({"SiteId": g, "SiteStatus": 2, "SiteUrl": "http://x/sites/a"}),
            Provisioning::Ready,
            Some(g),
            "http://x/sites/a",
        );
        check(
            json!({"d": {"Create": {"__metadata": {}, "SiteId": "", "SiteStatus": 4, "SiteUrl": ""}}}),
            Provisioning::UrlExists,
            None,
            "http://asked",
        );
        check(
            json!({"d": {"Status": {"SiteId": "00000000-0000-0000-0000-000000000000", "SiteStatus": 0, "SiteUrl": ""}}}),
            Provisioning::NotFound,
            None,
            "http://asked",
        );
        assert!(SitesClient::status_from("u", "a", &json!({"SiteStatus": 9})).is_err());
        assert!(SitesClient::status_from("u", "a", &json!({})).is_err());
    }

    #[test]
    fn hubs_of_both_shapes() {
        let g = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9";
        let light = json!({"ID": g, "SiteId": g, "SiteUrl": "http://x/sites/h", "Title": "H"});
        let verbose = json!({"d": {"__metadata": {"type": "SP.HubSite"}, "ID": g, "SiteId": g, "SiteUrl": "http://x/sites/h", "Title": "H"}});
        assert_eq!(hub_from(&light), hub_from(&verbose));
        assert_eq!(hub_from(&light).map(|h| h.title), Some("H".to_owned()));
        assert_eq!(hub_from(&json!({"Title": "no id"})), None);
    }
}
