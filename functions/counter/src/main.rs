//! The counter function from the talk: one counter in memory and one in a file under /tmp.
//! Both survive between invocations of one execution environment, and only there, so they
//! show which environment served a call.

use std::sync::atomic::{AtomicU64, Ordering};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

static MEMORY_COUNTER: AtomicU64 = AtomicU64::new(0);
const DISK_COUNTER: &str = "/tmp/counter.txt";

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let memory = MEMORY_COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
    let disk = std::fs::read_to_string(DISK_COUNTER).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0) + 1;
    std::fs::write(DISK_COUNTER, disk.to_string())?;
    println!("memoryCounter={memory} diskCounter={disk}");
    Ok(json!({
        "tenantId": event.context.tenant_id,
        "memoryCounter": memory,
        "diskCounter": disk,
        "environment": std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_default(),
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
