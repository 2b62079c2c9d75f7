//! Request authentication: basic, bearer, API key, OAuth2 client credentials (cached,
//! refreshed before expiry and once after a 401), HMAC signing.

use super::classify::{
    Redactor, evidence, host_of, read_capped, status_message, too_large_error, transport_error,
};
use super::config::{
    AuthConfig, CredentialsIn, HmacAlgorithm, HmacConfig, KeyLocation, OAuth2Config,
    SignatureEncoding, SignedPart,
};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use sluice_core::{ConnectorError, ErrorClass, Secret};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use url::Url;

/// How requests authenticate, ready to use.
pub(crate) enum Auth {
    None,
    Basic { username: String, password: Secret },
    Bearer(Secret),
    ApiKeyHeader { name: HeaderName, value: Secret },
    ApiKeyQuery { name: String, value: Secret },
    OAuth2(TokenCache),
    Hmac(HmacConfig),
}

/// What applying the auth did, for the run record.
pub(crate) struct Applied {
    /// A token was fetched: the message for the event.
    pub(crate) fetched_token: Option<String>,
    /// The token to add to the redactor.
    pub(crate) new_secret: Option<Secret>,
}

impl Auth {
    pub(crate) fn new(config: Option<&AuthConfig>) -> Result<Self, ConnectorError> {
        let invalid = |m: String| ConnectorError::new(ErrorClass::InvalidRequest, m);
        Ok(match config {
            None => Auth::None,
            Some(AuthConfig::Basic { username, password }) => Auth::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            Some(AuthConfig::Bearer { token }) => Auth::Bearer(token.clone()),
            Some(AuthConfig::ApiKey {
                name,
                value,
                location: KeyLocation::Header,
            }) => Auth::ApiKeyHeader {
                name: HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    invalid(format!(
                        "auth.api_key.name: `{name}` is not a valid header name"
                    ))
                })?,
                value: value.clone(),
            },
            Some(AuthConfig::ApiKey {
                name,
                value,
                location: KeyLocation::Query,
            }) => Auth::ApiKeyQuery {
                name: name.clone(),
                value: value.clone(),
            },
            Some(AuthConfig::Oauth2ClientCredentials(o)) => {
                let url = Url::parse(&o.token_url).map_err(|e| {
                    invalid(format!(
                        "auth.oauth2_client_credentials.token_url: `{}` is not a URL ({e})",
                        o.token_url
                    ))
                })?;
                Auth::OAuth2(TokenCache {
                    config: o.clone(),
                    url,
                    token: tokio::sync::Mutex::new(None),
                })
            }
            Some(AuthConfig::Hmac(h)) => Auth::Hmac(h.clone()),
        })
    }

    /// The secrets this auth sends, for redaction.
    pub(crate) fn secrets(&self) -> Vec<Secret> {
        match self {
            Auth::None => vec![],
            Auth::Basic { password, username } => {
                let b64 = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()));
                vec![password.clone(), Secret::new(b64)]
            }
            Auth::Bearer(s) => vec![s.clone()],
            Auth::ApiKeyHeader { value, .. } | Auth::ApiKeyQuery { value, .. } => {
                vec![value.clone()]
            }
            Auth::OAuth2(t) => vec![t.config.client_secret.clone()],
            Auth::Hmac(h) => vec![h.key.clone()],
        }
    }

    /// Query parameter names that carry a secret.
    pub(crate) fn secret_params(&self) -> Vec<String> {
        match self {
            Auth::ApiKeyQuery { name, .. } => vec![name.clone()],
            _ => vec![],
        }
    }

    /// What the credentials are, without a secret (`sluice doctor`).
    pub(crate) fn describe(&self) -> String {
        match self {
            Auth::None => "none configured: requests go without credentials".to_owned(),
            Auth::Basic { username, .. } => format!("basic auth as `{username}`, password set"),
            Auth::Bearer(_) => "a bearer token, set".to_owned(),
            Auth::ApiKeyHeader { name, .. } => format!("an API key in the `{name}` header, set"),
            Auth::ApiKeyQuery { name, .. } => {
                format!("an API key in the `{name}` query parameter, set")
            }
            Auth::OAuth2(t) => format!(
                "OAuth2 client credentials for client `{}` from {}, scopes [{}]",
                t.config.client_id,
                host_of(&t.url),
                t.config.scopes.join(" ")
            ),
            Auth::Hmac(h) => format!(
                "HMAC-signed requests ({:?}), key set; the signature carries this machine's time, so the clock offset (network step) must stay within the API's tolerance",
                h.algorithm
            ),
        }
    }

    /// For OAuth2, fetches a token now, as the first request of a run does: what came
    /// back (expiry), or why not. `None` for the other kinds of auth.
    pub(crate) async fn probe_token(
        &self,
        client: &reqwest::Client,
        redactor: &Redactor,
    ) -> Option<Result<String, ConnectorError>> {
        let Auth::OAuth2(cache) = self else {
            return None;
        };
        Some(
            cache
                .get(client, redactor)
                .await
                .map(|(_, msg)| msg.unwrap_or_else(|| "a cached token".to_owned())),
        )
    }

    /// Whether a 401 may be cured by fetching new credentials.
    pub(crate) fn refreshable(&self) -> bool {
        matches!(self, Auth::OAuth2(_))
    }

    /// Forgets a cached token so that the next request fetches a new one.
    pub(crate) async fn invalidate(&self) {
        if let Auth::OAuth2(cache) = self {
            *cache.token.lock().await = None;
        }
    }

    /// Adds the credentials to a request about to be sent.
    pub(crate) async fn apply(
        &self,
        client: &reqwest::Client,
        redactor: &Redactor,
        method: &str,
        url: &mut Url,
        headers: &mut HeaderMap,
        body: &[u8],
    ) -> Result<Applied, ConnectorError> {
        let mut applied = Applied {
            fetched_token: None,
            new_secret: None,
        };
        match self {
            Auth::None => {}
            Auth::Basic { username, password } => {
                let b64 = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()));
                set_secret(headers, AUTHORIZATION, &format!("Basic {b64}"))?;
            }
            Auth::Bearer(token) => {
                set_secret(
                    headers,
                    AUTHORIZATION,
                    &format!("Bearer {}", token.expose()),
                )?;
            }
            Auth::ApiKeyHeader { name, value } => {
                set_secret(headers, name.clone(), value.expose())?
            }
            Auth::ApiKeyQuery { name, value } => {
                let kept: Vec<(String, String)> = url
                    .query_pairs()
                    .filter(|(k, _)| k != name)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                url.query_pairs_mut()
                    .clear()
                    .extend_pairs(kept)
                    .append_pair(name, value.expose());
            }
            Auth::OAuth2(cache) => {
                let (token, fetched) = cache.get(client, redactor).await?;
                if let Some(msg) = fetched {
                    applied.fetched_token = Some(msg);
                    applied.new_secret = Some(token.clone());
                }
                set_secret(
                    headers,
                    AUTHORIZATION,
                    &format!("Bearer {}", token.expose()),
                )?;
            }
            Auth::Hmac(h) => sign(h, method, url, headers, body, SystemTime::now())?,
        }
        Ok(applied)
    }
}

fn set_secret(
    headers: &mut HeaderMap,
    name: HeaderName,
    value: &str,
) -> Result<(), ConnectorError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| {
        ConnectorError::new(
            ErrorClass::InvalidRequest,
            format!("the `{name}` credential holds characters not allowed in a header (a line break?): check the secret's value"),
        )
    })?;
    v.set_sensitive(true);
    headers.insert(name, v);
    Ok(())
}

/// The canonical query string signed by HMAC: decoded pairs, sorted, form-encoded.
pub(crate) fn canonical_query(url: &Url) -> String {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The text an HMAC covers: the chosen parts joined by newlines.
pub(crate) fn string_to_sign(
    parts: &[SignedPart],
    method: &str,
    url: &Url,
    timestamp: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        match part {
            SignedPart::Method => out.extend_from_slice(method.as_bytes()),
            SignedPart::Host => out.extend_from_slice(host_of(url).as_bytes()),
            SignedPart::Path => out.extend_from_slice(url.path().as_bytes()),
            SignedPart::Query => out.extend_from_slice(canonical_query(url).as_bytes()),
            SignedPart::Timestamp => out.extend_from_slice(timestamp.as_bytes()),
            SignedPart::Body => out.extend_from_slice(body),
        }
    }
    out
}

fn sign(
    h: &HmacConfig,
    method: &str,
    url: &Url,
    headers: &mut HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), ConnectorError> {
    let ts = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .to_string();
    let text = string_to_sign(&h.signed_parts, method, url, &ts, body);
    let key = h.key.expose().as_bytes();
    let bad_key = |_| {
        ConnectorError::new(
            ErrorClass::InvalidRequest,
            "auth.hmac.key cannot be used as an HMAC key",
        )
    };
    let raw = match h.algorithm {
        HmacAlgorithm::Sha256 => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).map_err(bad_key)?;
            mac.update(&text);
            mac.finalize().into_bytes().to_vec()
        }
        HmacAlgorithm::Sha512 => {
            let mut mac = Hmac::<sha2::Sha512>::new_from_slice(key).map_err(bad_key)?;
            mac.update(&text);
            mac.finalize().into_bytes().to_vec()
        }
    };
    let sig = match h.encoding {
        SignatureEncoding::Hex => raw.iter().map(|b| format!("{b:02x}")).collect(),
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(raw),
    };
    let name = |n: &str| {
        HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
            ConnectorError::new(
                ErrorClass::InvalidRequest,
                format!("auth.hmac: `{n}` is not a valid header name"),
            )
        })
    };
    set_secret(headers, name(&h.signature_header)?, &sig)?;
    if let Ok(v) = HeaderValue::from_str(&ts) {
        headers.insert(name(&h.timestamp_header)?, v);
    }
    if let Some(id) = &h.key_id
        && let Ok(v) = HeaderValue::from_str(id)
    {
        headers.insert(name(&h.key_id_header)?, v);
    }
    Ok(())
}

/// The largest token endpoint answer read (decoded): a token answer is a few hundred
/// bytes; anything near this is not a token.
const MAX_TOKEN_RESPONSE_BYTES: usize = 1024 * 1024;

/// A cached OAuth2 access token.
pub(crate) struct TokenCache {
    config: OAuth2Config,
    url: Url,
    token: tokio::sync::Mutex<Option<Token>>,
}

struct Token {
    value: Secret,
    /// When to fetch a new one: before it expires by `refresh_before` (at most half its
    /// lifetime, so that a short-lived token is not refreshed on every request).
    refresh_at: Option<Instant>,
}

/// When a token fetched at `now` and living `ttl` should be replaced. `ttl` comes from
/// the token server (`expires_in`): a lifetime too long for the clock (`u64::MAX`
/// seconds, say) is capped, never an overflow.
pub(crate) fn refresh_at(now: Instant, ttl: Duration, refresh_before: Duration) -> Instant {
    super::instant_after(now, ttl.saturating_sub(refresh_before.min(ttl / 2)))
}

impl TokenCache {
    /// The current token, fetching a new one when there is none or it is due. The
    /// second value says a token was fetched (the event's message).
    async fn get(
        &self,
        client: &reqwest::Client,
        redactor: &Redactor,
    ) -> Result<(Secret, Option<String>), ConnectorError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref()
            && t.refresh_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok((t.value.clone(), None));
        }
        let (token, ttl) = self.fetch(client, redactor).await?;
        let now = Instant::now();
        *slot = Some(Token {
            value: token.clone(),
            refresh_at: ttl.map(|ttl| refresh_at(now, ttl, self.config.refresh_before)),
        });
        let msg = match ttl {
            Some(ttl) => format!(
                "fetched an OAuth2 token from {} (expires in {}s)",
                host_of(&self.url),
                ttl.as_secs()
            ),
            None => format!("fetched an OAuth2 token from {}", host_of(&self.url)),
        };
        Ok((token, Some(msg)))
    }

    async fn fetch(
        &self,
        client: &reqwest::Client,
        redactor: &Redactor,
    ) -> Result<(Secret, Option<Duration>), ConnectorError> {
        let c = &self.config;
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        if !c.scopes.is_empty() {
            form.push(("scope", c.scopes.join(" ")));
        }
        if let Some(a) = &c.audience {
            form.push(("audience", a.clone()));
        }
        let mut req = client.post(self.url.clone());
        match c.credentials_in {
            CredentialsIn::BasicHeader => {
                req = req.basic_auth(&c.client_id, Some(c.client_secret.expose()));
            }
            CredentialsIn::Body => {
                form.push(("client_id", c.client_id.clone()));
                form.push(("client_secret", c.client_secret.expose().to_owned()));
            }
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = req
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(redactor, "POST", &self.url, &e, Duration::ZERO))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_capped(resp, MAX_TOKEN_RESPONSE_BYTES)
            .await
            .map_err(|e| transport_error(redactor, "POST", &self.url, &e, Duration::ZERO))?;
        let bytes = body.bytes;
        let host = host_of(&self.url);
        if body.over_limit && (200..300).contains(&status) {
            return Err(too_large_error(
                redactor,
                "POST",
                &self.url,
                status,
                &headers,
                &bytes,
                (MAX_TOKEN_RESPONSE_BYTES, "the token answer's limit"),
            ));
        }
        if !(200..300).contains(&status) {
            let (class, message) = match status {
                400 | 401 | 403 => (
                    ErrorClass::Auth,
                    format!(
                        "the token endpoint {host} refused the client credentials ({status}): check client_id, client_secret, scopes and audience"
                    ),
                ),
                s => (
                    super::classify::class_of_status(s),
                    status_message(s, &host),
                ),
            };
            let mut e = ConnectorError::new(class, message).with_evidence(evidence(
                redactor,
                "POST",
                &self.url,
                Some(status),
                Some(&headers),
                &bytes,
            ));
            if let Some(w) = super::classify::retry_after(&headers, SystemTime::now()) {
                e = e.with_retry_after(w);
            }
            return Err(e);
        }
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
            ConnectorError::new(
                ErrorClass::Auth,
                format!("the token endpoint {host} answered without a JSON body: check token_url"),
            )
        })?;
        let Some(token) = parsed.get("access_token").and_then(|t| t.as_str()) else {
            return Err(ConnectorError::new(
                ErrorClass::Auth,
                format!(
                    "the token endpoint {host} answered without `access_token`: check token_url"
                ),
            ));
        };
        let ttl = parsed
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .map(Duration::from_secs);
        Ok((Secret::new(token), ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lived_tokens_refresh_at_half_life_long_ones_before_expiry() {
        let now = Instant::now();
        let r = refresh_at(now, Duration::from_secs(3600), Duration::from_secs(30));
        assert_eq!(r - now, Duration::from_secs(3570));
        let r = refresh_at(now, Duration::from_secs(10), Duration::from_secs(30));
        assert_eq!(r - now, Duration::from_secs(5));
        // `expires_in: 18446744073709551615` from a token server: capped, no overflow.
        let r = refresh_at(now, Duration::from_secs(u64::MAX), Duration::from_secs(30));
        assert!(r > now + Duration::from_secs(50 * 365 * 24 * 3600));
    }

    #[test]
    fn hmac_signs_the_chosen_parts_in_order() {
        let url = Url::parse("http://h:8080/p/items?b=2&a=1%202").unwrap();
        let text = string_to_sign(
            &[
                SignedPart::Method,
                SignedPart::Host,
                SignedPart::Path,
                SignedPart::Query,
                SignedPart::Timestamp,
                SignedPart::Body,
            ],
            "GET",
            &url,
            "17",
            b"",
        );
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "GET\nh:8080\n/p/items\na=1+2&b=2\n17\n"
        );
        let cfg = HmacConfig {
            algorithm: HmacAlgorithm::Sha256,
            key: Secret::new("k"),
            key_id: Some("key-1".into()),
            signed_parts: vec![SignedPart::Body],
            signature_header: "X-Sig".into(),
            timestamp_header: "X-Ts".into(),
            key_id_header: "X-Kid".into(),
            encoding: SignatureEncoding::Hex,
        };
        let mut headers = HeaderMap::new();
        sign(&cfg, "GET", &url, &mut headers, b"abc", UNIX_EPOCH).unwrap();
        // HMAC-SHA256("k", "abc")
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"abc");
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(headers["x-sig"], want.as_str());
        assert_eq!(headers["x-ts"], "0");
        assert_eq!(headers["x-kid"], "key-1");
    }
}
