//! End-to-end: the service on a loopback hyper server, driven by real boto3
//! (`/work/main/.venv/bin/python`, i.e. `<workspace>/.venv`) running `tests/boto3_s3.py`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use quarters_s3::{AccessDenied, AccessRequest, Authorizer, Options, serve_http1, service_with_options};

/// One authorisation question as the authorizer saw it.
#[derive(Debug, Clone)]
struct Seen {
    access_key: Option<String>,
    session_token: Option<String>,
    action: String,
    resource: String,
    prefix: Option<String>,
}

/// AKIDTEST may do anything (but the session token "bad-token" is refused); AKIDOTHER may not
/// touch `private/` in any bucket; anonymous callers may only read `test-bucket/anon/`.
struct TestAuthz {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Authorizer for TestAuthz {
    fn check(&self, req: &AccessRequest<'_>) -> Result<(), AccessDenied> {
        self.seen.lock().expect("log").push(Seen {
            access_key: req.access_key.map(str::to_owned),
            session_token: req.session_token.map(str::to_owned),
            action: req.action.to_owned(),
            resource: req.resource.clone(),
            prefix: req.prefix.map(str::to_owned),
        });
        match req.access_key {
            None => {
                if req.action == "s3:GetObject" && req.resource.starts_with("arn:aws:s3:::test-bucket/anon/") {
                    Ok(())
                } else {
                    Err(AccessDenied::default())
                }
            }
            Some("AKIDTEST") => {
                if req.session_token == Some("bad-token") {
                    Err(AccessDenied::new("session token refused"))
                } else {
                    Ok(())
                }
            }
            Some("AKIDOTHER") => {
                let object_key =
                    req.resource.strip_prefix("arn:aws:s3:::").and_then(|r| r.split_once('/')).map(|(_, k)| k);
                if object_key.is_some_and(|k| k.starts_with("private/"))
                    || req.prefix.is_some_and(|p| p.starts_with("private"))
                {
                    Err(AccessDenied::default())
                } else {
                    Ok(())
                }
            }
            Some(_) => Err(AccessDenied::default()),
        }
    }
}

fn python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_end_to_end() {
    let python = python();
    assert!(python.exists(), "{} is missing: create the repo's .venv with boto3", python.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets: HashMap<String, String> = [("AKIDTEST", "secret"), ("AKIDOTHER", "secret2")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let options = Options { max_object_size: 11 << 20, ..Options::default() };
    let svc = service_with_options(
        dir.path().join("s3"),
        Arc::new(secrets),
        Arc::new(TestAuthz { seen: seen.clone() }),
        options,
    )
    .expect("service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(serve_http1(listener, svc));

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/boto3_s3.py");
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .env("S3_ENDPOINT", format!("http://{addr}"))
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .await
        .expect("run python");
    server.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success() && stdout.contains("ALL OK"), "boto3 script failed:\n{stdout}\n{stderr}");

    // What the authorizer was asked.
    let seen = seen.lock().expect("log").clone();
    let asked = |f: &dyn Fn(&Seen) -> bool| seen.iter().any(f);
    // Session tokens pass through, from the header and from a presigned URL's query.
    assert!(asked(&|s| s.session_token.as_deref() == Some("good-token") && s.action == "s3:GetObject"));
    assert!(asked(&|s| s.session_token.as_deref() == Some("bad-token")));
    // ListObjectsV2 → s3:ListBucket on the bucket, with s3:prefix.
    assert!(asked(&|s| s.action == "s3:ListBucket"
        && s.resource == "arn:aws:s3:::test-bucket"
        && s.prefix.as_deref() == Some("private/")));
    // Anonymous requests are asked too.
    assert!(asked(&|s| s.access_key.is_none() && s.action == "s3:ListBucket"));
    // DeleteObjects asks per key; CopyObject asks for the source.
    assert!(asked(&|s| s.action == "s3:DeleteObject" && s.resource == "arn:aws:s3:::test-bucket/private/secret.txt"));
    assert!(asked(&|s| s.action == "s3:GetObject"
        && s.access_key.as_deref() == Some("AKIDOTHER")
        && s.resource == "arn:aws:s3:::test-bucket/private/secret.txt"));
    assert!(asked(&|s| s.action == "s3:ListAllMyBuckets" && s.resource == "arn:aws:s3:::*"));
    assert!(asked(&|s| s.action == "s3:CreateBucket" && s.resource == "arn:aws:s3:::test-bucket"));
    // Nothing but our own files under the root: no key became a path.
    for entry in std::fs::read_dir(dir.path().join("s3")).expect("root") {
        let name = entry.expect("entry").file_name().into_string().expect("utf-8");
        assert!(["blobs", "lock", "s3.db", "s3.db-wal", "s3.db-shm"].contains(&name.as_str()), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_roundtrip_smoke() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = quarters_s3::bench_roundtrip(dir.path().join("a"), 4 << 10, 20).await.expect("4 KiB");
    assert_eq!(small.iterations, 20);
    let big = quarters_s3::bench_roundtrip(dir.path().join("b"), 4 << 20, 3).await.expect("4 MiB");
    assert!(big.get_rate().1 > 0.0 && big.put_rate().1 > 0.0);
    for r in [&small, &big] {
        let (put, get) = (r.put_rate(), r.get_rate());
        eprintln!(
            "{} B x {}: PUT {:.0} req/s {:.1} MiB/s, GET {:.0} req/s {:.1} MiB/s",
            r.object_size, r.iterations, put.0, put.1, get.0, get.1
        );
    }
}
