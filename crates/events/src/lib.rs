//! Durable asynchronous (`Event`) invocations, as AWS Lambda runs them.
//!
//! The API stores an event with [`EventQueue::enqueue`] and answers 202 once it is on disk. A
//! dispatcher started with [`EventQueue::start`] runs the stored events through an [`Invoker`] with
//! bounded concurrency and applies Lambda's rules:
//!
//! - a **function error** is retried up to `MaximumRetryAttempts` times (0..=2, default 2), waiting
//!   `retry_base_delay × n` before retry `n` (Lambda: about one minute, then two);
//! - a **throttle or platform error** is retried with exponential backoff (1 s doubling to 5 min)
//!   until the event is `MaximumEventAgeInSeconds` old (60..=21600, default 21600);
//! - an event that finally fails goes to its `OnFailure` destination as an invocation record, or
//!   is dropped with a `tracing::warn!`; a success goes to `OnSuccess` if one is set.
//!
//! Events live in their own SQLite file (WAL, `synchronous=FULL`). One thread owns the connection
//! and commits whatever requests are waiting in one transaction (group commit). A row is deleted
//! only when its event has succeeded, been delivered to a destination or been dropped, so an event
//! in flight when the process stops runs again after the next start: delivery is at least once.
//! One file must be served by one queue at a time.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quarters_types::Arns;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

mod dispatch;
mod record;
mod store;

pub use record::{Condition, RecordResponse, invocation_record, parse_function_destination};

/// A boxed future, as [`Invoker::invoke`] returns it.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The event queue's errors.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The SQLite store failed (opening, writing, reading).
    #[error("event store: {0}")]
    Store(String),
    /// The store was written by a newer server.
    #[error("events.db has schema version {found}, newer than this server understands ({supported})")]
    Schema { found: i64, supported: i64 },
    /// The store's thread has stopped.
    #[error("the event queue is closed")]
    Closed,
    /// [`EventQueue::start`] was called a second time.
    #[error("the event dispatcher is already running")]
    AlreadyStarted,
    #[error("event store: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for EventsError {
    fn from(e: rusqlite::Error) -> Self {
        EventsError::Store(e.to_string())
    }
}

pub type Result<T, E = EventsError> = std::result::Result<T, E>;

/// One asynchronous invocation, as stored and as handed to the [`Invoker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    /// The request id answered to the caller; every attempt uses it (as Lambda's retries do).
    pub request_id: String,
    pub function: String,
    /// `None`: unqualified (`$LATEST`, or what the lead's resolver makes of no qualifier).
    pub qualifier: Option<String>,
    pub tenant: Option<String>,
    pub payload: Bytes,
    /// The decoded client context JSON, if any.
    pub client_context: Option<String>,
    /// When the event was accepted, in milliseconds since the Unix epoch. Its age is counted from
    /// here.
    pub enqueued_ms: u64,
    /// Attempts made before this one (0 on the first), whatever their outcome.
    pub attempts: u32,
}

impl QueuedEvent {
    /// A new event, accepted now.
    pub fn new(
        request_id: impl Into<String>,
        function: impl Into<String>,
        qualifier: Option<String>,
        tenant: Option<String>,
        payload: Bytes,
        client_context: Option<String>,
    ) -> Self {
        Self {
            request_id: request_id.into(),
            function: function.into(),
            qualifier,
            tenant,
            payload,
            client_context,
            enqueued_ms: now_ms(),
            attempts: 0,
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeOutcome {
    /// The function returned a result.
    Success { body: Bytes, executed_version: String },
    /// The function failed (`X-Amz-Function-Error: Unhandled`): retried up to
    /// `MaximumRetryAttempts` times.
    FunctionError { body: Bytes, executed_version: String },
    /// Concurrency or capacity limits refused the invocation: retried with backoff until the
    /// event is too old.
    Throttled,
    /// The platform failed (sandbox start, shutdown, ...): retried with backoff until the event
    /// is too old.
    Failed(String),
    /// The event can never run (the function was deleted, the tenant is not allowed): it fails
    /// at once, without retries.
    Rejected(String),
}

impl InvokeOutcome {
    /// A success of `$LATEST`.
    pub fn success(body: impl Into<Bytes>) -> Self {
        Self::Success { body: body.into(), executed_version: "$LATEST".into() }
    }

    /// A function error of `$LATEST`.
    pub fn function_error(body: impl Into<Bytes>) -> Self {
        Self::FunctionError { body: body.into(), executed_version: "$LATEST".into() }
    }
}

/// Lambda's `FunctionEventInvokeConfig`, per function (and qualifier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInvokeConfig {
    /// Retries after a function error, 0..=2.
    pub maximum_retry_attempts: u32,
    /// How long an event may wait (in seconds, 60..=21600) before it is discarded.
    pub maximum_event_age_s: u32,
    /// A function name or (partial) function ARN, possibly qualified.
    pub on_success: Option<String>,
    /// A function name or (partial) function ARN, possibly qualified.
    pub on_failure: Option<String>,
}

impl EventInvokeConfig {
    pub const MAX_RETRY_ATTEMPTS: u32 = 2;
    pub const MIN_EVENT_AGE_S: u32 = 60;
    pub const MAX_EVENT_AGE_S: u32 = 21_600;

    /// The same, with both limits clamped into Lambda's ranges.
    pub fn normalized(mut self) -> Self {
        self.maximum_retry_attempts = self.maximum_retry_attempts.min(Self::MAX_RETRY_ATTEMPTS);
        self.maximum_event_age_s = self.maximum_event_age_s.clamp(Self::MIN_EVENT_AGE_S, Self::MAX_EVENT_AGE_S);
        self
    }

    /// Checks the limits and destinations as `PutFunctionEventInvokeConfig` would; the message
    /// suits an `InvalidParameterValueException`.
    pub fn validate(&self) -> Result<(), String> {
        if self.maximum_retry_attempts > Self::MAX_RETRY_ATTEMPTS {
            return Err(format!(
                "MaximumRetryAttempts must be between 0 and {}, got {}",
                Self::MAX_RETRY_ATTEMPTS,
                self.maximum_retry_attempts
            ));
        }
        if !(Self::MIN_EVENT_AGE_S..=Self::MAX_EVENT_AGE_S).contains(&self.maximum_event_age_s) {
            return Err(format!(
                "MaximumEventAgeInSeconds must be between {} and {}, got {}",
                Self::MIN_EVENT_AGE_S,
                Self::MAX_EVENT_AGE_S,
                self.maximum_event_age_s
            ));
        }
        for d in [&self.on_success, &self.on_failure].into_iter().flatten() {
            if parse_function_destination(d).is_none() {
                return Err(format!("The destination ARN {d} is not a function ARN or name"));
            }
        }
        Ok(())
    }
}

impl Default for EventInvokeConfig {
    fn default() -> Self {
        Self {
            maximum_retry_attempts: Self::MAX_RETRY_ATTEMPTS,
            maximum_event_age_s: Self::MAX_EVENT_AGE_S,
            on_success: None,
            on_failure: None,
        }
    }
}

/// What the queue needs from the platform: running one attempt, and a function's settings.
pub trait Invoker: Send + Sync + 'static {
    /// Run one attempt of `event` and report how it went. Called again for each retry, with
    /// `event.attempts` counting the earlier ones.
    fn invoke<'a>(&'a self, event: &'a QueuedEvent) -> BoxFuture<'a, InvokeOutcome>;

    /// The event-invoke settings of `function` (as invoked: `qualifier` is the event's). Read
    /// before every attempt, so changes apply to queued events. Must not block.
    fn event_config(&self, function: &str, qualifier: Option<&str>) -> EventInvokeConfig;
}

/// The queue's own settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Events run at once, at most.
    pub concurrency: usize,
    /// The wait before retry `n` after a function error is `n ×` this (Lambda: one minute).
    pub retry_base_delay: Duration,
    /// The first wait after a throttle or platform error; it doubles on each one after.
    pub backoff_min: Duration,
    /// The longest wait after a throttle or platform error.
    pub backoff_max: Duration,
    /// The longest the dispatcher sleeps before looking at the store again (a safety net: it is
    /// woken on every enqueue and completion and at the next due time anyway).
    pub poll_interval: Duration,
    /// How long [`EventQueue::shutdown`] waits for running attempts before abandoning them
    /// (an abandoned event stays stored and runs again after the next start).
    pub shutdown_grace: Duration,
    /// Destination records chained longer than this are dropped instead of delivered (a guard
    /// against a function that is its own failure destination; Lambda stops such loops too).
    pub max_destination_depth: u32,
    /// For the `functionArn` of invocation records.
    pub arns: Arns,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            retry_base_delay: Duration::from_secs(60),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            max_destination_depth: 16,
            arns: Arns::default(),
        }
    }
}

/// Counters since the queue was opened, and the queue's present state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Stored events not running now (new ones and ones waiting for a retry).
    pub queued: u64,
    /// Events running now.
    pub in_flight: u64,
    /// The age of the oldest stored event (0 when there is none).
    pub oldest_age_ms: u64,
    /// Events that succeeded.
    pub succeeded: u64,
    /// Retries scheduled (function errors, throttles and platform errors).
    pub retried: u64,
    /// Events that failed and had nowhere to go (or whose destination was refused).
    pub dropped: u64,
    /// Failed events delivered to their `OnFailure` destination.
    pub dead_lettered: u64,
}

/// [`QueueStats`] of one function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FunctionQueueStats {
    pub function: String,
    #[serde(flatten)]
    pub stats: QueueStats,
}

pub(crate) struct Shared {
    pub cfg: QueueConfig,
    pub db: store::Db,
    pub wake: Notify,
}

struct Inner {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    dispatcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    started: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A queue dropped without `shutdown` still stops its dispatcher (in the background).
        self.stop.send_replace(true);
    }
}

/// The durable queue of asynchronous invocations. Cheap to clone.
#[derive(Clone)]
pub struct EventQueue {
    inner: Arc<Inner>,
}

impl fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventQueue").field("cfg", &self.inner.shared.cfg).finish_non_exhaustive()
    }
}

impl EventQueue {
    /// Opens (or creates) the store at `path`. Events left by an earlier run are kept and run
    /// once [`EventQueue::start`] is called.
    pub fn open(path: &Path, config: QueueConfig) -> Result<EventQueue> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let db = store::Db::open(path)?;
        let (stop, _) = watch::channel(false);
        Ok(EventQueue {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared { cfg: config, db, wake: Notify::new() }),
                stop,
                dispatcher: Mutex::new(None),
                started: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Stores `event`; when this returns `Ok`, the event is on disk (committed with
    /// `synchronous=FULL`) and will run, after a restart if need be.
    pub async fn enqueue(&self, event: QueuedEvent) -> Result<()> {
        self.inner.shared.db.insert(vec![(event, 0)]).await?;
        self.inner.shared.wake.notify_one();
        Ok(())
    }

    /// Starts the dispatcher (on the current tokio runtime). Once only.
    pub fn start(&self, invoker: Arc<dyn Invoker>) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return Err(EventsError::AlreadyStarted);
        }
        let handle = tokio::spawn(dispatch::run(self.inner.shared.clone(), invoker, self.inner.stop.subscribe()));
        *lock(&self.inner.dispatcher) = Some(handle);
        Ok(())
    }

    /// Stops taking events, waits up to `shutdown_grace` for running attempts to finish and
    /// record their outcome, and abandons the rest (they stay stored). Enqueueing still works
    /// afterwards: such events run after the next start.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let handle = lock(&self.inner.dispatcher).take();
        if let Some(h) = handle
            && let Err(e) = h.await
        {
            tracing::error!(error = %e, "event dispatcher failed");
        }
    }

    /// The queue as a whole.
    pub async fn stats(&self) -> Result<QueueStats> {
        self.inner.shared.db.stats(now_ms()).await
    }

    /// Per function, for functions with stored events or counted outcomes, sorted by name.
    pub async fn function_stats(&self) -> Result<Vec<FunctionQueueStats>> {
        self.inner.shared.db.function_stats(now_ms()).await
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn now_ms() -> u64 {
    quarters_types::time::now_ms()
}

#[cfg(test)]
mod tests;
