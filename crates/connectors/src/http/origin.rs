//! Where credentials may go: the origin (scheme, host, port) of the configured URL, and
//! the hosts of `allowed_hosts`. A next-page URL or a redirect elsewhere is refused, so
//! that an API cannot make Sluice send its key, token or headers to another host.

use url::Url;

/// The origins that may receive a node's credentials.
#[derive(Debug, Clone)]
pub(crate) struct Origins {
    /// `url`'s scheme, host and port (its known default when not written).
    base: Option<(String, String, u16)>,
    /// `allowed_hosts`: a host name (lower case) and, when written, its port.
    hosts: Vec<(String, Option<u16>)>,
}

/// `(scheme, host, port)` of a URL.
fn origin_of(url: &Url) -> Option<(String, String, u16)> {
    Some((
        url.scheme().to_owned(),
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?,
    ))
}

/// `scheme://host:port` of a URL, for messages (no path, no query: no secret).
pub(crate) fn origin_text(url: &Url) -> String {
    match origin_of(url) {
        Some((scheme, host, port)) => format!("{scheme}://{host}:{port}"),
        None => "an unknown origin".to_owned(),
    }
}

impl Origins {
    /// The origin of `base` (the configured URL) and the `allowed_hosts` entries
    /// (`host` or `host:port`; entries that do not parse are left out: the pipeline
    /// check refuses them).
    pub(crate) fn new(base: Option<&Url>, allowed_hosts: &[String]) -> Self {
        let hosts = allowed_hosts
            .iter()
            .filter_map(|h| {
                let u = Url::parse(&format!("http://{h}/")).ok()?;
                Some((u.host_str()?.to_ascii_lowercase(), u.port()))
            })
            .collect();
        Origins {
            base: base.and_then(origin_of),
            hosts,
        }
    }

    /// Whether `url` may receive the credentials.
    pub(crate) fn allows(&self, url: &Url) -> bool {
        let Some((scheme, host, port)) = origin_of(url) else {
            return false;
        };
        if !matches!(scheme.as_str(), "http" | "https") {
            return false;
        }
        if let Some(base) = &self.base {
            if base.0 == scheme && base.1 == host && base.2 == port {
                return true;
            }
            // An allowed host never takes an `https` API down to plain `http`.
            if base.0 == "https" && scheme == "http" {
                return false;
            }
        }
        self.hosts
            .iter()
            .any(|(h, p)| *h == host && p.is_none_or(|p| p == port))
    }

    /// What is allowed, for messages.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((scheme, host, port)) = &self.base {
            parts.push(format!("{scheme}://{host}:{port}"));
        }
        for (h, p) in &self.hosts {
            parts.push(match p {
                Some(p) => format!("{h}:{p} (allowed_hosts)"),
                None => format!("{h} (allowed_hosts)"),
            });
        }
        parts.join(", ")
    }

    /// A redirect policy: a redirect is followed only within the origin of the request
    /// that started it, or to an allowed host; else the request fails (the caller
    /// classifies it `invalid_request`). At most 10 redirects, as reqwest's default.
    pub(crate) fn redirect_policy(&self) -> reqwest::redirect::Policy {
        let hosts = self.hosts.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > 10 {
                return attempt.error("more than 10 redirects");
            }
            let first = attempt.previous().first().cloned();
            let within = Origins {
                base: first.as_ref().and_then(origin_of),
                hosts: hosts.clone(),
            };
            if within.allows(attempt.url()) {
                attempt.follow()
            } else {
                let to = origin_text(attempt.url());
                attempt.error(RefusedRedirect(to))
            }
        })
    }
}

/// A redirect to an origin that may not receive the credentials.
#[derive(Debug)]
pub(crate) struct RefusedRedirect(pub(crate) String);

impl std::fmt::Display for RefusedRedirect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redirected to another origin ({})", self.0)
    }
}

impl std::error::Error for RefusedRedirect {}

/// The HTTP client of a source or sink: redirects only to the origins allowed, the node's
/// timeouts, idle connections kept (at most `idle_per_host` per host), Sluice's user agent.
pub(crate) fn client(
    origins: &Origins,
    timeouts: &super::TimeoutsConfig,
    idle_per_host: usize,
) -> Result<reqwest::Client, sluice_core::ConnectorError> {
    reqwest::Client::builder()
        .redirect(origins.redirect_policy())
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(idle_per_host.max(1))
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            sluice_core::ConnectorError::new(
                sluice_core::ErrorClass::Internal,
                format!("the HTTP client could not start ({e}): TLS roots or resolver unavailable"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn only_the_base_origin_and_allowed_hosts() {
        let o = Origins::new(
            Some(&u("https://api.example.com/v1/x?k=1")),
            &["cdn.example.com".into(), "127.0.0.1:8443".into()],
        );
        assert!(o.allows(&u("https://api.example.com/v1/y?page=2")));
        assert!(o.allows(&u("https://API.example.com:443/z")));
        assert!(!o.allows(&u("http://api.example.com/v1/y")), "downgrade");
        assert!(!o.allows(&u("https://api.example.com:8443/v1/y")), "port");
        assert!(!o.allows(&u("https://other.example.com/steal")));
        assert!(!o.allows(&u("https://api.example.com.evil.io/")));
        assert!(o.allows(&u("https://cdn.example.com:9999/a")));
        assert!(!o.allows(&u("http://cdn.example.com/a")), "downgrade");
        assert!(o.allows(&u("https://127.0.0.1:8443/a")));
        assert!(!o.allows(&u("https://127.0.0.1:8444/a")));
        assert!(!o.allows(&u("ftp://api.example.com/a")));
        let plain = Origins::new(Some(&u("http://127.0.0.1:1000/a")), &[]);
        assert!(plain.allows(&u("http://127.0.0.1:1000/b?x=1")));
        assert!(!plain.allows(&u("http://127.0.0.1:1001/b")));
        assert!(!plain.allows(&u("http://localhost:1000/b")));
    }
}
