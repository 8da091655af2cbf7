//! Keys and AES-256-GCM for the agent: the disk buffer's [`RecordCipher`] and the
//! `encrypt` redaction action's value tokens.
//!
//! # Keys
//! A key is 32 random bytes, written as 64 hex digits in a file (mode `0600`, checked: a
//! key file that group or others can read is refused) or in an environment variable. Its
//! ID is the first 16 bytes of SHA-256 over a fixed label and the key, so the ID names the
//! key without revealing it. With no key configured, [`load_key`] generates one under
//! `DATA_DIR/keys/` (directory `0700`, file `0600`) on first start and logs its path and
//! ID, never the key.
//!
//! # Buffer records
//! [`BufferCipher`] seals each record with the current key. The segment header carries the
//! key ID and a 12-byte random nonce prefix drawn per segment; a record's nonce is that
//! prefix with its last 8 bytes XORed with the record ID (unique within a segment), so no
//! nonce repeats under one key. The record ID is also the associated data, so a record
//! moved elsewhere fails to open. Rotation: new segments use the current key; segments
//! sealed with a key listed in `old_key_files` stay readable; a segment whose key is not
//! listed is moved to `DATA_DIR/buffer/quarantine/` at start (logged with its path and
//! key ID, counted in `/metrics`) and the agent runs on; a later start with that key
//! listed delivers it (see `buffer::quarantine`). A record that fails authentication is
//! logged with its segment and offset, skipped and counted. Segments written before
//! encryption was turned on (plain) stay readable.
//!
//! # What is not encrypted
//! The SDK's spill files are plain text: the SDK runs inside the task and has no key. The
//! SDK creates spill directories with mode `0700` and files with `0600`; keep them on
//! the host's local disk. Dead-letter files (`DATA_DIR/deadletter`, batches the
//! collector refused) hold redacted lines, unencrypted, for inspection.
//!
//! # Value tokens
//! [`ValueCipher`] turns a value into `enc:v1:<key-id>:<base64url(nonce | ciphertext)>`
//! with a random 96-bit nonce per value (fine for far fewer than 2^32 values per key) and
//! back. `<key-id>` is the first 8 bytes of the key ID in hex.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

use crate::buffer::{CipherError, CipherParams, PlainCipher, RecordCipher};

/// Environment variable with the disk buffer key (64 hex digits); a key file wins.
pub const BUFFER_KEY_ENV: &str = "SPOOR_BUFFER_KEY";
/// Where a generated buffer key is kept, under the data directory.
pub const BUFFER_KEY_FILE: &str = "keys/buffer.key";
/// Associated data of value tokens.
const VALUE_AAD: &[u8] = b"spoor-value-v1";
/// Prefix of value tokens.
pub const VALUE_PREFIX: &str = "enc:v1:";

/// Encryption at rest of the disk buffer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// Seal the disk buffer's records with AES-256-GCM. Default `true`.
    pub enabled: bool,
    /// File with the current key (64 hex digits, mode 0600). Unset: `SPOOR_BUFFER_KEY`,
    /// else `DATA_DIR/keys/buffer.key`, generated on first start.
    pub key_file: Option<PathBuf>,
    /// Older keys (files) whose segments must stay readable after a rotation.
    pub old_key_files: Vec<PathBuf>,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        EncryptionConfig {
            enabled: true,
            key_file: None,
            old_key_files: Vec::new(),
        }
    }
}

impl EncryptionConfig {
    /// The buffer's cipher: AES-256-GCM with the resolved keys, or plain when disabled.
    pub fn cipher(&self, data_dir: &Path) -> Result<Arc<dyn RecordCipher>, KeyError> {
        if !self.enabled {
            tracing::warn!(
                "Disk buffer encryption is off (encryption.enabled = false); records are stored in plain text."
            );
            return Ok(Arc::new(PlainCipher));
        }
        let current = load_key(
            self.key_file.as_deref(),
            BUFFER_KEY_ENV,
            &data_dir.join(BUFFER_KEY_FILE),
        )?;
        let old = self
            .old_key_files
            .iter()
            .map(|p| read_key_file(p))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(key_id = %current.id_hex(), old_keys = old.len(), "Disk buffer encrypted with AES-256-GCM.");
        Ok(Arc::new(BufferCipher::new(KeyRing::new(current, old))))
    }
}

/// Why a key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    #[error("reading key file {path}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The key file can be read by other users.
    #[error("key file {path} is accessible by group or others (mode {mode:o}); run chmod 600")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key text is not 64 hex digits.
    #[error("{origin}: a key must be 64 hex digits (32 bytes)")]
    Format {
        /// Where the key came from (file path or variable name).
        origin: String,
    },
    /// A generated key could not be written.
    #[error("writing key file {path}")]
    Write {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The system's random source failed.
    #[error("the system random source failed")]
    Random,
}

/// One AES-256 key with its ID. `Debug` shows the ID only.
#[derive(Clone)]
pub struct DataKey {
    id: [u8; 16],
    bytes: [u8; 32],
    aead: Aes256Gcm,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey({})", self.id_hex())
    }
}

impl DataKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"spoor key id v1\0");
        ctx.update(&bytes);
        let digest = ctx.finish();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest.as_ref()[..16]);
        DataKey {
            id,
            bytes,
            aead: Aes256Gcm::new(&bytes.into()),
        }
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self::from_bytes(random_bytes()?))
    }

    /// Parses 64 hex digits (surrounding whitespace ignored); `origin` names the source
    /// in errors.
    pub fn parse_hex(text: &str, origin: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::Format {
            origin: origin.to_string(),
        };
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self::from_bytes(bytes))
    }

    /// The key ID.
    pub fn id(&self) -> [u8; 16] {
        self.id
    }

    /// The key ID in hex.
    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }

    /// The raw key bytes (for HMAC keys).
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    fn to_hex(&self) -> String {
        hex(&self.bytes)
    }
}

/// Lower-case hex of `bytes` (key IDs in logs and file names).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Random bytes from the system's source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| KeyError::Random)?;
    Ok(out)
}

/// Reads a key file, refusing one that group or others can access.
pub fn read_key_file(path: &Path) -> Result<DataKey, KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    DataKey::parse_hex(&text, &path.display().to_string())
}

/// Resolves a key: `file` if set, else the variable `env_var`, else `generated` (read
/// when it exists, else created with a fresh key, which is logged by path and ID).
pub fn load_key(file: Option<&Path>, env_var: &str, generated: &Path) -> Result<DataKey, KeyError> {
    if let Some(file) = file {
        return read_key_file(file);
    }
    if let Some(v) = std::env::var(env_var).ok().filter(|v| !v.trim().is_empty()) {
        return DataKey::parse_hex(&v, env_var);
    }
    if generated.exists() {
        return read_key_file(generated);
    }
    let key = DataKey::generate()?;
    write_key_file(generated, &key)?;
    tracing::info!(path = %generated.display(), key_id = %key.id_hex(), "No key configured: generated a new one. Back it up; without it the data it protects cannot be read.");
    Ok(key)
}

/// Writes a new key file (mode 0600, its directory 0700), durably.
pub fn write_key_file(path: &Path, key: &DataKey) -> Result<(), KeyError> {
    let write_err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(write_err)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(write_err)?;
    f.write_all(format!("{}\n", key.to_hex()).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(write_err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
    }
    Ok(())
}

/// The current key and older ones still accepted for reading.
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: DataKey,
    old: Vec<DataKey>,
}

impl KeyRing {
    /// A ring of the current key (seals) and old keys (only open).
    pub fn new(current: DataKey, old: Vec<DataKey>) -> Self {
        KeyRing { current, old }
    }

    /// The key sealing new data.
    pub fn current(&self) -> &DataKey {
        &self.current
    }

    fn find(&self, id: &[u8]) -> Option<&DataKey> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id.starts_with(id))
    }
}

/// AES-256-GCM for the disk buffer (see the module docs for nonces and rotation).
#[derive(Debug)]
pub struct BufferCipher {
    keys: KeyRing,
}

impl BufferCipher {
    /// A cipher sealing with `keys.current()`.
    pub fn new(keys: KeyRing) -> Self {
        BufferCipher { keys }
    }

    fn nonce(params: &CipherParams, record_id: u64) -> [u8; 12] {
        let mut nonce = params.nonce_prefix;
        for (n, c) in nonce[4..].iter_mut().zip(record_id.to_be_bytes()) {
            *n ^= c;
        }
        nonce
    }
}

impl RecordCipher for BufferCipher {
    fn new_segment(&self) -> CipherParams {
        // The trait cannot fail here. A segment must never reuse a prefix, so without
        // randomness there is no safe way to go on.
        #[allow(clippy::expect_used)]
        let nonce_prefix = random_bytes().expect("the system random source failed");
        CipherParams {
            encrypted: true,
            key_id: self.keys.current.id,
            nonce_prefix,
        }
    }

    fn can_open(&self, params: &CipherParams) -> bool {
        !params.encrypted || self.keys.find(&params.key_id).is_some()
    }

    fn seal(&self, params: &CipherParams, record_id: u64, plaintext: &[u8]) -> Vec<u8> {
        let key = self.keys.find(&params.key_id).unwrap_or(&self.keys.current);
        let nonce = Self::nonce(params, record_id);
        let aad = record_id.to_be_bytes();
        // Encryption fails only for plaintexts over 64 GiB; records are bounded by the
        // segment size, far below that.
        #[allow(clippy::expect_used)]
        key.aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("record larger than AES-GCM allows")
    }

    fn open(
        &self,
        params: &CipherParams,
        record_id: u64,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        if !params.encrypted {
            return Ok(sealed.to_vec());
        }
        let key = self
            .keys
            .find(&params.key_id)
            .ok_or_else(|| CipherError(format!("key {} is not configured", hex(&params.key_id))))?;
        let nonce = Self::nonce(params, record_id);
        let aad = record_id.to_be_bytes();
        key.aead
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload { msg: sealed, aad: &aad },
            )
            .map_err(|_| {
                CipherError(format!(
                    "record {record_id} failed authentication with key {} (altered, truncated or sealed with another key)",
                    key.id_hex()
                ))
            })
    }
}

/// Why an `enc:v1:` value could not be decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueError {
    /// Not of the form `enc:v1:<key-id>:<base64>`.
    #[error("not an enc:v1 token")]
    Malformed,
    /// No configured key has this ID.
    #[error("no key with ID {0}")]
    UnknownKey(String),
    /// The token was altered or the key is wrong.
    #[error("token failed authentication")]
    Authentication,
}

/// AES-256-GCM of single values, as `enc:v1:` tokens.
#[derive(Debug, Clone)]
pub struct ValueCipher {
    keys: KeyRing,
}

impl ValueCipher {
    /// A cipher encrypting with `keys.current()`, decrypting with any key of the ring.
    pub fn new(keys: KeyRing) -> Self {
        ValueCipher { keys }
    }

    /// Encrypts `plaintext` into a token.
    pub fn encrypt(&self, plaintext: &str) -> Result<String, KeyError> {
        let nonce: [u8; 12] = random_bytes()?;
        let key = &self.keys.current;
        let ct = key
            .aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: VALUE_AAD,
                },
            )
            .map_err(|_| KeyError::Random)?;
        let mut body = Vec::with_capacity(12 + ct.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ct);
        Ok(format!(
            "{VALUE_PREFIX}{}:{}",
            hex(&key.id[..8]),
            URL_SAFE_NO_PAD.encode(body)
        ))
    }

    /// Decrypts a whole token.
    pub fn decrypt(&self, token: &str) -> Result<String, ValueError> {
        let rest = token
            .strip_prefix(VALUE_PREFIX)
            .ok_or(ValueError::Malformed)?;
        let (id_hex, body) = rest.split_once(':').ok_or(ValueError::Malformed)?;
        if id_hex.len() != 16 {
            return Err(ValueError::Malformed);
        }
        let mut id = [0u8; 8];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(
                id_hex.get(2 * i..2 * i + 2).ok_or(ValueError::Malformed)?,
                16,
            )
            .map_err(|_| ValueError::Malformed)?;
        }
        let key = self
            .keys
            .find(&id)
            .ok_or_else(|| ValueError::UnknownKey(id_hex.to_string()))?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| ValueError::Malformed)?;
        if body.len() < 12 + 16 {
            return Err(ValueError::Malformed);
        }
        let (nonce, ct) = body.split_at(12);
        let pt = key
            .aead
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: VALUE_AAD,
                },
            )
            .map_err(|_| ValueError::Authentication)?;
        String::from_utf8(pt).map_err(|_| ValueError::Authentication)
    }

    /// Replaces every `enc:v1:` token in `text` with its plaintext; tokens that cannot be
    /// decrypted are left as they are and reported.
    pub fn decrypt_all(&self, text: &str) -> (String, Vec<ValueError>) {
        let mut out = String::with_capacity(text.len());
        let mut errors = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find(VALUE_PREFIX) {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            let end = tail[VALUE_PREFIX.len()..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == ':' || c == '-' || c == '_'))
                .map_or(tail.len(), |e| e + VALUE_PREFIX.len());
            let token = &tail[..end];
            match self.decrypt(token) {
                Ok(pt) => out.push_str(&pt),
                Err(e) => {
                    errors.push(e);
                    out.push_str(token);
                }
            }
            rest = &tail[end..];
        }
        out.push_str(rest);
        (out, errors)
    }

    /// Decrypts the `enc:v1:` tokens of one line. A logfmt line is decoded, its values
    /// decrypted and re-encoded in the same order (so a plaintext with spaces or quotes is
    /// quoted correctly); any other line has its tokens replaced in place.
    pub fn decrypt_line(&self, line: &str) -> (String, Vec<ValueError>) {
        if !line.contains(VALUE_PREFIX) {
            return (line.to_string(), Vec::new());
        }
        let (event, flags) = spoor_sdk::event::Event::from_line(line.as_bytes());
        if !flags.logfmt {
            return self.decrypt_all(line);
        }
        let mut errors = Vec::new();
        let pairs: Vec<(String, String)> = event
            .pairs()
            .map(|(k, v)| {
                let (v, mut e) = self.decrypt_all(v);
                errors.append(&mut e);
                (k.to_string(), v)
            })
            .collect();
        (spoor_sdk::logfmt::encode_pairs(pairs), errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> DataKey {
        DataKey::from_bytes([n; 32])
    }

    fn params(k: &DataKey) -> CipherParams {
        CipherParams {
            encrypted: true,
            key_id: k.id(),
            nonce_prefix: [7; 12],
        }
    }

    #[test]
    fn records_round_trip_and_bind_their_id() {
        let c = BufferCipher::new(KeyRing::new(key(1), vec![]));
        let p = c.new_segment();
        assert!(p.encrypted);
        let sealed = c.seal(&p, 5, b"secret line");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(c.open(&p, 5, &sealed).unwrap(), b"secret line");
        let err = c.open(&p, 6, &sealed).unwrap_err();
        assert!(err.0.contains("failed authentication"), "{err}");
    }

    #[test]
    fn flipped_byte_and_truncation_fail_clearly() {
        let c = BufferCipher::new(KeyRing::new(key(1), vec![]));
        let p = params(&key(1));
        let mut sealed = c.seal(&p, 1, b"hello");
        sealed[2] ^= 1;
        assert!(c.open(&p, 1, &sealed).is_err());
        let sealed = c.seal(&p, 1, b"hello");
        assert!(c.open(&p, 1, &sealed[..sealed.len() - 3]).is_err());
    }

    #[test]
    fn nonces_differ_per_record_and_segment() {
        let c = BufferCipher::new(KeyRing::new(key(1), vec![]));
        let a = c.new_segment();
        let b = c.new_segment();
        assert_ne!(a.nonce_prefix, b.nonce_prefix);
        assert_ne!(BufferCipher::nonce(&a, 1), BufferCipher::nonce(&a, 2));
    }

    #[test]
    fn rotation_keeps_old_segments_readable() {
        let old = BufferCipher::new(KeyRing::new(key(1), vec![]));
        let p_old = old.new_segment();
        let sealed = old.seal(&p_old, 1, b"old");
        let new = BufferCipher::new(KeyRing::new(key(2), vec![key(1)]));
        assert_eq!(new.new_segment().key_id, key(2).id());
        assert!(new.can_open(&p_old));
        assert_eq!(new.open(&p_old, 1, &sealed).unwrap(), b"old");
        let forgot = BufferCipher::new(KeyRing::new(key(2), vec![]));
        assert!(!forgot.can_open(&p_old));
        assert!(forgot.can_open(&CipherParams::default()));
    }

    fn buffer_config() -> crate::buffer::BufferConfig {
        crate::buffer::BufferConfig {
            fsync_interval: std::time::Duration::ZERO,
            ..Default::default()
        }
    }

    fn open_buffer(dir: &Path, keys: KeyRing) -> Result<DiskBuffer, BufferError> {
        DiskBuffer::open_with_cipher(dir, buffer_config(), Arc::new(BufferCipher::new(keys)))
    }

    fn drain(b: &mut DiskBuffer) -> Vec<(u64, Vec<u8>)> {
        std::iter::from_fn(|| b.next_unsent().unwrap()).collect()
    }

    use crate::buffer::{BUFFER_DIR, BufferError, DiskBuffer};

    /// Flips one ciphertext byte of record 2 of the only segment and fixes its CRC (a CRC
    /// is no defence): only authentication can notice.
    fn flip_record_2(data_dir: &Path) {
        let seg = std::fs::read_dir(data_dir.join(BUFFER_DIR))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "buf"))
            .unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"secret"), "sealed on disk");
        // Flip one ciphertext byte of record 2 and fix its CRC (a CRC is no defence):
        // only authentication can notice.
        let len_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as usize;
        let second = 64 + 8 + len_at(64);
        let len = len_at(second);
        bytes[second + 8 + 16 + 3] ^= 0x40;
        let crc = crc32fast::hash(&bytes[second + 8..second + 8 + len]);
        bytes[second + 4..second + 8].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&seg, &bytes).unwrap();
    }

    #[test]
    fn a_segment_with_an_unknown_key_is_quarantined_and_restored_when_the_key_returns() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open_buffer(dir.path(), KeyRing::new(key(1), vec![])).unwrap();
        for i in 1..=3 {
            b.append(format!("msg=secret-{i}").as_bytes()).unwrap();
        }
        b.flush_and_sync().unwrap();
        drop(b);
        flip_record_2(dir.path());

        // Only key 2: the segment sealed with key 1 goes to quarantine, nothing is lost
        // and the buffer works.
        let mut b = open_buffer(dir.path(), KeyRing::new(key(2), vec![])).unwrap();
        assert_eq!(b.restore_quarantined(|c| c).unwrap(), 0);
        let stats = b.stats();
        assert_eq!(
            (stats.quarantined_segments, stats.quarantined_records),
            (1, 3)
        );
        assert!(drain(&mut b).is_empty());
        let id = b.append(b"msg=new").unwrap();
        assert!(
            id > 3,
            "IDs of the quarantined records are not reused: {id}"
        );
        b.flush_and_sync().unwrap();
        assert_eq!(drain(&mut b), vec![(id, b"msg=new".to_vec())]);
        b.ack(id).unwrap();
        drop(b);
        let quarantine = dir
            .path()
            .join(BUFFER_DIR)
            .join(crate::buffer::QUARANTINE_DIR);
        assert_eq!(
            std::fs::read_dir(&quarantine).unwrap().count(),
            2,
            "segment and note"
        );

        // Key 1 listed again: the readable records come back as new records, the one
        // failing authentication is skipped and counted, and the quarantine empties.
        let mut b = open_buffer(dir.path(), KeyRing::new(key(2), vec![key(1)])).unwrap();
        assert_eq!(b.restore_quarantined(|c| c).unwrap(), 2);
        let got: Vec<Vec<u8>> = drain(&mut b).into_iter().map(|(_, c)| c).collect();
        assert_eq!(
            got,
            vec![b"msg=secret-1".to_vec(), b"msg=secret-3".to_vec()]
        );
        let stats = b.stats();
        assert_eq!(stats.undecryptable_records, 1);
        assert_eq!(stats.restored_records, 2);
        assert_eq!(stats.quarantined_segments, 0);
        assert_eq!(std::fs::read_dir(&quarantine).unwrap().count(), 0);
    }

    #[test]
    fn a_flipped_byte_is_skipped_when_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let keys = || KeyRing::new(key(1), vec![]);
        let mut b = open_buffer(dir.path(), keys()).unwrap();
        for i in 1..=3 {
            b.append(format!("msg=secret-{i}").as_bytes()).unwrap();
        }
        b.flush_and_sync().unwrap();
        drop(b);
        flip_record_2(dir.path());
        let mut b = open_buffer(dir.path(), keys()).unwrap();
        assert_eq!(
            drain(&mut b),
            vec![(1, b"msg=secret-1".to_vec()), (3, b"msg=secret-3".to_vec())]
        );
        assert_eq!(b.stats().corrupt_records, 1);
        assert_eq!(b.stats().undecryptable_records, 1);
        // A copy of the damaged segment is kept for investigation, never restored.
        let quarantine = dir
            .path()
            .join(BUFFER_DIR)
            .join(crate::buffer::QUARANTINE_DIR);
        let copies: Vec<_> = std::fs::read_dir(&quarantine)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(copies, vec!["segment-00000000000000000000.buf.damaged"]);
        assert_eq!(b.restore_quarantined(|c| c).unwrap(), 0);
        assert_eq!(b.stats().quarantined_segments, 0);
    }

    #[test]
    fn value_tokens_round_trip() {
        let c = ValueCipher::new(KeyRing::new(key(3), vec![]));
        let t = c.encrypt("4111 1111 1111 1111").unwrap();
        assert!(t.starts_with("enc:v1:"), "{t}");
        assert!(!t.contains("4111"));
        assert_eq!(c.decrypt(&t).unwrap(), "4111 1111 1111 1111");
        let (line, errs) = c.decrypt_all(&format!("a={t} b=\"x {t} y\""));
        assert!(errs.is_empty());
        assert_eq!(line, "a=4111 1111 1111 1111 b=\"x 4111 1111 1111 1111 y\"");
        let (line, errs) = c.decrypt_line(&format!("msg=\"card {t}\" card={t}"));
        assert!(errs.is_empty());
        assert_eq!(
            line,
            "msg=\"card 4111 1111 1111 1111\" card=\"4111 1111 1111 1111\""
        );
        let other = ValueCipher::new(KeyRing::new(key(4), vec![]));
        assert!(matches!(other.decrypt(&t), Err(ValueError::UnknownKey(_))));
        let mut bad = t.clone();
        bad.pop();
        bad.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert!(c.decrypt(&bad).is_err());
    }

    #[test]
    fn key_files_are_checked_and_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/k.key");
        let a = load_key(None, "SPOOR_TEST_UNSET_KEY_VAR", &path).unwrap();
        let b = load_key(None, "SPOOR_TEST_UNSET_KEY_VAR", &path).unwrap();
        assert_eq!(a.id(), b.id());
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_key_file(&path),
            Err(KeyError::Permissions { .. })
        ));
        assert!(DataKey::parse_hex("abc", "x").is_err());
        assert!(format!("{a:?}").starts_with("DataKey("));
    }
}
