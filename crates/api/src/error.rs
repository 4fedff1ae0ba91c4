//! The one place where errors of every layer become AWS-shaped HTTP errors.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use quarters_control::ControlError;
use quarters_invoke::InvokeError;
use quarters_types::{ValidationError, ValidationKind};

/// An error as the Lambda API returns it: status, `X-Amzn-ErrorType`, and a JSON body with
/// `Type`, the message (under `message` or `Message`, as the model has it) and extras.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Whether the model names the member `Message` (capital M) for this exception.
    pub capital: bool,
    pub reason: Option<&'static str>,
    pub retry_after: Option<u32>,
    /// The awsJson1.1 protocol's error (CloudWatch Logs): `__type` in the body too.
    pub json11: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let capital = matches!(code, "ResourceNotFoundException" | "ServiceException");
        Self { status, code, message: message.into(), capital, reason: None, retry_after: None, json11: false }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidParameterValueException", message)
    }

    pub fn bad_content(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequestContentException", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLargeException", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    /// An error of an awsJson1.1 service (CloudWatch Logs): 400 unless it is the server's.
    pub fn json11(code: &'static str, message: impl Into<String>) -> Self {
        let status = if code == "ServiceUnavailableException" {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        };
        Self { json11: true, capital: false, ..Self::new(status, code, message) }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", message)
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        match e.kind {
            ValidationKind::Model => Self::new(StatusCode::BAD_REQUEST, "ValidationException", e.message),
            ValidationKind::InvalidParameter => Self::invalid(e.message),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound(m) => Self::not_found(m),
            ControlError::Conflict(m) => Self::new(StatusCode::CONFLICT, "ResourceConflictException", m),
            ControlError::Invalid(v) => v.into(),
            ControlError::PreconditionFailed(m) => {
                Self::new(StatusCode::PRECONDITION_FAILED, "PreconditionFailedException", m)
            }
            ControlError::TooLarge(m) => Self::too_large(m),
            ControlError::Internal(m) => {
                tracing::error!(error = %m, "control plane failure");
                Self::internal(m)
            }
        }
    }
}

impl From<quarters_image::ImageError> for ApiError {
    fn from(e: quarters_image::ImageError) -> Self {
        use quarters_image::ImageError as E;
        match e {
            E::BadReference(m) | E::Registry(m) | E::Unsupported(m) | E::BadLayer(m) => Self::invalid(m),
            E::Io(e) => {
                tracing::error!(error = %e, "image store failure");
                Self::internal(e.to_string())
            }
        }
    }
}

impl From<quarters_gateway::GatewayError> for ApiError {
    fn from(e: quarters_gateway::GatewayError) -> Self {
        use quarters_gateway::GatewayError as G;
        match e {
            G::NotFound(m) => Self::new(StatusCode::NOT_FOUND, "NotFoundException", m),
            G::BadRequest(m) => Self::new(StatusCode::BAD_REQUEST, "BadRequestException", m),
            G::Conflict(m) => Self::new(StatusCode::CONFLICT, "ConflictException", m),
            G::Internal(m) => Self::internal(m),
            G::Db(e) => Self::internal(format!("gateway store: {e}")),
        }
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        match e {
            InvokeError::TooManyRequests { reason, message } => {
                let mut err = Self::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", message);
                err.reason = Some(reason);
                err.retry_after = Some(1);
                err
            }
            InvokeError::Sandbox(m) => {
                tracing::error!(error = %m, "sandbox failure");
                Self::new(StatusCode::BAD_GATEWAY, "ResourceNotReadyException", m)
            }
            InvokeError::InvalidEntrypoint(why) => Self::internal(why),
            InvokeError::ShuttingDown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", "The server is shutting down")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        if self.json11 {
            body.insert("__type".into(), self.code.into());
        }
        body.insert("Type".into(), if self.status.is_server_error() { "Service" } else { "User" }.into());
        body.insert(if self.capital { "Message" } else { "message" }.into(), self.message.into());
        if let Some(r) = self.reason {
            body.insert("Reason".into(), r.into());
        }
        let mut resp = (self.status, axum::Json(serde_json::Value::Object(body))).into_response();
        let h = resp.headers_mut();
        h.insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            h.insert("retry-after", v);
        }
        resp
    }
}
