//! Errors, each mapping onto the error AWS returns in the same situation.

/// Why a request's SigV4 authentication was rejected.
///
/// [`SigV4Error::code`] gives AWS's error code and [`SigV4Error::message`] (= `Display`) its
/// message. AWS's JSON protocols (Lambda, CloudWatch Logs) report several of these under a
/// protocol-specific name — e.g. Lambda answers `InvalidSignatureException` for both
/// [`SigV4Error::SignatureDoesNotMatch`] and [`SigV4Error::RequestTimeTooSkewed`] — so the
/// service layer may remap the code; the messages are AWS's own and can be kept as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigV4Error {
    /// The request carries no authentication at all. [`crate::parse`] never returns this (it
    /// answers `Ok(None)`): it is here so the caller has the matching AWS error at hand.
    #[error("Missing Authentication Token")]
    MissingAuthenticationToken,

    /// The signature is malformed or incomplete (missing `Credential`, bad scope, no date, …).
    #[error("{0}")]
    IncompleteSignature(String),

    /// Both an `Authorization` header and presigned query parameters were sent.
    #[error(
        "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified"
    )]
    AmbiguousAuthentication,

    /// The signature is well formed but wrong (wrong secret, or the request was altered).
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
    )]
    SignatureDoesNotMatch,

    /// Unknown access key id. Never produced by this crate: the caller looks the key up.
    #[error("The security token included in the request is invalid.")]
    InvalidClientTokenId,

    /// Unknown access key id, as the JSON protocols (Lambda, Logs) name it. Never produced by
    /// this crate: the caller looks the key up.
    #[error("The security token included in the request is invalid.")]
    UnrecognizedClient,

    /// The request time (`X-Amz-Date`/`Date`) is more than the allowed skew (15 minutes) away
    /// from the server's clock. Times are in `YYYYMMDDTHHMMSSZ` form.
    #[error("{}", skew_message(request_time, server_time, limit_time, *future))]
    RequestTimeTooSkewed {
        /// The request's time.
        request_time: String,
        /// The server's time.
        server_time: String,
        /// The server's time minus (or, when `future`, plus) the allowed skew.
        limit_time: String,
        /// The request is dated in the future rather than the past.
        future: bool,
    },

    /// A presigned URL used after `X-Amz-Date + X-Amz-Expires`.
    #[error("Request has expired")]
    RequestExpired {
        /// When the URL stopped being valid (`YYYYMMDDTHHMMSSZ`).
        expires_at: String,
        /// The server's time (`YYYYMMDDTHHMMSSZ`).
        server_time: String,
    },

    /// `x-amz-content-sha256` does not hold the SHA-256 of the body the caller supplied.
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,

    /// [`crate::PayloadHash::Header`] was requested but the header is absent.
    #[error("Missing required header for this request: x-amz-content-sha256")]
    MissingContentSha256,
}

fn skew_message(request_time: &str, server_time: &str, limit_time: &str, future: bool) -> String {
    if future {
        format!("Signature not yet current: {request_time} is still later than {limit_time} ({server_time} + 15 min.)")
    } else {
        format!("Signature expired: {request_time} is now earlier than {limit_time} ({server_time} - 15 min.)")
    }
}

impl SigV4Error {
    /// AWS's error code for this error (`SignatureDoesNotMatch`, `IncompleteSignature`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingAuthenticationToken => "MissingAuthenticationToken",
            Self::IncompleteSignature(_) => "IncompleteSignature",
            Self::AmbiguousAuthentication => "InvalidArgument",
            Self::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            Self::InvalidClientTokenId => "InvalidClientTokenId",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::RequestTimeTooSkewed { .. } => "RequestTimeTooSkewed",
            Self::RequestExpired { .. } => "AccessDenied",
            Self::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
            Self::MissingContentSha256 => "InvalidRequest",
        }
    }

    /// AWS's message for this error (the same text as `Display`).
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The HTTP status AWS answers with: 400 for malformed requests, 403 for the rest.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::IncompleteSignature(_)
            | Self::AmbiguousAuthentication
            | Self::ContentSha256Mismatch
            | Self::MissingContentSha256 => 400,
            _ => 403,
        }
    }
}
