//! The queue end to end, with a fake invoker and millisecond delays.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;

type Behaviour = Box<dyn Fn(&QueuedEvent) -> InvokeOutcome + Send + Sync>;

/// Answers per function with a closure, after `delay`; functions in `hang` never answer.
struct Fake {
    behaviour: Behaviour,
    delay: Duration,
    hang: Vec<&'static str>,
    configs: HashMap<&'static str, EventInvokeConfig>,
    calls: Mutex<Vec<(Instant, QueuedEvent)>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Fake {
    fn new(behaviour: impl Fn(&QueuedEvent) -> InvokeOutcome + Send + Sync + 'static) -> Self {
        Self {
            behaviour: Box::new(behaviour),
            delay: Duration::ZERO,
            hang: Vec::new(),
            configs: HashMap::new(),
            calls: Mutex::new(Vec::new()),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
        }
    }

    fn config(mut self, function: &'static str, cfg: EventInvokeConfig) -> Self {
        self.configs.insert(function, cfg);
        self
    }

    fn calls_to(&self, function: &str) -> Vec<(Instant, QueuedEvent)> {
        lock(&self.calls).iter().filter(|(_, e)| e.function == function).cloned().collect()
    }
}

impl Invoker for Fake {
    fn invoke<'a>(&'a self, event: &'a QueuedEvent) -> BoxFuture<'a, InvokeOutcome> {
        Box::pin(async move {
            lock(&self.calls).push((Instant::now(), event.clone()));
            let n = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(n, Ordering::SeqCst);
            if self.hang.contains(&event.function.as_str()) {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(self.delay).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            (self.behaviour)(event)
        })
    }

    fn event_config(&self, function: &str, _qualifier: Option<&str>) -> EventInvokeConfig {
        self.configs.get(function).cloned().unwrap_or_default()
    }
}

fn fast() -> QueueConfig {
    QueueConfig {
        concurrency: 8,
        retry_base_delay: Duration::from_millis(50),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
        poll_interval: Duration::from_millis(200),
        shutdown_grace: Duration::from_millis(100),
        ..QueueConfig::default()
    }
}

fn event(function: &str, payload: &str) -> QueuedEvent {
    QueuedEvent::new(
        uuid::Uuid::new_v4().to_string(),
        function,
        None,
        Some("tenant-a".into()),
        Bytes::from(payload.to_owned()),
        None,
    )
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn settled(q: &EventQueue) -> QueueStats {
    let start = Instant::now();
    loop {
        let s = q.stats().await.expect("stats");
        if s.queued == 0 && s.in_flight == 0 {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "queue did not drain: {s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn json_of(e: &QueuedEvent) -> Value {
    serde_json::from_slice(&e.payload).expect("record is JSON")
}

#[tokio::test]
async fn success_runs_once_and_reaches_on_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(
        Fake::new(|e| {
            if e.function == "ok" { InvokeOutcome::success(r#"{"done":true}"#) } else { InvokeOutcome::success("null") }
        })
        .config("ok", EventInvokeConfig { on_success: Some("audit".into()), ..EventInvokeConfig::default() }),
    );
    let q = EventQueue::open(&dir.path().join("sub/events.db"), fast()).expect("open");
    q.start(fake.clone()).expect("start");
    let ev = QueuedEvent { client_context: Some(r#"{"custom":{}}"#.into()), ..event("ok", r#"{"n":1}"#) };
    q.enqueue(ev.clone()).await.expect("enqueue");
    until("the success record", || fake.calls_to("audit").len() == 1).await;
    let s = settled(&q).await;
    assert_eq!((s.succeeded, s.retried, s.dropped, s.dead_lettered), (2, 0, 0, 0), "{s:?}");

    let calls = fake.calls_to("ok");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1, ev, "the invoker sees the event as enqueued");
    let dest = &fake.calls_to("audit")[0].1;
    assert_eq!(dest.tenant.as_deref(), Some("tenant-a"));
    assert_ne!(dest.request_id, ev.request_id);
    let r = json_of(dest);
    assert_eq!(r["requestContext"]["condition"], "Success");
    assert_eq!(r["requestContext"]["requestId"], ev.request_id.as_str());
    assert_eq!(r["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(r["requestContext"]["functionArn"], "arn:aws:lambda:us-east-1:000000000000:function:ok:$LATEST");
    assert_eq!(r["requestPayload"], json!({"n": 1}));
    assert_eq!(r["responseContext"], json!({"statusCode": 200, "executedVersion": "$LATEST"}));
    assert_eq!(r["responsePayload"], json!({"done": true}));

    let per = q.function_stats().await.expect("function stats");
    assert_eq!(
        per.iter().map(|f| (f.function.as_str(), f.stats.succeeded)).collect::<Vec<_>>(),
        [("audit", 1), ("ok", 1)]
    );
    q.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn function_errors_are_retried_then_dead_lettered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = r#"{"errorType":"Boom","errorMessage":"it broke"}"#;
    let fake = Arc::new(
        Fake::new(move |e| match e.function.as_str() {
            "bad" | "once" => InvokeOutcome::FunctionError { body: Bytes::from(error), executed_version: "7".into() },
            _ => InvokeOutcome::success("null"),
        })
        .config(
            "bad",
            EventInvokeConfig {
                on_failure: Some("arn:aws:lambda:us-east-1:000000000000:function:dlq:live".into()),
                ..EventInvokeConfig::default()
            },
        )
        .config("once", EventInvokeConfig { maximum_retry_attempts: 1, ..EventInvokeConfig::default() }),
    );
    let q = EventQueue::open(&dir.path().join("events.db"), fast()).expect("open");
    q.start(fake.clone()).expect("start");
    let ev = QueuedEvent { qualifier: Some("live".into()), ..event("bad", r#"{"order":42}"#) };
    q.enqueue(ev.clone()).await.expect("enqueue");
    q.enqueue(event("once", "{}")).await.expect("enqueue");
    until("the failure record", || fake.calls_to("dlq").len() == 1).await;
    let s = settled(&q).await;

    let calls = fake.calls_to("bad");
    assert_eq!(calls.len(), 3, "one attempt and MaximumRetryAttempts (2) retries");
    assert_eq!(calls.iter().map(|(_, e)| e.attempts).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(calls.iter().all(|(_, e)| e.request_id == ev.request_id), "retries keep the request id");
    assert!(calls[1].0 - calls[0].0 >= Duration::from_millis(50), "first retry after 1 × base");
    assert!(calls[2].0 - calls[1].0 >= Duration::from_millis(100), "second retry after 2 × base");
    assert_eq!(fake.calls_to("once").len(), 2, "MaximumRetryAttempts 1");
    assert_eq!((s.retried, s.dead_lettered, s.dropped, s.succeeded), (3, 1, 1, 1), "{s:?}");

    let dest = &fake.calls_to("dlq")[0].1;
    assert_eq!((dest.function.as_str(), dest.qualifier.as_deref()), ("dlq", Some("live")));
    assert_eq!(dest.tenant.as_deref(), Some("tenant-a"), "the record keeps the tenant");
    let r = json_of(dest);
    assert_eq!(r["version"], "1.0");
    assert!(r["timestamp"].as_str().is_some_and(|t| t.ends_with('Z') && t.len() == 24), "{r}");
    assert_eq!(
        r["requestContext"],
        json!({
            "requestId": ev.request_id,
            "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:bad:live",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3
        })
    );
    assert_eq!(r["requestPayload"], json!({"order": 42}));
    assert_eq!(r["responseContext"], json!({"statusCode": 200, "executedVersion": "7", "functionError": "Unhandled"}));
    assert_eq!(r["responsePayload"], json!({"errorType": "Boom", "errorMessage": "it broke"}));
    q.shutdown().await;
}

#[tokio::test]
async fn old_events_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sixty = EventInvokeConfig { maximum_event_age_s: 60, ..EventInvokeConfig::default() };
    let fake = Arc::new(
        Fake::new(|e| match e.function.as_str() {
            "busy" | "stale" => InvokeOutcome::Throttled,
            "broken" => InvokeOutcome::Failed("no sandbox".into()),
            _ => InvokeOutcome::success("null"),
        })
        .config("stale", EventInvokeConfig { on_failure: Some("dlq".into()), ..sixty.clone() })
        .config("busy", sixty.clone())
        .config("broken", sixty),
    );
    let q = EventQueue::open(&dir.path().join("events.db"), fast()).expect("open");
    q.start(fake.clone()).expect("start");
    let now = now_ms();
    // Already older than its function's MaximumEventAgeInSeconds: never runs.
    let stale = QueuedEvent { enqueued_ms: now - 61_000, ..event("stale", r#"{"old":true}"#) };
    q.enqueue(stale.clone()).await.expect("enqueue");
    // Throttled (or failing) again and again until it is 60 s old, 400 ms from now.
    q.enqueue(QueuedEvent { enqueued_ms: now - 59_600, ..event("busy", "{}") }).await.expect("enqueue");
    q.enqueue(QueuedEvent { enqueued_ms: now - 59_600, ..event("broken", "{}") }).await.expect("enqueue");
    until("the expiry record", || fake.calls_to("dlq").len() == 1).await;
    let s = settled(&q).await;
    let elapsed = now_ms() - now;

    assert!(fake.calls_to("stale").is_empty());
    let r = json_of(&fake.calls_to("dlq")[0].1);
    assert_eq!(r["requestContext"]["condition"], "EventAgeExceeded");
    assert_eq!(r["requestContext"]["approximateInvokeCount"], 0);
    assert_eq!(r["requestPayload"], json!({"old": true}));
    assert!(r.get("responsePayload").is_none(), "{r}");
    for f in ["busy", "broken"] {
        let n = fake.calls_to(f).len();
        // Backoff 10, 20, 40, 40, ... ms over 400 ms: about 11 attempts.
        assert!((4..=40).contains(&n), "{f}: {n} attempts");
    }
    assert!(elapsed >= 390, "expired after {elapsed} ms");
    assert_eq!((s.dropped, s.dead_lettered), (2, 1), "{s:?}");
    q.shutdown().await;
}

#[tokio::test]
async fn events_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.db");
    let mut sent = Vec::new();
    {
        let q = EventQueue::open(&path, fast()).expect("open");
        for i in 0..3 {
            let ev = event("f", &format!(r#"{{"i":{i}}}"#));
            q.enqueue(ev.clone()).await.expect("enqueue");
            sent.push(ev);
        }
        let s = q.stats().await.expect("stats");
        assert_eq!((s.queued, s.in_flight), (3, 0));
        // Dropped without ever running.
    }
    // A second run is stopped while an event is in flight: it stays stored.
    {
        let hang = Arc::new(Fake { hang: vec!["f"], ..Fake::new(|_| InvokeOutcome::success("null")) });
        let q = EventQueue::open(&path, QueueConfig { concurrency: 1, ..fast() }).expect("reopen");
        q.start(hang.clone()).expect("start");
        until("the first attempt", || hang.calls_to("f").len() == 1).await;
        let s = q.stats().await.expect("stats");
        assert_eq!((s.queued, s.in_flight), (2, 1), "{s:?}");
        q.shutdown().await;
        let s = q.stats().await.expect("stats");
        assert_eq!((s.queued, s.in_flight), (3, 0), "abandoned at shutdown, still stored: {s:?}");
    }
    let fake = Arc::new(Fake::new(|_| InvokeOutcome::success("null")));
    let q = EventQueue::open(&path, fast()).expect("reopen");
    let s = q.stats().await.expect("stats");
    assert_eq!(s.queued, 3);
    assert!(s.oldest_age_ms < 10_000, "{s:?}");
    q.start(fake.clone()).expect("start");
    assert!(matches!(q.start(fake.clone()), Err(EventsError::AlreadyStarted)));
    let s = settled(&q).await;
    assert_eq!(s.succeeded, 3);
    let mut ran: Vec<QueuedEvent> = fake.calls_to("f").into_iter().map(|(_, e)| e).collect();
    ran.sort_by_key(|e| e.payload.clone());
    assert_eq!(ran, sent, "each event runs once more, as enqueued");
    q.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(Fake { delay: Duration::from_millis(30), ..Fake::new(|_| InvokeOutcome::success("null")) });
    let q = EventQueue::open(&dir.path().join("events.db"), QueueConfig { concurrency: 3, ..fast() }).expect("open");
    for i in 0..20 {
        q.enqueue(event(if i % 2 == 0 { "even" } else { "odd" }, "{}")).await.expect("enqueue");
    }
    q.start(fake.clone()).expect("start");
    let s = settled(&q).await;
    assert_eq!(s.succeeded, 20);
    assert_eq!(fake.max_running.load(Ordering::SeqCst), 3);
    assert_eq!(lock(&fake.calls).len(), 20);
    q.shutdown().await;
}

#[tokio::test]
async fn platform_errors_then_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(Fake::new(|e| match e.attempts {
        0 => InvokeOutcome::Throttled,
        1 => InvokeOutcome::Failed("sandbox".into()),
        _ => InvokeOutcome::success("1"),
    }));
    let q = EventQueue::open(&dir.path().join("events.db"), fast()).expect("open");
    q.start(fake.clone()).expect("start");
    q.enqueue(event("f", "{}")).await.expect("enqueue");
    until("the third attempt", || fake.calls_to("f").len() == 3).await;
    let s = settled(&q).await;
    assert_eq!((s.succeeded, s.retried, s.dropped), (1, 2, 0), "{s:?}");
    let calls = fake.calls_to("f");
    assert!(calls[1].0 - calls[0].0 >= Duration::from_millis(10));
    assert!(calls[2].0 - calls[1].0 >= Duration::from_millis(20));
    q.shutdown().await;
}

#[tokio::test]
async fn destination_loops_are_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(Fake::new(|_| InvokeOutcome::function_error("{}")).config(
        "loop",
        EventInvokeConfig {
            maximum_retry_attempts: 0,
            on_failure: Some("loop".into()),
            ..EventInvokeConfig::default()
        },
    ));
    let q = EventQueue::open(&dir.path().join("events.db"), QueueConfig { max_destination_depth: 3, ..fast() })
        .expect("open");
    q.start(fake.clone()).expect("start");
    q.enqueue(event("loop", "{}")).await.expect("enqueue");
    until("the chain to end", || fake.calls_to("loop").len() == 4).await;
    let s = settled(&q).await;
    assert_eq!((s.dead_lettered, s.dropped), (3, 1), "{s:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake.calls_to("loop").len(), 4);
    q.shutdown().await;
}

#[tokio::test]
async fn rejected_events_fail_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(
        Fake::new(|e| {
            if e.function == "gone" {
                InvokeOutcome::Rejected("function not found".into())
            } else {
                InvokeOutcome::success("null")
            }
        })
        .config("gone", EventInvokeConfig { on_failure: Some("dlq".into()), ..EventInvokeConfig::default() }),
    );
    let q = EventQueue::open(&dir.path().join("events.db"), fast()).expect("open");
    q.start(fake.clone()).expect("start");
    q.enqueue(event("gone", "{}")).await.expect("enqueue");
    until("the failure record", || fake.calls_to("dlq").len() == 1).await;
    assert_eq!(fake.calls_to("gone").len(), 1);
    let r = json_of(&fake.calls_to("dlq")[0].1);
    assert_eq!(r["requestContext"]["condition"], "RetriesExhausted");
    q.shutdown().await;
}

#[test]
fn event_invoke_config_rules() {
    let d = EventInvokeConfig::default();
    assert_eq!((d.maximum_retry_attempts, d.maximum_event_age_s), (2, 21_600));
    assert!(d.validate().is_ok());
    assert!(EventInvokeConfig { maximum_retry_attempts: 3, ..d.clone() }.validate().is_err());
    assert!(EventInvokeConfig { maximum_event_age_s: 59, ..d.clone() }.validate().is_err());
    assert!(EventInvokeConfig { maximum_event_age_s: 21_601, ..d.clone() }.validate().is_err());
    assert!(
        EventInvokeConfig { on_failure: Some("arn:aws:sqs:us-east-1:1:q".into()), ..d.clone() }.validate().is_err()
    );
    let n = EventInvokeConfig { maximum_retry_attempts: 9, maximum_event_age_s: 1, ..d }.normalized();
    assert_eq!((n.maximum_retry_attempts, n.maximum_event_age_s), (2, 60));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.db");
    drop(EventQueue::open(&path, fast()).expect("open"));
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch("PRAGMA user_version = 9").expect("bump");
    drop(conn);
    assert!(matches!(EventQueue::open(&path, fast()), Err(EventsError::Schema { found: 9, .. })));
}
