use spoor_sdk::depth::RecursionGuard;
use spoor_sdk::task_run::TaskRun;

use crate::support::capture;

#[test]
fn a_child_beyond_the_limit_is_refused_with_an_error_event_naming_the_chain() {
    let guard = RecursionGuard::new(3);
    let (outcome, events) = capture(|| {
        let mut run = TaskRun::new("forward", "run-0");
        let mut started = Vec::new();
        loop {
            match guard.child_run(&run, "forward", format!("run-{}", run.depth() + 1)) {
                Ok(child) => {
                    started.push(child.depth());
                    run = child;
                }
                Err(error) => return (started, error),
            }
        }
    });
    let (started, error) = outcome;
    assert_eq!(started, [1, 2, 3]);
    assert_eq!((error.depth, error.task_id.as_str()), (3, "run-3"));

    let errors: Vec<_> = events
        .iter()
        .filter(|e| e.get("level") == Some("error"))
        .collect();
    assert_eq!(errors.len(), 1, "{events:?}");
    let event = errors[0];
    assert_eq!(event.get("task"), Some("forward"));
    assert_eq!(event.get("task_id"), Some("run-3"));
    assert_eq!(event.get("depth"), Some("3"));
    assert_eq!(event.get("child_task"), Some("forward"));
    assert_eq!(event.get("max_depth"), Some("3"));
}
