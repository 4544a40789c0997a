//! The function server's HTTP, on hyper: HTTP/1.1 with keep-alive and
//! HTTP/2 (by prior knowledge on plain TCP, by ALPN over TLS), with bounded
//! sizes and times. Routes see a [`Request`] with the whole body and answer a
//! [`Response`]; anything malformed is an [`HttpError`] that becomes a 4xx
//! answer, or hyper's own 4xx for a head it cannot parse, never a panic.
//! The client half (`invoke`, `load`) is here too.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::time::Duration;

/// Limits on what a client may send.
pub const MAX_HEAD: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 100;
pub const MAX_BODY: usize = 6 << 20;
/// A request head must arrive within this; it is also how long an idle
/// keep-alive connection stays open.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// A request body must arrive within this.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// A TLS handshake must end within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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

/// `path?query` split and percent-decoded.
pub fn parse_target(target: &str) -> Result<(String, Vec<(String, String)>), HttpError> {
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
    Ok((path, query))
}

/// A request as hyper parsed it, its body read whole (up to [`MAX_BODY`],
/// within [`BODY_TIMEOUT`]).
pub async fn read<B>(req: hyper::Request<B>) -> Result<Request, HttpError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (head, body) = req.into_parts();
    // An authority-form target ("GET x") has no path: only origin-form serves.
    let target = head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    let (path, query) = parse_target(target)?;
    let mut headers = Vec::with_capacity(head.headers.len());
    for (k, v) in &head.headers {
        let v = v.to_str().map_err(|_| HttpError(400, format!("header {k} is not visible ASCII")))?;
        headers.push((k.as_str().to_string(), v.to_string()));
    }
    let declared = head.headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(HttpError(413, format!("the body is over {MAX_BODY} bytes")));
    }
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect())
        .await
        .map_err(|_| HttpError(408, format!("the body did not arrive within {} s", BODY_TIMEOUT.as_secs())))?;
    let body = match collected {
        Ok(c) => c.to_bytes().to_vec(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(HttpError(413, format!("the body is over {MAX_BODY} bytes")))
        }
        Err(e) => {
            // hyper's outer error says only "error reading a body": the cause is inside.
            let mut why = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                why = format!("{why}: {c}");
                cause = c.source();
            }
            return Err(HttpError(400, format!("the body is malformed or cut short ({why})")));
        }
    };
    Ok(Request { method: head.method.as_str().to_string(), path, query, headers, body })
}

/// `r` as hyper sends it.
pub fn into_hyper(r: Response) -> hyper::Response<Full<Bytes>> {
    let mut out = hyper::Response::new(Full::new(Bytes::from(r.body)));
    *out.status_mut() = hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (hyper::header::HeaderName::try_from(k), hyper::header::HeaderValue::try_from(v)) {
            out.headers_mut().append(k, v);
        }
    }
    out
}

/// Where a client sends its requests: `http://HOST:PORT` or
/// `https://HOST:PORT` (a bare `HOST:PORT` is http).
pub struct Endpoint {
    /// HOST:PORT, to connect to.
    pub addr: String,
    pub host: String,
    /// The path prefix of the URL ("" for none).
    pub path: String,
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// How a client authenticates the server and itself over TLS.
#[derive(Default, Clone)]
pub struct ClientTls {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl Endpoint {
    pub fn parse(url: &str, tls: &ClientTls) -> crate::Result<Endpoint> {
        let (secure, rest) = match url.split_once("://") {
            Some(("http", r)) => (false, r),
            Some(("https", r)) => (true, r),
            Some((s, _)) => return Err(crate::Error::Other(format!("{url}: scheme {s:?}: use http or https"))),
            None => (false, url),
        };
        let (addr, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if addr.is_empty() {
            return Err(crate::Error::Other(format!("{url}: no host")));
        }
        let host = match addr.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h.to_string(),
            _ => return Err(crate::Error::Other(format!("{url}: HOST:PORT with a port"))),
        };
        let tls = if secure {
            let ca = tls.ca.as_deref().ok_or_else(|| {
                crate::Error::Other(format!("{url}: https needs --cacert, the CA that signed the server's certificate"))
            })?;
            let identity = match (&tls.cert, &tls.key) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                (None, None) => None,
                _ => return Err(crate::Error::Other("--cert and --key go together".into())),
            };
            Some(crate::tls::client_config(ca, identity, &[b"h2", b"http/1.1"])?)
        } else {
            None
        };
        Ok(Endpoint { addr: addr.to_string(), host, path: path.to_string(), tls })
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

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One client connection (HTTP/1.1 keep-alive, or HTTP/2 where TLS's ALPN
/// chose it), driven by a task of the current tokio runtime.
pub struct Client {
    sender: Sender,
    host: String,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Client {
    pub async fn connect(ep: &Endpoint) -> std::io::Result<Client> {
        let tcp = tokio::net::TcpStream::connect(&ep.addr).await?;
        let _ = tcp.set_nodelay(true);
        let sender = match &ep.tls {
            None => Sender::H1(Self::h1(hyper_util::rt::TokioIo::new(tcp)).await?),
            Some(cfg) => {
                let name = crate::tls::server_name(&ep.host).map_err(io_err)?;
                let stream = tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp).await?;
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = hyper_util::rt::TokioIo::new(stream);
                if h2 {
                    let (sender, conn) =
                        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                            .await
                            .map_err(io_err)?;
                    tokio::spawn(conn);
                    Sender::H2(sender)
                } else {
                    Sender::H1(Self::h1(io).await?)
                }
            }
        };
        Ok(Client { sender, host: ep.addr.clone() })
    }

    async fn h1<T>(io: T) -> std::io::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(io_err)?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// Whether the connection speaks HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }

    /// One request; the answer's body read whole.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Answer> {
        let mut req = hyper::Request::builder().method(method).uri(path);
        if !self.is_h2() {
            req = req.header(hyper::header::HOST, &self.host);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).map_err(io_err)?;
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.map_err(io_err)?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(io_err)?;
                s.send_request(req).await
            }
        }
        .map_err(io_err)?;
        let (head, body) = resp.into_parts();
        let body = body.collect().await.map_err(io_err)?.to_bytes().to_vec();
        let headers = head
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        Ok(Answer { status: head.status.as_u16(), headers, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    }

    #[test]
    fn targets_decode_and_bad_ones_get_400() {
        let (path, query) = parse_target("/functions/a%20b/invoke?async=true&x=1+2").expect("ok");
        assert_eq!(path, "/functions/a b/invoke");
        assert_eq!(query, vec![("async".into(), "true".into()), ("x".into(), "1 2".into())]);
        for bad in ["", "x", "/%zz", "/%", "/%ff%fe"] {
            assert!(matches!(parse_target(bad), Err(HttpError(400, _))), "{bad:?}");
        }
    }

    /// The body limit holds whatever the framing: a body with no length up
    /// front (chunked, or HTTP/2 DATA frames) is cut at the limit too.
    #[test]
    fn bodies_over_the_limit_get_413_whatever_their_framing() {
        let rt = rt();
        let req = |body: Vec<u8>| hyper::Request::post("/functions/f/invoke").body(Full::new(Bytes::from(body)));
        let ok = rt.block_on(read(req(vec![b'x'; MAX_BODY]).expect("request"))).expect("at the limit");
        assert_eq!((ok.method.as_str(), ok.body.len()), ("POST", MAX_BODY));
        let over = rt.block_on(read(req(vec![b'x'; MAX_BODY + 1]).expect("request")));
        assert!(matches!(over, Err(HttpError(413, _))));
        let declared = hyper::Request::post("/f")
            .header("content-length", "99999999999")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        assert!(matches!(rt.block_on(read(declared)), Err(HttpError(413, _))));
    }

    #[test]
    fn endpoints_parse_and_https_needs_a_ca() {
        let none = ClientTls::default();
        let e = Endpoint::parse("127.0.0.1:8080", &none).expect("bare");
        assert_eq!(
            (e.addr.as_str(), e.host.as_str(), e.path.as_str(), e.tls.is_none()),
            ("127.0.0.1:8080", "127.0.0.1", "", true)
        );
        let e = Endpoint::parse("http://[::1]:80/functions/x/invoke", &none).expect("v6");
        assert_eq!((e.addr.as_str(), e.path.as_str()), ("[::1]:80", "/functions/x/invoke"));
        for bad in ["ftp://h:1", "http://", "http://host", "https://h:1"] {
            assert!(Endpoint::parse(bad, &none).is_err(), "{bad}");
        }
        let e = Endpoint::parse("https://h:1", &none).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("--cacert"), "{e}");
    }
}
