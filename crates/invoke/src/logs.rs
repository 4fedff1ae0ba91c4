//! Capture of one environment's output into its log stream.
//!
//! The runtime's stdout and stderr share one pipe. A reader task turns lines into log records
//! as they arrive; when an invocation completes, [`LogCapture::drain_now`] reads whatever is
//! still in the pipe before END and REPORT are written. A runtime writes its output before it
//! posts its response, so that output is in the pipe by then: an invocation's log lines
//! always land inside its START..REPORT, and in its `Tail`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use quarters_telemetry::{LogRecord, LogStore};
use quarters_types::time::{now_ms, rfc3339_ms};
use quarters_types::{LogFormat, TenantId};
use tokio::io::unix::AsyncFd;

/// Where an environment's records go, fixed for its life.
pub(crate) struct StreamMeta {
    pub log_group: Arc<str>,
    pub log_stream: Arc<str>,
    pub function: Arc<str>,
    pub version: Arc<str>,
    pub format: LogFormat,
    /// Set at creation, or when a pooled environment is bound to its tenant.
    pub tenant: std::sync::OnceLock<TenantId>,
}

#[derive(Default)]
struct Current {
    request_id: Option<Arc<str>>,
    /// The invocation's log text, for `X-Amz-Log-Type: Tail`, when asked for.
    tail: Option<Vec<u8>>,
}

pub(crate) struct LogCapture {
    meta: StreamMeta,
    store: Arc<LogStore>,
    fd: AsyncFd<OwnedFd>,
    /// Bytes read after the last newline; also serialises readers.
    partial: Mutex<Vec<u8>>,
    current: Mutex<Current>,
}

/// Keep at most this much of an invocation's log for its tail.
const TAIL_KEEP: usize = 64 * 1024;
/// Longest line kept whole; longer output is split.
const MAX_LINE: usize = 256 * 1024;

impl LogCapture {
    pub fn new(meta: StreamMeta, store: Arc<LogStore>, fd: OwnedFd) -> std::io::Result<Arc<Self>> {
        // SAFETY: an OwnedFd is a valid open fd, always returns the same raw fd, and stays
        // open until the AsyncFd that owns it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Arc::new(Self { meta, store, fd, partial: Mutex::new(Vec::new()), current: Mutex::new(Current::default()) }))
    }

    /// Read the pipe until the sandbox closes it.
    pub async fn run(self: Arc<Self>) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return;
            };
            let open = self.drain_now(false);
            guard.clear_ready();
            if !open {
                self.drain_now(true);
                return;
            }
        }
    }

    /// Read everything now in the pipe and log it; with `flush`, also log a trailing partial
    /// line. Returns false once the pipe is closed.
    pub fn drain_now(&self, flush: bool) -> bool {
        let mut partial = lock(&self.partial);
        let mut buf = [0u8; 16 * 1024];
        let mut open = true;
        loop {
            // SAFETY: reading into a stack buffer of the given length from an fd we own.
            let n = unsafe { libc::read(self.fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                partial.extend_from_slice(&buf[..n as usize]);
                self.emit_lines(&mut partial);
                continue;
            }
            if n == 0 {
                open = false;
            } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if (flush || !open) && !partial.is_empty() {
            let rest = std::mem::take(&mut *partial);
            self.emit(String::from_utf8_lossy(&rest).trim_end_matches('\r').to_string());
        }
        open
    }

    fn emit_lines(&self, partial: &mut Vec<u8>) {
        let mut start = 0;
        while let Some(pos) = partial[start..].iter().position(|b| *b == b'\n') {
            let line = &partial[start..start + pos];
            let text = String::from_utf8_lossy(line).trim_end_matches('\r').to_string();
            self.emit(text);
            start += pos + 1;
        }
        partial.drain(..start);
        if partial.len() > MAX_LINE {
            let text = String::from_utf8_lossy(partial).into_owned();
            partial.clear();
            self.emit(text);
        }
    }

    /// Record the tenant a pooled environment was bound to (once).
    pub fn bind_tenant(&self, tenant: TenantId) {
        let _ = self.meta.tenant.set(tenant);
    }

    /// Begin an invocation: its lines carry its request id, and are kept for Tail if asked.
    pub fn begin(&self, request_id: Arc<str>, tail: bool) {
        let mut c = lock(&self.current);
        c.request_id = Some(request_id);
        c.tail = tail.then(Vec::new);
    }

    /// End an invocation; returns the last 4 KB of its log if Tail was asked for.
    pub fn finish(&self) -> Option<Vec<u8>> {
        let mut c = lock(&self.current);
        c.request_id = None;
        c.tail.take().map(|mut t| {
            let limit = quarters_types::limits::LOG_TAIL_BYTES;
            if t.len() > limit {
                t.drain(..t.len() - limit);
            }
            t
        })
    }

    /// Log a line of the function's output (formatted for JSON logs where configured).
    fn emit(&self, line: String) {
        let request_id = lock(&self.current).request_id.clone();
        let message = match self.meta.format {
            LogFormat::Text => line,
            LogFormat::Json => self.json_app_line(line, request_id.as_deref()),
        };
        self.record(message, request_id);
    }

    /// Log a line the platform writes (START, END, REPORT, ...), already formatted.
    pub fn platform(&self, message: String) {
        let request_id = lock(&self.current).request_id.clone();
        self.record(message, request_id);
    }

    fn record(&self, message: String, request_id: Option<Arc<str>>) {
        {
            let mut c = lock(&self.current);
            if let Some(t) = c.tail.as_mut() {
                t.extend_from_slice(message.as_bytes());
                t.push(b'\n');
                if t.len() > TAIL_KEEP {
                    let cut = t.len() - TAIL_KEEP / 2;
                    t.drain(..cut);
                }
            }
        }
        self.store.append(LogRecord {
            ts_ms: now_ms(),
            log_group: self.meta.log_group.clone(),
            log_stream: self.meta.log_stream.clone(),
            function: self.meta.function.clone(),
            version: self.meta.version.clone(),
            tenant: self.meta.tenant.get().cloned(),
            request_id,
            message,
        });
    }

    /// In JSON format every application record is a JSON object carrying the request id and,
    /// during an invocation of a tenant, `tenantId`. Lines that are JSON objects keep their
    /// fields; other lines are wrapped.
    fn json_app_line(&self, line: String, request_id: Option<&str>) -> String {
        let tenant = if request_id.is_some() { self.meta.tenant.get() } else { None };
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(mut map)) => {
                if let Some(id) = request_id {
                    map.entry("requestId").or_insert_with(|| id.into());
                }
                if let Some(t) = tenant {
                    map.entry("tenantId").or_insert_with(|| t.as_str().into());
                }
                serde_json::Value::Object(map).to_string()
            }
            _ => {
                let mut map = serde_json::Map::new();
                map.insert("timestamp".into(), rfc3339_ms(now_ms()).into());
                map.insert("level".into(), "INFO".into());
                if let Some(id) = request_id {
                    map.insert("requestId".into(), id.into());
                }
                if let Some(t) = tenant {
                    map.insert("tenantId".into(), t.as_str().into());
                }
                map.insert("message".into(), line.into());
                serde_json::Value::Object(map).to_string()
            }
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
