//! A small blocking HTTP/1.1 client for the controller's REST API (`http://`, or
//! `https://` over rustls with an optional client certificate), used by the `microseg`
//! client commands and the tests. One connection per request.

use crate::api_types::ErrorBody;
use crate::tls::TlsError;
use microseg_policy::escape_control;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Certificates for an `https://` server: the CAs to trust (None: the system bundle) and,
/// for mutual TLS, the client's certificate chain and key (PEM files).
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFiles<'a> {
    pub ca: Option<&'a Path>,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
}

impl TlsFiles<'_> {
    fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }
}

/// Why a client could not be made or a request not be answered; each names the
/// `--server` URL or the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--server {url}: expected http://HOST:PORT or https://HOST:PORT")]
    Scheme { url: String },
    #[error("--server {url}: --tls-ca, --tls-cert and --tls-key need an https:// URL")]
    TlsNeedsHttps { url: String },
    #[error("--server {url}: missing host")]
    MissingHost { url: String },
    #[error("--server {url}: {host:?} is no valid TLS server name")]
    ServerName { url: String, host: String },
    #[error("--tls-cert and --tls-key go together")]
    HalfIdentity,
    /// The CA, certificate or key files.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The connection failed, or broke before the answer was whole.
    #[error("cannot reach the controller at {url}: {source}")]
    Unreachable { url: String, source: std::io::Error },
    /// The TLS handshake failed for a reason with a likely fix.
    #[error("cannot reach the controller at {url}: TLS: {source} ({hint})")]
    Handshake {
        url: String,
        source: rustls::Error,
        hint: &'static str,
    },
    /// What came back is not a whole HTTP answer.
    #[error("cannot reach the controller at {url}: {problem}")]
    BadAnswer { url: String, problem: &'static str },
}

#[derive(Debug, Clone)]
struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

#[derive(Debug, Clone)]
pub struct Client {
    /// As given: errors name it.
    url: String,
    /// host:port
    authority: String,
    /// Set for `https://`.
    tls: Option<Tls>,
    /// Path prefix of the server URL (usually empty).
    prefix: String,
    token: Option<String>,
    pub timeout: Duration,
}

/// An answer: status and body (JSON when it parses, else a JSON string of the text).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as one of the API's answers (`crate::api_types`).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.body)
    }

    /// The server's error message and details, one per line, their control characters
    /// escaped (a line of the answer cannot pass for several, or drive a terminal).
    pub fn error_text(&self) -> String {
        let Ok(e) = ErrorBody::deserialize(&self.body) else {
            return escape_control(&format!("HTTP {}: {}", self.status, self.body)).into_owned();
        };
        let mut s = escape_control(&e.error).into_owned();
        for d in &e.details {
            s.push('\n');
            s.push_str(&escape_control(d));
        }
        s
    }
}

/// Percent-encodes a query or path component.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// `url`: `http://HOST:PORT[/PREFIX]` (port 80 when omitted), or `https://` trusting
    /// the system's CA bundle.
    pub fn new(url: &str, token: Option<String>) -> Result<Client, ClientError> {
        Client::with_tls(url, token, TlsFiles::default())
    }

    /// `url`: `http://HOST:PORT[/PREFIX]` (port 80 when omitted) or `https://...` (port
    /// 443), with the certificates `tls` names (only for https).
    pub fn with_tls(
        url: &str,
        token: Option<String>,
        tls: TlsFiles,
    ) -> Result<Client, ClientError> {
        let url_owned = || url.to_string();
        let (rest, https) = if let Some(r) = url.strip_prefix("http://") {
            (r, false)
        } else if let Some(r) = url.strip_prefix("https://") {
            (r, true)
        } else {
            return Err(ClientError::Scheme { url: url_owned() });
        };
        if !https && tls.any() {
            return Err(ClientError::TlsNeedsHttps { url: url_owned() });
        }
        let (auth, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if auth.is_empty() {
            return Err(ClientError::MissingHost { url: url_owned() });
        }
        let has_port = auth.rsplit_once(':').is_some_and(|(h, p)| {
            p.parse::<u16>().is_ok() && (!h.starts_with('[') || h.ends_with(']'))
        });
        let authority = if has_port {
            auth.to_string()
        } else {
            format!("{auth}:{}", if https { 443 } else { 80 })
        };
        let tls = if https {
            let host = authority.rsplit_once(':').map_or("", |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name =
                ServerName::try_from(host.to_string()).map_err(|_| ClientError::ServerName {
                    url: url_owned(),
                    host: host.to_string(),
                })?;
            let identity = match (tls.cert, tls.key) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => return Err(ClientError::HalfIdentity),
            };
            let config = crate::tls::client_config(tls.ca, identity)?;
            Some(Tls { config, name })
        } else {
            None
        };
        Ok(Client {
            url: url.to_string(),
            authority,
            tls,
            prefix: prefix.to_string(),
            token,
            timeout: Duration::from_secs(60),
        })
    }

    /// The server's URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.call("GET", path, None)
    }

    /// One request; `body` is (content type, bytes). An error names the server's URL:
    /// "cannot reach the controller at URL: <cause>".
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Reply, ClientError> {
        let url = self.url.clone();
        self.try_call(method, path, body).map_err(|e| match e {
            Failure::Io(source) => ClientError::Unreachable { url, source },
            Failure::Handshake(source, hint) => ClientError::Handshake { url, source, hint },
            Failure::BadAnswer(problem) => ClientError::BadAnswer { url, problem },
        })
    }

    fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Reply, Failure> {
        let addr =
            self.authority.to_socket_addrs()?.next().ok_or_else(|| {
                std::io::Error::other(format!("cannot resolve {}", self.authority))
            })?;
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        match &self.tls {
            None => self.exchange(s, method, path, body),
            Some(t) => {
                let conn = rustls::ClientConnection::new(t.config.clone(), t.name.clone())
                    .map_err(std::io::Error::other)?;
                self.exchange(rustls::StreamOwned::new(conn, s), method, path, body)
                    .map_err(tls_hint)
            }
        }
    }

    fn exchange(
        &self,
        mut s: impl Read + Write,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Reply, Failure> {
        let mut req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.prefix, self.authority
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or(("application/json", b""));
        if method != "GET" && method != "DELETE" || !body.1.is_empty() {
            req.push_str(&format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                body.0,
                body.1.len()
            ));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        s.write_all(body.1)?;
        s.flush()?;
        let mut raw = Vec::new();
        match s.read_to_end(&mut raw) {
            Ok(_) => {}
            // A TLS peer that closed without close_notify: the reply is judged by its
            // framing (a short body is an error below).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => return Err(e.into()),
        }
        parse_reply(&raw).map_err(Failure::BadAnswer)
    }
}

/// Why a request failed, before the server's URL is added.
enum Failure {
    Io(std::io::Error),
    Handshake(rustls::Error, &'static str),
    BadAnswer(&'static str),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::Io(e)
    }
}

/// A TLS failure with a word on the likely fix.
fn tls_hint(f: Failure) -> Failure {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let Failure::Io(e) = &f else {
        return f;
    };
    let Some(tls) = e.get_ref().and_then(|x| x.downcast_ref::<E>()) else {
        return f;
    };
    let hint = match tls {
        E::AlertReceived(A::CertificateRequired | A::HandshakeFailure) => {
            "the controller requires a client certificate: --tls-cert and --tls-key"
        }
        E::AlertReceived(
            A::UnknownCA | A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown,
        ) => "the controller does not accept this client certificate",
        E::InvalidCertificate(C::UnknownIssuer) => {
            "the controller's certificate is not issued by a CA in --tls-ca"
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the controller's certificate does not name the host of --server"
        }
        _ => return f,
    };
    Failure::Handshake(tls.clone(), hint)
}

/// The status and body of an answer, or what is wrong with it.
fn parse_reply(raw: &[u8]) -> Result<Reply, &'static str> {
    if !raw.starts_with(b"HTTP/") {
        return Err(if raw.is_empty() {
            "the server closed the connection without an answer (does it serve https://?)"
        } else {
            "the answer is not HTTP (does the server speak https://?)"
        });
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("truncated HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("bad HTTP status line")?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<usize>().ok();
            }
        }
    }
    let mut body = &raw[end + 4..];
    let mut decoded = Vec::new();
    if chunked {
        loop {
            let nl = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("bad chunk")?;
            let size_text = String::from_utf8_lossy(&body[..nl]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| "bad chunk size")?;
            body = &body[nl + 2..];
            if size == 0 {
                break;
            }
            if body.len() < size {
                return Err("truncated chunk");
            }
            decoded.extend_from_slice(&body[..size]);
            body = body.get(size + 2..).unwrap_or_default();
        }
    } else {
        let n = length.unwrap_or(body.len());
        if n > body.len() {
            return Err("truncated HTTP response body");
        }
        decoded.extend_from_slice(&body[..n]);
    }
    let text = String::from_utf8_lossy(&decoded);
    let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.into_owned()));
    Ok(Reply { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_with_length_or_chunks() {
        let r = parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\n{\"a\":1}\n").unwrap();
        assert_eq!((r.status, r.body["a"].as_u64()), (200, Some(1)));
        let r = parse_reply(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:2}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body["a"].as_u64()), (404, Some(2)));
    }

    #[test]
    fn server_urls() {
        assert_eq!(
            Client::new("http://127.0.0.1:7070", None)
                .unwrap()
                .authority,
            "127.0.0.1:7070"
        );
        let c = Client::new("http://ctl/api/", None).unwrap();
        assert_eq!(
            (c.authority.as_str(), c.prefix.as_str()),
            ("ctl:80", "/api")
        );
        assert!(Client::new("x:1", None).is_err());
        let ca = TlsFiles {
            ca: Some(Path::new("/nonexistent/ca.pem")),
            ..TlsFiles::default()
        };
        let e = Client::with_tls("http://x:1", None, ca).unwrap_err();
        assert!(matches!(e, ClientError::TlsNeedsHttps { .. }), "{e}");
        assert!(e.to_string().contains("need an https:// URL"), "{e}");
        let e = Client::with_tls("https://x:1", None, ca).unwrap_err();
        assert!(matches!(e, ClientError::Tls(_)), "{e}");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
