//! The standalone identity's tokens: authenticated and encrypted, like Keystone's fernet
//! tokens, so that every API server holding the same key validates them, and a restart
//! forgets none.
//!
//! A token is `base64url(version ‖ nonce ‖ AES-256-GCM(claims) ‖ tag)`, the claims being a
//! small JSON object (user, project, roles, issue and expiry times, methods, an audit id).
//! The key is 32 random bytes in a file (`--token-key FILE`), created `0600` when missing.
//! A tampered token, or one sealed with another key, fails authentication and is invalid.
//! This module never logs a token or the key.

use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The first byte of every token: the format's version.
const VERSION: u8 = 1;
/// Authenticated with every token, so a blob sealed for something else never passes.
const AAD: &[u8] = b"freezer-rs standalone identity token v1";
const NONCE_LEN: usize = 12;
/// Tokens longer than this are refused before any work (Keystone's are under 300 bytes).
pub(crate) const MAX_TOKEN_LEN: usize = 4096;

/// What a token says, sealed inside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Claims {
    /// The user's id.
    pub u: String,
    /// The project's id the token is scoped to.
    pub p: String,
    /// The role names granted at issue.
    pub r: Vec<String>,
    /// Issued at, Unix seconds.
    pub i: i64,
    /// Expires at, Unix seconds.
    pub e: i64,
    /// The authentication methods (`password`, `token`).
    pub m: Vec<String>,
    /// The audit id (random, URL-safe base64), shared by a token and its rescopings.
    pub a: String,
    /// The trust a trust-scoped token acts through (its user is the trustee, its project
    /// the trustor's); absent on every other token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<String>,
}

/// The 32-byte key that seals and opens tokens. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct TokenKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(key: &[u8; 32]) -> TokenKey {
        TokenKey {
            cipher: Aes256Gcm::new_from_slice(key).expect("a 32-byte AES-256 key"),
        }
    }

    /// A new random key (for tests and one-off servers: its tokens die with it).
    pub fn random() -> Result<TokenKey, Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| Error::bad_input("token key", e))?;
        Ok(TokenKey::from_bytes(&key))
    }

    /// Reads the key file at `path`, or creates it (mode `0600`, 32 random bytes, its folder
    /// `0700` when made here) when it does not exist. Refuses a key file group or others may
    /// read, and one that is not exactly 32 bytes.
    pub fn load_or_create(path: &Path) -> Result<TokenKey, Error> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let what = format!("token key file {}", path.display());
        match std::fs::read(path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(path)
                    .map_err(|e| Error::io(&what, e))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(Error::bad_input(
                        &what,
                        format!(
                            "group or others may read it: run `chmod 600 {}`",
                            path.display()
                        ),
                    ));
                }
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    Error::bad_input(
                        &what,
                        format!("holds {} bytes, not the 32 of a key", bytes.len()),
                    )
                })?;
                Ok(TokenKey::from_bytes(&key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(|e| Error::io(format!("folder {}", dir.display()), e))?;
                }
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| Error::bad_input(&what, e))?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| Error::io(&what, e))?;
                file.write_all(&key)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| Error::io(&what, e))?;
                Ok(TokenKey::from_bytes(&key))
            }
            Err(e) => Err(Error::io(&what, e)),
        }
    }

    /// Seals `claims` into a token string.
    pub(crate) fn seal(&self, claims: &Claims) -> String {
        let plain = serde_json::to_vec(claims).expect("claims serialize");
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the system's random source works");
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plain,
                    aad: AAD,
                },
            )
            .expect("AES-GCM seals a small message");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a token: its claims, or `None` when it is malformed, tampered with or sealed
    /// with another key.
    pub(crate) fn open(&self, token: &str) -> Option<Claims> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?;
        if raw.len() < 1 + NONCE_LEN + 16 || raw[0] != VERSION {
            return None;
        }
        let nonce = Nonce::try_from(&raw[1..1 + NONCE_LEN]).ok()?;
        let plain = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &raw[1 + NONCE_LEN..],
                    aad: AAD,
                },
            )
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

/// A random audit id: 16 bytes, URL-safe base64 (22 characters, as Keystone's).
pub(crate) fn audit_id() -> String {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).expect("the system's random source works");
    URL_SAFE_NO_PAD.encode(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            u: "u1".into(),
            p: "p1".into(),
            r: vec!["member".into()],
            i: 100,
            e: 200,
            m: vec!["password".into()],
            a: audit_id(),
            t: None,
        }
    }

    #[test]
    fn seals_and_opens() {
        let key = TokenKey::random().unwrap();
        let c = claims();
        let token = key.seal(&c);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        assert_eq!(key.open(&token), Some(c));
        // Two seals of the same claims differ (fresh nonce).
        assert_ne!(key.seal(&claims()), key.seal(&claims()));
    }

    #[test]
    fn refuses_tampered_foreign_and_garbage_tokens() {
        let key = TokenKey::random().unwrap();
        let token = key.seal(&claims());
        let other = TokenKey::random().unwrap();
        assert_eq!(other.open(&token), None);
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for at in [0, 1, 20, raw.len() - 1] {
            raw[at] ^= 1;
            assert_eq!(key.open(&URL_SAFE_NO_PAD.encode(&raw)), None, "byte {at}");
            raw[at] ^= 1;
        }
        assert_eq!(key.open(&token[..token.len() - 2]), None);
        assert_eq!(key.open(""), None);
        assert_eq!(key.open("not base64 !"), None);
        assert_eq!(key.open(&"A".repeat(MAX_TOKEN_LEN + 1)), None);
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("token.key");
        let key = TokenKey::load_or_create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let token = key.seal(&claims());
        let again = TokenKey::load_or_create(&path).unwrap();
        assert!(again.open(&token).is_some());
        assert!(!format!("{again:?}").contains(&hex::encode(std::fs::read(&path).unwrap())));
        // Shared or short key files are refused.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = TokenKey::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("token.key"), "{e}");
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = TokenKey::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("5 bytes"), "{e}");
    }
}
