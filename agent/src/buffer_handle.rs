//! Shared access to the one [`DiskBuffer`]: the batcher appends and syncs, the forwarder
//! reads and acks, the admin server reads stats. Every call runs on tokio's blocking pool
//! (the buffer does blocking file I/O and fsync) under one mutex.

use std::sync::{Arc, Mutex};

use crate::buffer::DiskBuffer;

/// A cloneable handle to the disk buffer.
#[derive(Debug, Clone)]
pub(crate) struct BufferHandle(Arc<Mutex<DiskBuffer>>);

impl BufferHandle {
    pub(crate) fn new(buffer: DiskBuffer) -> Self {
        BufferHandle(Arc::new(Mutex::new(buffer)))
    }

    /// Runs `f` with the buffer on this thread (for threads that may block).
    pub(crate) fn blocking<T>(&self, f: impl FnOnce(&mut DiskBuffer) -> T) -> T {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// Runs `f` with the buffer on the blocking pool.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut DiskBuffer) -> T + Send + 'static,
    ) -> T {
        let inner = self.0.clone();
        let task = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the buffer consistent on disk (every
            // operation is crash-safe), so a poisoned lock is still usable.
            let mut guard = inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        });
        match task.await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}
