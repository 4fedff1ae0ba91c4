//! A plain HTTP/1 server loop for the service, and a PUT/GET round-trip measurement.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::{AllowAll, S3Service, S3StoreError, Secrets};

/// Serves `service` over HTTP/1.1 on `listener` until the task is dropped; one task per
/// connection. Quarters itself mounts the service behind its dispatcher instead; this is for
/// tests, benchmarks and stand-alone use.
///
/// # Errors
/// Only if accepting fails.
pub async fn serve_http1(listener: TcpListener, service: S3Service) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let svc = service.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "s3: connection ended with an error");
            }
        });
    }
}

/// Timings of [`bench_roundtrip`].
#[derive(Debug, Clone)]
pub struct RoundtripReport {
    pub object_size: usize,
    pub iterations: usize,
    /// Total time of the PUTs (each one durable: fsync of the blob, its directory and the WAL).
    pub put: Duration,
    /// Total time of the GETs.
    pub get: Duration,
}

impl RoundtripReport {
    fn rate(&self, d: Duration) -> (f64, f64) {
        let secs = d.as_secs_f64().max(1e-9);
        #[allow(clippy::cast_precision_loss)]
        let (n, bytes) = (self.iterations as f64, (self.iterations * self.object_size) as f64);
        (n / secs, bytes / secs / f64::from(1 << 20))
    }

    /// PUT (requests per second, MiB per second).
    #[must_use]
    pub fn put_rate(&self) -> (f64, f64) {
        self.rate(self.put)
    }

    /// GET (requests per second, MiB per second).
    #[must_use]
    pub fn get_rate(&self) -> (f64, f64) {
        self.rate(self.get)
    }
}

struct NoSecrets;

impl Secrets for NoSecrets {
    fn secret(&self, _access_key: &str) -> Option<String> {
        None
    }
}

fn io_err(e: impl std::fmt::Display) -> S3StoreError {
    S3StoreError::Io(std::io::Error::other(e.to_string()))
}

/// Starts the service on `root` (a fresh directory) on a loopback port, then over one
/// keep-alive HTTP/1.1 connection PUTs `iterations` objects of `object_size` bytes and GETs
/// each back (checking its length). Requests are unsigned and allowed by [`AllowAll`]:
/// this measures the store and the HTTP layer, not SigV4.
///
/// # Errors
/// The store cannot be opened, or a request fails.
pub async fn bench_roundtrip(
    root: PathBuf,
    object_size: usize,
    iterations: usize,
) -> Result<RoundtripReport, S3StoreError> {
    let service = crate::service(root, Arc::new(NoSecrets), Arc::new(AllowAll))?;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(serve_http1(listener, service));

    let result = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(io_err)?;
        let conn_task = tokio::spawn(conn);
        let host = addr.to_string();
        let mut send = async |method: http::Method, path: String, body: Bytes| -> Result<Bytes, S3StoreError> {
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, &host)
                .header(http::header::CONTENT_LENGTH, body.len())
                .body(Full::new(body))
                .map_err(io_err)?;
            sender.ready().await.map_err(io_err)?;
            let resp = sender.send_request(req).await.map_err(io_err)?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(io_err)?.to_bytes();
            if !status.is_success() {
                return Err(io_err(format!("{status}: {}", String::from_utf8_lossy(&body))));
            }
            Ok(body)
        };
        send(http::Method::PUT, "/bench".into(), Bytes::new()).await?;
        let payload = Bytes::from(vec![0x5a; object_size]);
        let t = Instant::now();
        for i in 0..iterations {
            send(http::Method::PUT, format!("/bench/obj-{i}"), payload.clone()).await?;
        }
        let put = t.elapsed();
        let t = Instant::now();
        for i in 0..iterations {
            let got = send(http::Method::GET, format!("/bench/obj-{i}"), Bytes::new()).await?;
            if got.len() != object_size {
                return Err(io_err(format!("GET returned {} bytes, want {object_size}", got.len())));
            }
        }
        let get = t.elapsed();
        conn_task.abort();
        Ok(RoundtripReport { object_size, iterations, put, get })
    }
    .await;
    server.abort();
    result
}
