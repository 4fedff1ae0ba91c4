//! The dispatcher: claims due events, runs them with bounded concurrency, and decides what each
//! outcome means under Lambda's retry rules.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::record::{Condition, RecordResponse, invocation_record, parse_function_destination};
use crate::store::{Finish, Stored, Tally};
use crate::{EventInvokeConfig, InvokeOutcome, Invoker, QueueConfig, QueuedEvent, Shared, now_ms};

pub(crate) async fn run(shared: Arc<Shared>, invoker: Arc<dyn Invoker>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(shared.cfg.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let poll = shared.cfg.poll_interval.max(Duration::from_millis(1));
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        let free = slots.available_permits();
        let mut wait = poll;
        if free > 0 {
            let now = now_ms();
            match shared.db.claim(now, free).await {
                Ok(claimed) => {
                    let full = claimed.events.len() == free;
                    for stored in claimed.events {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            // Cannot happen (only this loop takes slots); run it again later.
                            shared.db.release(stored.id);
                            continue;
                        };
                        let (shared, invoker) = (shared.clone(), invoker.clone());
                        tasks.spawn(async move {
                            attempt(&shared, invoker.as_ref(), stored).await;
                            drop(permit);
                            shared.wake.notify_one();
                        });
                    }
                    if full {
                        continue; // more may be due: wait for a slot
                    }
                    if let Some(t) = claimed.next_due_ms {
                        wait = wait.min(Duration::from_millis(t.saturating_sub(now_ms()).max(1)));
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not read the event queue"),
            }
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            r = stop.changed() => if r.is_err() { break },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    let grace = tokio::time::sleep(shared.cfg.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            r = tasks.join_next() => if r.is_none() { break },
            _ = &mut grace => {
                tracing::warn!(running = tasks.len(), "abandoning asynchronous invocations at shutdown; they run again after the next start");
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
}

/// Releases the lease if the attempt ends without recording an outcome (a panic, or an abort at
/// shutdown): the event then runs again as it was.
struct Lease<'a> {
    shared: &'a Shared,
    id: i64,
    armed: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.db.release(self.id);
        }
    }
}

async fn attempt(shared: &Shared, invoker: &dyn Invoker, stored: Stored) {
    let mut lease = Lease { shared, id: stored.id, armed: true };
    let ev = &stored.event;
    let config = invoker.event_config(&ev.function, ev.qualifier.as_deref()).normalized();
    let outcome = if now_ms() >= deadline(ev, &config) { None } else { Some(invoker.invoke(ev).await) };
    let decision = decide(&stored, outcome, &config, &shared.cfg, now_ms());
    let finish = match decision {
        Decision::Retry { next_attempt_ms, attempts, function_errors, system_failures, last_response, why } => {
            tracing::info!(
                request_id = %ev.request_id,
                function = %ev.function,
                tenant = ev.tenant.as_deref().unwrap_or("-"),
                attempts,
                delay_ms = next_attempt_ms.saturating_sub(now_ms()),
                reason = %why,
                "asynchronous invocation will be retried"
            );
            Finish::Retry { attempts, function_errors, system_failures, next_attempt_ms, last_response }
        }
        Decision::Final { condition, attempts, response, why } => {
            complete(&stored, &config, &shared.cfg, condition, attempts, response, why)
        }
    };
    lease.armed = false; // from here the store releases it, whatever happens to this task
    match shared.db.finish(stored.id, finish).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(request_id = %ev.request_id, error = %e, "could not record an asynchronous invocation's outcome")
        }
        Err(_) => tracing::error!(request_id = %ev.request_id, "the event store has stopped"),
    }
}

fn deadline(ev: &QueuedEvent, config: &EventInvokeConfig) -> u64 {
    ev.enqueued_ms.saturating_add(u64::from(config.maximum_event_age_s) * 1000)
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Retry {
        next_attempt_ms: u64,
        attempts: u32,
        function_errors: u32,
        system_failures: u32,
        last_response: Option<(String, Bytes)>,
        why: String,
    },
    Final {
        condition: Condition,
        attempts: u32,
        /// (executed version, body, function error)
        response: Option<(String, Bytes, bool)>,
        why: String,
    },
}

/// Lambda's rules. `outcome` is `None` when the event was too old to run.
pub(crate) fn decide(
    stored: &Stored,
    outcome: Option<InvokeOutcome>,
    config: &EventInvokeConfig,
    q: &QueueConfig,
    now: u64,
) -> Decision {
    let ev = &stored.event;
    let deadline = deadline(ev, config);
    let last = || stored.last_response.clone().map(|(v, b)| (v, b, true));
    let Some(outcome) = outcome else {
        return Decision::Final {
            condition: Condition::EventAgeExceeded,
            attempts: ev.attempts,
            response: last(),
            why: format!("older than {} s", config.maximum_event_age_s),
        };
    };
    let attempts = ev.attempts.saturating_add(1);
    let aged = |response, why: String| Decision::Final {
        condition: Condition::EventAgeExceeded,
        attempts,
        response,
        why: format!("{why}; older than {} s", config.maximum_event_age_s),
    };
    match outcome {
        InvokeOutcome::Success { body, executed_version } => Decision::Final {
            condition: Condition::Success,
            attempts,
            response: Some((executed_version, body, false)),
            why: "succeeded".into(),
        },
        InvokeOutcome::FunctionError { body, executed_version } => {
            let function_errors = stored.function_errors.saturating_add(1);
            let why = "function error".to_string();
            if function_errors > config.maximum_retry_attempts {
                return Decision::Final {
                    condition: Condition::RetriesExhausted,
                    attempts,
                    response: Some((executed_version, body, true)),
                    why: format!("function error; {} retries exhausted", config.maximum_retry_attempts),
                };
            }
            if now >= deadline {
                return aged(Some((executed_version, body, true)), why);
            }
            let delay = q.retry_base_delay.saturating_mul(function_errors);
            Decision::Retry {
                next_attempt_ms: now.saturating_add(millis(delay)).min(deadline),
                attempts,
                function_errors,
                system_failures: 0,
                last_response: Some((executed_version, body)),
                why,
            }
        }
        InvokeOutcome::Throttled | InvokeOutcome::Failed(_) => {
            let why = match outcome {
                InvokeOutcome::Failed(reason) => format!("platform error: {reason}"),
                _ => "throttled".to_string(),
            };
            if now >= deadline {
                return aged(last(), why);
            }
            let system_failures = stored.system_failures.saturating_add(1);
            let factor = 1u32.checked_shl(system_failures.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
            let delay = q.backoff_min.saturating_mul(factor).min(q.backoff_max);
            Decision::Retry {
                next_attempt_ms: now.saturating_add(millis(delay)).min(deadline),
                attempts,
                function_errors: stored.function_errors,
                system_failures,
                last_response: stored.last_response.clone(),
                why,
            }
        }
        InvokeOutcome::Rejected(reason) => Decision::Final {
            condition: Condition::RetriesExhausted,
            attempts,
            response: last(),
            why: format!("rejected: {reason}"),
        },
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The end of an event: its destination record, or a warning.
fn complete(
    stored: &Stored,
    config: &EventInvokeConfig,
    q: &QueueConfig,
    condition: Condition,
    attempts: u32,
    response: Option<(String, Bytes, bool)>,
    why: String,
) -> Finish {
    let ev = &stored.event;
    let success = condition == Condition::Success;
    let dest = if success { config.on_success.as_deref() } else { config.on_failure.as_deref() };
    let fail_tally = if success { Tally::Succeeded } else { Tally::Dropped };
    let tenant = ev.tenant.as_deref().unwrap_or("-");
    let Some(dest) = dest else {
        if !success {
            tracing::warn!(
                request_id = %ev.request_id, function = %ev.function, tenant, condition = condition.as_str(), attempts,
                reason = %why, "asynchronous invocation dropped"
            );
        }
        return Finish::Complete { destination: None, tally: fail_tally };
    };
    let Some((function, qualifier)) = parse_function_destination(dest) else {
        tracing::warn!(
            request_id = %ev.request_id, function = %ev.function, tenant, condition = condition.as_str(), destination = dest,
            "asynchronous invocation's destination is not a function; record dropped"
        );
        return Finish::Complete { destination: None, tally: fail_tally };
    };
    if stored.depth >= q.max_destination_depth {
        tracing::warn!(
            request_id = %ev.request_id, function = %ev.function, tenant, condition = condition.as_str(), destination = dest,
            depth = stored.depth, "destination chain too long; record dropped"
        );
        return Finish::Complete { destination: None, tally: fail_tally };
    }
    let now = now_ms();
    let arn = q.arns.qualified(&ev.function, ev.qualifier.as_deref().unwrap_or("$LATEST"));
    let record = invocation_record(
        &ev.request_id,
        &arn,
        condition,
        attempts,
        &ev.payload,
        response.as_ref().map(|(v, body, function_error)| RecordResponse {
            executed_version: v,
            body,
            function_error: *function_error,
        }),
        now,
    );
    if success {
        tracing::debug!(request_id = %ev.request_id, function = %ev.function, tenant, destination = dest, "sending success record");
    } else {
        tracing::info!(
            request_id = %ev.request_id, function = %ev.function, tenant, condition = condition.as_str(), attempts,
            destination = dest, reason = %why, "asynchronous invocation failed; sending it to its failure destination"
        );
    }
    let event = QueuedEvent {
        request_id: uuid::Uuid::new_v4().to_string(),
        function,
        qualifier,
        tenant: ev.tenant.clone(),
        payload: Bytes::from(record.to_string()),
        client_context: None,
        enqueued_ms: now,
        attempts: 0,
    };
    Finish::Complete {
        destination: Some((event, stored.depth + 1)),
        tally: if success { Tally::Succeeded } else { Tally::DeadLettered },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(attempts: u32, function_errors: u32, system_failures: u32, enqueued_ms: u64) -> Stored {
        let mut event = QueuedEvent::new("r", "f", None, None, Bytes::from_static(b"{}"), None);
        event.attempts = attempts;
        event.enqueued_ms = enqueued_ms;
        Stored { id: 1, event, function_errors, system_failures, depth: 0, last_response: None }
    }

    fn q() -> QueueConfig {
        QueueConfig {
            retry_base_delay: Duration::from_secs(60),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            ..QueueConfig::default()
        }
    }

    #[test]
    fn function_errors_wait_one_then_two_minutes() {
        let cfg = EventInvokeConfig::default();
        let now = 1_000_000;
        let d = decide(&stored(0, 0, 0, now), Some(InvokeOutcome::function_error("e")), &cfg, &q(), now);
        let Decision::Retry { next_attempt_ms, function_errors: 1, attempts: 1, .. } = d else { panic!("{d:?}") };
        assert_eq!(next_attempt_ms, now + 60_000);
        let d = decide(&stored(1, 1, 0, now), Some(InvokeOutcome::function_error("e")), &cfg, &q(), now);
        let Decision::Retry { next_attempt_ms, function_errors: 2, .. } = d else { panic!("{d:?}") };
        assert_eq!(next_attempt_ms, now + 120_000);
        let d = decide(&stored(2, 2, 0, now), Some(InvokeOutcome::function_error("e")), &cfg, &q(), now);
        assert!(matches!(d, Decision::Final { condition: Condition::RetriesExhausted, attempts: 3, .. }), "{d:?}");
        let zero = EventInvokeConfig { maximum_retry_attempts: 0, ..cfg };
        let d = decide(&stored(0, 0, 0, now), Some(InvokeOutcome::function_error("e")), &zero, &q(), now);
        assert!(matches!(d, Decision::Final { condition: Condition::RetriesExhausted, attempts: 1, .. }), "{d:?}");
    }

    #[test]
    fn throttles_back_off_exponentially_to_the_cap_and_the_deadline() {
        let cfg = EventInvokeConfig { maximum_event_age_s: 60, ..EventInvokeConfig::default() };
        let t0 = 1_000_000;
        for (failures, delay) in [(0, 1_000), (1, 2_000), (3, 8_000), (8, 60_000)] {
            let d = decide(&stored(5, 1, failures, t0), Some(InvokeOutcome::Throttled), &cfg, &q(), t0);
            let Decision::Retry { next_attempt_ms, function_errors: 1, .. } = d else { panic!("{d:?}") };
            assert_eq!(next_attempt_ms, t0 + delay, "after {failures} failures");
        }
        let long = EventInvokeConfig::default();
        let d = decide(&stored(5, 0, 40, t0), Some(InvokeOutcome::Failed("x".into())), &long, &q(), t0);
        let Decision::Retry { next_attempt_ms, .. } = d else { panic!("{d:?}") };
        assert_eq!(next_attempt_ms, t0 + 300_000);
        let d = decide(&stored(5, 0, 0, t0), Some(InvokeOutcome::Throttled), &cfg, &q(), t0 + 60_000);
        assert!(matches!(d, Decision::Final { condition: Condition::EventAgeExceeded, .. }), "{d:?}");
        let d = decide(&stored(5, 0, 0, t0), None, &cfg, &q(), t0 + 60_000);
        assert!(matches!(d, Decision::Final { condition: Condition::EventAgeExceeded, attempts: 5, .. }), "{d:?}");
    }

    #[test]
    fn rejection_is_final() {
        let d = decide(
            &stored(0, 0, 0, 0),
            Some(InvokeOutcome::Rejected("gone".into())),
            &EventInvokeConfig::default(),
            &q(),
            1,
        );
        assert!(matches!(d, Decision::Final { condition: Condition::RetriesExhausted, .. }), "{d:?}");
    }
}
