//! AWS Signature Version 4: a pure verifier (and a signer) for requests to Quarters' AWS APIs.
//!
//! ```
//! use quarters_sigv4::{PayloadHash, SignedRequest, SigningParams};
//!
//! // A client signs…
//! let mut headers = http::HeaderMap::new();
//! headers.insert(http::header::HOST, http::HeaderValue::from_static("localhost:9000"));
//! let params = SigningParams {
//!     access_key_id: "AKIDEXAMPLE",
//!     secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
//!     session_token: None,
//!     region: "us-east-1",
//!     service: "lambda",
//!     amz_date: "20260101T000000Z",
//! };
//! let path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af/invocations";
//! quarters_sigv4::sign("POST", path, "", &mut headers, b"{}", &params).expect("sign");
//!
//! // …and the server verifies.
//! let req = SignedRequest { method: "POST", path, query: "", headers: &headers, payload_sha256: PayloadHash::Body(b"{}") };
//! let parsed = quarters_sigv4::parse(&req).expect("well formed").expect("signed");
//! assert_eq!(parsed.access_key_id, "AKIDEXAMPLE");
//! let now = 1_767_225_600; // 2026-01-01T00:00:00Z
//! quarters_sigv4::verify(&req, &parsed, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", now).expect("valid");
//! ```
//!
//! # Encoding rules (as AWS's SDKs apply them)
//! * Canonical URI: for every service but S3 the path *as received* (already percent-encoded)
//!   is normalised (`.`, `..` and empty segments removed) and URI-encoded **again**, so a
//!   Lambda ARN `arn%3Aaws%3A…` in the path signs as `arn%253Aaws%253A…`. For `s3` the path is
//!   not normalised and each segment is encoded **once** (decoded, then re-encoded per RFC 3986).
//!   [`VerifyOptions`] picks this from the credential scope's service; [`verify_with`] overrides.
//! * Canonical query: every key and value is percent-decoded and re-encoded (RFC 3986
//!   unreserved characters only), then sorted by key, then value. A literal `+` is a plus
//!   sign (`%2B`), as AWS and botocore treat it, not a space.
//! * Canonical headers: the signed headers in the order the client listed them, values trimmed
//!   with inner whitespace runs collapsed, repeated headers joined with `,`.
//! * Payload hash: see [`PayloadHash`].

mod canonical;
mod error;
mod time;

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use canonical::UriEncoding;
use canonical::{
    CanonicalInput, HashSink, Sink, decoded_eq, query_pairs, signed_values_have_tabs, write_canonical_request,
};
pub use error::SigV4Error;
pub use time::{format_amz_date, parse_amz_date};

/// The only algorithm accepted: `AWS4-HMAC-SHA256`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash a client uses when it does not sign the body.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// How far (seconds) a request's time may be from the server's clock: 15 minutes.
pub const MAX_SKEW_SECS: u64 = 15 * 60;
/// The longest a presigned URL may live (`X-Amz-Expires`): 7 days.
pub const MAX_PRESIGN_EXPIRES_SECS: u64 = 7 * 24 * 60 * 60;

const CONTENT_SHA256: &str = "x-amz-content-sha256";
const AMZ_DATE: &str = "x-amz-date";
const SECURITY_TOKEN: &str = "x-amz-security-token";

type HmacSha256 = Hmac<Sha256>;

/// What the verifier needs from the request. Build it from an `http::Request` without
/// consuming the body, e.g. with [`SignedRequest::from_parts`].
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// The HTTP method, upper case (`GET`).
    pub method: &'a str,
    /// The path exactly as received, still percent-encoded (`http::Uri::path`).
    pub path: &'a str,
    /// The query string exactly as received, without `?` (`http::Uri::query`), or `""`.
    pub query: &'a str,
    /// The request headers. `host` must be among them (HTTP/1.1 always has it).
    pub headers: &'a HeaderMap,
    /// Where the payload hash comes from.
    pub payload_sha256: PayloadHash<'a>,
}

impl<'a> SignedRequest<'a> {
    /// Borrows method, path, query and headers from a request's head.
    pub fn from_parts(parts: &'a http::request::Parts, payload_sha256: PayloadHash<'a>) -> Self {
        SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            payload_sha256,
        }
    }
}

/// Where the canonical request's payload hash comes from.
///
/// Whatever the mode, when an `x-amz-content-sha256` header is present its value is the
/// payload hash the client signed (as in every SDK); a presigned S3 URL without it signs
/// `UNSIGNED-PAYLOAD`.
#[derive(Debug, Clone, Copy)]
pub enum PayloadHash<'a> {
    /// The whole body is at hand. Without `x-amz-content-sha256` its SHA-256 is the payload
    /// hash (except for a presigned S3 URL, which signs `UNSIGNED-PAYLOAD` and leaves the body
    /// uncovered). With the header, the header is the payload hash and must also equal the
    /// body's SHA-256, so `UNSIGNED-PAYLOAD` and `STREAMING-…` are refused
    /// ([`SigV4Error::ContentSha256Mismatch`], checked after the signature).
    Body(&'a [u8]),
    /// The body is not at hand and need not be signed: use `x-amz-content-sha256` if present
    /// (any value, `UNSIGNED-PAYLOAD` included), else `UNSIGNED-PAYLOAD`. When the header holds
    /// a hex digest the caller should check the body against it while streaming it.
    Unsigned,
    /// Trust `x-amz-content-sha256`, which must be present ([`SigV4Error::MissingContentSha256`]).
    /// The caller checks the body against it (or handles `STREAMING-…` chunk signatures).
    Header,
}

/// A parsed SigV4 signature, from the `Authorization` header or from presigned query
/// parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The access key id, to look the secret up with.
    pub access_key_id: String,
    /// The credential scope's date, `YYYYMMDD`.
    pub date: String,
    /// The credential scope's region.
    pub region: String,
    /// The credential scope's service (`lambda`, `logs`, `s3`, …).
    pub service: String,
    /// The signed header names, in the order the client listed them.
    pub signed_headers: Vec<String>,
    /// The signature the client sent (hex).
    pub signature: String,
    /// The request time, `YYYYMMDDTHHMMSSZ` (from `X-Amz-Date`, or converted from `Date`).
    pub amz_date: String,
    /// The signature came from the query string (a presigned URL).
    pub presigned: bool,
    /// `X-Amz-Expires` of a presigned URL (seconds); `None` for header authentication.
    pub expires: Option<u64>,
    /// The session token (`x-amz-security-token` header or `X-Amz-Security-Token` parameter),
    /// signed or not: the caller validates it.
    pub session_token: Option<String>,
}

/// How [`verify_with`] canonicalises the request. [`verify`] uses
/// [`VerifyOptions::for_service`] with the credential scope's service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Encode the path once (S3) or twice (everything else).
    pub uri_encoding: UriEncoding,
    /// Remove `.`, `..` and empty path segments before encoding (everything but S3).
    pub normalize_path: bool,
    /// The allowed clock skew in seconds ([`MAX_SKEW_SECS`]).
    pub max_skew_secs: u64,
}

impl VerifyOptions {
    /// AWS's rules for `service`: S3 encodes the path once and does not normalise it; every
    /// other service normalises and encodes twice.
    pub fn for_service(service: &str) -> Self {
        let s3 = service == "s3";
        VerifyOptions {
            uri_encoding: if s3 { UriEncoding::Single } else { UriEncoding::Double },
            normalize_path: !s3,
            max_skew_secs: MAX_SKEW_SECS,
        }
    }
}

/// A derived signing key (`AWS4`+secret → date → region → service → `aws4_request`), valid
/// for one credential scope. Deriving costs four HMACs, about a third of a verification, so a
/// caller may cache it per access key and scope and use [`verify_with_key`].
#[derive(Clone)]
pub struct SigningKey {
    key: [u8; 32],
    date: String,
    region: String,
    service: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key", &"<redacted>")
            .field("date", &self.date)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish()
    }
}

impl SigningKey {
    /// Derives the key for the scope `date/region/service/aws4_request`.
    pub fn derive(secret_access_key: &str, date: &str, region: &str, service: &str) -> Self {
        SigningKey {
            key: derive_key(secret_access_key, date, region, service),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
        }
    }

    /// The raw 32-byte key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Whether this key belongs to `parsed`'s credential scope.
    pub fn matches(&self, parsed: &Parsed) -> bool {
        self.date == parsed.date && self.region == parsed.region && self.service == parsed.service
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn derive_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut stack = [0u8; 128];
    let heap: Vec<u8>;
    let k_secret: &[u8] = if secret.len() + 4 <= stack.len() {
        stack[..4].copy_from_slice(b"AWS4");
        stack[4..4 + secret.len()].copy_from_slice(secret.as_bytes());
        &stack[..4 + secret.len()]
    } else {
        heap = [b"AWS4".as_slice(), secret.as_bytes()].concat();
        &heap
    };
    let k_date = hmac(k_secret, &[date.as_bytes()]);
    stack.fill(0);
    let k_region = hmac(&k_date, &[region.as_bytes()]);
    let k_service = hmac(&k_region, &[service.as_bytes()]);
    hmac(&k_service, &[b"aws4_request"])
}

fn hex32(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    hex::encode_to_slice(bytes, &mut out).expect("64 bytes hold 32 bytes of hex");
    out
}

fn hex_str(hex: &[u8; 64]) -> &str {
    std::str::from_utf8(hex).expect("hex is ASCII")
}

fn incomplete(msg: impl Into<String>) -> SigV4Error {
    SigV4Error::IncompleteSignature(msg.into())
}

/// The credential scope and time that go into the string to sign.
struct Scope<'a> {
    amz_date: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

fn write_string_to_sign<W: Sink>(w: &mut W, scope: &Scope<'_>, creq_hash: &[u8; 64]) {
    w.put(ALGORITHM.as_bytes());
    w.put_byte(b'\n');
    w.put(scope.amz_date.as_bytes());
    w.put_byte(b'\n');
    for part in [scope.date, scope.region, scope.service] {
        w.put(part.as_bytes());
        w.put_byte(b'/');
    }
    w.put(b"aws4_request\n");
    w.put(creq_hash);
}

struct MacSink(HmacSha256);

impl Sink for MacSink {
    fn put(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn put_byte(&mut self, b: u8) {
        self.0.update(&[b]);
    }
}

/// The hex signature of a canonical request.
fn compute_signature<S: AsRef<str>>(input: &CanonicalInput<'_, S>, scope: &Scope<'_>, key: &[u8; 32]) -> [u8; 64] {
    let mut sink = HashSink::new();
    write_canonical_request(&mut sink, input);
    let creq_hash = hex32(&sink.finish());
    let mut mac = MacSink(HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length"));
    write_string_to_sign(&mut mac, scope, &creq_hash);
    hex32(&mac.0.finalize().into_bytes().into())
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

const PRESIGN_PARAMS: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// Any of these in the query makes the request a presigned one.
const PRESIGN_MARKERS: [&str; 3] = ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature"];

/// Parses the request's SigV4 signature without checking it.
///
/// Returns `Ok(None)` when the request is not signed at all (no `Authorization` header, no
/// `X-Amz-Algorithm`/`X-Amz-Credential`/`X-Amz-Signature` parameter): the caller answers
/// [`SigV4Error::MissingAuthenticationToken`] or treats the request as anonymous. Any other
/// `Authorization` scheme (`Bearer …`, SigV2) is an error.
pub fn parse(req: &SignedRequest<'_>) -> Result<Option<Parsed>, SigV4Error> {
    let auth = req.headers.get(header::AUTHORIZATION);
    let presigned = query_pairs(req.query, false).any(|(k, _)| PRESIGN_MARKERS.iter().any(|p| decoded_eq(k, p)));
    match (auth, presigned) {
        (None, false) => Ok(None),
        (Some(_), true) => Err(SigV4Error::AmbiguousAuthentication),
        (Some(value), false) => parse_header(req, value).map(Some),
        (None, true) => parse_query(req).map(Some),
    }
}

/// `AKID/20260101/us-east-1/lambda/aws4_request` → (key id, date, region, service).
fn parse_credential(cred: &str) -> Result<(String, String, String, String), SigV4Error> {
    let mut parts = cred.split('/');
    let mut next = || parts.next().filter(|p| !p.is_empty());
    let (Some(akid), Some(date), Some(region), Some(service), Some(term), None) =
        (next(), next(), next(), next(), next(), next())
    else {
        return Err(incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{cred}'"
        )));
    };
    if term != "aws4_request" {
        return Err(incomplete(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{term}'."
        )));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(incomplete(format!("Credential date must be in the form YYYYMMDD, got '{date}'.")));
    }
    Ok((akid.to_owned(), date.to_owned(), region.to_owned(), service.to_owned()))
}

fn parse_signed_headers(list: &str) -> Result<Vec<String>, SigV4Error> {
    let names: Vec<String> = list.split(';').map(str::to_owned).collect();
    if names.iter().any(String::is_empty) {
        return Err(incomplete(format!("SignedHeaders is malformed: '{list}'.")));
    }
    Ok(names)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, SigV4Error> {
    headers
        .get(name)
        .map(|v| v.to_str().map_err(|_| incomplete(format!("The '{name}' header is not valid ASCII."))))
        .transpose()
}

fn parse_header(req: &SignedRequest<'_>, value: &HeaderValue) -> Result<Parsed, SigV4Error> {
    let value = value.to_str().map_err(|_| incomplete("The Authorization header is not valid ASCII."))?.trim();
    let (algorithm, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported Authorization type '{algorithm}': only '{ALGORITHM}' (Signature Version 4) is accepted."
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(incomplete(format!(
                "'{part}' not a valid key=value pair (missing equal-sign) in Authorization header: '{value}'."
            )));
        };
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed_headers = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => {}
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) = (credential, signed_headers, signature) else {
        let mut msg = String::new();
        for (name, v) in [("Credential", credential), ("Signature", signature), ("SignedHeaders", signed_headers)] {
            if v.is_none() {
                msg.push_str(&format!("Authorization header requires '{name}' parameter. "));
            }
        }
        msg.push_str(&format!("Authorization={value}"));
        return Err(incomplete(msg));
    };
    let (access_key_id, date, region, service) = parse_credential(credential)?;

    let amz_date = match header_str(req.headers, AMZ_DATE)? {
        Some(d) => d.trim().to_owned(),
        None => match header_str(req.headers, "date")? {
            Some(d) => time::http_date_to_amz(d)
                .ok_or_else(|| incomplete(format!("The Date header must be an HTTP date (IMF-fixdate), got '{d}'.")))?,
            None => {
                return Err(incomplete(
                    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
                ));
            }
        },
    };
    Ok(Parsed {
        access_key_id,
        date,
        region,
        service,
        signed_headers: parse_signed_headers(signed_headers)?,
        signature: signature.to_owned(),
        amz_date,
        presigned: false,
        expires: None,
        session_token: header_str(req.headers, SECURITY_TOKEN)?.map(str::to_owned),
    })
}

fn parse_query(req: &SignedRequest<'_>) -> Result<Parsed, SigV4Error> {
    let mut values: [Option<&[u8]>; 7] = [None; 7];
    for (k, v) in query_pairs(req.query, false) {
        if let Some(i) = PRESIGN_PARAMS.iter().position(|p| decoded_eq(k, p))
            && values[i].replace(v).is_some()
        {
            return Err(incomplete(format!("The query parameter '{}' appears more than once.", PRESIGN_PARAMS[i])));
        }
    }
    let get = |i: usize| values[i].map(canonical::decode_bytes);
    let [Some(algorithm), Some(credential), Some(amz_date), Some(expires), Some(signed_headers), Some(signature)] =
        [get(0), get(1), get(2), get(3), get(4), get(5)]
    else {
        return Err(incomplete(
            "AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders', and 'X-Amz-Expires' parameters.",
        ));
    };
    if algorithm != ALGORITHM {
        return Err(incomplete(format!("X-Amz-Algorithm only supports \"{ALGORITHM}\"")));
    }
    let expires: u64 = expires.parse().map_err(|_| incomplete("X-Amz-Expires should be a number"))?;
    if expires > MAX_PRESIGN_EXPIRES_SECS {
        return Err(incomplete(format!(
            "X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGN_EXPIRES_SECS}"
        )));
    }
    let (access_key_id, date, region, service) = parse_credential(&credential)?;
    Ok(Parsed {
        access_key_id,
        date,
        region,
        service,
        signed_headers: parse_signed_headers(&signed_headers)?,
        signature,
        amz_date,
        presigned: true,
        expires: Some(expires),
        session_token: get(6),
    })
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// Verifies `parsed` (from [`parse`]) against the secret key, with AWS's rules for the
/// credential scope's service ([`VerifyOptions::for_service`]).
///
/// `now` (seconds since the Unix epoch) drives the clock-skew check (15 minutes either way,
/// [`SigV4Error::RequestTimeTooSkewed`]) and, for presigned URLs, the expiry check
/// ([`SigV4Error::RequestExpired`]). The caller remains responsible for checking that the
/// access key exists, the session token is valid, and the scope's region and service are
/// ones it serves.
pub fn verify(req: &SignedRequest<'_>, parsed: &Parsed, secret_access_key: &str, now: u64) -> Result<(), SigV4Error> {
    verify_with(req, parsed, secret_access_key, now, &VerifyOptions::for_service(&parsed.service))
}

/// [`verify`] with explicit canonicalisation options.
pub fn verify_with(
    req: &SignedRequest<'_>,
    parsed: &Parsed,
    secret_access_key: &str,
    now: u64,
    opts: &VerifyOptions,
) -> Result<(), SigV4Error> {
    let request_time = check_structure(parsed)?;
    check_time(parsed, request_time, now, opts.max_skew_secs)?;
    let key = derive_key(secret_access_key, &parsed.date, &parsed.region, &parsed.service);
    check_signature(req, parsed, &key, opts)
}

/// [`verify_with`] with a cached [`SigningKey`]; a key for another scope than `parsed`'s
/// fails with [`SigV4Error::SignatureDoesNotMatch`].
pub fn verify_with_key(
    req: &SignedRequest<'_>,
    parsed: &Parsed,
    key: &SigningKey,
    now: u64,
    opts: &VerifyOptions,
) -> Result<(), SigV4Error> {
    let request_time = check_structure(parsed)?;
    check_time(parsed, request_time, now, opts.max_skew_secs)?;
    if !key.matches(parsed) {
        return Err(SigV4Error::SignatureDoesNotMatch);
    }
    check_signature(req, parsed, &key.key, opts)
}

/// Checks what does not need the key; returns the request time (epoch seconds).
fn check_structure(parsed: &Parsed) -> Result<u64, SigV4Error> {
    let request_time = time::parse_amz_date(&parsed.amz_date).ok_or_else(|| {
        incomplete(format!(
            "Date must be in ISO-8601 'basic format'. Got '{}'. See http://en.wikipedia.org/wiki/ISO_8601",
            parsed.amz_date
        ))
    })?;
    let day = &parsed.amz_date[..8];
    if parsed.date != day {
        return Err(incomplete(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{day}', from '{}'.",
            parsed.date, parsed.amz_date
        )));
    }
    if !parsed.signed_headers.iter().any(|h| h == "host") {
        return Err(incomplete("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."));
    }
    if parsed.presigned && parsed.expires.is_none() {
        return Err(incomplete("A presigned request requires 'X-Amz-Expires'."));
    }
    Ok(request_time)
}

fn check_time(parsed: &Parsed, request_time: u64, now: u64, skew: u64) -> Result<(), SigV4Error> {
    let too_skewed = |future: bool| SigV4Error::RequestTimeTooSkewed {
        request_time: parsed.amz_date.clone(),
        server_time: format_amz_date(now),
        limit_time: format_amz_date(if future { now.saturating_add(skew) } else { now.saturating_sub(skew) }),
        future,
    };
    if request_time > now.saturating_add(skew) {
        return Err(too_skewed(true));
    }
    match (parsed.presigned, parsed.expires) {
        (true, Some(expires)) => {
            let expires_at = request_time.saturating_add(expires);
            if now > expires_at {
                return Err(SigV4Error::RequestExpired {
                    expires_at: format_amz_date(expires_at),
                    server_time: format_amz_date(now),
                });
            }
        }
        _ if request_time.saturating_add(skew) < now => return Err(too_skewed(false)),
        _ => {}
    }
    Ok(())
}

fn check_signature(
    req: &SignedRequest<'_>,
    parsed: &Parsed,
    key: &[u8; 32],
    opts: &VerifyOptions,
) -> Result<(), SigV4Error> {
    let header = req
        .headers
        .get(CONTENT_SHA256)
        .map(|v| v.to_str().map_err(|_| SigV4Error::ContentSha256Mismatch))
        .transpose()?
        .map(str::trim);
    let presigned_s3 = parsed.presigned && parsed.service == "s3";
    let body_hash: [u8; 64];
    // The body whose hash must equal the header, checked once the signature is known good.
    let mut check_body: Option<&[u8]> = None;
    let payload: &str = match (req.payload_sha256, header) {
        (PayloadHash::Body(body), Some(h)) => {
            check_body = Some(body);
            h
        }
        (PayloadHash::Body(_), None) if presigned_s3 => UNSIGNED_PAYLOAD,
        (PayloadHash::Body(body), None) => {
            body_hash = hex32(&Sha256::digest(body).into());
            hex_str(&body_hash)
        }
        (PayloadHash::Unsigned | PayloadHash::Header, Some(h)) => h,
        (PayloadHash::Unsigned, None) => UNSIGNED_PAYLOAD,
        (PayloadHash::Header, None) if presigned_s3 => UNSIGNED_PAYLOAD,
        (PayloadHash::Header, None) => return Err(SigV4Error::MissingContentSha256),
    };

    let input = canonical_input(req, parsed, opts, payload);
    let scope =
        Scope { amz_date: &parsed.amz_date, date: &parsed.date, region: &parsed.region, service: &parsed.service };
    let matches = |input: &CanonicalInput<'_, String>| {
        let expected = compute_signature(input, &scope, key);
        bool::from(expected.as_slice().ct_eq(parsed.signature.as_bytes()))
    };
    // SDKs disagree on tabs inside header values (botocore and JS fold them like spaces,
    // aws-sigv4 and Go keep them); accept either reading.
    let ok = matches(&input)
        || (signed_values_have_tabs(req.headers, &parsed.signed_headers)
            && matches(&CanonicalInput { fold_tabs: false, ..input }));
    if !ok {
        return Err(SigV4Error::SignatureDoesNotMatch);
    }
    if let Some(body) = check_body {
        let actual = hex32(&Sha256::digest(body).into());
        if !payload.as_bytes().eq_ignore_ascii_case(&actual) {
            return Err(SigV4Error::ContentSha256Mismatch);
        }
    }
    Ok(())
}

/// What the canonical request of a parsed request is made of.
fn canonical_input<'a>(
    req: &SignedRequest<'a>,
    parsed: &'a Parsed,
    opts: &VerifyOptions,
    payload: &'a str,
) -> CanonicalInput<'a, String> {
    CanonicalInput {
        method: req.method,
        path: req.path,
        query: req.query,
        headers: req.headers,
        signed_headers: &parsed.signed_headers,
        payload_hash: payload,
        encoding: opts.uri_encoding,
        normalize_path: opts.normalize_path,
        exclude_signature: parsed.presigned,
        fold_tabs: true,
    }
}

/// The canonical request [`verify_with`] builds for `req` (for debugging a
/// [`SigV4Error::SignatureDoesNotMatch`]: S3 returns it in its error body).
pub fn canonical_request(req: &SignedRequest<'_>, parsed: &Parsed, opts: &VerifyOptions) -> Result<String, SigV4Error> {
    let header = header_str(req.headers, CONTENT_SHA256)?.map(str::trim);
    let presigned_s3 = parsed.presigned && parsed.service == "s3";
    let body_hash;
    let payload = match (req.payload_sha256, header) {
        (_, Some(h)) => h,
        (PayloadHash::Body(_), None) if presigned_s3 => UNSIGNED_PAYLOAD,
        (PayloadHash::Body(body), None) => {
            body_hash = hex32(&Sha256::digest(body).into());
            hex_str(&body_hash)
        }
        (PayloadHash::Header, None) if !presigned_s3 => return Err(SigV4Error::MissingContentSha256),
        (PayloadHash::Unsigned | PayloadHash::Header, None) => UNSIGNED_PAYLOAD,
    };
    let mut out = Vec::with_capacity(256);
    write_canonical_request(&mut out, &canonical_input(req, parsed, opts, payload));
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The string to sign for `parsed`'s scope and a canonical request.
pub fn string_to_sign(parsed: &Parsed, canonical_request: &str) -> String {
    let hash = hex32(&Sha256::digest(canonical_request.as_bytes()).into());
    let mut out = Vec::with_capacity(160);
    let scope =
        Scope { amz_date: &parsed.amz_date, date: &parsed.date, region: &parsed.region, service: &parsed.service };
    write_string_to_sign(&mut out, &scope, &hash);
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Signing
// ---------------------------------------------------------------------------------------------

/// Credentials, scope and time for [`sign`] and [`presign`].
#[derive(Clone, Copy)]
pub struct SigningParams<'a> {
    /// Access key id.
    pub access_key_id: &'a str,
    /// Secret access key.
    pub secret_access_key: &'a str,
    /// Session token of temporary credentials: sent as `x-amz-security-token` (signed).
    pub session_token: Option<&'a str>,
    /// Region, e.g. `us-east-1`.
    pub region: &'a str,
    /// Service, e.g. `lambda`, `s3`.
    pub service: &'a str,
    /// Request time, `YYYYMMDDTHHMMSSZ` (see [`format_amz_date`]).
    pub amz_date: &'a str,
}

impl std::fmt::Debug for SigningParams<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningParams")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .field("service", &self.service)
            .field("amz_date", &self.amz_date)
            .finish_non_exhaustive()
    }
}

/// Headers never signed (they change in transit), as in botocore.
const UNSIGNED_HEADERS: [&str; 12] = [
    "authorization",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

fn signing_setup<'h>(headers: &'h HeaderMap, params: &SigningParams<'_>) -> Result<Vec<&'h str>, SigV4Error> {
    if time::parse_amz_date(params.amz_date).is_none() {
        return Err(incomplete(format!("amz_date must be YYYYMMDDTHHMMSSZ, got '{}'", params.amz_date)));
    }
    if !headers.contains_key(header::HOST) {
        return Err(incomplete("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."));
    }
    let mut names: Vec<&str> =
        headers.keys().map(http::HeaderName::as_str).filter(|n| !UNSIGNED_HEADERS.contains(n)).collect();
    names.sort_unstable();
    Ok(names)
}

fn header_value(value: &str) -> Result<HeaderValue, SigV4Error> {
    HeaderValue::from_str(value).map_err(|_| incomplete("signing value is not a valid header value"))
}

/// Signs a request in place, as an AWS SDK would: sets `x-amz-date`, `x-amz-security-token`
/// (with a session token), `x-amz-content-sha256` (for `s3`, unless already set, e.g. to
/// `UNSIGNED-PAYLOAD`) and `authorization`, signing every header present except hop-by-hop
/// ones and `user-agent`. `headers` must contain `host`. `path` and `query` are as they will
/// be sent (percent-encoded). Returns the `Authorization` value.
pub fn sign(
    method: &str,
    path: &str,
    query: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    params: &SigningParams<'_>,
) -> Result<String, SigV4Error> {
    // Validate before touching the headers.
    signing_setup(headers, params)?;
    headers.remove(header::AUTHORIZATION);
    headers.insert(AMZ_DATE, header_value(params.amz_date)?);
    if let Some(token) = params.session_token {
        headers.insert(SECURITY_TOKEN, header_value(token)?);
    }
    let body_hash = hex32(&Sha256::digest(body).into());
    if params.service == "s3" && !headers.contains_key(CONTENT_SHA256) {
        headers.insert(CONTENT_SHA256, header_value(hex_str(&body_hash))?);
    }
    let payload = match header_str(headers, CONTENT_SHA256)? {
        Some(h) => h.trim().to_owned(),
        None => hex_str(&body_hash).to_owned(),
    };
    let signed = signing_setup(headers, params)?;
    let opts = VerifyOptions::for_service(params.service);
    let date = &params.amz_date[..8];
    let scope = Scope { amz_date: params.amz_date, date, region: params.region, service: params.service };
    let key = derive_key(params.secret_access_key, date, params.region, params.service);
    let input = CanonicalInput {
        method,
        path,
        query,
        headers,
        signed_headers: &signed,
        payload_hash: &payload,
        encoding: opts.uri_encoding,
        normalize_path: opts.normalize_path,
        exclude_signature: false,
        fold_tabs: true,
    };
    let signature = compute_signature(&input, &scope, &key);
    let authorization = format!(
        "{ALGORITHM} Credential={}/{date}/{}/{}/aws4_request, SignedHeaders={}, Signature={}",
        params.access_key_id,
        params.region,
        params.service,
        signed.join(";"),
        hex_str(&signature)
    );
    headers.insert(header::AUTHORIZATION, header_value(&authorization)?);
    Ok(authorization)
}

/// Presigns a request: returns the query string to send instead of `query` (the original
/// parameters followed by `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`,
/// `X-Amz-Expires`, `X-Amz-SignedHeaders`, `X-Amz-Security-Token` and `X-Amz-Signature`).
/// Signs every header in `headers` except hop-by-hop ones (`host` is required). The payload
/// is `UNSIGNED-PAYLOAD` for `s3`, and the hash of an empty body otherwise (as botocore does).
pub fn presign(
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    params: &SigningParams<'_>,
    expires_secs: u64,
) -> Result<String, SigV4Error> {
    if expires_secs > MAX_PRESIGN_EXPIRES_SECS {
        return Err(incomplete(format!(
            "X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGN_EXPIRES_SECS}"
        )));
    }
    let signed = signing_setup(headers, params)?;
    let date = &params.amz_date[..8];
    let enc = canonical::encode_component;
    let credential = format!("{}/{date}/{}/{}/aws4_request", params.access_key_id, params.region, params.service);
    let mut q = String::with_capacity(query.len() + 256);
    q.push_str(query);
    if !q.is_empty() {
        q.push('&');
    }
    q.push_str(&format!(
        "X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={}&X-Amz-Date={}&X-Amz-Expires={expires_secs}&X-Amz-SignedHeaders={}",
        enc(&credential),
        enc(params.amz_date),
        enc(&signed.join(";"))
    ));
    if let Some(token) = params.session_token {
        q.push_str("&X-Amz-Security-Token=");
        q.push_str(&enc(token));
    }
    let opts = VerifyOptions::for_service(params.service);
    let empty_hash;
    let payload = if params.service == "s3" {
        UNSIGNED_PAYLOAD
    } else {
        empty_hash = hex32(&Sha256::digest(b"").into());
        hex_str(&empty_hash)
    };
    let scope = Scope { amz_date: params.amz_date, date, region: params.region, service: params.service };
    let key = derive_key(params.secret_access_key, date, params.region, params.service);
    let input = CanonicalInput {
        method,
        path,
        query: &q,
        headers,
        signed_headers: &signed,
        payload_hash: payload,
        encoding: opts.uri_encoding,
        normalize_path: opts.normalize_path,
        exclude_signature: false,
        fold_tabs: true,
    };
    let signature = compute_signature(&input, &scope, &key);
    q.push_str("&X-Amz-Signature=");
    q.push_str(hex_str(&signature));
    Ok(q)
}

// ---------------------------------------------------------------------------------------------
// Benchmark hook
// ---------------------------------------------------------------------------------------------

/// Times `n` parse + verify rounds of a typical signed Lambda `Invoke` request (ARN in the
/// path, a query parameter, six signed headers, a small JSON body) and returns the total
/// elapsed time; divide by `n` for the cost per request. For `quarters-bench` and the
/// ignored `bench_verify_100k` test.
///
/// # Panics
/// If the fixed request fails to sign or verify (a bug).
pub fn bench_verify(n: usize) -> Duration {
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    let path =
        "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Amy-function/invocations";
    let query = "Qualifier=%24LATEST";
    let body = br#"{"orderId":"12345","items":[{"sku":"A-1","qty":2}],"note":"benchmark payload"}"#;
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("localhost:9000"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert("x-amz-invocation-type", HeaderValue::from_static("RequestResponse"));
    headers.insert(header::USER_AGENT, HeaderValue::from_static("Boto3/1.40.0 md/Botocore#1.40.0 ua/2.1"));
    let params = SigningParams {
        access_key_id: "AKIDEXAMPLE",
        secret_access_key: secret,
        session_token: Some("FwoGZXIvYXdzEBYaDEXAMPLETOKENxyz"),
        region: "us-east-1",
        service: "lambda",
        amz_date: "20260101T000000Z",
    };
    sign("POST", path, query, &mut headers, body, &params).expect("benchmark request signs");
    let now = time::parse_amz_date(params.amz_date).expect("valid date") + 30;

    let start = Instant::now();
    for _ in 0..n {
        let req = std::hint::black_box(SignedRequest {
            method: "POST",
            path,
            query,
            headers: &headers,
            payload_sha256: PayloadHash::Body(body),
        });
        let parsed = parse(&req).expect("parses").expect("is signed");
        verify(&req, &parsed, std::hint::black_box(secret), now).expect("verifies");
    }
    start.elapsed()
}
