//! How small objects (index files, snapshots, locks) are stored:
//! `sealed(u8 compression || body)`, where compression 0 means the body is the plaintext and
//! 1 means it is one zstd frame of it. Decoding refuses frames that claim more than 256 MiB.

use zstd::zstd_safe;

use crate::crypto::Crypto;
use crate::error::{Error, Result};

/// Index files of 200 000 blobs take about 10 MiB; nothing small is anywhere near this.
const MAX_OBJECT: u64 = 256 << 20;

/// Compresses (when worth it) and seals a small object.
pub fn encode(crypto: &Crypto, plain: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(plain.len() / 2 + 64);
    body.resize(crypto.prefix_len(), 0);
    let compressed = (plain.len() >= 128)
        .then(|| zstd::bulk::compress(plain, 3).ok())
        .flatten()
        .filter(|c| c.len() < plain.len());
    match compressed {
        Some(c) => {
            body.push(1);
            body.extend_from_slice(&c);
        }
        None => {
            body.push(0);
            body.extend_from_slice(plain);
        }
    }
    crypto.seal_in_place(&mut body);
    body
}

/// Opens and decompresses a small object; `what` names it in errors.
pub fn decode(crypto: &Crypto, stored: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut buf = stored.to_vec();
    crypto.open_in_place(&mut buf, &what)?;
    match buf.first() {
        Some(0) => {
            buf.remove(0);
            Ok(buf)
        }
        Some(1) => {
            let frame = &buf[1..];
            let size = zstd_safe::get_frame_content_size(frame)
                .map_err(|_| Error::corrupt(what, "not a zstd frame"))?
                .ok_or_else(|| Error::corrupt(what, "zstd frame without a content size"))?;
            if size > MAX_OBJECT {
                return Err(Error::corrupt(
                    what,
                    format!("claims {size} bytes uncompressed"),
                ));
            }
            zstd::bulk::decompress(frame, size as usize)
                .map_err(|e| Error::corrupt(what, format!("zstd: {e}")))
        }
        Some(c) => Err(Error::corrupt(what, format!("unknown compression {c}"))),
        None => Err(Error::corrupt(what, "empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    #[test]
    fn small_objects_round_trip() {
        for enc in [true, false] {
            let c = Crypto::new(&MasterKey::generate(enc));
            for plain in [
                &b""[..],
                b"short",
                "long and repetitive ".repeat(100).as_bytes(),
            ] {
                assert_eq!(decode(&c, &encode(&c, plain), "x").unwrap(), plain);
            }
            assert!(decode(&c, &[7], "x").is_err() || enc);
        }
        // A frame header claiming 300 MiB is refused without decompressing anything.
        let c = Crypto::new(&MasterKey::generate(false));
        let mut claim = vec![1u8, 0x28, 0xb5, 0x2f, 0xfd, 0xe0];
        claim.extend_from_slice(&(300u64 << 20).to_le_bytes());
        claim.extend_from_slice(&[0x03, 0x00, 0x00, 0x00]);
        let e = decode(&c, &claim, "index/x").unwrap_err();
        assert!(e.to_string().contains("claims"), "{e}");
        {}
    }
}
