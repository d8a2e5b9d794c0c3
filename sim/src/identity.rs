//! Entra ID v2 endpoints: token (client credentials with secret or certificate JWT,
//! ROPC, device code, refresh token), device code, OIDC discovery.
//!
//! Tokens are opaque random strings. A certificate `client_assertion` is accepted when
//! it is a well-formed RS256 JWT whose `iss` and `sub` are a registered client id, whose
//! `exp` is in the future, whose `x5t` header matches the registered thumbprint (when
//! one is registered) and — when a certificate is registered for the app
//! (`Config::app_certificates`) — whose signature verifies against the certificate's RSA public
//! key (ring). Apps registering only a thumbprint get no signature check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Method;
use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};

use crate::http::{
    finish, json_resp, parse_query, random_token, read_body, Ctx, DeviceCode, Flavor, Sim,
    TokenInfo,
};

/// Is this path an identity endpoint?
pub fn is_identity(lower: &str) -> bool {
    lower.ends_with("/oauth2/v2.0/token")
        || lower.ends_with("/oauth2/v2.0/devicecode")
        || lower.ends_with("/v2.0/.well-known/openid-configuration")
        || lower.ends_with("/discovery/v2.0/keys")
}

fn tenant_ok(sim: &Sim, t: &str) -> bool {
    ["common", "organizations"].contains(&t.to_ascii_lowercase().as_str())
        || t.eq_ignore_ascii_case(&sim.cfg.tenant_id)
        || t.eq_ignore_ascii_case(&sim.cfg.tenant_domain)
}

fn oauth_err(status: u16, code: &str, aadsts: u32, desc: &str) -> Response {
    json_resp(
        status,
        &json!({
            "error": code,
            "error_description": format!("AADSTS{aadsts}: {desc}"),
            "error_codes": [aadsts],
            "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": uuid::Uuid::new_v4(),
            "correlation_id": uuid::Uuid::new_v4(),
        }),
    )
}

/// Route an identity request.
pub async fn handle(sim: &Arc<Sim>, ctx: &mut Ctx, path: &str, body: Body) -> Response {
    ctx.flavor = Flavor::OAuth;
    let lower = path.to_ascii_lowercase();
    let tenant = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned();
    if !tenant_ok(sim, &tenant) {
        return finish(
            ctx,
            Ok(oauth_err(
                400,
                "invalid_tenant",
                90002,
                &format!("Tenant '{tenant}' not found."),
            )),
        );
    }
    let base = format!("{}/{}", sim.base_url, sim.cfg.tenant_id);
    if lower.ends_with("/.well-known/openid-configuration") {
        let v = json!({
            "issuer": format!("{base}/v2.0"),
            "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
            "token_endpoint": format!("{base}/oauth2/v2.0/token"),
            "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
            "jwks_uri": format!("{base}/discovery/v2.0/keys"),
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "grant_types_supported": ["client_credentials", "password", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        });
        return finish(ctx, Ok(json_resp(200, &v)));
    }
    if lower.ends_with("/discovery/v2.0/keys") {
        return finish(ctx, Ok(json_resp(200, &json!({"keys": []}))));
    }
    if ctx.method != Method::POST {
        return finish(
            ctx,
            Ok(oauth_err(
                405,
                "invalid_request",
                900561,
                "The endpoint only accepts POST requests.",
            )),
        );
    }
    let form = match read_body(sim, body).await {
        Ok(b) => parse_query(&String::from_utf8_lossy(&b)),
        Err(e) => return finish(ctx, Err(e)),
    };
    // client_secret_basic
    let mut form = form;
    if let Some(auth) = ctx
        .header("authorization")
        .and_then(|a| crate::http::strip_prefix_ci(a, "basic "))
    {
        if let Some((id, secret)) = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())))
        {
            form.entry("client_id".into()).or_insert(id);
            form.entry("client_secret".into()).or_insert(secret);
        }
    }
    let r = if lower.ends_with("/devicecode") {
        devicecode(sim, &form)
    } else {
        token(sim, &form)
    };
    finish(ctx, Ok(r))
}

fn devicecode(sim: &Sim, form: &std::collections::HashMap<String, String>) -> Response {
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    if !sim.cfg.apps.iter().any(|a| a.client_id == client_id) {
        return oauth_err(
            400,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory."),
        );
    }
    let device_code = random_token();
    let n = crate::http::splitmix(u64::from_le_bytes(
        device_code.as_bytes()[..8].try_into().unwrap_or([0; 8]),
    ));
    let alphabet = b"BCDFGHJKLMNPQRSTVWXZ23456789";
    let user_code: String = (0..9)
        .map(|i| alphabet[((n >> (i * 6)) % alphabet.len() as u64) as usize] as char)
        .collect();
    let expires = 900;
    sim.device_codes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            device_code.clone(),
            DeviceCode {
                client_id,
                user_code: user_code.clone(),
                approved_by: None,
                expires: Instant::now() + Duration::from_secs(expires),
            },
        );
    let uri = format!("{}/_sim/devicelogin", sim.base_url);
    json_resp(
        200,
        &json!({
            "user_code": user_code, "device_code": device_code, "verification_uri": uri,
            "expires_in": expires, "interval": sim.cfg.device_code_interval_secs,
            "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate."),
        }),
    )
}

fn issue(
    sim: &Sim,
    client_id: &str,
    user: Option<String>,
    with_refresh: bool,
    scope: &str,
) -> Response {
    let tok = random_token();
    let life = sim.cfg.token_lifetime_secs;
    let info = TokenInfo {
        client_id: client_id.to_owned(),
        user,
        expires: Instant::now() + Duration::from_secs(life),
    };
    sim.tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(tok.clone(), info.clone());
    let mut v = json!({"token_type": "Bearer", "scope": scope, "expires_in": life, "ext_expires_in": life, "access_token": tok});
    if with_refresh {
        let rt = random_token();
        sim.refresh_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                rt.clone(),
                TokenInfo {
                    expires: Instant::now() + Duration::from_secs(90 * 86400),
                    ..info
                },
            );
        v["refresh_token"] = json!(rt);
    }
    tracing::debug!(
        message = "Issued access token.",
        client_id,
        lifetime_secs = life
    );
    json_resp(200, &v)
}

fn jwt_claims(jwt: &str) -> Option<(Value, Value)> {
    let mut parts = jwt.split('.');
    let d = |s: &str| -> Option<Value> {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice(&b).ok()
    };
    let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
    if s.is_empty() || parts.next().is_some() {
        return None;
    }
    Some((d(h)?, d(p)?))
}

fn token(sim: &Sim, form: &std::collections::HashMap<String, String>) -> Response {
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    let client_id = form.get("client_id").cloned().unwrap_or_default();
    let scope = form
        .get("scope")
        .cloned()
        .unwrap_or_else(|| "https://graph.microsoft.com/.default".into());
    let app = sim.cfg.apps.iter().find(|a| a.client_id == client_id);
    let offline = scope.split(' ').any(|s| s == "offline_access");
    match grant {
        "client_credentials" => {
            if let Some(assertion) = form.get("client_assertion") {
                if form.get("client_assertion_type").map(String::as_str)
                    != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                {
                    return oauth_err(
                        400,
                        "invalid_request",
                        50027,
                        "Invalid client_assertion_type.",
                    );
                }
                let Some((hdr, claims)) = jwt_claims(assertion) else {
                    return oauth_err(
                        400,
                        "invalid_client",
                        50027,
                        "JWT token is invalid or malformed.",
                    );
                };
                if hdr.get("alg").and_then(Value::as_str) != Some("RS256") {
                    return oauth_err(
                        400,
                        "invalid_client",
                        5002738,
                        "The JWT must be signed with RS256.",
                    );
                }
                let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
                let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
                let Some(app) = sim
                    .cfg
                    .apps
                    .iter()
                    .find(|a| a.client_id == iss && iss == sub)
                else {
                    return oauth_err(
                        401,
                        "invalid_client",
                        700027,
                        "Client assertion contains an invalid issuer or subject.",
                    );
                };
                if !client_id.is_empty() && client_id != app.client_id {
                    return oauth_err(
                        401,
                        "invalid_client",
                        700021,
                        "client_id does not match the assertion.",
                    );
                }
                let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
                if exp < chrono::Utc::now().timestamp() {
                    return oauth_err(
                        401,
                        "invalid_client",
                        700024,
                        "Client assertion is not within its valid time range.",
                    );
                }
                if let Some(tp) = &app.certificate_thumbprint {
                    let x5t = hdr.get("x5t").and_then(Value::as_str).unwrap_or("");
                    let x5t_hex = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(x5t.trim_end_matches('='))
                        .map(|b| b.iter().map(|c| format!("{c:02x}")).collect::<String>())
                        .unwrap_or_default();
                    if !(tp.eq_ignore_ascii_case(x5t) || tp.eq_ignore_ascii_case(&x5t_hex)) {
                        return oauth_err(
                            401,
                            "invalid_client",
                            700027,
                            "The certificate with the assertion's thumbprint is not registered.",
                        );
                    }
                }
                let certs: Vec<&str> = sim
                    .cfg
                    .app_certificates
                    .iter()
                    .filter(|c| c.client_id == app.client_id)
                    .map(|c| c.certificate_pem.as_str())
                    .collect();
                if !certs.is_empty()
                    && !certs
                        .iter()
                        .any(|pem| verify_assertion(assertion, &hdr, pem).is_ok())
                {
                    let why = certs
                        .iter()
                        .find_map(|pem| verify_assertion(assertion, &hdr, pem).err())
                        .unwrap_or("no match");
                    return oauth_err(
                        401,
                        "invalid_client",
                        700027,
                        &format!("Client assertion failed signature validation: {why}."),
                    );
                }
                return issue(sim, &app.client_id, None, false, &scope);
            }
            let Some(app) = app else {
                return oauth_err(
                    400,
                    "unauthorized_client",
                    700016,
                    &format!(
                        "Application with identifier '{client_id}' was not found in the directory."
                    ),
                );
            };
            match (&app.secret, form.get("client_secret")) {
                (Some(s), Some(given)) if s == given => {
                    issue(sim, &app.client_id, None, false, &scope)
                }
                _ => oauth_err(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided.",
                ),
            }
        }
        "password" => {
            let Some(app) = app else {
                return oauth_err(
                    400,
                    "unauthorized_client",
                    700016,
                    &format!(
                        "Application with identifier '{client_id}' was not found in the directory."
                    ),
                );
            };
            let user = form.get("username").cloned().unwrap_or_default();
            let pass = form.get("password").cloned().unwrap_or_default();
            if sim
                .cfg
                .users
                .iter()
                .any(|u| u.upn.eq_ignore_ascii_case(&user) && u.password == pass)
            {
                issue(sim, &app.client_id, Some(user), true, &scope)
            } else {
                oauth_err(
                    400,
                    "invalid_grant",
                    50126,
                    "Error validating credentials due to invalid username or password.",
                )
            }
        }
        "urn:ietf:params:oauth:grant-type:device_code" => {
            let code = form.get("device_code").cloned().unwrap_or_default();
            let mut m = sim.device_codes.lock().unwrap_or_else(|e| e.into_inner());
            let Some(dc) = m.get(&code).cloned() else {
                return oauth_err(
                    400,
                    "invalid_grant",
                    70000,
                    "The provided device code is not valid.",
                );
            };
            if dc.expires < Instant::now() {
                m.remove(&code);
                return oauth_err(400, "expired_token", 70020, "The provided value for the input parameter 'device_code' is not valid. The code has expired.");
            }
            if dc.client_id != client_id {
                return oauth_err(
                    400,
                    "invalid_grant",
                    70000,
                    "The device code was issued to another client.",
                );
            }
            match dc.approved_by {
                None => oauth_err(
                    400,
                    "authorization_pending",
                    70016,
                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
                ),
                Some(user) => {
                    m.remove(&code);
                    drop(m);
                    issue(sim, &client_id, Some(user), true, &scope)
                }
            }
        }
        "refresh_token" => {
            let rt = form.get("refresh_token").cloned().unwrap_or_default();
            let info = sim
                .refresh_tokens
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&rt);
            match info {
                Some(i)
                    if i.expires > Instant::now()
                        && (client_id.is_empty() || client_id == i.client_id) =>
                {
                    issue(sim, &i.client_id, i.user, true, &scope)
                }
                _ => oauth_err(
                    400,
                    "invalid_grant",
                    9002313,
                    "Invalid request. The refresh token is malformed, expired or revoked.",
                ),
            }
        }
        _ if offline || grant.is_empty() => oauth_err(
            400,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        ),
        g => oauth_err(
            400,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{g}'."),
        ),
    }
}

/// Approve a pending device code (admin).
pub fn approve(sim: &Sim, user_code: &str, upn: &str) -> bool {
    if !sim
        .cfg
        .users
        .iter()
        .any(|u| u.upn.eq_ignore_ascii_case(upn))
    {
        return false;
    }
    let mut m = sim.device_codes.lock().unwrap_or_else(|e| e.into_inner());
    for dc in m.values_mut() {
        if dc.user_code.eq_ignore_ascii_case(user_code) && dc.expires > Instant::now() {
            dc.approved_by = Some(upn.to_owned());
            return true;
        }
    }
    false
}

/// Verify an RS256 JWT against a PEM certificate (and its `x5t`, when present).
fn verify_assertion(jwt: &str, hdr: &Value, cert_pem: &str) -> Result<(), &'static str> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let b64: String = cert_pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|r| r.split("-----END CERTIFICATE-----").next())
        .ok_or("the registered certificate is not PEM")?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|_| "the registered certificate is not PEM")?;
    if let Some(x5t) = hdr.get("x5t").and_then(Value::as_str) {
        let thumb = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
        if URL_SAFE_NO_PAD
            .decode(x5t.trim_end_matches('='))
            .ok()
            .as_deref()
            != Some(thumb.as_ref())
        {
            return Err("x5t does not match the registered certificate");
        }
    }
    let key = rsa_public_key(&der).ok_or("the registered certificate has no RSA public key")?;
    let (signed, sig) = jwt.rsplit_once('.').ok_or("malformed JWT")?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig.trim_end_matches('='))
        .map_err(|_| "malformed signature")?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| "bad signature")
}

/// One DER TLV: (tag, contents, rest).
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let l0 = *b.get(1)? as usize;
    let (len, hdr) = if l0 < 0x80 {
        (l0, 2)
    } else {
        let n = l0 & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    Some((tag, b.get(hdr..end)?, b.get(end..)?))
}

/// The PKCS#1 `RSAPublicKey` inside an X.509 certificate's SubjectPublicKeyInfo.
fn rsa_public_key(cert: &[u8]) -> Option<&[u8]> {
    let (_, cert_body, _) = der_tlv(cert)?; // Certificate SEQUENCE
    let (_, tbs, _) = der_tlv(cert_body)?; // TBSCertificate SEQUENCE
    let mut rest = tbs;
    let (tag, _, r) = der_tlv(rest)?;
    if tag == 0xa0 {
        rest = r; // [0] version
    }
    // serialNumber, signature, issuer, validity, subject
    for _ in 0..5 {
        rest = der_tlv(rest)?.2;
    }
    let (_, spki, _) = der_tlv(rest)?; // SubjectPublicKeyInfo SEQUENCE
    let (_, _alg, r) = der_tlv(spki)?;
    let (tag, bits, _) = der_tlv(r)?;
    (tag == 0x03 && bits.first() == Some(&0)).then(|| &bits[1..])
}
