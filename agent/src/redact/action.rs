//! What a rule does to what it matched: the replacement text of `mask`, `hash` and
//! `encrypt`, or the order to drop the field or the event.
//!
//! `hash` is HMAC-SHA256 under a secret key (`ring`), the first 12 bytes in unpadded
//! base64url after `tok_`: equal values give equal tokens (events stay joinable), and
//! without the key a low-entropy value cannot be found by hashing guesses.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use super::rules::Action;
use crate::crypto::{DataKey, KeyError, ValueCipher};

/// What replaces a match.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Replacement {
    Text(String),
    DropField,
    DropEvent,
}

/// The keys the actions need (loaded only when some rule uses the action).
#[derive(Debug)]
pub(crate) struct Actions {
    hash_key: Option<hmac::Key>,
    values: Option<ValueCipher>,
}

impl Actions {
    pub(crate) fn new(hash_key: Option<&DataKey>, values: Option<ValueCipher>) -> Self {
        Actions {
            hash_key: hash_key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k.bytes())),
            values,
        }
    }

    /// The replacement of `matched` by rule `rule` with `action`.
    pub(crate) fn apply(
        &self,
        action: Action,
        rule: &str,
        matched: &str,
    ) -> Result<Replacement, KeyError> {
        Ok(match action {
            Action::Mask => Replacement::Text(format!("[REDACTED:{rule}]")),
            Action::Hash => Replacement::Text(match &self.hash_key {
                Some(k) => token(k, matched),
                // Keys are loaded for every action in use; mask rather than leak.
                None => format!("[REDACTED:{rule}]"),
            }),
            Action::Encrypt => Replacement::Text(match &self.values {
                Some(c) => c.encrypt(matched)?,
                None => format!("[REDACTED:{rule}]"),
            }),
            Action::DropField => Replacement::DropField,
            Action::DropEvent => Replacement::DropEvent,
        })
    }
}

/// `tok_` + the first 12 bytes of HMAC-SHA256(key, value) in unpadded base64url.
pub(crate) fn token(key: &hmac::Key, value: &str) -> String {
    let tag = hmac::sign(key, value.as_bytes());
    format!("tok_{}", URL_SAFE_NO_PAD.encode(&tag.as_ref()[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyRing;

    #[test]
    fn tokens_are_keyed_and_stable() {
        let a = Actions::new(Some(&DataKey::from_bytes([1; 32])), None);
        let b = Actions::new(Some(&DataKey::from_bytes([2; 32])), None);
        let t1 = a.apply(Action::Hash, "email", "bob@example.com").unwrap();
        let t2 = a.apply(Action::Hash, "email", "bob@example.com").unwrap();
        let t3 = b.apply(Action::Hash, "email", "bob@example.com").unwrap();
        assert_eq!(t1, t2);
        assert_ne!(t1, t3);
        let Replacement::Text(t) = t1 else { panic!() };
        assert!(t.starts_with("tok_") && t.len() == 20, "{t}");
    }

    #[test]
    fn mask_encrypt_and_drops() {
        let keys = KeyRing::new(DataKey::from_bytes([3; 32]), vec![]);
        let a = Actions::new(None, Some(ValueCipher::new(keys.clone())));
        assert_eq!(
            a.apply(Action::Mask, "card", "4111").unwrap(),
            Replacement::Text("[REDACTED:card]".into())
        );
        let Replacement::Text(t) = a.apply(Action::Encrypt, "card", "4111").unwrap() else {
            panic!()
        };
        assert_eq!(ValueCipher::new(keys).decrypt(&t).unwrap(), "4111");
        assert_eq!(
            a.apply(Action::DropField, "x", "y").unwrap(),
            Replacement::DropField
        );
        assert_eq!(
            a.apply(Action::DropEvent, "x", "y").unwrap(),
            Replacement::DropEvent
        );
    }
}
