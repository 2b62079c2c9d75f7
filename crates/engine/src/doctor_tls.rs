//! The TLS part of `sluice doctor`'s network step: one handshake that records the
//! server's certificate and what the platform's verifier thinks of it (trusted, expired,
//! for another host), then a `HEAD /` without credentials for the server's `Date`.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sluice_core::{ConnectorError, ErrorClass};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the handshake found.
pub(crate) struct Tls {
    /// `TLS 1.3, certificate valid until 2027-03-01 (chain of 2), trusted for api.example.com`.
    pub(crate) summary: String,
    /// The server's `Date`, when it answered `HEAD /` with one.
    pub(crate) date: Option<SystemTime>,
}

/// What the verifier saw: the end certificate, the chain's length, and its verdict.
type Seen = Option<(Vec<u8>, usize, Result<(), rustls::Error>)>;

/// Asks the platform's verifier, records its verdict, and lets the handshake go on (so
/// that a bad certificate can still be described).
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    seen: Arc<Mutex<Seen>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map(|_| ());
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((end_entity.to_vec(), intermediates.len() + 1, verdict));
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn network(message: String) -> ConnectorError {
    ConnectorError::new(ErrorClass::Network, message)
}

/// The TLS handshake over `stream` with `host`, the certificate judged, then the
/// server's `Date`.
pub(crate) async fn handshake(
    stream: TcpStream,
    host: &str,
    timeout: Duration,
) -> Result<Tls, ConnectorError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let inner = rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| {
        network(format!(
            "the system's certificate store cannot be read: {e}"
        ))
    })?;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| network(format!("TLS cannot be set up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Recording {
            inner: Arc::new(inner),
            seen: seen.clone(),
        }))
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| network(format!("`{host}` is not a valid TLS server name")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = tokio::time::timeout(timeout, connector.connect(name, stream)).await;
    let mut tls = match tls {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(network(format!(
                "the TLS handshake with {host} failed ({e}): the server may not speak TLS on this port (an `http://` URL?), or it refuses this client's TLS versions"
            )));
        }
        Err(_) => {
            return Err(network(format!(
                "the TLS handshake with {host} took longer than {}s",
                timeout.as_secs()
            )));
        }
    };
    let version = tls
        .get_ref()
        .1
        .protocol_version()
        .map(|v| format!("{v:?}").replace('_', "."))
        .unwrap_or_else(|| "TLS".to_owned());
    let Some((cert, chain, verdict)) = seen.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return Err(network(format!("{host} sent no certificate")));
    };
    let not_after = not_after(&cert);
    let until = not_after
        .map(|t| format!("valid until {}", t.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_else(|| "expiry unreadable".to_owned());
    if let Err(e) = verdict {
        use rustls::CertificateError as C;
        let why = match &e {
            rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                "it has expired: the server's owner must renew it".to_owned()
            }
            rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                format!("it is not issued for {host}: check the URL's host name, or the server's certificate")
            }
            rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
                "it is not signed by an authority this machine trusts (self-signed, or a private CA): install the CA in the system's trust store".to_owned()
            }
            other => format!("{other}"),
        };
        return Err(network(format!(
            "{host}'s certificate ({until}, chain of {chain}) is refused: {why}"
        ))
        .with_evidence(format!("verifier: {e}")));
    }
    let soon = not_after.is_some_and(|t| t < chrono::Utc::now() + chrono::Duration::days(14));
    let summary = format!(
        "{version}, certificate {until}{} (chain of {chain}), trusted for {host}",
        if soon {
            ", which is within 14 days"
        } else {
            ""
        }
    );
    let date = head_date(&mut tls, host, timeout).await;
    Ok(Tls { summary, date })
}

/// The `Date` of a plain HTTP server, from `HEAD /`.
pub(crate) async fn plain_date(
    mut stream: TcpStream,
    host: &str,
    timeout: Duration,
) -> Option<SystemTime> {
    head_date(&mut stream, host, timeout).await
}

/// Sends `HEAD /` (no credentials) and reads the answer's `Date`.
async fn head_date<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    timeout: Duration,
) -> Option<SystemTime> {
    let request = format!(
        "HEAD / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sluice-doctor\r\nConnection: close\r\n\r\n"
    );
    let read = async {
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(buf)
    };
    let buf = tokio::time::timeout(timeout, read).await.ok()??;
    let text = String::from_utf8_lossy(&buf);
    text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("date")
            .then(|| httpdate::parse_http_date(value.trim()).ok())?
    })
}

/// One DER element: its tag, its content and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A certificate's `notAfter` (RFC 5280: Certificate → TBSCertificate → Validity).
fn not_after(der: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let (tag, _, after) = tlv(rest)?;
    if tag == 0xa0 {
        rest = after; // [0] version
    }
    let (_, _, rest) = tlv(rest)?; // serialNumber
    let (_, _, rest) = tlv(rest)?; // signature
    let (_, _, rest) = tlv(rest)?; // issuer
    let (_, validity, _) = tlv(rest)?;
    let (_, _, rest) = tlv(validity)?; // notBefore
    let (tag, time, _) = tlv(rest)?;
    let text = std::str::from_utf8(time).ok()?;
    let full = match tag {
        0x17 => {
            // UTCTime: YYMMDDHHMMSSZ, 1950 to 2049.
            let yy: u32 = text.get(..2)?.parse().ok()?;
            format!("{}{text}", if yy >= 50 { "19" } else { "20" })
        }
        0x18 => text.to_owned(),
        _ => return None,
    };
    chrono::NaiveDateTime::parse_from_str(full.trim_end_matches('Z'), "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_not_after_from_der() {
        // SEQ{ SEQ{ [0]{INT 2}, INT 1, SEQ{}, SEQ{}, SEQ{ UTCTime, UTCTime } } }
        let before = b"250101000000Z";
        let after = b"270301120000Z";
        let mut validity = vec![0x17, before.len() as u8];
        validity.extend_from_slice(before);
        validity.extend_from_slice(&[0x17, after.len() as u8]);
        validity.extend_from_slice(after);
        let mut tbs = vec![0xa0, 3, 0x02, 1, 2, 0x02, 1, 1, 0x30, 0, 0x30, 0];
        tbs.push(0x30);
        tbs.push(validity.len() as u8);
        tbs.extend_from_slice(&validity);
        let mut cert = vec![0x30, tbs.len() as u8];
        cert.extend_from_slice(&tbs);
        let mut der = vec![0x30, cert.len() as u8];
        der.extend_from_slice(&cert);
        let t = not_after(&der).unwrap();
        assert_eq!(t.format("%Y-%m-%d %H:%M").to_string(), "2027-03-01 12:00");
    }
}
