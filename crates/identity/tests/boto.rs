//! The real botocore/boto3 (from the workspace's `.venv`) against this crate's XML:
//!
//! - `botocore_parses_our_xml`: responses written to files and parsed by `botocore.parsers.QueryParser`
//!   against the real IAM and STS models, every field checked;
//! - `boto3_end_to_end`: boto3 clients talking to a small HTTP server that verifies SigV4 with
//!   `quarters-sigv4` and this crate's `secret_for`/`principal`, then calls `handle`.
//!
//! Without `.venv/bin/python` (run `./dev test` once) the tests are skipped, unless `CI` is set.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use quarters_identity::{Identity, NewRole, Principal, parse_form};
use serde_json::Value;
use tempfile::TempDir;

const ACCT: &str = "123456789012";
const ADMIN_KEY: &str = "AKIAQUARTERSADMIN001";
const ADMIN_SECRET: &str = "admin/secret/key/0123456789abcdefghijklm";
const NOW: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z
const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
    "Principal":{"AWS":"arn:aws:iam::123456789012:root"},
    "Action":["sts:AssumeRole","sts:TagSession","sts:SetSourceIdentity"]}]}"#;
const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject",
    "Resource":"arn:aws:s3:::tenant-data/${aws:PrincipalTag/TenantId}/*"}]}"#;

fn python() -> Option<PathBuf> {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    assert!(std::env::var_os("CI").is_none(), "CI needs {} (./dev test installs it)", py.display());
    eprintln!("skipped: no {} (run ./dev test once)", py.display());
    None
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join(name)
}

fn open(dir: &TempDir) -> Identity {
    let mut id = Identity::open(dir.path().join("identity.db"), [9; 32], ACCT).expect("open store");
    id.set_admin(ADMIN_KEY, ADMIN_SECRET);
    id
}

/// (service, operation, parameters).
type Step<'a> = (&'static str, &'static str, Vec<(&'static str, &'a str)>);

/// (method, target, lower-cased headers, body).
type RawRequest = (String, String, Vec<(String, String)>, Vec<u8>);

fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn botocore_parses_our_xml() {
    let Some(py) = python() else { return };
    let dir = TempDir::new().expect("temp dir");
    let id = open(&dir);
    let admin = Principal::Admin { access_key: ADMIN_KEY.into() };

    // (service, operation, caller, parameters): each response is written to a file for botocore.
    let role_arn = format!("arn:aws:iam::{ACCT}:role/tenants/tenant-role");
    id.create_role(
        &NewRole { name: "zz-extra", path: Some("/tenants/"), trust_policy: TRUST, ..NewRole::default() },
        NOW,
    )
    .expect("create");
    let steps: Vec<Step<'_>> = vec![
        (
            "iam",
            "CreateRole",
            vec![
                ("RoleName", "tenant-role"),
                ("Path", "/tenants/"),
                ("AssumeRolePolicyDocument", TRUST),
                ("Description", "Tenant <role> & \"co\""),
                ("MaxSessionDuration", "7200"),
                ("Tags.member.1.Key", "team"),
                ("Tags.member.1.Value", "platform"),
            ],
        ),
        ("iam", "GetRole", vec![("RoleName", "tenant-role")]),
        ("iam", "ListRoles", vec![("PathPrefix", "/tenants/"), ("MaxItems", "1")]),
        ("iam", "PutRolePolicy", vec![("RoleName", "tenant-role"), ("PolicyName", "data"), ("PolicyDocument", POLICY)]),
        ("iam", "GetRolePolicy", vec![("RoleName", "tenant-role"), ("PolicyName", "data")]),
        ("iam", "ListRolePolicies", vec![("RoleName", "tenant-role")]),
        ("iam", "DeleteRole", vec![("RoleName", "zz-extra")]),
        ("iam", "GetRole", vec![("RoleName", "zz-extra")]),
        ("iam", "CreateRole", vec![("RoleName", "TENANT-ROLE"), ("AssumeRolePolicyDocument", TRUST)]),
        (
            "sts",
            "AssumeRole",
            vec![
                ("RoleArn", &role_arn),
                ("RoleSessionName", "blue-session"),
                ("DurationSeconds", "900"),
                ("Tags.member.1.Key", "TenantId"),
                ("Tags.member.1.Value", "blue"),
                ("TransitiveTagKeys.member.1", "TenantId"),
                ("SourceIdentity", "alice"),
            ],
        ),
        ("sts", "GetCallerIdentity", vec![]),
        ("sts", "AssumeRole", vec![("RoleArn", "arn:aws:iam::123456789012:role/nope"), ("RoleSessionName", "s1")]),
        ("sts", "AssumeRole", vec![("RoleArn", &role_arn), ("RoleSessionName", "x")]),
    ];
    let mut manifest = Vec::new();
    let mut session = None;
    for (i, (service, operation, params)) in steps.iter().enumerate() {
        let mut pairs = vec![("Action", *operation)];
        pairs.extend(params.iter().copied());
        // The GetCallerIdentity call is made with the assumed role's credentials.
        let caller = match (operation, &session) {
            (&"GetCallerIdentity", Some(p)) => p,
            _ => &admin,
        };
        let (status, xml) = id.handle(service, caller, &form(&pairs), &format!("req-{i}"), NOW);
        if *operation == "AssumeRole" && status == 200 {
            let key = between(&xml, "<AccessKeyId>", "</AccessKeyId>");
            let token = between(&xml, "<SessionToken>", "</SessionToken>");
            session = Some(id.principal(key, Some(token), NOW).expect("session"));
        }
        let file = dir.path().join(format!("{i}.xml"));
        std::fs::write(&file, &xml).expect("write XML");
        manifest.push(serde_json::json!({"service": service, "operation": operation, "status": status, "file": file}));
    }
    let manifest_file = dir.path().join("manifest.json");
    std::fs::write(&manifest_file, serde_json::to_vec(&manifest).expect("json")).expect("write manifest");
    let out = Command::new(&py).arg(script("botocore_parse.py")).arg(&manifest_file).output().expect("run python");
    assert!(out.status.success(), "botocore failed: {}", String::from_utf8_lossy(&out.stderr));
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("parser output is JSON");
    let meta = |v: &Value, i: usize| {
        assert_eq!(v["ResponseMetadata"]["RequestId"], format!("req-{i}"), "{v}");
    };
    for (i, v) in parsed.iter().enumerate() {
        meta(v, i);
    }

    // CreateRole and GetRole.
    for v in &parsed[0..2] {
        let role = &v["Role"];
        assert_eq!(role["RoleName"], "tenant-role", "{v}");
        assert_eq!(role["Path"], "/tenants/");
        assert_eq!(role["Arn"], role_arn.as_str());
        assert!(role["RoleId"].as_str().is_some_and(|r| r.starts_with("AROA")), "{v}");
        assert_eq!(role["CreateDate"], "2027-01-15T08:00:00+00:00");
        assert_eq!(role["Description"], "Tenant <role> & \"co\"");
        assert_eq!(role["MaxSessionDuration"], 7200, "an integer");
        assert_eq!(role["Tags"], serde_json::json!([{"Key": "team", "Value": "platform"}]));
        // The parser leaves the document URL-encoded (boto3's handler decodes it: see the end-to-end test).
        let doc = role["AssumeRolePolicyDocument"].as_str().expect("string");
        let decoded = &parse_form(format!("d={doc}").as_bytes()).expect("percent-encoded")[0].1;
        assert_eq!(decoded, TRUST);
    }
    // ListRoles: one per page, by name.
    assert_eq!(parsed[2]["Roles"].as_array().map(Vec::len), Some(1), "{}", parsed[2]);
    assert_eq!(parsed[2]["Roles"][0]["RoleName"], "tenant-role");
    assert_eq!(parsed[2]["IsTruncated"], true, "a boolean");
    assert_eq!(parsed[2]["Marker"], "zz-extra");
    // Role policies.
    assert_eq!(parsed[4]["RoleName"], "tenant-role");
    assert_eq!(parsed[4]["PolicyName"], "data");
    assert!(parsed[4]["PolicyDocument"].as_str().is_some_and(|d| d.starts_with("%7B%22Version%22")));
    assert_eq!(parsed[5]["PolicyNames"], serde_json::json!(["data"]));
    assert_eq!(parsed[5]["IsTruncated"], false);
    // Errors.
    let error = |v: &Value, code: &str| {
        assert_eq!(v["Error"]["Code"], code, "{v}");
        assert_eq!(v["Error"]["Type"], "Sender", "{v}");
        assert!(v["Error"]["Message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    };
    error(&parsed[7], "NoSuchEntity");
    assert_eq!(parsed[7]["ResponseMetadata"]["HTTPStatusCode"], 404);
    error(&parsed[8], "EntityAlreadyExists");
    error(&parsed[11], "AccessDenied");
    assert_eq!(parsed[11]["ResponseMetadata"]["HTTPStatusCode"], 403);
    error(&parsed[12], "ValidationError");
    // AssumeRole.
    let ar = &parsed[9];
    let creds = &ar["Credentials"];
    assert!(creds["AccessKeyId"].as_str().is_some_and(|k| k.starts_with("ASIA") && k.len() == 20), "{ar}");
    assert_eq!(creds["SecretAccessKey"].as_str().map(str::len), Some(40));
    assert!(creds["SessionToken"].as_str().is_some_and(|t| t.len() > 100));
    assert_eq!(creds["Expiration"], "2027-01-15T08:15:00+00:00");
    assert_eq!(ar["AssumedRoleUser"]["Arn"], "arn:aws:sts::123456789012:assumed-role/tenant-role/blue-session");
    let role_id = parsed[0]["Role"]["RoleId"].as_str().expect("role id");
    assert_eq!(ar["AssumedRoleUser"]["AssumedRoleId"], format!("{role_id}:blue-session"));
    assert_eq!(ar["PackedPolicySize"], 1, "an integer");
    assert_eq!(ar["SourceIdentity"], "alice");
    // GetCallerIdentity, as the session.
    let who = &parsed[10];
    assert_eq!(who["UserId"], format!("{role_id}:blue-session"), "{who}");
    assert_eq!(who["Account"], ACCT);
    assert_eq!(who["Arn"], "arn:aws:sts::123456789012:assumed-role/tenant-role/blue-session");
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> &'a str {
    let start = s.find(open).expect("open tag") + open.len();
    let end = s[start..].find(close).expect("close tag") + start;
    &s[start..end]
}

// ---- A minimal HTTP/1.1 server doing what Quarters' router will do ----

/// Reads one request: (method, target, headers, body).
fn read_request(stream: &mut TcpStream) -> Option<RawRequest> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((method, target, headers, body))
}

fn serve(id: &Identity, mut stream: TcpStream, n: usize) {
    let Some((method, target, headers, body)) = read_request(&mut stream) else { return };
    let request_id = format!("e2e-{n}");
    let (status, xml) = route(id, &method, &target, &headers, &body, &request_id);
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nx-amzn-RequestId: \
         {request_id}\r\nConnection: close\r\n\r\n",
        xml.len()
    );
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(xml.as_bytes()));
}

fn route(
    id: &Identity,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
    request_id: &str,
) -> (u16, String) {
    let mut builder = http::Request::builder().method(method).uri(target);
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let (parts, ()) = builder.body(()).expect("request head").into_parts();
    let req = quarters_sigv4::SignedRequest::from_parts(&parts, quarters_sigv4::PayloadHash::Body(body));
    let sig_error = |code: &str, message: &str| {
        let xml = format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>{request_id}</RequestId></ErrorResponse>"
        );
        (403, xml)
    };
    let parsed = match quarters_sigv4::parse(&req) {
        Ok(Some(p)) => p,
        _ => return sig_error("MissingAuthenticationToken", "Request is missing Authentication Token"),
    };
    let service = parsed.service.clone();
    let now = quarters_types::time::now_ms() / 1000;
    // An unknown key is reported as such before any signature check, as AWS does.
    let Some(secret) = id.secret_for(&parsed.access_key_id) else {
        return id.error_response(&service, &quarters_identity::IdentityError::InvalidClientTokenId, request_id);
    };
    if let Err(e) = quarters_sigv4::verify(&req, &parsed, &secret, now) {
        return sig_error(e.code(), "The request signature we calculated does not match the signature you provided.");
    }
    let caller = match id.principal(&parsed.access_key_id, parsed.session_token.as_deref(), now) {
        Ok(p) => p,
        Err(e) => return id.error_response(&service, &e, request_id),
    };
    match parse_form(body) {
        Ok(form) => id.handle(&service, &caller, &form, request_id, now),
        Err(e) => id.error_response(&service, &e, request_id),
    }
}

#[test]
fn boto3_end_to_end() {
    let Some(py) = python() else { return };
    let dir = TempDir::new().expect("temp dir");
    let id = Arc::new(open(&dir));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = Arc::clone(&id);
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            if let Ok(stream) = stream {
                serve(&server, stream, n);
            }
        }
    });
    let out = Command::new(&py)
        .arg(script("boto3_e2e.py"))
        .args([&format!("http://{addr}"), ACCT, ADMIN_KEY, ADMIN_SECRET])
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "boto3 end-to-end failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    // What boto3 created is really there.
    let role = id.get_role("tenant-role").expect("read").expect("created by boto3");
    assert_eq!(role.tags, [("team".to_owned(), "platform".to_owned())]);
}
