//! A plain HTTP/1.1 client written for the tests, independent of the server's
//! HTTP library: one request with a Content-Length body on a blocking
//! stream, the answer read by its Content-Length.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// A server's answer (the same shape strata-fn's own client gives).
pub use strata_fn::http::Answer;

/// Sends one request on `stream` and reads the answer.
pub fn call(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    body: &[u8],
    reader: &mut BufReader<TcpStream>,
) -> std::io::Result<Answer> {
    call_with(stream, method, path, &[], body, reader)
}

/// [`call`] with extra request headers (`Authorization`, say).
pub fn call_with(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    reader: &mut BufReader<TcpStream>,
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
