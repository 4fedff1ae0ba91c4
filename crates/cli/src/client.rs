//! A small client of the Lambda API, for the CLI.

use std::io::{Cursor, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};

pub struct Client {
    pub endpoint: String,
    http: reqwest::Client,
    /// Signing credentials (access key, secret, session token), from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` as the AWS tools read them.
    creds: Option<(String, String, Option<String>)>,
    region: String,
}

pub struct Invoked {
    pub status: u16,
    pub body: String,
    pub function_error: Option<String>,
    pub log_tail: Option<String>,
}

impl Client {
    pub fn new(endpoint: &str) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let creds =
            env("AWS_ACCESS_KEY_ID").zip(env("AWS_SECRET_ACCESS_KEY")).map(|(a, s)| (a, s, env("AWS_SESSION_TOKEN")));
        let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into());
        Self { endpoint: endpoint.trim_end_matches('/').to_owned(), http: reqwest::Client::new(), creds, region }
    }

    /// The same client signing with these keys (the in-process demo's admin).
    pub fn with_credentials(mut self, access_key: &str, secret: &str) -> Self {
        self.creds = Some((access_key.to_owned(), secret.to_owned(), None));
        self
    }

    /// Sign (SigV4, as the AWS SDKs do, for `service`) and send a request.
    pub async fn send(&self, req: reqwest::RequestBuilder, service: &str) -> Result<reqwest::Response> {
        let mut req = req.build()?;
        if let Some((key, secret, token)) = &self.creds {
            let url = req.url().clone();
            let host = match url.port() {
                Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
                None => url.host_str().unwrap_or("").to_owned(),
            };
            let body = req.body().and_then(|b| b.as_bytes()).unwrap_or(&[]).to_vec();
            let mut headers = req.headers().clone();
            headers.insert(reqwest::header::HOST, reqwest::header::HeaderValue::from_str(&host)?);
            let amz_date = quarters_sigv4::format_amz_date(quarters_types::time::now_ms() / 1000);
            let params = quarters_sigv4::SigningParams {
                access_key_id: key,
                secret_access_key: secret,
                session_token: token.as_deref(),
                region: &self.region,
                service,
                amz_date: &amz_date,
            };
            quarters_sigv4::sign(
                req.method().as_str(),
                url.path(),
                url.query().unwrap_or(""),
                &mut headers,
                &body,
                &params,
            )
            .map_err(|e| anyhow::anyhow!("cannot sign the request: {}", e.message()))?;
            *req.headers_mut() = headers;
        }
        self.http.execute(req).await.with_context(|| format!("cannot reach Quarters at {}", self.endpoint))
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let url = format!("{}{}", self.endpoint, path);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = self.send(req, "lambda").await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let v = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Ok((status, v))
    }

    /// Call and fail with the server's AWS-shaped message on an error status.
    pub async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let (status, v) = self.call(method, path, body).await?;
        if status >= 400 {
            let msg = v.get("message").or_else(|| v.get("Message")).and_then(Value::as_str).unwrap_or("");
            bail!("HTTP {status}: {msg}");
        }
        Ok(v)
    }

    /// A CloudWatch Logs operation (awsJson1.1 on the same endpoint).
    pub async fn logs(&self, operation: &str, body: Value) -> Result<Value> {
        let req = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("X-Amz-Target", format!("Logs_20140328.{operation}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .body(body.to_string());
        let resp = self.send(req, "logs").await?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            let code = v.get("__type").and_then(Value::as_str).unwrap_or("error");
            bail!("{code}: {}", v.get("message").and_then(Value::as_str).unwrap_or(""));
        }
        Ok(v)
    }

    /// Follow a server-sent event stream, calling `on_event` with each `data:` payload.
    pub async fn follow(&self, path: &str, mut on_event: impl FnMut(&str)) -> Result<()> {
        let mut resp = self.send(self.http.get(format!("{}{}", self.endpoint, path)), "lambda").await?;
        if !resp.status().is_success() {
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            bail!("{}", v.get("message").and_then(Value::as_str).unwrap_or("the tail was refused"));
        }
        let mut buf = String::new();
        while let Some(chunk) = resp.chunk().await? {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                for line in event.lines() {
                    if let Some(data) = line.strip_prefix("data: ") {
                        on_event(data);
                    } else if let Some(note) = line.strip_prefix(": lost ") {
                        eprintln!("(the tail fell behind: {note} records lost)");
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn get_function(&self, name: &str) -> Result<Option<Value>> {
        let (status, v) = self.call(reqwest::Method::GET, &format!("/2015-03-31/functions/{name}"), None).await?;
        Ok((status == 200).then_some(v))
    }

    pub async fn invoke(&self, name: &str, tenant: Option<&str>, payload: &str, tail: bool) -> Result<Invoked> {
        let mut req = self
            .http
            .post(format!("{}/2015-03-31/functions/{name}/invocations", self.endpoint))
            .body(payload.to_owned());
        if let Some(t) = tenant {
            req = req.header("X-Amz-Tenant-Id", t);
        }
        if tail {
            req = req.header("X-Amz-Log-Type", "Tail");
        }
        let resp = self.send(req, "lambda").await?;
        let status = resp.status().as_u16();
        let h = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let function_error = h("x-amz-function-error");
        let log_tail = h("x-amz-log-result")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let body = resp.text().await?;
        Ok(Invoked { status, body, function_error, log_tail })
    }

    /// Create the function, or update its code and configuration if it exists.
    pub async fn deploy(&self, name: &str, zip: &[u8], opts: &DeployOptions) -> Result<Value> {
        let zip_b64 = base64::engine::general_purpose::STANDARD.encode(zip);
        if let Some(existing) = self.get_function(name).await? {
            let per_tenant = existing["Configuration"]["TenancyConfig"]["TenantIsolationMode"] == "PER_TENANT";
            if per_tenant != opts.per_tenant {
                bail!(
                    "function {name} exists with a different tenancy configuration, which cannot change; delete it first"
                );
            }
            self.ok(
                reqwest::Method::PUT,
                &format!("/2015-03-31/functions/{name}/code"),
                Some(json!({ "ZipFile": zip_b64 })),
            )
            .await?;
            let cfg = json!({ "MemorySize": opts.memory, "Timeout": opts.timeout, "Runtime": opts.runtime, "Handler": opts.handler });
            return self
                .ok(reqwest::Method::PUT, &format!("/2015-03-31/functions/{name}/configuration"), Some(cfg))
                .await;
        }
        let mut body = json!({
            "FunctionName": name,
            "Runtime": opts.runtime,
            "Handler": opts.handler,
            "Role": "arn:aws:iam::000000000000:role/quarters-function",
            "Code": { "ZipFile": zip_b64 },
            "MemorySize": opts.memory,
            "Timeout": opts.timeout,
        });
        if opts.per_tenant {
            body["TenancyConfig"] = json!({ "TenantIsolationMode": "PER_TENANT" });
        }
        self.ok(reqwest::Method::POST, "/2015-03-31/functions", Some(body)).await
    }
}

#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub runtime: String,
    pub handler: String,
    pub memory: u32,
    pub timeout: u32,
    pub per_tenant: bool,
}

/// The runtime and handler of code at `path` when the deployer named neither: a `bootstrap` is
/// a custom runtime; `lambda_function.py` (or one `.py` file) is Python; `index.mjs`/`.js`/`.cjs`
/// is Node.js. Managed runtimes get the identifier of this host's interpreter version.
pub fn detect_runtime(path: &Path, runtime: Option<String>, handler: Option<String>) -> Result<(String, String)> {
    use quarters_types::{Runtime, RuntimeFamily};
    let host_identifier = |family: RuntimeFamily| -> String {
        let found = Runtime::ALL
            .iter()
            .filter(|r| r.family() == family)
            .find(|r| quarters_invoke::runtimes::interpreter(**r).is_some_and(|i| i.matches(**r)));
        match (found, family) {
            (Some(r), _) => r.as_str().to_string(),
            (None, RuntimeFamily::Python) => "python3.12".into(),
            (None, RuntimeFamily::Node) => "nodejs22.x".into(),
            (None, RuntimeFamily::Provided) => "provided.al2023".into(),
        }
    };
    let python_handler = |dir: &Path| -> String {
        let module = if dir.join("lambda_function.py").is_file() {
            Some("lambda_function".to_string())
        } else {
            let pys: Vec<_> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "py"))
                .collect();
            match pys.as_slice() {
                [one] => one.file_stem().map(|s| s.to_string_lossy().into_owned()),
                _ => None,
            }
        };
        let module = module.unwrap_or_else(|| "lambda_function".into());
        let source = std::fs::read_to_string(dir.join(format!("{module}.py"))).unwrap_or_default();
        let func = if source.contains("def lambda_handler(") || !source.contains("def handler(") {
            "lambda_handler"
        } else {
            "handler"
        };
        format!("{module}.{func}")
    };
    let runtime = match runtime {
        Some(r) => r,
        None if path.is_dir() => {
            let has = |f: &str| path.join(f).is_file();
            let has_py = std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "py"));
            if has("bootstrap") {
                "provided.al2023".into()
            } else if has("index.mjs") || has("index.js") || has("index.cjs") {
                host_identifier(RuntimeFamily::Node)
            } else if has_py {
                host_identifier(RuntimeFamily::Python)
            } else {
                "provided.al2023".into()
            }
        }
        None => "provided.al2023".into(),
    };
    let handler = match handler {
        Some(h) => h,
        None => match Runtime::parse(&runtime).map(Runtime::family) {
            Ok(RuntimeFamily::Python) if path.is_dir() => python_handler(path),
            Ok(RuntimeFamily::Python) => "lambda_function.lambda_handler".into(),
            Ok(RuntimeFamily::Node) => "index.handler".into(),
            _ => "bootstrap".into(),
        },
    };
    Ok((runtime, handler))
}

/// A note when the server runs a managed runtime on another interpreter version than the
/// identifier names (read from the runtime version's ARN, `...-host<version>`).
pub fn runtime_note(cfg: &Value) -> Option<String> {
    let runtime = quarters_types::Runtime::parse(cfg["Runtime"].as_str()?).ok()?;
    let want = runtime.language_version()?;
    let arn = cfg["RuntimeVersionConfig"]["RuntimeVersionArn"].as_str()?;
    let host = arn.rsplit_once("-host")?.1;
    let same = host == want || host.starts_with(&format!("{want}."));
    (!same).then(|| format!("note: {} runs on the server's interpreter version {host}", runtime.as_str()))
}

/// A zip of a directory (modes kept), or of one executable as `bootstrap`, or a zip file as is.
pub fn package(path: &Path) -> Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "zip") {
        return std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    }
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    if path.is_file() {
        add_file(&mut w, path, "bootstrap")?;
    } else if path.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)?.flatten().collect();
            entries.sort_by_key(|e| e.path());
            for e in entries {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(path)?.to_string_lossy().into_owned();
                    add_file(&mut w, &p, &rel)?;
                }
            }
        }
    } else {
        bail!("{} is not a file or a directory", path.display());
    }
    Ok(w.finish()?.into_inner())
}

fn add_file(w: &mut zip::ZipWriter<Cursor<Vec<u8>>>, path: &Path, name: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(mode & 0o777);
    w.start_file(name, opts)?;
    w.write_all(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)?;
    Ok(())
}
