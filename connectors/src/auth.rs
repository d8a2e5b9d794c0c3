//! Sign-in: Microsoft Entra ID tokens for the destination (client secret,
//! certificate, username + password, device code) and the encrypted credential cache
//! that remembers refresh tokens and SharePoint Server passwords per site.
//!
//! Secrets travel as [`Secret`], whose `Debug` prints `Secret(***)`; nothing here logs
//! a secret, a token or a password.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::aead;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use crate::http::{read_json, Failure, Http, HttpConfig, HttpStats, Replay};
use crate::ConnectorError;

/// A secret string (password, client secret, token). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; call only where it is sent or encrypted.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// How Ferry signs in to the destination tenant.
#[derive(Clone, Debug)]
pub enum DestinationSignIn {
    /// App-only, client credentials with a secret (unattended fleets).
    ClientSecret {
        tenant: String,
        client_id: String,
        secret: Secret,
    },
    /// App-only, client credentials with a certificate: an RS256 JWT assertion signed
    /// with `key_pem` (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`), its `x5t`
    /// header the SHA-1 thumbprint of `cert_pem`.
    Certificate {
        tenant: String,
        client_id: String,
        key_pem: PathBuf,
        cert_pem: PathBuf,
    },
    /// Delegated, username + password (ROPC), as SPMT offers.
    Password {
        tenant: String,
        client_id: String,
        username: String,
        password: Secret,
    },
    /// Delegated, device code: the user approves in a browser elsewhere.
    DeviceCode { tenant: String, client_id: String },
}

impl DestinationSignIn {
    fn tenant(&self) -> &str {
        match self {
            Self::ClientSecret { tenant, .. }
            | Self::Certificate { tenant, .. }
            | Self::Password { tenant, .. }
            | Self::DeviceCode { tenant, .. } => tenant,
        }
    }
    fn client_id(&self) -> &str {
        match self {
            Self::ClientSecret { client_id, .. }
            | Self::Certificate { client_id, .. }
            | Self::Password { client_id, .. }
            | Self::DeviceCode { client_id, .. } => client_id,
        }
    }
    fn user(&self) -> Option<&str> {
        match self {
            Self::Password { username, .. } => Some(username),
            _ => None,
        }
    }
}

/// What the device-code flow shows the user.
#[derive(Clone, Debug)]
pub struct DeviceCodePrompt {
    pub user_code: String,
    pub verification_uri: String,
    /// The server's ready-made sentence ("To sign in, use a web browser to open…").
    pub message: String,
    pub expires_in: Duration,
}

/// Anything that hands out access tokens for the destination.
pub trait TokenSource: Send + Sync {
    /// A valid access token.
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, ConnectorError>> + Send + '_>>;
    /// The server rejected the last token: forget it so the next call signs in again.
    fn invalidate(&self) {}
}

/// A fixed token (tests, or a token obtained elsewhere).
#[derive(Clone, Debug)]
pub struct StaticToken(pub Secret);

impl TokenSource for StaticToken {
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, ConnectorError>> + Send + '_>> {
        let t = self.0.expose().to_owned();
        Box::pin(async move { Ok(t) })
    }
}

type PromptFn = Arc<dyn Fn(&DeviceCodePrompt) + Send + Sync>;

#[derive(Debug)]
struct Cached {
    access: Secret,
    /// Renew after this instant (shortly before expiry).
    renew_at: Instant,
}

/// Gets and caches access tokens from Entra ID's v2 token endpoint.
///
/// Concurrent callers share one sign-in (the state is behind an async mutex). The
/// access token is reused until 5 minutes (or a tenth of its lifetime, whichever is
/// less) before it expires; then a refresh token is used if one was issued, else the
/// flow runs again (device code prompts again only when no refresh token is left).
/// With a [`CredentialCache`], refresh tokens survive restarts.
pub struct TokenProvider {
    http: Http,
    authority: String,
    scope: String,
    sign_in: DestinationSignIn,
    cache: Option<CredentialCache>,
    prompt: PromptFn,
    state: tokio::sync::Mutex<Option<Cached>>,
    refresh: Mutex<Option<Secret>>,
    invalidated: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("authority", &self.authority)
            .field("scope", &self.scope)
            .field("sign_in", &self.sign_in)
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    /// `authority`: `https://login.microsoftonline.com` or the emulator's base URL;
    /// `scope`: e.g. `https://graph.microsoft.com/.default` (add `offline_access` for
    /// delegated flows to get refresh tokens; it is added automatically for them).
    pub fn new(
        authority: &str,
        scope: &str,
        sign_in: DestinationSignIn,
        cache: Option<CredentialCache>,
    ) -> Result<Self, ConnectorError> {
        Self::with_http(authority, scope, sign_in, cache, HttpConfig::default())
    }

    /// As [`TokenProvider::new`] with explicit HTTP settings.
    pub fn with_http(
        authority: &str,
        scope: &str,
        sign_in: DestinationSignIn,
        cache: Option<CredentialCache>,
        http: HttpConfig,
    ) -> Result<Self, ConnectorError> {
        Ok(Self {
            http: Http::new(http)?,
            authority: authority.trim_end_matches('/').to_owned(),
            scope: scope.to_owned(),
            sign_in,
            cache,
            prompt: Arc::new(|p: &DeviceCodePrompt| eprintln!("{}", p.message)),
            state: tokio::sync::Mutex::new(None),
            refresh: Mutex::new(None),
            invalidated: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Replaces what the device-code flow does with its prompt (default: print the
    /// message to stderr).
    pub fn on_device_code(mut self, f: impl Fn(&DeviceCodePrompt) + Send + Sync + 'static) -> Self {
        self.prompt = Arc::new(f);
        self
    }

    /// Counters of the token endpoint traffic.
    pub fn stats(&self) -> Arc<HttpStats> {
        self.http.stats.clone()
    }

    /// The credential-cache key of this sign-in: authority, tenant, client and user.
    pub fn cache_target(&self) -> String {
        format!(
            "entra:{}/{}|{}|{}",
            self.authority.to_lowercase(),
            self.sign_in.tenant().to_lowercase(),
            self.sign_in.client_id(),
            self.sign_in.user().unwrap_or("").to_lowercase()
        )
    }

    fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority,
            self.sign_in.tenant()
        )
    }

    fn delegated_scope(&self) -> String {
        if self.scope.split(' ').any(|s| s == "offline_access") {
            self.scope.clone()
        } else {
            format!("{} offline_access", self.scope)
        }
    }

    /// A valid access token, signing in if needed.
    pub async fn token(&self) -> Result<String, ConnectorError> {
        let mut state = self.state.lock().await;
        if self
            .invalidated
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            *state = None;
        }
        if let Some(c) = state.as_ref() {
            if Instant::now() < c.renew_at {
                return Ok(c.access.expose().to_owned());
            }
        }
        let refresh = self.current_refresh_token();
        let grant = match refresh {
            Some(rt) => match self.redeem_refresh_token(&rt).await {
                Ok(g) => g,
                Err(ConnectorError::Auth { message, .. }) => {
                    tracing::info!(message = "Refresh token refused; signing in again.", reason = %message);
                    self.forget_refresh_token();
                    self.sign_in().await?
                }
                Err(e) => return Err(e),
            },
            None => self.sign_in().await?,
        };
        let access = grant.access.expose().to_owned();
        if let Some(rt) = grant.refresh {
            self.store_refresh_token(rt);
        }
        let margin = Duration::from_secs(300).min(grant.expires_in / 10);
        *state = Some(Cached {
            access: grant.access,
            renew_at: Instant::now() + grant.expires_in.saturating_sub(margin),
        });
        Ok(access)
    }

    fn current_refresh_token(&self) -> Option<Secret> {
        if let Some(rt) = self
            .refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Some(rt);
        }
        let cache = self.cache.as_ref()?;
        match cache.get(&self.cache_target()) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(message = "Cannot read the credential cache.", error = %e);
                None
            }
        }
    }

    fn store_refresh_token(&self, rt: Secret) {
        if let Some(cache) = &self.cache {
            if let Err(e) = cache.put(&self.cache_target(), &rt) {
                tracing::warn!(message = "Cannot write the credential cache.", error = %e);
            }
        }
        *self.refresh.lock().unwrap_or_else(|e| e.into_inner()) = Some(rt);
    }

    fn forget_refresh_token(&self) {
        *self.refresh.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(cache) = &self.cache {
            let _ = cache.forget(&self.cache_target());
        }
    }

    async fn redeem_refresh_token(&self, rt: &Secret) -> Result<Grant, ConnectorError> {
        let form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", self.sign_in.client_id().to_owned()),
            ("refresh_token", rt.expose().to_owned()),
            ("scope", self.delegated_scope()),
        ];
        let form = self.add_client_auth(form)?;
        self.post_token(form).await
    }

    /// Confidential clients authenticate on every grant (secret or assertion).
    fn add_client_auth(
        &self,
        mut form: Vec<(&'static str, String)>,
    ) -> Result<Vec<(&'static str, String)>, ConnectorError> {
        match &self.sign_in {
            DestinationSignIn::ClientSecret { secret, .. } => {
                form.push(("client_secret", secret.expose().to_owned()));
            }
            DestinationSignIn::Certificate {
                client_id,
                key_pem,
                cert_pem,
                ..
            } => {
                let jwt = client_assertion(client_id, &self.token_url(), key_pem, cert_pem)?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ));
                form.push(("client_assertion", jwt));
            }
            _ => {}
        }
        Ok(form)
    }

    async fn sign_in(&self) -> Result<Grant, ConnectorError> {
        let client_id = self.sign_in.client_id().to_owned();
        match &self.sign_in {
            DestinationSignIn::ClientSecret { .. } | DestinationSignIn::Certificate { .. } => {
                let form = vec![
                    ("grant_type", "client_credentials".to_owned()),
                    ("client_id", client_id),
                    ("scope", self.scope.clone()),
                ];
                let form = self.add_client_auth(form)?;
                self.post_token(form).await
            }
            DestinationSignIn::Password {
                username, password, ..
            } => {
                let form = vec![
                    ("grant_type", "password".to_owned()),
                    ("client_id", client_id),
                    ("username", username.clone()),
                    ("password", password.expose().to_owned()),
                    ("scope", self.delegated_scope()),
                ];
                self.post_token(form).await
            }
            DestinationSignIn::DeviceCode { .. } => self.device_code().await,
        }
    }

    async fn device_code(&self) -> Result<Grant, ConnectorError> {
        let url = format!(
            "{}/{}/oauth2/v2.0/devicecode",
            self.authority,
            self.sign_in.tenant()
        );
        let form = vec![
            ("client_id", self.sign_in.client_id().to_owned()),
            ("scope", self.delegated_scope()),
        ];
        let resp = self
            .http
            .send(&url, Replay::Safe, || {
                self.http.client.post(&url).form(&form)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(auth_failure(Failure::read(&url, resp).await));
        }
        let v = read_json(&url, resp).await?;
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let n = |k: &str| v.get(k).and_then(json_u64);
        let device_code = s("device_code");
        if device_code.is_empty() {
            return Err(ConnectorError::Protocol {
                url,
                message: "the device-code answer has no device_code".to_owned(),
            });
        }
        let expires_in = Duration::from_secs(n("expires_in").unwrap_or(900));
        let mut interval = Duration::from_secs(n("interval").unwrap_or(5).max(1));
        let prompt = DeviceCodePrompt {
            user_code: s("user_code"),
            verification_uri: s("verification_uri"),
            message: {
                let m = s("message");
                if m.is_empty() {
                    format!(
                        "To sign in, use a web browser to open the page {} and enter the code {} to authenticate.",
                        s("verification_uri"),
                        s("user_code")
                    )
                } else {
                    m
                }
            },
            expires_in,
        };
        (self.prompt)(&prompt);
        let deadline = Instant::now() + expires_in;
        let token_url = self.token_url();
        let form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:device_code".to_owned(),
            ),
            ("client_id", self.sign_in.client_id().to_owned()),
            ("device_code", device_code),
        ];
        loop {
            tokio::time::sleep(interval).await;
            if Instant::now() > deadline {
                return Err(ConnectorError::Auth {
                    target: token_url,
                    message: "the device code expired before the sign-in was approved".to_owned(),
                });
            }
            match self.post_token(form.clone()).await {
                Ok(g) => return Ok(g),
                Err(ConnectorError::Auth { message, target }) => {
                    let code = message.split(':').next().unwrap_or("").trim().to_owned();
                    match code.as_str() {
                        "authorization_pending" => continue,
                        "slow_down" => {
                            interval += Duration::from_secs(5);
                            continue;
                        }
                        "expired_token" | "code_expired" => {
                            return Err(ConnectorError::Auth {
                                target,
                                message: "the device code expired before the sign-in was approved; sign in again".to_owned(),
                            })
                        }
                        _ => return Err(ConnectorError::Auth { target, message }),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn post_token(&self, form: Vec<(&'static str, String)>) -> Result<Grant, ConnectorError> {
        let url = self.token_url();
        let resp = self
            .http
            .send(&url, Replay::Safe, || {
                self.http.client.post(&url).form(&form)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(auth_failure(Failure::read(&url, resp).await));
        }
        let v = read_json(&url, resp).await?;
        let access = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ConnectorError::Protocol {
                url: url.clone(),
                message: "the token answer has no access_token".to_owned(),
            })?;
        Ok(Grant {
            access: Secret::new(access),
            refresh: v
                .get("refresh_token")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(Secret::new),
            expires_in: Duration::from_secs(v.get("expires_in").and_then(json_u64).unwrap_or(3600)),
        })
    }
}

impl TokenSource for TokenProvider {
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, ConnectorError>> + Send + '_>> {
        Box::pin(TokenProvider::token(self))
    }
    fn invalidate(&self) {
        self.invalidated
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

struct Grant {
    access: Secret,
    refresh: Option<Secret>,
    expires_in: Duration,
}

/// OAuth errors become `Auth` with the message `"{error}: {description}"` so that the
/// device-code loop can read the error code back; server trouble stays transient.
fn auth_failure(f: Failure) -> ConnectorError {
    if f.status >= 500 || f.status == 429 {
        return f.into_error("the token endpoint");
    }
    ConnectorError::Auth {
        target: f.url,
        message: if f.code.is_empty() {
            f.message
        } else {
            format!("{}: {}", f.code, f.message)
        },
    }
}

fn json_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The blocks of a PEM file with the given label, as DER.
fn pem_blocks(text: &str, label: &str) -> Vec<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(&begin) {
        let after = &rest[i + begin.len()..];
        let Some(j) = after.find(&end) else { break };
        let b64: String = after[..j].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &after[j + end.len()..];
    }
    out
}

/// An RS256 client-assertion JWT for the certificate credential.
fn client_assertion(
    client_id: &str,
    audience: &str,
    key_pem: &Path,
    cert_pem: &Path,
) -> Result<String, ConnectorError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| ConnectorError::Io {
            location: p.display().to_string(),
            source: e,
        })
    };
    let bad = |p: &Path, what: &str| ConnectorError::Auth {
        target: p.display().to_string(),
        message: what.to_owned(),
    };
    let key_text = read(key_pem)?;
    let key = if let Some(der) = pem_blocks(&key_text, "PRIVATE KEY").into_iter().next() {
        ring::signature::RsaKeyPair::from_pkcs8(&der)
    } else if let Some(der) = pem_blocks(&key_text, "RSA PRIVATE KEY").into_iter().next() {
        ring::signature::RsaKeyPair::from_der(&der)
    } else {
        return Err(bad(
            key_pem,
            "no PEM private key found (PRIVATE KEY or RSA PRIVATE KEY)",
        ));
    }
    .map_err(|e| {
        bad(
            key_pem,
            &format!("the private key is not a usable RSA key: {e}"),
        )
    })?;
    let cert_text = read(cert_pem)?;
    let cert = pem_blocks(&cert_text, "CERTIFICATE")
        .into_iter()
        .next()
        .ok_or_else(|| bad(cert_pem, "no PEM certificate found"))?;
    let thumb = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert);
    let header = serde_json::json!({
        "alg": "RS256",
        "typ": "JWT",
        "x5t": URL_SAFE_NO_PAD.encode(thumb.as_ref()),
    });
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now,
        "iat": now,
        "exp": now + 600,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| bad(key_pem, "signing the client assertion failed"))?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// Encrypted, per-target store of secrets (refresh tokens, SharePoint Server
/// passwords), so that a site signed in to once is not prompted for again.
///
/// File layout: `{state_dir}/credentials.bin` = `FERRYCC1` ‖ 12-byte nonce ‖
/// ChaCha20-Poly1305(JSON map target → secret). The 32-byte key comes from
/// `FERRY_CACHE_KEY` (base64 of 32 bytes) or from `{state_dir}/credentials.key`,
/// created with mode 0600 on first use. Both files are written atomically (temp
/// file + rename) with mode 0600. Targets are encrypted too.
#[derive(Clone)]
pub struct CredentialCache {
    path: PathBuf,
    key: Arc<aead::LessSafeKey>,
    lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const CACHE_MAGIC: &[u8; 8] = b"FERRYCC1";
const CACHE_AAD: &[u8] = b"ferry credential cache v1";

impl CredentialCache {
    /// Opens (or prepares) the cache in `state_dir`, creating the key file if needed.
    pub fn open(state_dir: impl AsRef<Path>) -> Result<Self, ConnectorError> {
        let dir = state_dir.as_ref();
        let io = |p: &Path, e| ConnectorError::Io {
            location: p.display().to_string(),
            source: e,
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let key_bytes = match std::env::var("FERRY_CACHE_KEY") {
            Ok(v) if !v.trim().is_empty() => {
                decode_key(v.trim()).ok_or_else(|| ConnectorError::Auth {
                    target: "FERRY_CACHE_KEY".to_owned(),
                    message: "the cache key must be base64 of 32 bytes".to_owned(),
                })?
            }
            _ => {
                let kp = dir.join("credentials.key");
                match std::fs::read_to_string(&kp) {
                    Ok(t) => decode_key(t.trim()).ok_or_else(|| ConnectorError::Auth {
                        target: kp.display().to_string(),
                        message: "the key file is damaged (expected base64 of 32 bytes)".to_owned(),
                    })?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let mut k = [0u8; 32];
                        SystemRandom::new()
                            .fill(&mut k)
                            .map_err(|_| ConnectorError::Io {
                                location: kp.display().to_string(),
                                source: std::io::Error::other("no system randomness"),
                            })?;
                        write_private(&kp, STANDARD.encode(k).as_bytes())
                            .map_err(|e| io(&kp, e))?;
                        k
                    }
                    Err(e) => return Err(io(&kp, e)),
                }
            }
        };
        let key = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &key_bytes).map_err(|_| {
            ConnectorError::Auth {
                target: dir.display().to_string(),
                message: "unusable cache key".to_owned(),
            }
        })?;
        Ok(Self {
            path: dir.join("credentials.bin"),
            key: Arc::new(aead::LessSafeKey::new(key)),
            lock: Arc::new(Mutex::new(())),
        })
    }

    /// The cache key for a SharePoint Server site and user.
    pub fn sp_server_target(site_url: &str, user: &str) -> String {
        format!(
            "spserver:{}|{}",
            site_url.trim_end_matches('/').to_lowercase(),
            user.to_lowercase()
        )
    }

    /// The secret stored for `target`.
    pub fn get(&self, target: &str) -> Result<Option<Secret>, ConnectorError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        Ok(self.load()?.remove(target).map(Secret::new))
    }

    /// Stores (replaces) the secret for `target`.
    pub fn put(&self, target: &str, secret: &Secret) -> Result<(), ConnectorError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = self.load()?;
        map.insert(target.to_owned(), secret.expose().to_owned());
        self.save(&map)
    }

    /// Removes the secret for `target` (sign out).
    pub fn forget(&self, target: &str) -> Result<(), ConnectorError> {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut map = self.load()?;
        if map.remove(target).is_some() {
            self.save(&map)?;
        }
        Ok(())
    }

    fn load(&self) -> Result<BTreeMap<String, String>, ConnectorError> {
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => {
                return Err(ConnectorError::Io {
                    location: self.path.display().to_string(),
                    source: e,
                })
            }
        };
        let damaged = || {
            ConnectorError::Auth {
            target: self.path.display().to_string(),
            message: "the credential cache cannot be decrypted (damaged, or another key); delete it and sign in again".to_owned(),
        }
        };
        if data.len() < CACHE_MAGIC.len() + 12 || &data[..8] != CACHE_MAGIC {
            return Err(damaged());
        }
        let nonce = aead::Nonce::try_assume_unique_for_key(&data[8..20]).map_err(|_| damaged())?;
        let mut buf = data[20..].to_vec();
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::from(CACHE_AAD), &mut buf)
            .map_err(|_| damaged())?;
        serde_json::from_slice(plain).map_err(|_| damaged())
    }

    fn save(&self, map: &BTreeMap<String, String>) -> Result<(), ConnectorError> {
        let io = |e| ConnectorError::Io {
            location: self.path.display().to_string(),
            source: e,
        };
        let mut plain = serde_json::to_vec(map).map_err(|e| io(std::io::Error::other(e)))?;
        let mut nonce = [0u8; 12];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| io(std::io::Error::other("no system randomness")))?;
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(CACHE_AAD),
                &mut plain,
            )
            .map_err(|_| io(std::io::Error::other("encryption failed")))?;
        let mut out = Vec::with_capacity(20 + plain.len());
        out.extend_from_slice(CACHE_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plain);
        write_private(&self.path, &out).map_err(io)
    }
}

fn decode_key(s: &str) -> Option<[u8; 32]> {
    let v = STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .ok()?;
    v.try_into().ok()
}

/// Writes a file readable by its owner only, atomically (temp + rename).
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp{}", uuid::Uuid::new_v4().simple()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let res = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
