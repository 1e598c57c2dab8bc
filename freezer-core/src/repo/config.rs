//! The repository config (`config`) and key files (`keys/<id>`): both JSON, both readable
//! without a key, neither holding a secret in clear unless the repository is unencrypted.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::crypto::{self, KdfParams, MasterKey, Passphrase};
use crate::error::{Error, Result};
use crate::id::Id;

/// The format name written in every config.
pub const FORMAT_NAME: &str = "freezer-rs-repository";
/// The repository format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The default pack size target: 8 MiB. Three packs are in flight during a backup, so this
/// sets most of its memory; `init` can choose up to 512 MiB for storages that prefer few
/// large objects.
pub const DEFAULT_PACK_SIZE: u32 = 8 * 1024 * 1024;

/// How a repository protects its contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encryption {
    /// AES-256-GCM under a master key wrapped by passphrases.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// No confidentiality; integrity from content hashes only.
    #[serde(rename = "none")]
    None,
}

/// The repository config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// The format version, [`FORMAT_VERSION`] for this build.
    pub version: u32,
    /// The repository's id; every key of it carries the same id.
    pub id: Id,
    /// When the repository was made, RFC 3339.
    pub created: String,
    /// Whether contents are encrypted.
    pub encryption: Encryption,
    /// Chunk size limits (the gear table seed is in the master key).
    pub chunker: ChunkerParams,
    /// The target pack size in bytes.
    pub pack_size: u32,
    /// The master key, in clear: only in a repository without encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<MasterKey>,
}

impl Config {
    /// Decodes and validates a config; `what` names it in errors.
    pub fn decode(data: &[u8], what: &str) -> Result<Config> {
        // Check the version before the rest, so a newer repository gets a clear message.
        let probe: serde_json::Value = serde_json::from_slice(data)
            .map_err(|e| Error::corrupt(what, format!("not JSON: {e}")))?;
        if let Some(v) = probe.get("version").and_then(|v| v.as_u64())
            && v > u64::from(FORMAT_VERSION)
        {
            return Err(Error::unsupported(format!(
                "{what}: repository format version {v} (this build reads up to {FORMAT_VERSION}); upgrade freezer"
            )));
        }
        let c: Config = serde_json::from_value(probe)
            .map_err(|e| Error::corrupt(what, format!("invalid config: {e}")))?;
        if c.format != FORMAT_NAME {
            return Err(Error::corrupt(
                what,
                format!("format {:?} is not {FORMAT_NAME:?}", c.format),
            ));
        }
        if c.version != FORMAT_VERSION {
            return Err(Error::corrupt(
                what,
                format!("unknown version {}", c.version),
            ));
        }
        c.chunker.validate().map_err(|e| Error::corrupt(what, e))?;
        if !(1024 * 1024..=512 * 1024 * 1024).contains(&c.pack_size) {
            return Err(Error::corrupt(
                what,
                format!("pack size {} is out of range", c.pack_size),
            ));
        }
        match (&c.encryption, &c.master) {
            (Encryption::None, Some(m)) if m.repo_id == c.id && m.enc_key.is_none() => {}
            (Encryption::None, _) => {
                return Err(Error::corrupt(
                    what,
                    "an unencrypted repository needs its plain master key",
                ));
            }
            (Encryption::Aes256Gcm, None) => {}
            (Encryption::Aes256Gcm, Some(_)) => {
                return Err(Error::corrupt(
                    what,
                    "an encrypted repository must not hold a key in clear",
                ));
            }
        }
        Ok(c)
    }

    /// Encodes as pretty JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a config serializes")
    }
}

/// Argon2id parameters and salt of a key file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfSpec {
    /// Always `argon2id`.
    pub algorithm: String,
    /// Cost parameters.
    #[serde(flatten)]
    pub params: KdfParams,
    /// 32 random bytes, hex.
    pub salt: String,
}

/// A key file: the master key sealed under a passphrase.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Always 1.
    pub version: u32,
    /// When the key was added, RFC 3339.
    pub created: String,
    /// The host that added it.
    pub hostname: String,
    /// The user that added it.
    pub username: String,
    /// How the key-encryption key is derived.
    pub kdf: KdfSpec,
    /// The sealed master key (JSON), hex.
    pub data: String,
}

impl KeyFile {
    /// What a listing of keys shows of this one (key `id`; `current` when the passphrase in
    /// use opened it): `{"id", "current", "created", "hostname", "username", "kdf":
    /// {"algorithm", "memory_kib", "iterations", "parallelism"}}`; never the salt or the key.
    pub fn summary(&self, id: &Id, current: bool) -> serde_json::Value {
        serde_json::json!({
            "id": id, "current": current, "created": self.created,
            "hostname": self.hostname, "username": self.username,
            "kdf": {
                "algorithm": self.kdf.algorithm,
                "memory_kib": self.kdf.params.memory_kib,
                "iterations": self.kdf.params.iterations,
                "parallelism": self.kdf.params.parallelism,
            },
        })
    }

    /// Seals `master` under `pass`; a passphrase of only whitespace is refused.
    pub fn wrap(
        master: &MasterKey,
        pass: &Passphrase,
        params: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<KeyFile> {
        pass.check_for_new_key()?;
        let salt = crypto::random32();
        let kek = params.derive(pass, &salt)?;
        let plain = serde_json::to_vec(master).expect("a master key serializes");
        Ok(KeyFile {
            version: 1,
            created: crate::time::now_rfc3339(),
            hostname: hostname.to_string(),
            username: username.to_string(),
            kdf: KdfSpec {
                algorithm: "argon2id".into(),
                params,
                salt: hex::encode(salt),
            },
            data: hex::encode(crypto::seal_with(&kek, &plain)),
        })
    }

    /// Opens the master key; `Ok(None)` when the passphrase is not this key's.
    pub fn unwrap(&self, pass: &Passphrase, what: &str) -> Result<Option<MasterKey>> {
        if self.kdf.algorithm != "argon2id" {
            return Err(Error::unsupported(format!(
                "{what}: key derivation {:?}",
                self.kdf.algorithm
            )));
        }
        let salt =
            hex::decode(&self.kdf.salt).map_err(|e| Error::corrupt(what, format!("salt: {e}")))?;
        let sealed =
            hex::decode(&self.data).map_err(|e| Error::corrupt(what, format!("data: {e}")))?;
        let kek = self.kdf.params.derive(pass, &salt)?;
        let Some(plain) = crypto::open_with(&kek, &sealed) else {
            return Ok(None);
        };
        let master: MasterKey = serde_json::from_slice(&plain)
            .map_err(|e| Error::corrupt(what, format!("master key: {e}")))?;
        Ok(Some(master))
    }

    /// Decodes a key file.
    pub fn decode(data: &[u8], what: &str) -> Result<KeyFile> {
        let k: KeyFile = serde_json::from_slice(data)
            .map_err(|e| Error::corrupt(what, format!("invalid key file: {e}")))?;
        if k.version != 1 {
            return Err(Error::unsupported(format!(
                "{what}: key file version {}",
                k.version
            )));
        }
        k.kdf.params.check().map_err(|e| Error::corrupt(what, e))?;
        Ok(k)
    }

    /// Encodes as pretty JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a key file serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(master: Option<MasterKey>, id: Id) -> Config {
        Config {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id,
            created: "2026-11-24T00:00:00Z".into(),
            encryption: if master.is_some() {
                Encryption::None
            } else {
                Encryption::Aes256Gcm
            },
            chunker: ChunkerParams::default(),
            pack_size: DEFAULT_PACK_SIZE,
            master,
        }
    }

    #[test]
    fn config_round_trips_and_newer_versions_are_named() {
        let m = MasterKey::generate(false);
        let c = config(Some(m.clone()), m.repo_id);
        let back = Config::decode(&c.encode(), "config").unwrap();
        assert_eq!(back.master.unwrap(), m);
        let mut v: serde_json::Value = serde_json::from_slice(&c.encode()).unwrap();
        v["version"] = 2.into();
        let e = Config::decode(&serde_json::to_vec(&v).unwrap(), "config").unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        assert!(Config::decode(b"{", "config").is_err());
    }

    #[test]
    fn encrypted_configs_hold_no_key() {
        let m = MasterKey::generate(true);
        let c = config(None, m.repo_id);
        let text = String::from_utf8(c.encode()).unwrap();
        assert!(!text.contains(&hex::encode(m.id_key)));
        let mut bad = c.clone();
        bad.master = Some(m);
        assert!(Config::decode(&bad.encode(), "config").is_err());
    }

    #[test]
    fn key_files_wrap_and_unwrap() {
        let m = MasterKey::generate(true);
        let p = Passphrase::new("correct horse").unwrap();
        let k = KeyFile::wrap(&m, &p, KdfParams::insecure_fast(), "h", "u").unwrap();
        let k = KeyFile::decode(&k.encode(), "keys/1").unwrap();
        assert_eq!(k.unwrap(&p, "keys/1").unwrap().unwrap(), m);
        assert!(
            k.unwrap(&Passphrase::new("wrong").unwrap(), "keys/1")
                .unwrap()
                .is_none()
        );
        assert!(
            !String::from_utf8(k.encode())
                .unwrap()
                .contains("correct horse")
        );
    }

    #[test]
    fn a_new_key_needs_more_than_whitespace_and_names_the_file() {
        let m = MasterKey::generate(true);
        let dir = tempfile::tempdir().unwrap();
        for blank in ["   ", " \t ", "\u{a0}"] {
            let file = dir.path().join("pass");
            std::fs::write(&file, format!("{blank}\nsecond line\n")).unwrap();
            let p = Passphrase::from_file(&file).unwrap();
            let e = KeyFile::wrap(&m, &p, KdfParams::insecure_fast(), "h", "u").unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::BadInput);
            let text = e.to_string();
            assert!(text.contains(&file.display().to_string()), "{text}");
            assert!(text.contains("only whitespace"), "{text}");
        }
        let e = KeyFile::wrap(
            &m,
            &Passphrase::new("  ").unwrap(),
            KdfParams::insecure_fast(),
            "h",
            "u",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("passphrase:"), "{e}");
        // Spaces around other characters are part of a passphrase.
        let p = Passphrase::new(" a b ").unwrap();
        KeyFile::wrap(&m, &p, KdfParams::insecure_fast(), "h", "u").unwrap();
    }
}
