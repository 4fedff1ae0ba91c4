//! The service handed to the HTTP server: s3s's service, plus one HTTP/1.1 fix.
//!
//! boto3 sends `Expect: 100-continue` on every PutObject/UploadPart. When the answer is an
//! error given before the body was read (NoSuchBucket, AccessDenied, a bad signature,
//! EntityTooLarge, …) the client does not send the body. hyper, not knowing whether it will
//! come, drains whatever is already buffered as body, which can swallow the first bytes of the
//! client's next request on that connection and desynchronise it. So an error answer to a
//! request that declared a body closes the connection (`Connection: close`), as RFC 9110
//! §10.1.1 allows.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue};
use s3s::{Body, HttpError, HttpRequest, HttpResponse};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The S3 API as a hyper service (`hyper::service::Service<Request<Incoming>>`) and a tower
/// service (`tower::Service<Request<B>>` for any `http_body::Body<Data = Bytes>`), answering
/// `Response<s3s::Body>`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct S3Service {
    inner: s3s::service::S3Service,
}

fn declares_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

fn finish(declared_body: bool, result: Result<HttpResponse, HttpError>) -> Result<HttpResponse, HttpError> {
    let mut resp = result?;
    let status = resp.status();
    if declared_body && (status.is_client_error() || status.is_server_error()) {
        resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp)
}

impl S3Service {
    pub(crate) fn new(inner: s3s::service::S3Service) -> Self {
        Self { inner }
    }

    /// The wrapped s3s service (without the connection fix).
    #[must_use]
    pub fn inner(&self) -> &s3s::service::S3Service {
        &self.inner
    }

    /// Serves one request.
    ///
    /// # Errors
    /// Only when the connection must be aborted (S3 errors are responses).
    pub async fn call(&self, req: HttpRequest<Body>) -> Result<HttpResponse, HttpError> {
        let declared = declares_body(req.headers());
        finish(declared, self.inner.call(req).await)
    }
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for S3Service {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = BoxFuture<Result<HttpResponse, HttpError>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let declared = declares_body(req.headers());
        let fut = hyper::service::Service::call(&self.inner, req);
        Box::pin(async move { finish(declared, fut.await) })
    }
}

impl<B> tower_service::Service<http::Request<B>> for S3Service
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = BoxFuture<Result<HttpResponse, HttpError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), HttpError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let declared = declares_body(req.headers());
        let fut = tower_service::Service::call(&mut self.inner, req);
        Box::pin(async move { finish(declared, fut.await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_declarations() {
        let mut h = HeaderMap::new();
        assert!(!declares_body(&h));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(!declares_body(&h));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(declares_body(&h));
        let mut h = HeaderMap::new();
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        assert!(declares_body(&h));
    }
}
