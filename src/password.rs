//! Passwords: generated from a CSPRNG, hashed for the ACL file, and never printed by `Debug`.

use rand::{Rng, TryRngCore};
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

/// Length of generated passwords: 43 URL-safe characters (~256 bits of entropy, >= 32 random bytes).
pub const GENERATED_PASSWORD_LEN: usize = 43;

/// A password that cannot leak through `Debug` or `Display` (logs, errors, Events).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Draws a fresh password from the operating system's CSPRNG (alphanumeric, URL-safe).
    pub fn generate() -> Self {
        let value: String = rand::rngs::OsRng
            .unwrap_err()
            .sample_iter(&Alphanumeric)
            .take(GENERATED_PASSWORD_LEN)
            .map(char::from)
            .collect();
        Password(value)
    }

    /// Wraps a password read from a Secret.
    pub fn from_secret_value(value: String) -> Self {
        Password(value)
    }

    /// The clear-text value: only for Secret data and Redis AUTH, never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The `#<sha256 hex>` form Redis ACL files accept instead of a clear-text password.
    pub fn acl_hash(&self) -> String {
        format!("#{}", hex::encode(Sha256::digest(self.0.as_bytes())))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_distinct_and_url_safe() {
        let a = Password::generate();
        let b = Password::generate();
        assert_eq!(a.expose().len(), GENERATED_PASSWORD_LEN);
        assert_ne!(a, b);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn debug_never_shows_the_value() {
        let p = Password::from_secret_value("hunter2-very-secret".into());
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn acl_hash_is_sha256_hex() {
        let p = Password::from_secret_value("foobared".into());
        // sha256("foobared"), as in the Redis ACL documentation's example.
        assert_eq!(
            p.acl_hash(),
            "#1b58ee375b42e41f0e48ef2ff27d10a5b1f6924a9acdcdba7cae868e7adce6bf"
        );
    }
}
