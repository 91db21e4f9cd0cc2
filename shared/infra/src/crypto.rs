//! Provider credentials at rest: AES-256-GCM under the server's
//! `credentials_key`.
//!
//! A sealed value is `v1.<base64(nonce ‖ ciphertext ‖ tag)>` with a fresh
//! random 96-bit nonce each time. The associated data is where the value
//! is stored (scope and channel), so a sealed value copied to another
//! account's slot does not open there. Rotating the key means re-storing
//! the credentials (docs/providers.md).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const PREFIX: &str = "v1.";

/// The key; cheap to clone.
#[derive(Clone)]
pub struct CredentialsKey {
    key: std::sync::Arc<LessSafeKey>,
}

impl std::fmt::Debug for CredentialsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialsKey(…)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("not a sealed value")]
    NotSealed,
    #[error("does not open with this key (another key, another slot, or altered)")]
    Rejected,
}

impl CredentialsKey {
    /// From base64 of exactly 32 bytes.
    pub fn parse(base64: &str) -> Result<Self, String> {
        let bytes = STANDARD.decode(base64.trim()).map_err(|_| {
            "must be base64 (32 random bytes: `openssl rand -base64 32`)".to_owned()
        })?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| format!("must be 32 bytes once decoded, not {}", bytes.len()))?;
        Ok(Self {
            key: std::sync::Arc::new(LessSafeKey::new(key)),
        })
    }

    /// Encrypts `plain` for the slot named `slot`.
    pub fn seal(&self, slot: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system random source works");
        let mut data = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(slot.as_bytes()),
                &mut data,
            )
            .expect("AES-GCM seals any input of sane size");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// Decrypts a value sealed for `slot`.
    pub fn open(&self, slot: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or(OpenError::NotSealed)?;
        if raw.len() < NONCE_LEN {
            return Err(OpenError::NotSealed);
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::NotSealed)?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(slot.as_bytes()), &mut data)
            .map_err(|_| OpenError::Rejected)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> CredentialsKey {
        CredentialsKey::parse(&STANDARD.encode([byte; 32])).expect("key")
    }

    #[test]
    fn seals_and_opens_for_the_same_slot_only() {
        let k = key(7);
        let sealed = k.seal("acct/sms", b"{\"auth_token\":\"t0ken\"}");
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("t0ken"));
        assert_eq!(
            k.open("acct/sms", &sealed).expect("opens"),
            b"{\"auth_token\":\"t0ken\"}"
        );
        assert_ne!(
            k.seal("acct/sms", b"x"),
            k.seal("acct/sms", b"x"),
            "fresh nonce"
        );
        assert_eq!(k.open("other/sms", &sealed), Err(OpenError::Rejected));
        assert_eq!(key(8).open("acct/sms", &sealed), Err(OpenError::Rejected));
        assert_eq!(
            k.open("acct/sms", "{\"kind\":1}"),
            Err(OpenError::NotSealed)
        );
        let mut altered = sealed.clone();
        altered.pop();
        altered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(k.open("acct/sms", &altered).is_err());
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(CredentialsKey::parse(&STANDARD.encode([1u8; 16])).is_err());
        assert!(CredentialsKey::parse("not base64!").is_err());
        assert!(CredentialsKey::parse(crate::config::DEV_CREDENTIALS_KEY).is_ok());
    }
}
