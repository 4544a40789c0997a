//! Just enough HTTP/1.1 for the function server and its clients: requests
//! with Content-Length or chunked bodies, keep-alive, bounded sizes. Anything
//! malformed is an [`HttpError`] that becomes a 4xx answer, never a panic.

use std::io::{BufRead, BufReader, Read, Write};

/// Limits on what a client may send.
pub const MAX_HEAD: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 100;
pub const MAX_BODY: usize = 6 << 20;

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A request that cannot be served: the status and why.
#[derive(Debug)]
pub struct HttpError(pub u16, pub String);

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, headers: vec![("Content-Type".into(), content_type.into())], body: body.into() }
    }

    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec(v).unwrap_or_default();
        body.push(b'\n');
        Response::new(status, "application/json", body)
    }

    /// A JSON error body: {"error": msg}.
    pub fn error(status: u16, msg: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": msg }))
    }

    pub fn header(mut self, k: &str, v: impl ToString) -> Response {
        self.headers.push((k.into(), v.to_string()));
        self
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Writes `r`; `keep_alive` false adds `Connection: close`.
pub fn write_response(w: &mut impl Write, r: &Response, keep_alive: bool) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\nContent-Length: {}\r\n", r.status, reason(r.status), r.body.len());
    for (k, v) in &r.headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut all = head.into_bytes();
    all.extend_from_slice(&r.body);
    w.write_all(&all)?;
    w.flush()
}

fn percent_decode(s: &str) -> Result<String, HttpError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(v.ok_or_else(|| HttpError(400, "bad percent-encoding in the URL".into()))?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| HttpError(400, "the URL is not UTF-8".into()))
}

/// Reads one line ending in LF (CR stripped), counting against `budget`.
fn line(r: &mut impl BufRead, budget: &mut usize) -> Result<Option<String>, HttpError> {
    let mut buf = Vec::new();
    let n = r.take(*budget as u64 + 1).read_until(b'\n', &mut buf).map_err(|e| HttpError(400, format!("read: {e}")))?;
    if n == 0 {
        return Ok(None);
    }
    if n > *budget || !buf.ends_with(b"\n") {
        if n > *budget {
            return Err(HttpError(431, "request head too large".into()));
        }
        return Err(HttpError(400, "the connection closed mid-line".into()));
    }
    *budget -= n;
    buf.pop();
    if buf.ends_with(b"\r") {
        buf.pop();
    }
    String::from_utf8(buf).map(Some).map_err(|_| HttpError(400, "the request head is not UTF-8".into()))
}

/// Reads one request; None when the client closed the connection cleanly.
pub fn read_request(r: &mut BufReader<impl Read>) -> Result<Option<Request>, HttpError> {
    let mut budget = MAX_HEAD;
    let mut first = match line(r, &mut budget)? {
        None => return Ok(None),
        Some(l) => l,
    };
    // Tolerate blank lines before a request (RFC 9112 2.2).
    while first.is_empty() {
        first = match line(r, &mut budget)? {
            None => return Ok(None),
            Some(l) => l,
        };
    }
    let mut parts = first.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => (m, t, v),
        _ => return Err(HttpError(400, "malformed request line".into())),
    };
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError(400, "malformed method".into()));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(HttpError(505, format!("unsupported version {version:?}"))),
    };
    if !target.starts_with('/') {
        return Err(HttpError(400, "the request target must be a path".into()));
    }
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let path = percent_decode(path)?;
    let mut query = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        query.push((percent_decode(k)?, percent_decode(v)?));
    }
    let mut headers = Vec::new();
    loop {
        let l = line(r, &mut budget)?.ok_or_else(|| HttpError(400, "the connection closed in the head".into()))?;
        if l.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(HttpError(431, "too many header fields".into()));
        }
        let (k, v) = l.split_once(':').ok_or_else(|| HttpError(400, format!("malformed header line {l:?}")))?;
        if k.is_empty() || k.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(HttpError(400, format!("malformed header name {k:?}")));
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let mut req = Request { method: method.into(), path, query, headers, body: Vec::new(), keep_alive: !http10 };
    if let Some(c) = req.header("connection") {
        let c = c.to_ascii_lowercase();
        if c.contains("close") {
            req.keep_alive = false;
        } else if c.contains("keep-alive") {
            req.keep_alive = true;
        }
    }
    let chunked = req.header("transfer-encoding").map(|t| t.to_ascii_lowercase());
    let length = req.header("content-length").map(str::to_string);
    match (chunked, length) {
        (Some(_), Some(_)) => return Err(HttpError(400, "both Content-Length and Transfer-Encoding".into())),
        (Some(t), None) if t == "chunked" => req.body = read_chunked(r)?,
        (Some(t), None) => return Err(HttpError(501, format!("transfer coding {t:?}"))),
        (None, Some(l)) => {
            let n: usize = l.parse().map_err(|_| HttpError(400, format!("bad Content-Length {l:?}")))?;
            if n > MAX_BODY {
                return Err(HttpError(413, format!("the body is over {MAX_BODY} bytes")));
            }
            req.body = vec![0; n];
            r.read_exact(&mut req.body)
                .map_err(|_| HttpError(400, "the body is shorter than Content-Length".into()))?;
        }
        (None, None) => {}
    }
    Ok(Some(req))
}

fn read_chunked(r: &mut BufReader<impl Read>) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let mut budget = 1024;
        let l = line(r, &mut budget)?.ok_or_else(|| HttpError(400, "the connection closed in a chunk".into()))?;
        let size = l.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(size, 16).map_err(|_| HttpError(400, format!("bad chunk size {size:?}")))?;
        if n == 0 {
            // Trailers, up to the blank line.
            let mut budget = MAX_HEAD;
            while let Some(t) = line(r, &mut budget)? {
                if t.is_empty() {
                    break;
                }
            }
            return Ok(body);
        }
        if n > MAX_BODY - body.len() {
            return Err(HttpError(413, format!("the body is over {MAX_BODY} bytes")));
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..]).map_err(|_| HttpError(400, "a chunk is cut short".into()))?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).map_err(|_| HttpError(400, "a chunk is cut short".into()))?;
        if &crlf != b"\r\n" {
            return Err(HttpError(400, "a chunk does not end in CRLF".into()));
        }
    }
}

/// A client's answer.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends one request on `stream` and reads the answer (Content-Length bodies,
/// as this server sends).
pub fn call(
    stream: &mut std::net::TcpStream,
    method: &str,
    path: &str,
    body: &[u8],
    reader: &mut BufReader<std::net::TcpStream>,
) -> std::io::Result<Answer> {
    call_with(stream, method, path, &[], body, reader)
}

/// [`call`] with extra request headers (`Authorization`, say).
pub fn call_with(
    stream: &mut std::net::TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    reader: &mut BufReader<std::net::TcpStream>,
) -> std::io::Result<Answer> {
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: strata-fn\r\n{extra}Content-Length: {}\r\n\r\n", body.len());
    let mut all = head.into_bytes();
    all.extend_from_slice(body);
    stream.write_all(&all)?;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status: u16 =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad status line"))?;
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l)? == 0 {
            return Err(bad("connection closed in the head"));
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.to_string(), v.trim().to_string()));
        }
    }
    let n: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; n];
    reader.read_exact(&mut body)?;
    Ok(Answer { status, headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<Request>, HttpError> {
        read_request(&mut BufReader::new(raw))
    }

    #[test]
    fn requests_parse() {
        let r = parse(b"POST /functions/echo/invoke?async=true HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            .expect("ok")
            .expect("some");
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query("async")),
            ("POST", "/functions/echo/invoke", Some("true"))
        );
        assert_eq!(r.body, b"abc");
        assert!(r.keep_alive);
        let r = parse(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
            .expect("ok")
            .expect("some");
        assert_eq!(r.body, b"abcde");
        assert!(parse(b"").expect("ok").is_none());
    }

    #[test]
    fn malformed_requests_get_4xx() {
        let cases: &[(&[u8], u16)] = &[
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET /x HTTP/2.0\r\n\r\n", 505),
            (b"GET x HTTP/1.1\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nno colon\r\n\r\n", 400),
            (b"POST /x HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
            (b"POST /x HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", 413),
            (b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 400),
            (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
            (b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n", 413),
            (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", 400),
            (b"GET /%zz HTTP/1.1\r\n\r\n", 400),
            (b"GET /x HTTP/1.1\r\nA: b", 400),
        ];
        for (raw, want) in cases {
            match parse(raw) {
                Err(HttpError(code, _)) => assert_eq!(code, *want, "{}", String::from_utf8_lossy(raw)),
                Ok(r) => panic!("accepted {}: {r:?}", String::from_utf8_lossy(raw)),
            }
        }
        let mut big = b"GET /x HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert!(matches!(parse(&big), Err(HttpError(431, _))));
    }
}
