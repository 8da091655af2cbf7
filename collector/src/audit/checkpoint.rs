//! Signed checkpoints and the Ed25519 key they are signed with.
//!
//! A [`Checkpoint`] pins the head of the chain (last seq and its hash), the oldest
//! retained record (`first_seq` and the hash before it) and the previous checkpoint's
//! signature, so checkpoints form their own chain. The signature covers
//! [`Checkpoint::signed_bytes`]. Checkpoints are stored one JSON object per line in
//! `checkpoints.log`: hashes as lowercase hex, signatures as standard base64.
//!
//! Keys: `signing.key` holds the PKCS#8 v2 document from ring's
//! `Ed25519KeyPair::generate_pkcs8`, created with mode 0600 on first open;
//! `public.key` holds the 32-byte public key as 64 lowercase hex digits and a newline.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};

use super::error::{AuditError, IoContext};
use super::record::HASH_LEN;
use super::segment::{AuditPaths, sync_dir};

/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Domain separation prefix of [`Checkpoint::signed_bytes`].
const SIGNING_CONTEXT: &[u8] = b"spoor-audit-checkpoint-v1\n";

/// A signed statement about the audit log at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last seq covered (the head at signing time).
    pub seq: u64,
    /// The chain hash of record `seq`.
    pub head_hash: [u8; HASH_LEN],
    /// When it was signed, in nanoseconds since the Unix epoch.
    pub time_unix_nanos: i64,
    /// The signature of the checkpoint before this one (`None` for the first).
    pub prev_signature: Option<[u8; SIGNATURE_LEN]>,
    /// The oldest record still retained.
    pub first_seq: u64,
    /// The chain hash of record `first_seq - 1` (zeros when `first_seq` is 0).
    pub first_prev_hash: [u8; HASH_LEN],
    /// Ed25519 signature over [`Checkpoint::signed_bytes`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl Checkpoint {
    /// The canonical bytes that are signed: the context string
    /// `spoor-audit-checkpoint-v1\n`, then `seq` (u64 big-endian), `head_hash`,
    /// `time_unix_nanos` (i64 big-endian), one byte 1/0 for whether there is a
    /// `prev_signature` followed by it (or 64 zero bytes), `first_seq` (u64 big-endian)
    /// and `first_prev_hash`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + 8 + 32 + 8 + 1 + 64 + 8 + 32);
        m.extend_from_slice(SIGNING_CONTEXT);
        m.extend_from_slice(&self.seq.to_be_bytes());
        m.extend_from_slice(&self.head_hash);
        m.extend_from_slice(&self.time_unix_nanos.to_be_bytes());
        match &self.prev_signature {
            Some(sig) => {
                m.push(1);
                m.extend_from_slice(sig);
            }
            None => {
                m.push(0);
                m.extend_from_slice(&[0u8; SIGNATURE_LEN]);
            }
        }
        m.extend_from_slice(&self.first_seq.to_be_bytes());
        m.extend_from_slice(&self.first_prev_hash);
        m
    }

    /// Whether the signature verifies with this Ed25519 public key.
    pub fn verify_signature(&self, public_key: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
            .verify(&self.signed_bytes(), &self.signature)
            .is_ok()
    }

    /// The checkpoint as one line of JSON (no newline), as stored in `checkpoints.log`
    /// and as served by the HTTP API.
    pub fn to_json(&self) -> String {
        let j = CheckpointJson {
            v: 1,
            seq: self.seq,
            head_hash: to_hex(&self.head_hash),
            time_unix_nanos: self.time_unix_nanos,
            prev_signature: self.prev_signature.map(|s| BASE64.encode(s)),
            first_seq: self.first_seq,
            first_prev_hash: to_hex(&self.first_prev_hash),
            signature: BASE64.encode(self.signature),
        };
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_string(&j).unwrap_or_default()
    }

    /// Parses one line of `checkpoints.log`.
    pub fn from_json(line: &str) -> Result<Checkpoint, String> {
        let j: CheckpointJson = serde_json::from_str(line).map_err(|e| e.to_string())?;
        if j.v != 1 {
            return Err(format!("unknown checkpoint version {}", j.v));
        }
        let sig = |s: &str, field: &str| -> Result<[u8; SIGNATURE_LEN], String> {
            BASE64
                .decode(s)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("{field} is not a base64 Ed25519 signature"))
        };
        let hash = |s: &str, field: &str| -> Result<[u8; HASH_LEN], String> {
            from_hex(s)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("{field} is not a hex SHA-256 hash"))
        };
        Ok(Checkpoint {
            seq: j.seq,
            head_hash: hash(&j.head_hash, "head_hash")?,
            time_unix_nanos: j.time_unix_nanos,
            prev_signature: match &j.prev_signature {
                Some(s) => Some(sig(s, "prev_signature")?),
                None => None,
            },
            first_seq: j.first_seq,
            first_prev_hash: hash(&j.first_prev_hash, "first_prev_hash")?,
            signature: sig(&j.signature, "signature")?,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointJson {
    v: u32,
    seq: u64,
    head_hash: String,
    time_unix_nanos: i64,
    prev_signature: Option<String>,
    first_seq: u64,
    first_prev_hash: String,
    signature: String,
}

/// The fields of a checkpoint before it is signed.
pub(crate) struct Unsigned {
    pub seq: u64,
    pub head_hash: [u8; HASH_LEN],
    pub time_unix_nanos: i64,
    pub prev_signature: Option<[u8; SIGNATURE_LEN]>,
    pub first_seq: u64,
    pub first_prev_hash: [u8; HASH_LEN],
}

/// The collector's signing key.
pub(crate) struct Signer {
    key: Ed25519KeyPair,
    public: [u8; PUBLIC_KEY_LEN],
}

impl Signer {
    pub(crate) fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.public
    }

    pub(crate) fn sign(&self, u: Unsigned) -> Checkpoint {
        let mut cp = Checkpoint {
            seq: u.seq,
            head_hash: u.head_hash,
            time_unix_nanos: u.time_unix_nanos,
            prev_signature: u.prev_signature,
            first_seq: u.first_seq,
            first_prev_hash: u.first_prev_hash,
            signature: [0; SIGNATURE_LEN],
        };
        let sig = self.key.sign(&cp.signed_bytes());
        cp.signature.copy_from_slice(sig.as_ref());
        cp
    }

    /// Loads `signing.key`, creating it (mode 0600) and `public.key` when absent, and
    /// checks that `public.key` belongs to it.
    pub(crate) fn load_or_create(paths: &AuditPaths) -> Result<Signer, AuditError> {
        let key_err = |reason: String| AuditError::Key {
            path: paths.signing_key.clone(),
            reason,
        };
        let pkcs8 = match fs::read(&paths.signing_key) {
            Ok(bytes) => {
                warn_if_readable_by_others(&paths.signing_key);
                bytes
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| key_err("generating a key failed".to_string()))?;
                write_file_atomically(&paths.root, &paths.signing_key, doc.as_ref(), true)?;
                tracing::info!(path = %paths.signing_key.display(), "Created the audit signing key.");
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(e).ctx("reading", &paths.signing_key),
        };
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| key_err(format!("not an Ed25519 PKCS#8 v2 key: {e}")))?;
        let mut public = [0u8; PUBLIC_KEY_LEN];
        public.copy_from_slice(key.public_key().as_ref());

        match fs::read(&paths.public_key) {
            Ok(bytes) => {
                if parse_public_key(&bytes) != Some(public) {
                    return Err(AuditError::Key {
                        path: paths.public_key.clone(),
                        reason: "does not match signing.key".to_string(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let text = format!("{}\n", to_hex(&public));
                write_file_atomically(&paths.root, &paths.public_key, text.as_bytes(), false)?;
            }
            Err(e) => return Err(e).ctx("reading", &paths.public_key),
        }
        Ok(Signer { key, public })
    }
}

/// Writes `path` via a temporary file and a rename, so a crash leaves it whole or absent.
fn write_file_atomically(
    dir: &Path,
    path: &Path,
    data: &[u8],
    private: bool,
) -> Result<(), AuditError> {
    let tmp = path.with_extension("tmp");
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp).ctx("creating", &tmp)?;
    f.write_all(data).ctx("writing", &tmp)?;
    f.sync_all().ctx("syncing", &tmp)?;
    fs::rename(&tmp, path).ctx("renaming to", path)?;
    sync_dir(dir)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "The audit signing key is readable by others.");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Parses a public key: 32 raw bytes, or 64 hex digits with optional surrounding
/// whitespace.
pub fn parse_public_key(bytes: &[u8]) -> Option<[u8; PUBLIC_KEY_LEN]> {
    if let Ok(raw) = <[u8; PUBLIC_KEY_LEN]>::try_from(bytes) {
        // 32 bytes could also be 32 hex digits of a wrong-length key; raw wins.
        return Some(raw);
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    from_hex(text)?.try_into().ok()
}

/// The lines of `checkpoints.log`: each complete line with its 1-based number, and the
/// length of an incomplete last line (a write torn by a crash) if there is one.
pub(crate) fn split_checkpoint_lines(buf: &[u8]) -> (Vec<(usize, &[u8])>, usize) {
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let lines = buf[..complete]
        .split_inclusive(|&b| b == b'\n')
        .map(|l| &l[..l.len() - 1])
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .collect();
    (lines, buf.len() - complete)
}

/// Parses one stored line.
pub(crate) fn parse_line(line: &[u8]) -> Result<Checkpoint, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    Checkpoint::from_json(text)
}

/// Appends a checkpoint line to the open `checkpoints.log` and fsyncs it.
pub(crate) fn append_checkpoint(
    file: &mut File,
    path: &Path,
    cp: &Checkpoint,
) -> Result<(), AuditError> {
    let mut line = cp.to_json();
    line.push('\n');
    file.write_all(line.as_bytes()).ctx("appending to", path)?;
    file.sync_data().ctx("syncing", path)
}

/// Lowercase hex.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Parses hex (either case); `None` for odd lengths or other characters.
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    b.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn signer(dir: &Path) -> Signer {
        let paths = AuditPaths::new(dir);
        fs::create_dir_all(&paths.root).unwrap();
        Signer::load_or_create(&paths).unwrap()
    }

    fn sample(s: &Signer, prev: Option<[u8; 64]>) -> Checkpoint {
        s.sign(Unsigned {
            seq: 9,
            head_hash: [7; 32],
            time_unix_nanos: 1_700_000_000_000_000_000,
            prev_signature: prev,
            first_seq: 3,
            first_prev_hash: [1; 32],
        })
    }

    #[test]
    fn json_round_trips_and_signature_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer(dir.path());
        let a = sample(&s, None);
        let b = sample(&s, Some(a.signature));
        for cp in [a, b] {
            let back = Checkpoint::from_json(&cp.to_json()).unwrap();
            assert_eq!(back, cp);
            assert!(back.verify_signature(&s.public_key()));
            let mut bad = back.clone();
            bad.first_seq += 1;
            assert!(!bad.verify_signature(&s.public_key()));
        }
    }

    #[test]
    fn key_is_created_once_private_and_public_key_matches() {
        let dir = tempfile::tempdir().unwrap();
        let a = signer(dir.path());
        let b = signer(dir.path());
        assert_eq!(a.public_key(), b.public_key());
        let paths = AuditPaths::new(dir.path());
        let text = fs::read(&paths.public_key).unwrap();
        assert_eq!(parse_public_key(&text), Some(a.public_key()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&paths.signing_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(&paths.public_key, to_hex(&[0u8; 32])).unwrap();
        assert!(matches!(
            Signer::load_or_create(&paths),
            Err(AuditError::Key { .. })
        ));
    }

    #[test]
    fn lines_and_torn_tail() {
        let (lines, torn) = split_checkpoint_lines(b"a\nb\ncc");
        assert_eq!(lines, vec![(1, &b"a"[..]), (2, &b"b"[..])]);
        assert_eq!(torn, 2);
        let (lines, torn) = split_checkpoint_lines(b"a\n");
        assert_eq!((lines.len(), torn), (1, 0));
        let (lines, torn) = split_checkpoint_lines(b"");
        assert_eq!((lines.len(), torn), (0, 0));
    }

    #[test]
    fn hex() {
        assert_eq!(to_hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(from_hex("00AB10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
    }
}
