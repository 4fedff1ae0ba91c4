//! The host side of the Lambda Runtime API, one server per execution environment.
//!
//! Each environment has its own Unix socket (relayed from `127.0.0.1:9001` inside its sandbox
//! by the sandbox init), so a request's origin is known from the socket it arrived on; nothing
//! in the request can make it reach another environment's invocations.
//!
//! The environment manager hands an [`Invocation`] to [`RuntimeApi::dispatch`]; the runtime
//! fetches it with `GET /2018-06-01/runtime/invocation/next` and completes it with `/response`
//! or `/error`, which resolves the [`Outcome`] the manager awaits.
//!
//! Beyond Lambda, an environment's server may also answer the container-credentials endpoint
//! ([`CREDENTIALS_PATH`], what `AWS_CONTAINER_CREDENTIALS_FULL_URI` names) for whatever
//! [`CredentialsEndpoint`] the manager set, to requests that carry the environment's token.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use quarters_types::TenantId;
use quarters_types::limits::RESPONSE_MAX_BYTES;
use tokio::net::UnixListener;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

/// One invocation, as the runtime will receive it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline_ms: u64,
    pub invoked_arn: String,
    pub tenant: Option<TenantId>,
    /// Decoded client-context JSON, if the caller sent one.
    pub client_context: Option<String>,
    pub trace_id: String,
}

/// How the runtime finished an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Response(Bytes),
    /// The runtime posted `/error`: the error type header and the JSON body to return.
    Error {
        error_type: String,
        body: Bytes,
    },
    /// The runtime's response was larger than Lambda allows.
    ResponseTooLarge,
}

/// What the runtime tells the platform outside of an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// The runtime asked for its first event: init is done.
    Ready,
    /// The runtime posted `/runtime/init/error`.
    InitError { error_type: String, body: Bytes },
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeApiError {
    #[error("cannot bind the Runtime API socket {path}: {source}")]
    Bind { path: String, source: std::io::Error },
    #[error("an invocation is already pending on this environment")]
    Busy,
}

/// AWS credentials, as an environment is given them.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// When they expire, in milliseconds since the epoch.
    pub expiration_ms: u64,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration_ms", &self.expiration_ms)
            .finish()
    }
}

/// What the container-credentials endpoint of one environment hands out.
pub trait CredentialsEndpoint: Send + Sync + 'static {
    /// The credentials to give now, or `None` (none, or not yet: answered 404). May block (it
    /// is called off the async workers).
    fn credentials(&self) -> Option<AwsCredentials>;
}

/// The container-credentials endpoint's path on the Runtime API.
pub const CREDENTIALS_PATH: &str = "/2018-06-01/quarters/credentials";

struct Shared {
    /// The container-credentials endpoint: the token its requests must carry, and its source.
    credentials: OnceLock<(String, Arc<dyn CredentialsEndpoint>)>,
    /// The invocation waiting to be fetched with `/next`.
    pending: Mutex<Option<(Invocation, oneshot::Sender<Outcome>)>>,
    notify: Notify,
    inflight: Mutex<InFlight>,
    events: mpsc::UnboundedSender<RuntimeEvent>,
    ready_sent: AtomicBool,
}

#[derive(Default)]
struct InFlight {
    current: Option<(String, oneshot::Sender<Outcome>)>,
    /// The last request id completed, to tell a repeated post (403) from an unknown id (400).
    last_done: Option<String>,
}

/// The Runtime API of one environment. Dropping it stops the server.
pub struct RuntimeApi {
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    /// Serve the Runtime API on a new Unix socket at `path`.
    pub fn serve(path: &Path) -> Result<(Self, mpsc::UnboundedReceiver<RuntimeEvent>), RuntimeApiError> {
        let listener = UnixListener::bind(path)
            .map_err(|source| RuntimeApiError::Bind { path: path.display().to_string(), source })?;
        Ok(Self::serve_on(Listener::Unix(listener)))
    }

    /// Serve the Runtime API on a listener made for one environment (for example a TCP
    /// listener created inside the environment's own network namespace).
    pub fn serve_on(listener: Listener) -> (Self, mpsc::UnboundedReceiver<RuntimeEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            credentials: OnceLock::new(),
            pending: Mutex::new(None),
            notify: Notify::new(),
            inflight: Mutex::new(InFlight::default()),
            events: tx,
            ready_sent: AtomicBool::new(false),
        });
        let s = shared.clone();
        let server = tokio::spawn(async move {
            loop {
                match &listener {
                    Listener::Unix(l) => {
                        let Ok((stream, _)) = l.accept().await else { continue };
                        spawn_connection(s.clone(), stream);
                    }
                    Listener::Tcp(l) => {
                        let Ok((stream, _)) = l.accept().await else { continue };
                        let _ = stream.set_nodelay(true);
                        spawn_connection(s.clone(), stream);
                    }
                }
            }
        });
        (Self { shared, server }, rx)
    }

    /// Answer [`CREDENTIALS_PATH`] with what `endpoint` gives, to requests whose
    /// `Authorization` header is exactly `token` (403 otherwise). Set once, before the runtime
    /// starts; without it the path is answered 404.
    pub fn set_credentials_endpoint(&self, token: String, endpoint: Arc<dyn CredentialsEndpoint>) -> bool {
        self.shared.credentials.set((token, endpoint)).is_ok()
    }

    /// Take back the queued invocation if the runtime never fetched it; true if it was still
    /// queued (it never reached the runtime, so it can safely run elsewhere).
    pub fn withdraw(&self) -> bool {
        lock(&self.shared.pending).take().is_some()
    }

    /// Queue an invocation for the runtime's next `/next`. The receiver resolves when the
    /// runtime posts its response or error; it is dropped if the runtime never does.
    pub fn dispatch(&self, inv: Invocation) -> Result<oneshot::Receiver<Outcome>, RuntimeApiError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.shared.pending);
            if pending.is_some() {
                return Err(RuntimeApiError::Busy);
            }
            *pending = Some((inv, tx));
        }
        self.shared.notify.notify_one();
        Ok(rx)
    }
}

/// Where a Runtime API server accepts its runtime's connections.
pub enum Listener {
    Unix(UnixListener),
    Tcp(tokio::net::TcpListener),
}

fn spawn_connection<S>(s: Arc<Shared>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = service_fn(move |req| {
            let s = s.clone();
            async move { Ok::<_, Infallible>(handle(&s, req).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const NEXT: &str = "/2018-06-01/runtime/invocation/next";
const INIT_ERROR: &str = "/2018-06-01/runtime/init/error";
const INVOCATION_PREFIX: &str = "/2018-06-01/runtime/invocation/";

async fn handle(s: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, NEXT) => next(s).await,
        (Method::GET, CREDENTIALS_PATH) => credentials(s, &req).await,
        (Method::POST, INIT_ERROR) => {
            let error_type = error_type_header(&req);
            let body = read_body(req).await.unwrap_or_default();
            let _ = s.events.send(RuntimeEvent::InitError { error_type, body });
            accepted()
        }
        (Method::POST, p) if p.starts_with(INVOCATION_PREFIX) => {
            let rest = &p[INVOCATION_PREFIX.len()..];
            match rest.rsplit_once('/') {
                Some((id, "response")) => {
                    let id = id.to_owned();
                    match read_body(req).await {
                        Some(body) => complete(s, &id, Outcome::Response(body)),
                        None => {
                            complete(s, &id, Outcome::ResponseTooLarge);
                            error(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "RequestEntityTooLarge",
                                &format!("Exceeded maximum allowed payload size ({RESPONSE_MAX_BYTES} bytes)."),
                            )
                        }
                    }
                }
                Some((id, "error")) => {
                    let id = id.to_owned();
                    let error_type = error_type_header(&req);
                    let body = read_body(req).await.unwrap_or_default();
                    complete(s, &id, Outcome::Error { error_type, body })
                }
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}

async fn next(s: &Shared) -> Response<Full<Bytes>> {
    if !s.ready_sent.swap(true, Ordering::SeqCst) {
        let _ = s.events.send(RuntimeEvent::Ready);
    }
    let (inv, responder) = loop {
        let notified = s.notify.notified();
        if let Some(p) = lock(&s.pending).take() {
            break p;
        }
        notified.await;
    };
    lock(&s.inflight).current = Some((inv.request_id.clone(), responder));
    let mut resp = Response::new(Full::new(inv.payload));
    let h = resp.headers_mut();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", &inv.request_id);
    put("lambda-runtime-deadline-ms", &inv.deadline_ms.to_string());
    put("lambda-runtime-invoked-function-arn", &inv.invoked_arn);
    put("lambda-runtime-trace-id", &inv.trace_id);
    put("content-type", "application/json");
    if let Some(cc) = &inv.client_context {
        put("lambda-runtime-client-context", cc);
    }
    if let Some(t) = &inv.tenant {
        put("lambda-runtime-aws-tenant-id", t.as_str());
    }
    resp
}

/// The container-credentials endpoint, in the shape the SDKs' container provider reads.
async fn credentials(s: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some((token, endpoint)) = s.credentials.get() else { return not_found() };
    let given = req.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes()).unwrap_or_default();
    if !constant_time_eq(given, token.as_bytes()) {
        return error(StatusCode::FORBIDDEN, "AccessDenied", "The Authorization header is missing or wrong");
    }
    let endpoint = endpoint.clone();
    let creds = tokio::task::spawn_blocking(move || endpoint.credentials()).await.ok().flatten();
    let Some(c) = creds else {
        return error(StatusCode::NOT_FOUND, "NoCredentials", "No credentials are available to this environment");
    };
    let body = serde_json::json!({
        "AccessKeyId": c.access_key_id,
        "SecretAccessKey": c.secret_access_key,
        "Token": c.session_token,
        "Expiration": rfc3339_seconds(c.expiration_ms),
    })
    .to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// `2026-11-27T12:00:00Z`
fn rfc3339_seconds(ms: u64) -> String {
    let s = quarters_types::time::rfc3339_ms(ms - ms % 1000);
    match s.strip_suffix(".000Z") {
        Some(head) => format!("{head}Z"),
        None => s,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn complete(s: &Shared, id: &str, outcome: Outcome) -> Response<Full<Bytes>> {
    let mut f = lock(&s.inflight);
    match f.current.take() {
        Some((cur, responder)) if cur == id => {
            f.last_done = Some(cur);
            let _ = responder.send(outcome);
            accepted()
        }
        other => {
            f.current = other;
            if f.last_done.as_deref() == Some(id) {
                error(
                    StatusCode::FORBIDDEN,
                    "InvalidStateTransition",
                    "State transition from Ready to InvocationResponse failed for runtime. Error: State transition is not allowed",
                )
            } else {
                error(StatusCode::BAD_REQUEST, "InvalidRequestID", "Invalid request ID")
            }
        }
    }
}

fn error_type_header(req: &Request<Incoming>) -> String {
    req.headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Unhandled")
        .to_owned()
}

/// The body, or `None` if it is larger than a response may be.
async fn read_body(req: Request<Incoming>) -> Option<Bytes> {
    Limited::new(req.into_body(), RESPONSE_MAX_BYTES).collect().await.ok().map(|c| c.to_bytes())
}

fn accepted() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(b"{\"status\":\"OK\"}")));
    *r.status_mut() = StatusCode::ACCEPTED;
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn not_found() -> Response<Full<Bytes>> {
    error(StatusCode::NOT_FOUND, "NotFound", "The requested Runtime API path is not supported")
}

fn error(status: StatusCode, error_type: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_is_rfc3339_in_seconds() {
        assert_eq!(rfc3339_seconds(1_795_780_800_000), "2026-11-27T12:00:00Z");
        assert_eq!(rfc3339_seconds(1_795_780_800_999), "2026-11-27T12:00:00Z");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = AwsCredentials {
            access_key_id: "ASIA".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: "t0k3n".into(),
            expiration_ms: 0,
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("ASIA") && !shown.contains("s3cr3t") && !shown.contains("t0k3n"));
    }
}
