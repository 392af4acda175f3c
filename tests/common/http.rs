//! A real HTTP/1.1 client: one request per connection, the whole answer read within the test timeout.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::TIMEOUT;

pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A refusal's `error` text, checking that it is JSON.
    pub fn error(&self) -> String {
        assert_eq!(self.headers["content-type"], "application/json", "{}", self.body);
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error field: {}", self.body)).to_string()
    }
}

pub(super) async fn send(
    addr: SocketAddr,
    req: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(req).await?)
}

/// The header a JSON body goes with.
pub const JSON: (&str, &str) = ("content-type", "application/json");

/// A sender of requests on one new HTTP/2 connection to `addr` (prior knowledge, no TLS).
pub async fn h2_sender(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    sender
}

pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> hyper::Request<Full<Bytes>> {
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(body)).unwrap()
}

pub async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
    call(addr, "GET", path, headers, Bytes::new()).await
}

pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
    let resp = tokio::time::timeout(TIMEOUT, send(addr, request(method, path, headers, body))).await??;
    let status = resp.status().as_u16();
    let headers = header_map(resp.headers());
    let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect()).await??.to_bytes();
    Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

pub(super) fn header_map(h: &hyper::HeaderMap) -> HashMap<String, String> {
    h.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}
