//! The panic hook: writes a panic as one `level=fatal` event (with `location` and
//! `thread`) through the installed layer, inside whatever spans were current, so it carries
//! the task keys; then flushes, before the process unwinds or aborts. The previous hook
//! runs afterwards (by default it prints the panic to stderr).
//!
//! A panic on the transport's own thread or inside the layer is not logged (that would
//! recurse into the code that just failed); the previous hook still reports it.

use std::panic::PanicHookInfo;
use std::sync::Once;

use crate::layer::{PANIC_TARGET, in_layer};
use crate::transport::on_worker_thread;

/// Installs the hook once per process.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            log_panic(info);
            previous(info);
        }));
    });
}

fn log_panic(info: &PanicHookInfo<'_>) {
    if on_worker_thread() || in_layer() {
        return;
    }
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("Box<dyn Any>");
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default();
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("<unnamed>");
    tracing::error!(target: PANIC_TARGET, location = location.as_str(), thread, "panicked: {message}");
    crate::guard::flush_installed();
}
