//! Behaviour of the verifier: round trips through the signer, tampering, clocks, presigned
//! URLs, session tokens, payload modes, encoding edge cases and malformed signatures.

use http::{HeaderMap, HeaderValue, header};
use quarters_sigv4::{
    PayloadHash, SigV4Error, SignedRequest, SigningKey, SigningParams, UriEncoding, VerifyOptions, canonical_request,
    parse, parse_amz_date, presign, sign, string_to_sign, verify, verify_with, verify_with_key,
};

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const DATE: &str = "20260101T000000Z";
const TOKEN: &str = "FwoGZXIvYXdzEXAMPLE/token+with=chars";

fn t0() -> u64 {
    parse_amz_date(DATE).expect("valid date")
}

fn params(service: &'static str, token: Option<&'static str>) -> SigningParams<'static> {
    SigningParams {
        access_key_id: AKID,
        secret_access_key: SECRET,
        session_token: token,
        region: "us-east-1",
        service,
        amz_date: DATE,
    }
}

fn base_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("localhost:9000"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert("x-amz-invocation-type", HeaderValue::from_static("RequestResponse"));
    h
}

/// An owned request, signed by `sign`, that tests can alter and verify.
#[derive(Clone)]
struct Req {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Req {
    fn signed(service: &'static str, method: &str, path: &str, query: &str, body: &[u8]) -> Req {
        Self::signed_with(service, method, path, query, body, None)
    }

    fn signed_with(
        service: &'static str,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
        token: Option<&'static str>,
    ) -> Req {
        let mut headers = base_headers();
        sign(method, path, query, &mut headers, body, &params(service, token)).expect("signs");
        Req { method: method.into(), path: path.into(), query: query.into(), headers, body: body.to_vec() }
    }

    fn view(&self) -> SignedRequest<'_> {
        self.view_with(PayloadHash::Body(&self.body))
    }

    fn view_with<'a>(&'a self, payload: PayloadHash<'a>) -> SignedRequest<'a> {
        SignedRequest {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            payload_sha256: payload,
        }
    }

    fn check_at(&self, now: u64) -> Result<(), SigV4Error> {
        let req = self.view();
        let parsed = parse(&req)?.ok_or(SigV4Error::MissingAuthenticationToken)?;
        verify(&req, &parsed, SECRET, now)
    }

    fn check(&self) -> Result<(), SigV4Error> {
        self.check_at(t0() + 5)
    }
}

const LAMBDA_PATH: &str =
    "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Amy-function/invocations";

fn lambda_invoke() -> Req {
    Req::signed("lambda", "POST", LAMBDA_PATH, "Qualifier=%24LATEST", br#"{"hello":"world"}"#)
}

#[test]
fn round_trip_and_parse() {
    let req = lambda_invoke();
    req.check().expect("a freshly signed request verifies");
    let parsed = parse(&req.view()).expect("parses").expect("signed");
    assert_eq!(parsed.access_key_id, AKID);
    assert_eq!(parsed.date, "20260101");
    assert_eq!(parsed.region, "us-east-1");
    assert_eq!(parsed.service, "lambda");
    assert_eq!(parsed.amz_date, DATE);
    assert_eq!(parsed.signed_headers, ["content-type", "host", "x-amz-date", "x-amz-invocation-type"]);
    assert_eq!(parsed.signature.len(), 64);
    assert!(!parsed.presigned);
    assert_eq!(parsed.expires, None);
    assert_eq!(parsed.session_token, None);
}

#[test]
fn unsigned_request_parses_to_none() {
    let headers = base_headers();
    let req = SignedRequest {
        method: "GET",
        path: "/",
        query: "a=1",
        headers: &headers,
        payload_sha256: PayloadHash::Body(b""),
    };
    assert_eq!(parse(&req), Ok(None));
    assert_eq!(SigV4Error::MissingAuthenticationToken.code(), "MissingAuthenticationToken");
}

#[test]
fn tampering_breaks_the_signature() {
    let good = lambda_invoke();
    let mismatch = Err(SigV4Error::SignatureDoesNotMatch);

    let mut r = good.clone();
    r.body = br#"{"hello":"World"}"#.to_vec();
    assert_eq!(r.check(), mismatch, "body");

    let mut r = good.clone();
    r.headers.insert("x-amz-invocation-type", HeaderValue::from_static("Event"));
    assert_eq!(r.check(), mismatch, "signed header value");

    let mut r = good.clone();
    r.headers.append("x-amz-invocation-type", HeaderValue::from_static("Event"));
    assert_eq!(r.check(), mismatch, "signed header repeated");

    let mut r = good.clone();
    r.headers.remove(header::CONTENT_TYPE);
    assert_eq!(r.check(), mismatch, "signed header removed");

    let mut r = good.clone();
    r.headers.insert(header::HOST, HeaderValue::from_static("evil:9000"));
    assert_eq!(r.check(), mismatch, "host");

    let mut r = good.clone();
    r.query = "Qualifier=v2".into();
    assert_eq!(r.check(), mismatch, "query value");

    let mut r = good.clone();
    r.query = "Qualifier=%24LATEST&extra=1".into();
    assert_eq!(r.check(), mismatch, "query parameter added");

    let mut r = good.clone();
    r.query = String::new();
    assert_eq!(r.check(), mismatch, "query parameter removed");

    let mut r = good.clone();
    r.path = r.path.replace("my-function", "other-function");
    assert_eq!(r.check(), mismatch, "path");

    let mut r = good.clone();
    r.method = "PUT".into();
    assert_eq!(r.check(), mismatch, "method");

    let mut r = good.clone();
    let auth = r.headers[header::AUTHORIZATION].to_str().expect("ascii").to_owned();
    let forged = auth.replace("x-amz-invocation-type", "x-amz-invocation-type;user-agent");
    r.headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&forged).expect("valid"));
    assert_eq!(r.check(), mismatch, "signed-header list");

    // Headers outside SignedHeaders may change freely (proxies add them).
    let mut r = good.clone();
    r.headers.insert(header::USER_AGENT, HeaderValue::from_static("curl/8"));
    r.headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
    r.check().expect("unsigned headers are not covered");

    // Query order is not significant (the canonical query is sorted).
    let r = Req::signed("lambda", "GET", "/2015-03-31/functions", "b=2&a=1", b"");
    let mut reordered = r.clone();
    reordered.query = "a=1&b=2".into();
    reordered.check().expect("reordered query verifies");
}

#[test]
fn wrong_secret_or_key_scope() {
    let req = lambda_invoke();
    let view = req.view();
    let parsed = parse(&view).expect("parses").expect("signed");
    assert_eq!(
        verify(&view, &parsed, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ", t0()),
        Err(SigV4Error::SignatureDoesNotMatch)
    );
    assert_eq!(verify(&view, &parsed, "", t0()), Err(SigV4Error::SignatureDoesNotMatch));

    // A cached key verifies the same, and only for its own scope.
    let opts = VerifyOptions::for_service("lambda");
    let key = SigningKey::derive(SECRET, "20260101", "us-east-1", "lambda");
    assert!(key.matches(&parsed));
    assert!(!format!("{key:?}").contains(SECRET));
    verify_with_key(&view, &parsed, &key, t0(), &opts).expect("cached key verifies");
    let other = SigningKey::derive(SECRET, "20260101", "eu-west-1", "lambda");
    assert_eq!(verify_with_key(&view, &parsed, &other, t0(), &opts), Err(SigV4Error::SignatureDoesNotMatch));

    // Changing the scope in the Authorization header breaks the signature.
    let mut r = req.clone();
    let auth = r.headers[header::AUTHORIZATION].to_str().expect("ascii").replace("/us-east-1/", "/eu-west-1/");
    r.headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&auth).expect("valid"));
    assert_eq!(r.check(), Err(SigV4Error::SignatureDoesNotMatch));
}

#[test]
fn clock_skew() {
    let req = lambda_invoke();
    req.check_at(t0()).expect("same second");
    req.check_at(t0() + 900).expect("15 minutes late");
    req.check_at(t0() - 900).expect("15 minutes early");

    let late = req.check_at(t0() + 901).expect_err("too late");
    assert_eq!(late.code(), "RequestTimeTooSkewed");
    assert_eq!(
        late.message(),
        "Signature expired: 20260101T000000Z is now earlier than 20260101T000001Z (20260101T001501Z - 15 min.)"
    );
    assert_eq!(late.http_status(), 403);

    let early = req.check_at(t0() - 901).expect_err("too early");
    assert!(matches!(early, SigV4Error::RequestTimeTooSkewed { future: true, .. }), "{early:?}");
    assert_eq!(
        early.message(),
        "Signature not yet current: 20260101T000000Z is still later than 20251231T235959Z (20251231T234459Z + 15 min.)"
    );

    // The skew window is configurable.
    let view = req.view();
    let parsed = parse(&view).expect("parses").expect("signed");
    let strict = VerifyOptions { max_skew_secs: 60, ..VerifyOptions::for_service("lambda") };
    assert!(matches!(
        verify_with(&view, &parsed, SECRET, t0() + 61, &strict),
        Err(SigV4Error::RequestTimeTooSkewed { .. })
    ));
}

fn presigned(service: &'static str, path: &str, query: &str, expires: u64, token: Option<&'static str>) -> Req {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("localhost:9000"));
    let q = presign("GET", path, query, &headers, &params(service, token), expires).expect("presigns");
    Req { method: "GET".into(), path: path.into(), query: q, headers, body: Vec::new() }
}

#[test]
fn presigned_url_valid_then_expired() {
    let req = presigned("s3", "/my-bucket/dir/my%20file.txt", "versionId=3", 3600, None);
    assert!(req.query.starts_with("versionId=3&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature="), "{}", req.query);
    let parsed = parse(&req.view()).expect("parses").expect("signed");
    assert!(parsed.presigned);
    assert_eq!(parsed.expires, Some(3600));
    assert_eq!(parsed.signed_headers, ["host"]);

    req.check_at(t0()).expect("valid at signing time");
    // Presigned URLs are not bound by the 15-minute skew in the past, only by their expiry.
    req.check_at(t0() + 3600).expect("valid until expiry");
    let expired = req.check_at(t0() + 3601).expect_err("expired");
    assert_eq!(expired.code(), "AccessDenied");
    assert_eq!(expired.message(), "Request has expired");
    assert!(matches!(req.check_at(t0() - 901), Err(SigV4Error::RequestTimeTooSkewed { future: true, .. })));

    // Any change to the URL breaks it, including the expiry; the body is never signed for S3.
    let mismatch = Err(SigV4Error::SignatureDoesNotMatch);
    let mut r = req.clone();
    r.query = r.query.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200");
    assert_eq!(r.check(), mismatch);
    let mut r = req.clone();
    r.query = r.query.replace("versionId=3", "versionId=4");
    assert_eq!(r.check(), mismatch);
    let mut r = req.clone();
    r.path = "/my-bucket/dir/other.txt".into();
    assert_eq!(r.check(), mismatch);
    let mut r = req.clone();
    r.body = b"anything".to_vec();
    r.check().expect("presigned S3 signs UNSIGNED-PAYLOAD");

    // A non-S3 presigned URL signs the (empty) body like botocore.
    let lam = presigned("lambda", "/2015-03-31/functions/f/configuration", "", 60, None);
    lam.check().expect("lambda presigned verifies");
    let mut r = lam.clone();
    r.body = b"x".to_vec();
    assert_eq!(r.check(), mismatch);
}

#[test]
fn presigned_parse_errors() {
    let req = presigned("s3", "/b/k", "", 60, None);
    let with = |q: String| Req { query: q, ..req.clone() };

    let long = with(req.query.replace("X-Amz-Expires=60", "X-Amz-Expires=604801"));
    let err = parse(&long.view()).expect_err("too long");
    assert_eq!(err.message(), "X-Amz-Expires must be less than a week (in seconds) that is 604800");
    assert_eq!(err.http_status(), 400);
    let week = with(req.query.replace("X-Amz-Expires=60", "X-Amz-Expires=604800"));
    assert_eq!(parse(&week.view()).expect("a week is allowed").and_then(|p| p.expires), Some(604_800));

    let nan = with(req.query.replace("X-Amz-Expires=60", "X-Amz-Expires=soon"));
    assert!(matches!(parse(&nan.view()), Err(SigV4Error::IncompleteSignature(_))));

    let no_cred = with(req.query.replace("X-Amz-Credential=", "X-Amz-Nope="));
    assert!(matches!(parse(&no_cred.view()), Err(SigV4Error::IncompleteSignature(_))));

    let alg = with(req.query.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"));
    assert!(matches!(parse(&alg.view()), Err(SigV4Error::IncompleteSignature(m)) if m.contains("X-Amz-Algorithm")));

    let dup = with(format!("{}&X-Amz-Date={DATE}", req.query));
    assert!(matches!(parse(&dup.view()), Err(SigV4Error::IncompleteSignature(m)) if m.contains("more than once")));

    // Presigned query *and* an Authorization header.
    let mut both = req.clone();
    both.headers.insert(header::AUTHORIZATION, HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=x"));
    let err = parse(&both.view()).expect_err("ambiguous");
    assert_eq!(err.code(), "InvalidArgument");
}

#[test]
fn session_tokens() {
    // Header auth: the token is sent as a signed x-amz-security-token header.
    let req = Req::signed_with("lambda", "GET", "/2015-03-31/functions", "", b"", Some(TOKEN));
    assert_eq!(req.headers["x-amz-security-token"], TOKEN);
    let parsed = parse(&req.view()).expect("parses").expect("signed");
    assert_eq!(parsed.session_token.as_deref(), Some(TOKEN));
    assert!(parsed.signed_headers.iter().any(|h| h == "x-amz-security-token"));
    req.check().expect("verifies");
    let mut r = req.clone();
    r.headers.insert("x-amz-security-token", HeaderValue::from_static("FwoGZXIvYXdzOTHER"));
    assert_eq!(r.check(), Err(SigV4Error::SignatureDoesNotMatch));

    // Presigned: the token is a signed, percent-encoded query parameter.
    let req = presigned("s3", "/b/k", "", 300, Some(TOKEN));
    assert!(req.query.contains("X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE%2Ftoken%2Bwith%3Dchars&"), "{}", req.query);
    let parsed = parse(&req.view()).expect("parses").expect("signed");
    assert_eq!(parsed.session_token.as_deref(), Some(TOKEN));
    req.check().expect("verifies");
    let mut r = req.clone();
    r.query = r.query.replace("token%2Bwith", "token%2Bwithout");
    assert_eq!(r.check(), Err(SigV4Error::SignatureDoesNotMatch));
}

#[test]
fn query_string_edge_cases() {
    for query in [
        "a=2&a=1&a=10&A=0",
        "empty=&novalue&b=",
        "plus=a+b&space=a%20b",
        "slash=a%2Fb&raw=a/b",
        "euro=%E2%82%AC&lower=%e2%82%ac&%C3%A4=key",
        "unreserved=-._~&encoded-unreserved=%2D%2E%5F%7E%41",
        "sub=%24LATEST&raw$=:@,;!*'()",
        "percent=100%25&stray=%zz&end=%",
        "&&lead=1&",
        "x-amz-signature=lowercase-is-an-ordinary-parameter",
    ] {
        for service in ["lambda", "s3"] {
            let req = Req::signed(service, "GET", "/b/k", query, b"");
            req.check().unwrap_or_else(|e| panic!("{service} {query}: {e}"));
            let mut tampered = req.clone();
            tampered.query = format!("{query}&z=1");
            assert_eq!(tampered.check(), Err(SigV4Error::SignatureDoesNotMatch), "{service} {query}");
        }
    }

    // '+' is a literal plus (%2B), not a space: a request signed with a space must not verify
    // when the client sends '+' instead.
    let spaced = Req::signed("lambda", "GET", "/", "q=a%20b", b"");
    let mut plus = spaced.clone();
    plus.query = "q=a+b".into();
    assert_eq!(plus.check(), Err(SigV4Error::SignatureDoesNotMatch));
    let mut plus_encoded = Req::signed("lambda", "GET", "/", "q=a+b", b"");
    plus_encoded.query = "q=a%2Bb".into();
    plus_encoded.check().expect("'+' and '%2B' are the same byte");

    // Equivalent encodings of the same bytes canonicalise alike; different bytes do not.
    let mut r = Req::signed("lambda", "GET", "/", "k=%E2%82%AC&s=%2F", b"");
    r.query = "k=%e2%82%ac&s=%2f".into();
    r.check().expect("hex case is not significant in the query");
    r.query = "k=%e2%82%ac&s=/".into();
    r.check().expect("a raw '/' and '%2F' are the same byte in the query");
    r.query = "k=%e2%82%ac&s=%2F%2F".into();
    assert_eq!(r.check(), Err(SigV4Error::SignatureDoesNotMatch));
}

#[test]
fn canonical_query_matches_aws_rules() {
    let req = Req::signed("lambda", "GET", "/", "b=2&a=z&a=1&c&plus=a+b&%e2%82%ac=%2f", b"");
    let view = req.view();
    let parsed = parse(&view).expect("parses").expect("signed");
    let creq = canonical_request(&view, &parsed, &VerifyOptions::for_service("lambda")).expect("creq");
    assert_eq!(creq.lines().nth(2), Some("%E2%82%AC=%2F&a=1&a=z&b=2&c=&plus=a%2Bb"));
}

#[test]
fn paths_lambda_double_encoded() {
    let arn = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af/configuration";
    for path in [
        arn,
        "/2015-03-31/functions/arn:aws:lambda:us-east-1:000000000000:function:f/configuration",
        "/2015-03-31/functions/my%20function/invocations",
        "/2015-03-31/functions/a%2Fb/invocations",
        "/2015-03-31/functions/%E2%82%AC/invocations",
        "/restapis/abc/stages/%24default",
        "/a/./b/../c//d/",
        "",
    ] {
        let req = Req::signed("lambda", "GET", path, "", b"");
        req.check().unwrap_or_else(|e| panic!("{path}: {e}"));
    }

    let req = Req::signed("lambda", "GET", arn, "", b"");
    let view = req.view();
    let parsed = parse(&view).expect("parses").expect("signed");
    let creq = canonical_request(&view, &parsed, &VerifyOptions::for_service("lambda")).expect("creq");
    assert_eq!(
        creq.lines().nth(1),
        Some(
            "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-east-1%253A000000000000%253Afunction%253Af/configuration"
        )
    );
    // The same ARN sent raw is a different wire path and so a different canonical URI.
    let mut raw = req.clone();
    raw.path = raw.path.replace("%3A", ":");
    assert_eq!(raw.check(), Err(SigV4Error::SignatureDoesNotMatch));
    // So is `%2F` versus `/`, and lower- versus upper-case hex.
    let slash = Req::signed("lambda", "GET", "/functions/a%2Fb", "", b"");
    let mut r = slash.clone();
    r.path = "/functions/a/b".into();
    assert_eq!(r.check(), Err(SigV4Error::SignatureDoesNotMatch));
    r.path = "/functions/a%2fb".into();
    assert_eq!(r.check(), Err(SigV4Error::SignatureDoesNotMatch));
    // Dot segments and empty segments are normalised away before signing and verifying.
    let mut r = Req::signed("lambda", "GET", "/a/b/c", "", b"");
    r.path = "/a/./b/x/../c".into();
    r.check().expect("normalised path verifies");
    r.path = "//a//b/c".into();
    r.check().expect("empty segments are dropped");
    // Encoding the path only once (the S3 rule) does not verify a Lambda request.
    let once = VerifyOptions { uri_encoding: UriEncoding::Single, ..VerifyOptions::for_service("lambda") };
    assert_eq!(verify_with(&view, &parsed, SECRET, t0(), &once), Err(SigV4Error::SignatureDoesNotMatch));
}

#[test]
fn paths_s3_single_encoded() {
    for path in [
        "/my-bucket/dir/my%20file%3Av1%2Bx%3D%C3%A4.txt",
        "/my-bucket/a%2Fb",
        "/my-bucket/a/./b/../c//d",
        "/my-bucket/%24%26%27%28%29%2A%2C%3B%40",
        "/my-bucket/",
        "/",
    ] {
        let req = Req::signed("s3", "GET", path, "", b"");
        req.check().unwrap_or_else(|e| panic!("{path}: {e}"));
    }

    let req = Req::signed("s3", "PUT", "/my-bucket/dir/arn%3Aaws%20x%2Fy", "", b"data");
    let view = req.view();
    let parsed = parse(&view).expect("parses").expect("signed");
    let creq = canonical_request(&view, &parsed, &VerifyOptions::for_service("s3")).expect("creq");
    assert_eq!(creq.lines().nth(1), Some("/my-bucket/dir/arn%3Aaws%20x%2Fy"));

    // S3 encodes once: any encoding of the same key bytes verifies…
    let mut r = req.clone();
    r.path = "/my-bucket/dir/arn:aws%20x%2fy".into();
    r.check().expect("raw ':' and lower-case hex are the same key");
    // …but '%2F' inside a segment is not a '/' separator, and S3 paths are not normalised.
    r.path = "/my-bucket/dir/arn:aws%20x/y".into();
    assert_eq!(r.check(), Err(SigV4Error::SignatureDoesNotMatch));
    let dots = Req::signed("s3", "GET", "/my-bucket/a/../b", "", b"");
    let mut r = dots.clone();
    r.path = "/my-bucket/b".into();
    assert_eq!(r.check(), Err(SigV4Error::SignatureDoesNotMatch));
    // Encoding twice (the non-S3 rule) does not verify an S3 request.
    let twice = VerifyOptions { uri_encoding: UriEncoding::Double, ..VerifyOptions::for_service("s3") };
    assert_eq!(verify_with(&view, &parsed, SECRET, t0(), &twice), Err(SigV4Error::SignatureDoesNotMatch));
}

#[test]
fn payload_modes() {
    // Lambda without x-amz-content-sha256: the body is hashed, so only Body mode verifies.
    let lam = lambda_invoke();
    let view = lam.view_with(PayloadHash::Unsigned);
    let parsed = parse(&view).expect("parses").expect("signed");
    assert_eq!(verify(&view, &parsed, SECRET, t0()), Err(SigV4Error::SignatureDoesNotMatch));
    let view = lam.view_with(PayloadHash::Header);
    assert_eq!(verify(&view, &parsed, SECRET, t0()), Err(SigV4Error::MissingContentSha256));

    // S3: the signer sends x-amz-content-sha256; all three modes verify.
    let s3 = Req::signed("s3", "PUT", "/bucket/key", "", b"hello s3");
    assert_eq!(s3.headers["x-amz-content-sha256"], "f2ff189a4ef686231302becc266e6c8d5eee814b868d11631f7660073fc9b613");
    for mode in [PayloadHash::Body(&s3.body), PayloadHash::Unsigned, PayloadHash::Header] {
        let view = s3.view_with(mode);
        let parsed = parse(&view).expect("parses").expect("signed");
        verify(&view, &parsed, SECRET, t0()).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    }
    // A different body under a signed hash: caught in Body mode only (the caller checks otherwise).
    let mut r = s3.clone();
    r.body = b"hello S3".to_vec();
    let err = r.check().expect_err("body does not match its declared hash");
    assert_eq!(err, SigV4Error::ContentSha256Mismatch);
    assert_eq!(err.code(), "XAmzContentSHA256Mismatch");
    let view = r.view_with(PayloadHash::Header);
    let parsed = parse(&view).expect("parses").expect("signed");
    verify(&view, &parsed, SECRET, t0()).expect("Header mode trusts the header");
    // Changing the declared hash itself breaks the signature.
    let mut r = s3.clone();
    r.headers.insert("x-amz-content-sha256", HeaderValue::from_static(quarters_sigv4::UNSIGNED_PAYLOAD));
    assert_eq!(r.check(), Err(SigV4Error::SignatureDoesNotMatch));

    // A client that chose UNSIGNED-PAYLOAD: accepted in Unsigned/Header mode, refused in Body mode.
    let mut headers = base_headers();
    headers.insert("x-amz-content-sha256", HeaderValue::from_static("UNSIGNED-PAYLOAD"));
    sign("PUT", "/bucket/key", "", &mut headers, b"streamed", &params("s3", None)).expect("signs");
    let unsigned = Req {
        method: "PUT".into(),
        path: "/bucket/key".into(),
        query: String::new(),
        headers,
        body: b"streamed".to_vec(),
    };
    for mode in [PayloadHash::Unsigned, PayloadHash::Header] {
        let view = unsigned.view_with(mode);
        let parsed = parse(&view).expect("parses").expect("signed");
        verify(&view, &parsed, SECRET, t0()).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    }
    assert_eq!(unsigned.check(), Err(SigV4Error::ContentSha256Mismatch));
}

fn with_auth(value: &str) -> Req {
    let mut req = lambda_invoke();
    req.headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).expect("valid"));
    req
}

fn incomplete(req: &Req) -> String {
    match req.check() {
        Err(SigV4Error::IncompleteSignature(m)) => m,
        other => panic!("expected IncompleteSignature, got {other:?}"),
    }
}

#[test]
fn malformed_authorization_headers() {
    let sig = "0".repeat(64);
    let m = incomplete(&with_auth("Bearer abc.def"));
    assert!(m.contains("'Bearer'"), "{m}");
    let m = incomplete(&with_auth(&format!("AWS {AKID}:{sig}")));
    assert!(m.contains("'AWS'"), "{m}");
    let m = incomplete(&with_auth("AWS4-HMAC-SHA256 SignedHeaders=host"));
    assert!(m.contains("requires 'Credential' parameter") && m.contains("requires 'Signature' parameter"), "{m}");
    assert!(!m.contains("requires 'SignedHeaders'"), "{m}");
    let m = incomplete(&with_auth("AWS4-HMAC-SHA256 Credential"));
    assert!(m.contains("missing equal-sign"), "{m}");
    let m = incomplete(&with_auth(&format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/20260101/us-east-1/lambda, SignedHeaders=host, Signature={sig}"
    )));
    assert!(m.starts_with("Credential must have exactly 5 slash-delimited elements"), "{m}");
    let m = incomplete(&with_auth(&format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/20260101/us-east-1/lambda/aws5_request, SignedHeaders=host, Signature={sig}"
    )));
    assert!(m.contains("'aws4_request'"), "{m}");
    let m = incomplete(&with_auth(&format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/2026-01-01/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature={sig}"
    )));
    assert!(m.contains("YYYYMMDD"), "{m}");
    let m = incomplete(&with_auth(&format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/20260101/us-east-1/lambda/aws4_request, SignedHeaders=host;;x-amz-date, Signature={sig}"
    )));
    assert!(m.contains("SignedHeaders"), "{m}");

    // Host must be signed.
    let m = incomplete(&with_auth(&format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/20260101/us-east-1/lambda/aws4_request, SignedHeaders=x-amz-date, Signature={sig}"
    )));
    assert_eq!(m, "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");

    // The scope date must be the request's date.
    let m = incomplete(&with_auth(&format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/20251231/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}"
    )));
    assert_eq!(
        m,
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '20251231' != '20260101', from '20260101T000000Z'."
    );

    // No X-Amz-Date and no Date.
    let mut r = lambda_invoke();
    r.headers.remove("x-amz-date");
    let m = incomplete(&r);
    assert_eq!(m, "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
    r.headers.insert("x-amz-date", HeaderValue::from_static("2026-01-01T00:00:00Z"));
    assert!(incomplete(&r).starts_with("Date must be in ISO-8601 'basic format'"));

    // Flexible whitespace and component order are fine; a wrong-length signature is a mismatch.
    let good = lambda_invoke();
    let auth = good.headers[header::AUTHORIZATION].to_str().expect("ascii").to_owned();
    let parsed = parse(&good.view()).expect("parses").expect("signed");
    let shuffled = format!(
        "AWS4-HMAC-SHA256   Signature={} ,SignedHeaders={},Credential={}/20260101/us-east-1/lambda/aws4_request",
        parsed.signature,
        parsed.signed_headers.join(";"),
        AKID
    );
    with_auth(&shuffled).check().expect("order and spacing do not matter");
    let short = auth.replace(&parsed.signature, &parsed.signature[..63]);
    assert_eq!(with_auth(&short).check(), Err(SigV4Error::SignatureDoesNotMatch));
    let upper = auth.replace(&parsed.signature, &parsed.signature.to_uppercase());
    assert_eq!(with_auth(&upper).check(), Err(SigV4Error::SignatureDoesNotMatch));
}

/// A request dated by the HTTP `Date` header instead of `X-Amz-Date`, signed by hand.
#[test]
fn date_header_instead_of_x_amz_date() {
    use hmac::{Hmac, Mac};
    let mut headers = base_headers();
    headers.insert(header::DATE, HeaderValue::from_static("Thu, 01 Jan 2026 00:00:00 GMT"));
    let body = b"{}";
    let mut parsed = quarters_sigv4::Parsed {
        access_key_id: AKID.into(),
        date: "20260101".into(),
        region: "us-east-1".into(),
        service: "lambda".into(),
        signed_headers: vec!["date".into(), "host".into()],
        signature: String::new(),
        amz_date: DATE.into(),
        presigned: false,
        expires: None,
        session_token: None,
    };
    let view = SignedRequest {
        method: "POST",
        path: "/2015-03-31/functions/f/invocations",
        query: "",
        headers: &headers,
        payload_sha256: PayloadHash::Body(body),
    };
    let creq = canonical_request(&view, &parsed, &VerifyOptions::for_service("lambda")).expect("creq");
    assert!(creq.contains("\ndate:Thu, 01 Jan 2026 00:00:00 GMT\n"), "{creq}");
    let sts = string_to_sign(&parsed, &creq);
    let key = SigningKey::derive(SECRET, "20260101", "us-east-1", "lambda");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(sts.as_bytes());
    parsed.signature = hex::encode(mac.finalize().into_bytes());

    let mut headers = headers.clone();
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/20260101/us-east-1/lambda/aws4_request, SignedHeaders=date;host, Signature={}",
        parsed.signature
    );
    headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&auth).expect("valid"));
    let view = SignedRequest { headers: &headers, ..view };
    let got = parse(&view).expect("parses").expect("signed");
    assert_eq!(got, parsed);
    verify(&view, &got, SECRET, t0() + 1).expect("Date-header request verifies");
    assert!(matches!(verify(&view, &got, SECRET, t0() + 901), Err(SigV4Error::RequestTimeTooSkewed { .. })));

    // X-Amz-Date wins over Date when both are present.
    let mut both = headers.clone();
    both.insert("x-amz-date", HeaderValue::from_static("20260101T000001Z"));
    let view = SignedRequest { headers: &both, ..view };
    assert_eq!(parse(&view).expect("parses").expect("signed").amz_date, "20260101T000001Z");
}

#[test]
fn header_values_are_canonicalised() {
    let mut headers = base_headers();
    headers.insert("x-custom", HeaderValue::from_static("  a   b \t c  "));
    headers.append("x-multi", HeaderValue::from_static("one"));
    headers.append("x-multi", HeaderValue::from_static(" two "));
    sign("GET", "/", "", &mut headers, b"", &params("lambda", None)).expect("signs");
    let req = Req { method: "GET".into(), path: "/".into(), query: String::new(), headers, body: Vec::new() };
    req.check().expect("verifies");
    let view = req.view();
    let parsed = parse(&view).expect("parses").expect("signed");
    let creq = canonical_request(&view, &parsed, &VerifyOptions::for_service("lambda")).expect("creq");
    assert!(creq.contains("\nx-custom:a b c\nx-multi:one,two\n"), "{creq}");

    // Whitespace changes inside a value are insignificant; order of repeated values is not.
    let mut r = req.clone();
    r.headers.insert("x-custom", HeaderValue::from_static("a b c"));
    r.check().expect("collapsed whitespace is equivalent");
    let mut r = req.clone();
    r.headers.remove("x-multi");
    r.headers.append("x-multi", HeaderValue::from_static("two"));
    r.headers.append("x-multi", HeaderValue::from_static("one"));
    assert_eq!(r.check(), Err(SigV4Error::SignatureDoesNotMatch));
}

#[test]
fn signer_rejects_bad_input() {
    let mut headers = HeaderMap::new();
    assert!(matches!(
        sign("GET", "/", "", &mut headers, b"", &params("lambda", None)),
        Err(SigV4Error::IncompleteSignature(_))
    ));
    let mut headers = base_headers();
    let bad_date = SigningParams { amz_date: "2026-01-01", ..params("lambda", None) };
    assert!(sign("GET", "/", "", &mut headers, b"", &bad_date).is_err());
    assert!(presign("GET", "/", "", &base_headers(), &params("s3", None), 604_801).is_err());
}

#[test]
fn error_codes_and_messages() {
    let cases: [(SigV4Error, &str, &str, u16); 6] = [
        (
            SigV4Error::SignatureDoesNotMatch,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
            403,
        ),
        (SigV4Error::IncompleteSignature("x".into()), "IncompleteSignature", "x", 400),
        (
            SigV4Error::InvalidClientTokenId,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
            403,
        ),
        (
            SigV4Error::UnrecognizedClient,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
            403,
        ),
        (SigV4Error::MissingAuthenticationToken, "MissingAuthenticationToken", "Missing Authentication Token", 403),
        (
            SigV4Error::MissingContentSha256,
            "InvalidRequest",
            "Missing required header for this request: x-amz-content-sha256",
            400,
        ),
    ];
    for (err, code, message, status) in cases {
        assert_eq!(err.code(), code);
        assert_eq!(err.message(), message);
        assert_eq!(err.http_status(), status);
    }
}
