//! Keys and the three primitives every stored byte goes through.
//!
//! * blob ids: keyed BLAKE3 of the plaintext (the key is secret in an encrypted repository,
//!   so ids reveal nothing about contents);
//! * sealing: AES-256-GCM with a random 96-bit nonce, laid out `nonce || ciphertext || tag`;
//!   in a repository without encryption, sealing is the identity and integrity comes from ids;
//! * key wrapping: Argon2id derives a key-encryption key from a passphrase, which seals the
//!   master key in a key file (`repo::keyfile`).
//!
//! This module never logs, prints or formats a secret: `Debug` of every secret is redacted.

use std::fmt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::id::Id;

/// Bytes added by sealing: a 12-byte nonce in front and a 16-byte tag behind.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Fills `buf` with bytes from the operating system's random generator.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    // getrandom only fails when the OS has no entropy source at all; nothing can go on then.
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// 32 random bytes.
pub(crate) fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    random_bytes(&mut b);
    b
}

/// A passphrase, and the file it was read from. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Passphrase {
    text: String,
    file: Option<PathBuf>,
}

impl Passphrase {
    /// Wraps a passphrase given as text.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if s.is_empty() {
            return Err(Error::bad_input("passphrase", "the passphrase is empty"));
        }
        Ok(Passphrase {
            text: s,
            file: None,
        })
    }

    /// Reads the first line of `path`, as upstream's `encrypt_pass_file` does.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).ctx(format!("encrypt_pass_file {}", path.display()))?;
        let line = text.lines().next().unwrap_or("");
        let mut p = Passphrase::new(line).map_err(|_| {
            Error::bad_input(
                "encrypt_pass_file",
                format!("{}: the first line is empty", path.display()),
            )
        })?;
        p.file = Some(path.to_path_buf());
        Ok(p)
    }

    /// Refuses, for a new key (`init`, `key add`, `key passwd`, a job's first backup), a
    /// passphrase of only spaces or other whitespace: it looks like a passphrase and guards
    /// like none. The error names the file it came from. Keys made before with such a
    /// passphrase still open.
    pub(crate) fn check_for_new_key(&self) -> Result<()> {
        if !self.text.trim().is_empty() {
            return Ok(());
        }
        let place = match &self.file {
            Some(f) => format!("the first line of {}", f.display()),
            None => "the passphrase".to_string(),
        };
        Err(Error::bad_input(
            "passphrase",
            format!(
                "{place} is only whitespace: a new key needs a passphrase with other characters"
            ),
        ))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// The secret material of a repository. Stored wrapped in key files, or in clear in the config
/// of a repository without encryption.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MasterKey {
    /// The repository this key belongs to.
    pub repo_id: Id,
    /// The AES-256-GCM key; absent in a repository without encryption.
    #[serde(default, with = "opt_hex32")]
    pub enc_key: Option<[u8; 32]>,
    /// The BLAKE3 key for blob ids.
    #[serde(with = "hex32")]
    pub id_key: [u8; 32],
    /// The seed of the chunker's gear table.
    #[serde(with = "hex32")]
    pub chunker_seed: [u8; 32],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("repo_id", &self.repo_id)
            .field("encrypted", &self.enc_key.is_some())
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A new random key; `encrypted` decides whether it carries an encryption key.
    pub fn generate(encrypted: bool) -> Self {
        MasterKey {
            repo_id: Id(random32()),
            enc_key: encrypted.then(random32),
            id_key: random32(),
            chunker_seed: random32(),
        }
    }
}

/// The cipher and id key of an open repository.
#[derive(Clone)]
pub struct Crypto {
    cipher: Option<Aes256Gcm>,
    id_key: [u8; 32],
}

impl fmt::Debug for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crypto")
            .field("encrypted", &self.cipher.is_some())
            .finish_non_exhaustive()
    }
}

impl Crypto {
    /// Builds the primitives from a master key.
    pub fn new(key: &MasterKey) -> Self {
        Crypto {
            cipher: key
                .enc_key
                .map(|k| Aes256Gcm::new_from_slice(&k).expect("a 32-byte AES-256 key")),
            id_key: key.id_key,
        }
    }

    /// Whether contents are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// Bytes sealing adds to a plaintext.
    pub fn overhead(&self) -> usize {
        if self.is_encrypted() {
            SEAL_OVERHEAD
        } else {
            0
        }
    }

    /// The id of a blob: keyed BLAKE3 over the plaintext parts, taken as one byte string.
    pub fn blob_id<B: AsRef<[u8]>>(&self, parts: &[B]) -> Id {
        let mut h = self.id_hasher();
        for p in parts {
            h.update(p.as_ref());
        }
        Id(*h.finalize().as_bytes())
    }

    /// Space to leave in front of a plaintext written into a buffer that will be sealed in place.
    pub fn prefix_len(&self) -> usize {
        if self.is_encrypted() { NONCE_LEN } else { 0 }
    }

    /// Seals `buf[prefix_len()..]` in place: writes the nonce into the prefix, encrypts, and
    /// appends the tag. `buf` must start with `prefix_len()` bytes of room.
    pub fn seal_in_place(&self, buf: &mut Vec<u8>) {
        let Some(cipher) = &self.cipher else { return };
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce);
        buf[..NONCE_LEN].copy_from_slice(&nonce);
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(nonce), b"", (&mut buf[NONCE_LEN..]).into())
            .expect("AES-GCM encrypts messages up to 64 GiB");
        buf.extend_from_slice(tag.as_slice());
    }

    /// Seals `plain` into a new buffer.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(plain.len() + self.overhead());
        buf.resize(self.prefix_len(), 0);
        buf.extend_from_slice(plain);
        self.seal_in_place(&mut buf);
        buf
    }

    /// Seals the concatenation of `parts` into a new buffer.
    pub fn seal_parts(&self, parts: &[bytes::Bytes]) -> Vec<u8> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut buf = Vec::with_capacity(len + self.overhead());
        buf.resize(self.prefix_len(), 0);
        for p in parts {
            buf.extend_from_slice(p);
        }
        self.seal_in_place(&mut buf);
        buf
    }

    /// Seals `plain` into `out` (cleared first), encrypting straight from `plain`: one pass,
    /// and `out` ends up exactly the sealed size.
    pub fn seal_into(&self, plain: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let Some(cipher) = &self.cipher else {
            out.extend_from_slice(plain);
            return;
        };
        out.reserve_exact(plain.len() + SEAL_OVERHEAD);
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        out.resize(NONCE_LEN + plain.len(), 0);
        let buf = aes_gcm::aead::inout::InOutBuf::new(plain, &mut out[NONCE_LEN..])
            .expect("equal lengths");
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(nonce), b"", buf)
            .expect("AES-GCM encrypts messages up to 64 GiB");
        out.extend_from_slice(tag.as_slice());
    }

    /// Opens `sealed` into `out` (cleared first), decrypting straight from `sealed`. Only for
    /// encrypted repositories; `what` names the object for errors.
    pub fn open_into(
        &self,
        sealed: &[u8],
        out: &mut Vec<u8>,
        what: &dyn fmt::Display,
    ) -> Result<()> {
        out.clear();
        let Some(cipher) = &self.cipher else {
            out.extend_from_slice(sealed);
            return Ok(());
        };
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Error::corrupt(
                what,
                format!("{} bytes is too short for a sealed object", sealed.len()),
            ));
        }
        let tag_at = sealed.len() - TAG_LEN;
        let tag = Tag::try_from(&sealed[tag_at..]).expect("16-byte tag");
        let nonce = Nonce::try_from(&sealed[..NONCE_LEN]).expect("12-byte nonce");
        out.resize(tag_at - NONCE_LEN, 0);
        let buf = aes_gcm::aead::inout::InOutBuf::new(&sealed[NONCE_LEN..tag_at], out)
            .expect("equal lengths");
        cipher
            .decrypt_inout_detached(&nonce, b"", buf, &tag)
            .map_err(|_| {
                out.clear();
                Error::corrupt(
                    what,
                    "authentication failed (damaged or not of this repository)",
                )
            })
    }

    /// Opens `sealed` into `out`, which must be exactly the plaintext's length (the sealed
    /// length less [`Crypto::overhead`]). Only for encrypted repositories.
    pub fn open_to(&self, sealed: &[u8], out: &mut [u8], what: &dyn fmt::Display) -> Result<()> {
        let Some(cipher) = &self.cipher else {
            out.copy_from_slice(sealed);
            return Ok(());
        };
        if sealed.len() != out.len() + SEAL_OVERHEAD {
            return Err(Error::corrupt(
                what,
                format!(
                    "a sealed object of {} bytes, where {} were expected",
                    sealed.len(),
                    out.len() + SEAL_OVERHEAD
                ),
            ));
        }
        let tag_at = sealed.len() - TAG_LEN;
        let tag = Tag::try_from(&sealed[tag_at..]).expect("16-byte tag");
        let nonce = Nonce::try_from(&sealed[..NONCE_LEN]).expect("12-byte nonce");
        let buf = aes_gcm::aead::inout::InOutBuf::new(&sealed[NONCE_LEN..tag_at], out)
            .expect("equal lengths");
        cipher
            .decrypt_inout_detached(&nonce, b"", buf, &tag)
            .map_err(|_| {
                Error::corrupt(
                    what,
                    "authentication failed (damaged or not of this repository)",
                )
            })
    }

    /// A hasher that gives [`Crypto::blob_id`] of what it is fed, fed in pieces.
    pub(crate) fn id_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.id_key)
    }

    /// Opens a sealed buffer in place, leaving the plaintext. `what` names the object for errors.
    pub fn open_in_place(&self, buf: &mut Vec<u8>, what: &dyn fmt::Display) -> Result<()> {
        let Some(cipher) = &self.cipher else {
            return Ok(());
        };
        if buf.len() < SEAL_OVERHEAD {
            return Err(Error::corrupt(
                what,
                format!("{} bytes is too short for a sealed object", buf.len()),
            ));
        }
        let tag_at = buf.len() - TAG_LEN;
        let tag = Tag::try_from(&buf[tag_at..]).expect("16-byte tag");
        let nonce = Nonce::try_from(&buf[..NONCE_LEN]).expect("12-byte nonce");
        cipher
            .decrypt_inout_detached(&nonce, b"", (&mut buf[NONCE_LEN..tag_at]).into(), &tag)
            .map_err(|_| {
                Error::corrupt(
                    what,
                    "authentication failed (damaged or not of this repository)",
                )
            })?;
        buf.truncate(tag_at);
        buf.drain(..NONCE_LEN);
        Ok(())
    }

    /// Opens a sealed slice into a new buffer.
    pub fn open(&self, sealed: &[u8], what: &dyn fmt::Display) -> Result<Vec<u8>> {
        let mut buf = sealed.to_vec();
        self.open_in_place(&mut buf, what)?;
        Ok(buf)
    }
}

/// Argon2id cost parameters of a key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 32 MiB, 3 passes, 1 lane: about 0.1 s on a current core, the memory restic's scrypt
    /// uses, and above OWASP's minimum for Argon2id (19 MiB, 2 passes).
    fn default() -> Self {
        KdfParams {
            memory_kib: 32 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// The cheapest parameters Argon2 accepts: for tests only, never for real repositories.
    pub fn insecure_fast() -> Self {
        KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    /// Refuses parameters that would take absurd memory or time to open (a hostile key file).
    pub(crate) fn check(&self) -> Result<()> {
        if self.memory_kib > 1024 * 1024 || self.iterations > 32 || self.parallelism > 16 {
            return Err(Error::bad_input(
                "key file kdf",
                format!(
                    "Argon2id parameters {self:?} exceed the limits (1 GiB, 32 passes, 16 lanes)"
                ),
            ));
        }
        Ok(())
    }

    /// Derives a 32-byte key-encryption key.
    pub(crate) fn derive(&self, pass: &Passphrase, salt: &[u8]) -> Result<[u8; 32]> {
        self.check()?;
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(|e| {
                    Error::bad_input("key file kdf", format!("invalid Argon2id parameters: {e}"))
                })?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(pass.as_bytes(), salt, &mut out)
            .map_err(|e| Error::bad_input("key file kdf", format!("Argon2id failed: {e}")))?;
        Ok(out)
    }
}

/// Seals `plain` with a key-encryption key (used for key files).
pub(crate) fn seal_with(kek: &[u8; 32], plain: &[u8]) -> Vec<u8> {
    let c = Crypto {
        cipher: Some(Aes256Gcm::new_from_slice(kek).expect("32-byte key")),
        id_key: [0; 32],
    };
    c.seal(plain)
}

/// Opens what [`seal_with`] sealed; `None` when the key is wrong or the data damaged.
pub(crate) fn open_with(kek: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    let c = Crypto {
        cipher: Some(Aes256Gcm::new_from_slice(kek).expect("32-byte key")),
        id_key: [0; 32],
    };
    c.open(sealed, &"key").ok()
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

mod opt_hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::hex32::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
            Ok(out)
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let key = MasterKey::generate(true);
        let c = Crypto::new(&key);
        let sealed = c.seal(b"secret file name");
        assert_eq!(sealed.len(), 16 + SEAL_OVERHEAD);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(c.open(&sealed, &"x").unwrap(), b"secret file name");
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        let err = c.open(&bad, &"pack 1").unwrap_err();
        assert!(err.to_string().contains("pack 1"), "{err}");
        let other = Crypto::new(&MasterKey::generate(true));
        assert!(other.open(&sealed, &"x").is_err());
        let mut out = Vec::new();
        c.seal_into(b"another", &mut out);
        assert_eq!(out.len(), 7 + SEAL_OVERHEAD);
        let mut back = Vec::new();
        c.open_into(&out, &mut back, &"x").unwrap();
        assert_eq!(back, b"another");
        out[15] ^= 1;
        assert!(c.open_into(&out, &mut back, &"x").is_err());
    }

    #[test]
    fn plain_repositories_do_not_seal() {
        let c = Crypto::new(&MasterKey::generate(false));
        assert_eq!(c.seal(b"abc"), b"abc");
        assert_eq!(c.open(b"abc", &"x").unwrap(), b"abc");
    }

    #[test]
    fn blob_ids_are_keyed_and_split_invariant() {
        let c = Crypto::new(&MasterKey::generate(true));
        let a = c.blob_id(&[&b"hello world"[..]]);
        let b = c.blob_id(&[&b"hello "[..], &b"world"[..]]);
        assert_eq!(a, b);
        let other = Crypto::new(&MasterKey::generate(true));
        assert_ne!(a, other.blob_id(&[&b"hello world"[..]]));
    }

    #[test]
    fn kdf_wraps_and_refuses_wrong_passphrase() {
        let p = KdfParams::insecure_fast();
        let salt = random32();
        let kek = p.derive(&Passphrase::new("right").unwrap(), &salt).unwrap();
        let sealed = seal_with(&kek, b"master");
        let wrong = p.derive(&Passphrase::new("wrong").unwrap(), &salt).unwrap();
        assert!(open_with(&wrong, &sealed).is_none());
        assert_eq!(open_with(&kek, &sealed).unwrap(), b"master");
        let huge = KdfParams {
            memory_kib: u32::MAX,
            iterations: 1,
            parallelism: 1,
        };
        assert!(huge.derive(&Passphrase::new("x").unwrap(), &salt).is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let p = Passphrase::new("hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
        let k = MasterKey::generate(true);
        assert!(!format!("{k:?}").contains(&hex::encode(k.id_key)));
    }
}
