//! Wire-level behaviour that boto3 does not show deterministically.

use std::sync::Arc;

use quarters_s3::{AllowAll, Secrets, serve_http1, service};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

struct NoSecrets;

impl Secrets for NoSecrets {
    fn secret(&self, _access_key: &str) -> Option<String> {
        None
    }
}

async fn start() -> (tempfile::TempDir, std::net::SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = service(dir.path().join("s3"), Arc::new(NoSecrets), Arc::new(AllowAll)).expect("service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (dir, addr, tokio::spawn(serve_http1(listener, svc)))
}

/// Sends `head` and reads one response head (up to the blank line) plus its body.
async fn exchange(conn: &mut TcpStream, head: &str) -> String {
    conn.write_all(head.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.expect("read");
        assert!(n > 0, "connection closed before a response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let no_body = head.starts_with("HEAD ") || text.starts_with("HTTP/1.1 304");
            let len = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            let len = if no_body { 0 } else { len };
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn early_error_on_a_request_with_a_body_closes_the_connection() {
    let (_dir, addr, server) = start().await;
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    // The bucket does not exist: answered before the body is read, and the client (as boto3
    // does after Expect: 100-continue) never sends it.
    let resp = exchange(
        &mut conn,
        "PUT /missing/key HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("connection: close"), "{resp}");
    assert!(resp.contains("NoSuchBucket"), "{resp}");

    // Successful requests keep the connection.
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let resp = exchange(&mut conn, "PUT /bucket HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let resp = exchange(&mut conn, "PUT /bucket/k HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(!resp.to_ascii_lowercase().contains("connection: close"), "{resp}");
    let resp = exchange(&mut conn, "GET /bucket/k HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200") && resp.ends_with("\r\n\r\nhi"), "{resp}");
    let resp = exchange(&mut conn, "GET /bucket/k HTTP/1.1\r\nHost: x\r\nRange: bytes=1-\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 206") && resp.ends_with("\r\n\r\ni"), "{resp}");
    // 304 carries no body (hyper drops it), so the connection stays usable.
    let resp = exchange(&mut conn, "HEAD /bucket/k HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let etag = resp
        .lines()
        .find_map(|l| l.to_ascii_lowercase().starts_with("etag:").then(|| l[5..].trim().to_owned()))
        .expect("etag");
    let resp =
        exchange(&mut conn, &format!("GET /bucket/k HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n")).await;
    assert!(resp.starts_with("HTTP/1.1 304") && resp.ends_with("\r\n\r\n"), "{resp}");
    // An error without a body keeps it too.
    let resp = exchange(&mut conn, "GET /bucket/nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 404") && !resp.to_ascii_lowercase().contains("connection: close"), "{resp}");
    server.abort();
}

#[tokio::test]
async fn signed_requests_need_a_known_key() {
    let (_dir, addr, server) = start().await;
    let now = time::OffsetDateTime::now_utc();
    let date = format!("{:04}{:02}{:02}", now.year(), u8::from(now.month()), now.day());
    let stamp = format!("{date}T{:02}{:02}{:02}Z", now.hour(), now.minute(), now.second());
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let resp = exchange(
        &mut conn,
        &format!(
            "GET / HTTP/1.1\r\nHost: x\r\nx-amz-date: {stamp}\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=AKIDNOPE/{date}/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature={}\r\n\r\n",
            "0".repeat(64)
        ),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403") && resp.contains("<Code>InvalidAccessKeyId</Code>"), "{resp}");
    server.abort();
}

#[tokio::test]
async fn virtual_hosted_style() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = quarters_s3::Options { virtual_host_domains: vec!["s3.quarters.test".into()], ..Default::default() };
    let svc =
        quarters_s3::service_with_options(dir.path().join("s3"), Arc::new(NoSecrets), Arc::new(AllowAll), options)
            .expect("service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(serve_http1(listener, svc));
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let host = "Host: vbucket.s3.quarters.test";
    let resp = exchange(&mut conn, &format!("PUT / HTTP/1.1\r\n{host}\r\nContent-Length: 0\r\n\r\n")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let resp = exchange(&mut conn, &format!("PUT /a/b HTTP/1.1\r\n{host}\r\nContent-Length: 1\r\n\r\nz")).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // The same object, path-style on the base domain.
    let resp = exchange(&mut conn, "GET /vbucket/a/b HTTP/1.1\r\nHost: s3.quarters.test\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200") && resp.ends_with("\r\n\r\nz"), "{resp}");
    let resp = exchange(&mut conn, &format!("GET /?list-type=2 HTTP/1.1\r\n{host}\r\n\r\n")).await;
    assert!(resp.contains("<Name>vbucket</Name>") && resp.contains("<Key>a/b</Key>"), "{resp}");
    server.abort();
}
