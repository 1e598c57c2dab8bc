//! 32-byte identifiers of blobs and stored objects, shown as lowercase hex.
//!
//! Blob ids are keyed BLAKE3 hashes of the plaintext (see `crypto`); stored-object ids are
//! unkeyed BLAKE3 hashes of the bytes on storage, so anyone can verify a file without a key.
//! This module never decides which hash is used; it only carries the bytes.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A 32-byte identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The length of an id in bytes.
    pub const LEN: usize = 32;

    /// The unkeyed BLAKE3 hash of `data`: the id of a stored object.
    pub fn of_stored(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    /// The unkeyed BLAKE3 hash of several parts taken as one byte string.
    pub fn of_stored_parts(parts: &[bytes::Bytes]) -> Id {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(p);
        }
        Id(*h.finalize().as_bytes())
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex characters, for display.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Id> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|e| Error::bad_input("id", format!("{s:?} is not 64 hex digits: {e}")))?;
        Ok(Id(out))
    }

    /// Reads an id from the first 32 bytes of `b`.
    pub(crate) fn from_slice(b: &[u8]) -> Option<Id> {
        b.get(..32).map(|s| {
            let mut out = [0u8; 32];
            out.copy_from_slice(s);
            Id(out)
        })
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = Error;
    fn from_str(s: &str) -> Result<Id> {
        Id::from_hex(s)
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Id, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Id::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = Id::of_stored(b"hello");
        assert_eq!(Id::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(id.short().len(), 8);
        assert!(Id::from_hex("zz").is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
    }
}
