//! The least HTTP/1.1 that ClickHouse's interface needs: one POST per connection, the
//! answer read to its end (Content-Length or chunked).

use std::io;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A whole request, from connect to the last byte of the answer, takes at most this.
const TIMEOUT: Duration = Duration::from_secs(300);

pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Connecting failed (the server is down) rather than the exchange.
#[derive(Debug)]
pub(crate) enum HttpError {
    Connect(io::Error),
    Exchange(io::Error),
}

pub(crate) async fn post(addr: &str, path: &str, body: &[u8]) -> Result<Response, HttpError> {
    tokio::time::timeout(TIMEOUT, exchange(addr, path, body))
        .await
        .unwrap_or_else(|_| {
            Err(HttpError::Exchange(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no complete answer within {}s", TIMEOUT.as_secs()),
            )))
        })
}

async fn exchange(addr: &str, path: &str, body: &[u8]) -> Result<Response, HttpError> {
    let mut stream = TcpStream::connect(addr).await.map_err(HttpError::Connect)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut raw = Vec::new();
    async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.read_to_end(&mut raw).await
    }
    .await
    .map_err(HttpError::Exchange)?;
    parse(raw).map_err(|e| HttpError::Exchange(io::Error::new(io::ErrorKind::InvalidData, e)))
}

/// What is wrong with an answer that is not HTTP/1.1 as ClickHouse writes it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadAnswer {
    #[error("no end of headers")]
    NoEndOfHeaders,
    #[error("headers not UTF-8")]
    HeadersNotUtf8,
    #[error("no status line")]
    NoStatusLine,
    #[error("body shorter than Content-Length")]
    BodyShort,
    #[error("chunk size without end of line")]
    ChunkSizeUnended,
    #[error("chunk size not text")]
    ChunkSizeNotText,
    #[error("chunk size {0:?}")]
    ChunkSize(String),
    #[error("chunk cut short")]
    ChunkCutShort,
    #[error("chunk without end of line")]
    ChunkUnended,
}

fn parse(raw: Vec<u8>) -> Result<Response, BadAnswer> {
    let end = find(&raw, b"\r\n\r\n").ok_or(BadAnswer::NoEndOfHeaders)?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| BadAnswer::HeadersNotUtf8)?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or(BadAnswer::NoStatusLine)?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k.eq_ignore_ascii_case("content-length") {
            length = v.parse::<usize>().ok();
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n).ok_or(BadAnswer::BodyShort)?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, BadAnswer> {
    let mut out = Vec::with_capacity(rest.len());
    loop {
        let eol = find(rest, b"\r\n").ok_or(BadAnswer::ChunkSizeUnended)?;
        let size_text =
            std::str::from_utf8(&rest[..eol]).map_err(|_| BadAnswer::ChunkSizeNotText)?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| BadAnswer::ChunkSize(size_text.to_string()))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).ok_or(BadAnswer::ChunkCutShort)?);
        rest = rest.get(size + 2..).ok_or(BadAnswer::ChunkUnended)?;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Percent-encodes a query parameter's value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let r = parse(raw.to_vec()).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
        let raw = b"HTTP/1.1 500 Internal\r\nContent-Length: 4\r\n\r\nCode";
        let r = parse(raw.to_vec()).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (500, &b"Code"[..]));
        let cut = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab".to_vec());
        assert!(
            matches!(cut, Err(BadAnswer::ChunkCutShort)),
            "{:?}",
            cut.err()
        );
        let bad_size =
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec());
        assert_eq!(
            bad_size.err().map(|e| e.to_string()),
            Some("chunk size \"zz\"".into())
        );
        assert_eq!(encode("a b&c=d"), "a%20b%26c%3Dd");
    }
}
