//! Replays AWS's SigV4 test suite (see `aws-signing-test-suite/NOTICE.md`): every signed
//! request must parse and verify, and the canonical request and string to sign we build must
//! equal AWS's byte for byte.

use std::fs;
use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue};
use quarters_sigv4::{
    PayloadHash, SigV4Error, SignedRequest, UriEncoding, VerifyOptions, canonical_request, parse, string_to_sign,
    verify_with,
};

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aws-signing-test-suite/v4")
}

/// A request read from one of the suite's `.txt` files.
struct RawRequest {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl RawRequest {
    fn read(file: &Path) -> Self {
        let text = fs::read_to_string(file).expect("test-suite file is readable UTF-8");
        let (head, body) = match text.split_once("\n\n") {
            Some((h, b)) => (h, b.as_bytes().to_vec()),
            None => (text.trim_end_matches('\n'), Vec::new()),
        };
        let mut lines = head.lines();
        let request_line = lines.next().expect("request line");
        let request_line = request_line.strip_suffix(" HTTP/1.1").unwrap_or(request_line);
        let (method, target) = request_line.split_once(' ').expect("method and target");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));

        // Unfold continuation lines (obs-fold) into their header; HeaderValue cannot hold '\n'.
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let last = fields.last_mut().expect("continuation follows a header");
                last.1.push(' ');
                last.1.push_str(line);
            } else {
                let (name, value) = line.split_once(':').expect("header line has a colon");
                fields.push((name.to_owned(), value.to_owned()));
            }
        }
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
                HeaderValue::from_str(&value).expect("valid header value"),
            );
        }
        RawRequest { method: method.to_owned(), path: path.to_owned(), query: query.to_owned(), headers, body }
    }

    fn signed(&self) -> SignedRequest<'_> {
        SignedRequest {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            payload_sha256: PayloadHash::Body(&self.body),
        }
    }
}

struct Context {
    normalize: bool,
    secret: String,
    token: Option<String>,
    now: u64,
}

fn epoch_of(amz_date: &str) -> u64 {
    quarters_sigv4::parse_amz_date(amz_date).expect("valid date")
}

fn context(dir: &Path) -> Context {
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("context.json")).expect("context.json")).expect("json");
    let ts = json["timestamp"].as_str().expect("timestamp").replace(['-', ':'], "");
    assert_eq!(json["region"], "us-east-1");
    assert_eq!(json["service"], "service");
    Context {
        normalize: json["normalize"].as_bool().expect("normalize"),
        secret: json["credentials"]["secret_access_key"].as_str().expect("secret").to_owned(),
        token: json["credentials"]["token"].as_str().map(str::to_owned),
        now: epoch_of(&ts),
    }
}

fn read(dir: &Path, name: &str) -> String {
    let text = fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()));
    text.trim_end_matches('\n').to_owned()
}

fn check_case(dir: &Path, location: &str, ctx: &Context, opts: &VerifyOptions) {
    let name = format!("{} ({location})", dir.file_name().expect("dir name").to_string_lossy());
    let raw = RawRequest::read(&dir.join(format!("{location}-signed-request.txt")));
    let req = raw.signed();
    let parsed = parse(&req).unwrap_or_else(|e| panic!("{name}: parse: {e}")).expect("signed");
    assert_eq!(parsed.presigned, location == "query", "{name}");
    assert_eq!(parsed.access_key_id, "AKIDEXAMPLE", "{name}");
    assert_eq!(parsed.session_token, ctx.token, "{name}");

    let creq = canonical_request(&req, &parsed, opts).expect("canonical request");
    assert_eq!(creq, read(dir, &format!("{location}-canonical-request.txt")), "{name}: canonical request");
    assert_eq!(
        string_to_sign(&parsed, &creq),
        read(dir, &format!("{location}-string-to-sign.txt")),
        "{name}: string to sign"
    );
    assert_eq!(parsed.signature, read(dir, &format!("{location}-signature.txt")).trim(), "{name}");

    verify_with(&req, &parsed, &ctx.secret, ctx.now, opts).unwrap_or_else(|e| panic!("{name}: verify: {e}"));
    assert_eq!(
        verify_with(&req, &parsed, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ", ctx.now, opts),
        Err(SigV4Error::SignatureDoesNotMatch),
        "{name}: wrong secret"
    );
    // Altering any signed header breaks the signature.
    for signed in &parsed.signed_headers {
        let mut tampered = raw.headers.clone();
        tampered.insert(HeaderName::from_bytes(signed.as_bytes()).expect("name"), HeaderValue::from_static("x"));
        let req = SignedRequest { headers: &tampered, ..raw.signed() };
        let result = verify_with(&req, &parsed, &ctx.secret, ctx.now, opts);
        assert_eq!(result, Err(SigV4Error::SignatureDoesNotMatch), "{name}: tampered {signed}");
    }
}

#[test]
fn aws_sigv4_test_suite() {
    let mut ran = 0;
    let mut dirs: Vec<PathBuf> = fs::read_dir(suite_dir())
        .expect("test suite directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("context.json").exists())
        .collect();
    dirs.sort();
    for dir in &dirs {
        let ctx = context(dir);
        // The suite canonicalises paths the way S3 does (encode once), with normalisation
        // as the case's context says.
        let opts =
            VerifyOptions { uri_encoding: UriEncoding::Single, normalize_path: ctx.normalize, max_skew_secs: 900 };
        for location in ["header", "query"] {
            if dir.ends_with("post-sts-header-after") && location == "query" {
                // The token was appended to the presigned URL *after* signing (a mode only
                // AWS IoT uses). Quarters' services, like AWS's, require a presigned URL's
                // X-Amz-Security-Token to be signed, so this must not verify.
                let raw = RawRequest::read(&dir.join("query-signed-request.txt"));
                let parsed = parse(&raw.signed()).expect("parses").expect("signed");
                assert!(parsed.session_token.is_some());
                assert_eq!(
                    verify_with(&raw.signed(), &parsed, &ctx.secret, ctx.now, &opts),
                    Err(SigV4Error::SignatureDoesNotMatch)
                );
                continue;
            }
            check_case(dir, location, &ctx, &opts);
            ran += 1;
        }
    }
    assert_eq!(dirs.len(), 38, "all suite cases with a context");
    assert_eq!(ran, 75);
}

/// The suite's Lambda case: an ARN in the path, double-encoded as every non-S3 SDK does.
#[test]
fn aws_suite_double_url_encode_lambda() {
    let dir = suite_dir().join("double-url-encode");
    let raw = RawRequest::read(&dir.join("header-signed-request.txt"));
    let req = raw.signed();
    let parsed = parse(&req).expect("parses").expect("signed");
    assert_eq!((parsed.region.as_str(), parsed.service.as_str()), ("us-east-2", "lambda"));
    let opts = VerifyOptions::for_service("lambda");
    let creq = canonical_request(&req, &parsed, &opts).expect("canonical request");
    assert_eq!(creq, read(&dir, "header-canonical-request.txt"));
    assert_eq!(string_to_sign(&parsed, &creq), read(&dir, "header-string-to-sign.txt"));
    let now = epoch_of("20210511T154045Z");
    quarters_sigv4::verify(&req, &parsed, SECRET, now).expect("verifies");

    // Encoding the path only once (S3 rules) must not verify.
    let once = VerifyOptions { uri_encoding: UriEncoding::Single, ..opts };
    assert_eq!(verify_with(&req, &parsed, SECRET, now, &once), Err(SigV4Error::SignatureDoesNotMatch));
}

/// The suite's API Gateway WebSocket case: only the canonical request is consistent there.
#[test]
fn aws_suite_double_encode_path_canonical_uri() {
    let dir = suite_dir().join("double-encode-path");
    let raw = RawRequest::read(&dir.join("request.txt"));
    let expected = read(&dir, "header-canonical-request.txt");
    let parsed = quarters_sigv4::Parsed {
        access_key_id: "AKIDEXAMPLE".into(),
        date: "20210511".into(),
        region: "us-east-1".into(),
        service: "execute-api".into(),
        signed_headers: vec!["host".into(), "x-amz-date".into()],
        signature: String::new(),
        amz_date: "20210511T154045Z".into(),
        presigned: false,
        expires: None,
        session_token: None,
    };
    let creq = canonical_request(&raw.signed(), &parsed, &VerifyOptions::for_service("execute-api"))
        .expect("canonical request");
    assert_eq!(creq.lines().nth(1), expected.lines().nth(1), "canonical URI");
    assert_eq!(creq.lines().nth(1), Some("/test/%40connections/JBDvjfGEIAMCERw%253D"));
}
