//! The emulator's configuration: one serde struct, every field documented, explicit defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::seed::Farm;

/// Everything one emulator instance (one host) needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory holding the metadata store (`sim.redb`), file content (`blobs/`) and
    /// partial uploads (`uploads/`). Created if missing. Default: `./ferry-sim-data`.
    pub data_dir: PathBuf,
    /// Base URL clients use to reach this instance (`webUrl`, `uploadUrl`, `__next`
    /// links are built from it). Default: `None` = `http://{bound address}`.
    pub public_url: Option<String>,
    /// Hostname used in Graph site ids (`{hostname},{siteGuid},{webGuid}`) and accepted in
    /// `/sites/{hostname}:/path`. Default: `None` = the host of `public_url`.
    pub hostname: Option<String>,
    /// Directory (tenant) id served by the identity endpoints. Also accepted: `tenant_domain`,
    /// `common`, `organizations`. Default: a fixed GUID.
    pub tenant_id: String,
    /// Tenant domain name accepted in identity URLs. Default: `contoso.onmicrosoft.com`.
    pub tenant_domain: String,
    /// Registered applications (client credentials, certificate JWT, ROPC, device code).
    /// Default: one app `ferry` / `ferry-secret`.
    pub apps: Vec<AppRegistration>,
    /// Certificates registered for apps: assertions from these apps are signature-checked.
    /// Default: none.
    pub app_certificates: Vec<AppCertificate>,
    /// Users for Basic auth, ROPC and device-code approval. Default: `someone@example.com` /
    /// `password`.
    pub users: Vec<User>,
    /// Lifetime of issued access tokens, seconds. Default: 3600.
    pub token_lifetime_secs: u64,
    /// Resource-unit throttling (Graph cost model). Default: off.
    pub throttle: ThrottleConfig,
    /// Injected latency and server errors. Default: off.
    pub faults: FaultConfig,
    /// Seconds a site created by `SPSiteManager/create` stays in status 1 (provisioning)
    /// before it becomes 2 (ready). Default: 0.
    pub provisioning_delay_secs: f64,
    /// Seed for every pseudo-random choice the emulator makes that tests may rely on
    /// (fault injection, generated seed content). Default: 42.
    pub seed: u64,
    /// Declarative farm created on first start (when the data directory holds no state).
    /// Default: none (only the root site collection with its `Documents` library).
    pub farm: Option<Farm>,
    /// Local folders imported into libraries on first start: `(directory, library
    /// server-relative URL)`. Default: none.
    pub imports: Vec<Import>,
    /// Largest accepted simple-upload (`PUT .../content`) body, bytes. Default: 250 MiB.
    pub max_simple_upload_bytes: u64,
    /// Largest accepted file (upload session total), bytes. Default: 250 GiB.
    pub max_file_bytes: u64,
    /// Largest accepted JSON/form request body, bytes. Default: 4 MiB.
    pub max_json_bytes: usize,
    /// Lifetime of an upload session after its last activity, seconds. Default: 3600.
    pub upload_session_lifetime_secs: u64,
    /// Default page size of `.../children`. Default: 200 (Graph's).
    pub children_page_size: usize,
    /// Default page size of `.../delta`. Default: 200.
    pub delta_page_size: usize,
    /// Default page size of SharePoint REST list items. Default: 100 (SharePoint's).
    pub items_page_size: usize,
    /// Polling interval announced by the device-code endpoint, seconds. Default: 1.
    pub device_code_interval_secs: u64,
    /// Answer `GET .../content` with `302` to a pre-authorised URL (Graph's behaviour)
    /// instead of streaming directly. Default: true.
    pub download_redirect: bool,
    /// Reject upload-session fragments that are not a multiple of 327,680 bytes (except
    /// the last), as Microsoft documents. Some clients (e.g. office365-rest-python-client's
    /// default 2,000,000-byte chunks) break that rule; set false to tolerate them.
    /// Default: true.
    pub strict_fragment_multiple: bool,
    /// When set, the `/_sim/...` admin surface requires `Authorization: Bearer {admin_token}`
    /// (for rehearsal instances reachable by others). Default: none (open, for tests).
    pub admin_token: Option<String>,
    /// Refuse `SPSiteManager/create` without an `Owner` when the caller's token is
    /// app-only (client credentials), as SharePoint Online does (Microsoft: "If you use an
    /// app-only context to create the site collection the Owner property is required").
    /// The refusal is the service's: HTTP 200 with `SiteStatus` 3 and empty
    /// `SiteId`/`SiteUrl`, nothing created. Default: true.
    pub require_owner_for_app_only: bool,
    /// Answer `{url}/_api/...` (and `{url}/_api/v2.0/...`) for a URL that is not an
    /// existing web (a missing site collection under `/sites/` or `/teams/`, or a
    /// missing subsite) with its nearest existing ancestor web, down to the tenant root:
    /// the emulator's historical behaviour. SharePoint Online answers 404
    /// (`System.IO.FileNotFoundException`, "File Not Found.") for a missing site
    /// collection; set false for that (and for 404 on missing subsites too).
    /// Default: false (SharePoint Online's answer); true brings back the old fallback.
    pub nearest_web_fallback: bool,
}

/// An application registered in the emulated Entra ID tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRegistration {
    /// Application (client) id.
    pub client_id: String,
    /// Client secret; `None` = a public client or certificate-only app.
    #[serde(default)]
    pub secret: Option<String>,
    /// SHA-1 thumbprint (hex or base64url `x5t`) of a registered certificate. When set,
    /// a `client_assertion` JWT must carry it in its `x5t` header. On its own it does not
    /// verify signatures (see `certificate_pem`).
    #[serde(default)]
    pub certificate_thumbprint: Option<String>,
}

/// A certificate registered for an app (its public half). With one registered, the
/// app's `client_assertion` JWTs must carry this certificate's SHA-1 thumbprint in `x5t`
/// (when they send one) and their RS256 signature is verified with its public key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppCertificate {
    /// The app (client id) the certificate belongs to.
    pub client_id: String,
    /// The certificate, PEM text (`-----BEGIN CERTIFICATE-----`).
    pub certificate_pem: String,
}

/// A user of the emulated directory / SharePoint Server farm.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User principal name, e.g. `someone@example.com`.
    pub upn: String,
    /// Password for Basic auth and ROPC.
    pub password: String,
    /// Display name shown in `createdBy`/`Author`. Default: the UPN.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// Graph-style throttling: a resource-unit budget per app per minute.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Resource units each app (client id, or user for Basic auth) may spend per minute
    /// window. `None` = no throttling. Graph's cost model: 1 RU single-item GET/download,
    /// 2 RU multi-item query/create/update/delete/upload, 5 RU permissions.
    pub ru_per_minute: Option<u64>,
    /// Length of the budget window, seconds. Default 60 (0 is read as 60).
    pub window_secs: u64,
}

/// Injected faults. Deterministic for a given `Config::seed` and request order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Latency added to every API request, milliseconds. Default 0.
    pub latency_ms: u64,
    /// Share (0.0–1.0) of API requests answered `503 Service Unavailable` with
    /// `Retry-After`. Default 0.
    pub error_503_share: f64,
    /// Share (0.0–1.0) of API requests answered `500 Internal Server Error`. Default 0.
    pub error_500_share: f64,
    /// `Retry-After` seconds sent with injected 503s. Default 0, sent as 1 (the minimum).
    pub retry_after_secs: u64,
    /// Also inject faults into pre-authorised transfer URLs (upload-session fragments,
    /// download URLs), which are otherwise exempt. Default false.
    pub transfer_urls: bool,
}

/// One local folder imported into a library at first start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Import {
    /// Local directory to copy (recursively).
    pub dir: PathBuf,
    /// Server-relative URL of the target library (or a folder in it), e.g.
    /// `/sites/hr/Shared Documents`.
    pub library_url: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("ferry-sim-data"),
            public_url: None,
            hostname: None,
            tenant_id: "7b0a9c3e-5d1f-4e2a-8b6c-0f9e8d7c6b5a".to_owned(),
            tenant_domain: "contoso.onmicrosoft.com".to_owned(),
            apps: vec![AppRegistration {
                client_id: "ferry".to_owned(),
                secret: Some("ferry-secret".to_owned()),
                certificate_thumbprint: None,
            }],
            app_certificates: Vec::new(),
            users: vec![User {
                upn: "someone@example.com".to_owned(),
                password: "password".to_owned(),
                display_name: None,
            }],
            token_lifetime_secs: 3600,
            throttle: ThrottleConfig::default(),
            faults: FaultConfig::default(),
            provisioning_delay_secs: 0.0,
            seed: 42,
            farm: None,
            imports: Vec::new(),
            max_simple_upload_bytes: 250 * 1024 * 1024,
            max_file_bytes: 250 * 1024 * 1024 * 1024,
            max_json_bytes: 4 * 1024 * 1024,
            upload_session_lifetime_secs: 3600,
            children_page_size: 200,
            delta_page_size: 200,
            items_page_size: 100,
            device_code_interval_secs: 1,
            download_redirect: true,
            strict_fragment_multiple: true,
            admin_token: None,
            require_owner_for_app_only: true,
            nearest_web_fallback: false,
        }
    }
}

/// Runtime-adjustable settings (admin `PUT /_sim/settings`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Throttling budget.
    pub throttle: ThrottleConfig,
    /// Injected faults.
    pub faults: FaultConfig,
    /// Provisioning delay for new sites, seconds.
    pub provisioning_delay_secs: f64,
}
