//! The smallest instrumented task: set the SDK up from the environment, mark one run of a
//! task, log through `tracing`, and retry a flaky step (a dead-letter report is emitted if
//! it gives up). The README's SDK section is this file.
//!
//! ```sh
//! spoor up &                                    # a local collector and agent
//! SPOOR_AGENT=tcp:127.0.0.1:8741 \
//!     cargo run -p spoor-sdk --example quickstart
//! spoor search 'task:charge' --from 5m
//! ```

use std::time::Duration;

use spoor_sdk::retry::{ErrorClass, RetryPolicy};
use spoor_sdk::task::new_task_id;
use spoor_sdk::task_run::TaskRun;

fn main() -> Result<(), spoor_sdk::InitError> {
    // Reads SPOOR_AGENT, SPOOR_SPILL_DIR, SPOOR_TASK, SPOOR_LEVEL, ...; installs the layer
    // as the global `tracing` subscriber. Dropping the guard flushes to the agent (or to
    // the spill file when the agent is down).
    let _guard = spoor_sdk::init!()?;

    // One run of the task `charge`: its lines carry task, task_id, attempt and depth.
    let order = "order-42";
    let run = TaskRun::new("charge", new_task_id()).with_payload_ref(order);
    let _scope = spoor_sdk::task(run.task(), run.task_id(), 1, run.depth());
    tracing::info!(order, amount_cents = 1250, "Charging.");

    let policy = RetryPolicy::new()
        .with_max_attempts(3)
        .with_base_delay(Duration::from_millis(50));
    let classify = |e: &String| {
        if e.contains("timeout") {
            ErrorClass::Retryable
        } else {
            ErrorClass::Permanent
        }
    };
    let outcome = policy.run(&run, classify, |attempt| {
        if attempt < 2 {
            Err("gateway timeout".to_string()) // retried after a jittered delay
        } else {
            Ok("ch_1")
        }
    });
    match outcome {
        Ok(charge_id) => tracing::info!(order, charge_id, "Charged."),
        // Giving up already emitted a `kind=deadletter` event that `spoor dlq` can replay.
        Err(e) => tracing::error!(order, error = %e, "Charge failed."),
    }
    Ok(())
}
