//! Raw HTTP/1.1 over hyper: keep-alive client connections, and the bare echo server that is the
//! baseline of every figure.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A request that takes longer than this counts as an error (the function's timeout is 10 s,
/// a cold start's init timeout another 10 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { addr, sender })
    }

    /// Replace a broken connection by a new one to the same address.
    pub async fn reopen(&mut self) -> Result<()> {
        *self = Conn::open(self.addr).await?;
        Ok(())
    }

    /// Send one request and read the whole response.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<(StatusCode, HeaderMap, Bytes)> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}

/// One request on a fresh connection (for the control-plane calls around the measurements).
pub async fn call_once(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Bytes>,
) -> Result<(StatusCode, HeaderMap, Bytes)> {
    Conn::open(addr).await?.call(method, path, body).await
}

impl Conn {
    /// One control-plane request on this connection (JSON body, if any), within
    /// [`REQUEST_TIMEOUT`]. After a failure the connection is opened again for the next call.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let mut req = Request::builder().method(method).uri(path).header(header::HOST, self.addr.to_string());
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        let answer = match tokio::time::timeout(REQUEST_TIMEOUT, self.send(req)).await {
            Ok(answer) => answer,
            Err(_) => Err(anyhow!("{path}: timed out")),
        };
        if answer.is_err() {
            // The next call gets a new connection, if one can be made; this one's error stands.
            let _ = self.reopen().await;
        }
        answer
    }
}

/// What a measurement calls: the echo baseline or the function's Invoke.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub path: String,
    pub payload: Bytes,
    /// Invokes must come back without `X-Amz-Function-Error`; the echo has no such thing.
    pub is_invoke: bool,
}

impl Endpoint {
    pub fn request(&self, tenant: &str) -> Result<Request<Full<Bytes>>> {
        Ok(Request::builder()
            .method(Method::POST)
            .uri(&self.path)
            .header(header::HOST, self.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-amz-tenant-id", tenant)
            .body(Full::new(self.payload.clone()))?)
    }
}

/// Whether a response counts as a success: 200, and for an invoke no function error.
pub fn check_response(status: u16, function_error: Option<&str>) -> Result<(), String> {
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    if let Some(kind) = function_error {
        return Err(format!("function error ({kind})"));
    }
    Ok(())
}

/// Latencies of the successful requests of a measurement, and its errors.
#[derive(Debug, Default)]
pub struct Tally {
    pub latencies: Vec<Duration>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Tally {
    pub fn error(&mut self, msg: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(msg);
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn attempts(&self) -> u64 {
        self.latencies.len() as u64 + self.errors
    }
}

/// Send one request, record its latency (or its error) in `tally`. Fails only when the
/// connection is broken and cannot be opened again.
pub async fn timed_call(conn: &mut Conn, ep: &Endpoint, tenant: &str, tally: &mut Tally) -> Result<()> {
    let req = ep.request(tenant)?;
    let start = Instant::now();
    match tokio::time::timeout(REQUEST_TIMEOUT, conn.send(req)).await {
        Ok(Ok((status, headers, body))) => {
            let elapsed = start.elapsed();
            let fe = if ep.is_invoke {
                headers.get("x-amz-function-error").map(|v| v.to_str().unwrap_or("?").to_owned())
            } else {
                None
            };
            match check_response(status.as_u16(), fe.as_deref()) {
                Ok(()) => tally.latencies.push(elapsed),
                Err(e) => {
                    let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                    tally.error(format!("tenant {tenant}: {e}: {body}"));
                }
            }
        }
        Ok(Err(e)) => {
            tally.error(format!("tenant {tenant}: {e:#}"));
            conn.reopen().await?;
        }
        Err(_) => {
            tally.error(format!("tenant {tenant}: no response in {REQUEST_TIMEOUT:?}"));
            conn.reopen().await?;
        }
    }
    Ok(())
}

/// A bare HTTP/1.1 server answering every request with its body: the physical floor of this
/// machine. It runs on its own thread and runtime, so it does not share the client's workers.
pub struct EchoServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    pub fn start() -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the echo server")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("bench-echo")
            .enable_all()
            .build()
            .context("starting the echo server's runtime")?;
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("bench-echo".into()).spawn(move || {
            rt.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("echo server: {e}");
                        return;
                    }
                };
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let _ = stream.set_nodelay(true);
                            tokio::spawn(async move {
                                let svc = hyper::service::service_fn(echo);
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    }
                }
            });
            // Dropping the runtime here ends the connections' tasks.
        })?;
        Ok(EchoServer { addr, stop: Some(stop_tx), thread: Some(thread) })
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    Ok(resp)
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Wait for client tasks that each drove one connection: the connections back, and what they
/// counted, merged.
pub async fn join_clients(handles: Vec<tokio::task::JoinHandle<Result<(Conn, Tally)>>>) -> Result<(Vec<Conn>, Tally)> {
    let mut conns = Vec::with_capacity(handles.len());
    let mut tally = Tally::default();
    for h in handles {
        let (c, t) = h.await.context("a client task")??;
        conns.push(c);
        tally.merge(t);
    }
    Ok((conns, tally))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_checked() {
        assert_eq!(check_response(200, None), Ok(()));
        assert_eq!(check_response(429, None), Err("HTTP 429".to_string()));
        assert_eq!(check_response(200, Some("Unhandled")), Err("function error (Unhandled)".to_string()));
    }

    #[test]
    fn tallies_merge() {
        let mut a = Tally::default();
        a.latencies.push(Duration::from_micros(1));
        a.error("first".into());
        let mut b = Tally::default();
        b.latencies.push(Duration::from_micros(2));
        b.error("second".into());
        a.merge(b);
        assert_eq!(a.attempts(), 4);
        assert_eq!(a.errors, 2);
        assert_eq!(a.first_error.as_deref(), Some("first"));
    }

    #[test]
    fn echo_server_echoes() -> Result<()> {
        let server = EchoServer::start()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let ep = Endpoint {
                addr: server.addr,
                path: "/echo".into(),
                payload: Bytes::from_static(br#"{"action":"echo"}"#),
                is_invoke: false,
            };
            let mut conn = Conn::open(server.addr).await?;
            let mut tally = Tally::default();
            for _ in 0..3 {
                timed_call(&mut conn, &ep, "t", &mut tally).await?;
            }
            assert_eq!(tally.latencies.len(), 3);
            assert_eq!(tally.errors, 0);
            let (status, _, body) = conn.send(ep.request("t")?).await?;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(&body[..], br#"{"action":"echo"}"#);
            Ok::<_, anyhow::Error>(())
        })?;
        drop(server);
        Ok(())
    }
}
