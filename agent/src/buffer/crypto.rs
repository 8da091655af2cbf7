//! The hook for encrypting records at rest. Only the plain (no-op) cipher exists today;
//! AES-256-GCM will implement [`RecordCipher`] without changing the on-disk format, since
//! every segment header already records whether it is encrypted, the key ID and a nonce
//! prefix.

use std::fmt;

/// Cipher parameters stored in a segment header, fixed for the segment's lifetime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CipherParams {
    /// Whether the segment's record contents are sealed (header flag bit 0).
    pub encrypted: bool,
    /// Which key sealed them; all zero for plain segments.
    pub key_id: [u8; 16],
    /// Per-segment random nonce prefix; all zero for plain segments. A sealing cipher
    /// combines it with the record ID, so a nonce is never reused under one key.
    pub nonce_prefix: [u8; 12],
}

impl CipherParams {
    /// The key ID in hex, as logs and quarantine notes name it.
    pub fn key_id_hex(&self) -> String {
        crate::crypto::hex(&self.key_id)
    }
}

/// Why a sealed record could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CipherError(pub String);

/// Seals record contents before they are written and opens them when they are read.
///
/// The record ID is passed so a cipher can bind it (as nonce part or associated data):
/// a record moved to another position fails to open.
pub trait RecordCipher: Send + Sync + fmt::Debug {
    /// Parameters for a new segment (called once per segment, when it is created).
    fn new_segment(&self) -> CipherParams;
    /// Whether this cipher can open records of a segment with these parameters.
    fn can_open(&self, params: &CipherParams) -> bool;
    /// Seals one record's content.
    fn seal(&self, params: &CipherParams, record_id: u64, plaintext: &[u8]) -> Vec<u8>;
    /// Opens one record's content.
    fn open(
        &self,
        params: &CipherParams,
        record_id: u64,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CipherError>;
}

/// Stores records as they are: header flag clear, zero key ID and nonce prefix.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainCipher;

impl RecordCipher for PlainCipher {
    fn new_segment(&self) -> CipherParams {
        CipherParams::default()
    }

    fn can_open(&self, params: &CipherParams) -> bool {
        !params.encrypted
    }

    fn seal(&self, _params: &CipherParams, _record_id: u64, plaintext: &[u8]) -> Vec<u8> {
        plaintext.to_vec()
    }

    fn open(
        &self,
        params: &CipherParams,
        _record_id: u64,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CipherError> {
        if params.encrypted {
            return Err(CipherError(
                "segment is encrypted; no key configured".into(),
            ));
        }
        Ok(sealed.to_vec())
    }
}
