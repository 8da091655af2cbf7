//! Who this agent is: its ID (random, created once, stored in `DATA_DIR/agent_id`, the same
//! after every restart) and the host name. The ID is part of every idempotency key, so it
//! must never change while batches of an earlier run may still be unacknowledged.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::AgentError;

/// File inside the data directory holding the agent ID.
pub const AGENT_ID_FILE: &str = "agent_id";

/// Reads the agent ID from `data_dir/agent_id`, creating it (atomically) on first use.
pub(crate) fn load_or_create_agent_id(data_dir: &Path) -> Result<String, AgentError> {
    let path = data_dir.join(AGENT_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if is_valid_id(text.trim()) => return Ok(text.trim().to_string()),
        Ok(text) => {
            return Err(AgentError::Io {
                path,
                source: std::io::Error::other(format!("`{}` is not an agent ID", text.trim())),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(AgentError::Io { path, source }),
    }
    let id = new_id();
    write_atomically(&path, format!("{id}\n").as_bytes()).map_err(|source| AgentError::Io {
        path: path.clone(),
        source,
    })?;
    tracing::info!(agent_id = %id, path = %path.display(), "Created a new agent ID.");
    Ok(id)
}

fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// 16 random bytes as 32 hex digits, from the kernel's random source (with a weaker
/// fallback on systems without `/dev/urandom`).
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !filled {
        for chunk in bytes.chunks_mut(8) {
            let n = random_u64().to_le_bytes();
            chunk.copy_from_slice(&n[..chunk.len()]);
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random-enough number for jitter: std's per-process random SipHash keys, mixed with the
/// time. Not for secrets.
pub(crate) fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The system host name: `/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `localhost`.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// Writes `path` via a fsynced temporary file and a rename, then fsyncs the directory, so
/// a crash leaves either the old or the new content.
pub(crate) fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_id_is_stable_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create_agent_id(dir.path()).expect("create");
        let b = load_or_create_agent_id(dir.path()).expect("read");
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(a, load_or_create_agent_id(other.path()).expect("create"));
    }

    #[test]
    fn host_name_is_not_empty() {
        assert!(!host_name().is_empty());
    }
}
