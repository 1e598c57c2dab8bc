//! The encryption of upstream Freezer's `tar` backups: `openssl enc -aes-256-cfb -pass
//! file:F` (docs/UPSTREAM-TAR.md, *Encryption*).
//!
//! The stream is `Salted__`, an 8-byte salt, then the data encrypted with AES-256 in CFB mode
//! (128-bit feedback, no padding: as long as the plaintext). Key and IV come from the
//! passphrase (the pass file's first line) and the salt through OpenSSL's `EVP_BytesToKey`
//! with one round, whose digest was MD5 before OpenSSL 1.1 and SHA-256 since; nothing in the
//! stream says which. [`Decrypt::detect`] tries SHA-256 first, then MD5, and keeps the one
//! whose first plaintext bytes look like what upstream encrypts (a compressed stream or a tar
//! archive, [`plausible_start`]). CFB has no authentication: a wrong passphrase that passes
//! that check, or damaged data, shows later, when the decompressor or tar reader refuses it.
//! [`Encrypt`] writes what `openssl enc -aes-256-cfb -md sha256` writes, which upstream's
//! agent on OpenSSL 1.1 or later reads.

use std::io::{self, Read, Write};

use aes::Aes256;
use cfb_mode::cipher::KeyIvInit;
use cfb_mode::{BufDecryptor, BufEncryptor};
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The 8 bytes that start every salted `openssl enc` stream.
pub const MAGIC: &[u8; 8] = b"Salted__";

/// The digest `EVP_BytesToKey` used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDigest {
    /// OpenSSL 1.1 and later (`-md sha256`, their default).
    Sha256,
    /// OpenSSL before 1.1 (`-md md5`).
    Md5,
}

/// The passphrase `openssl enc -pass file:F` uses: the file's first line, without its line end.
pub fn passphrase_of_file(content: &[u8]) -> &[u8] {
    let line = content.split(|b| *b == b'\n').next().unwrap_or_default();
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `EVP_BytesToKey(cipher, digest, salt, pass, count = 1)`: the 32-byte key and 16-byte IV.
pub fn derive(pass: &[u8], salt: &[u8; 8], digest: KeyDigest) -> ([u8; 32], [u8; 16]) {
    let mut out = Vec::with_capacity(64);
    let mut prev: Vec<u8> = Vec::new();
    while out.len() < 48 {
        prev = match digest {
            KeyDigest::Sha256 => {
                let mut h = Sha256::new();
                h.update(&prev);
                h.update(pass);
                h.update(salt);
                h.finalize().to_vec()
            }
            KeyDigest::Md5 => {
                let mut h = Md5::new();
                h.update(&prev);
                h.update(pass);
                h.update(salt);
                h.finalize().to_vec()
            }
        };
        out.extend_from_slice(&prev);
    }
    let mut key = [0u8; 32];
    let mut iv = [0u8; 16];
    key.copy_from_slice(&out[..32]);
    iv.copy_from_slice(&out[32..48]);
    (key, iv)
}

/// Whether `b`, the first plaintext bytes of a stream, start as upstream's encrypted streams
/// do: gzip, bzip2, xz or zstd, or a tar archive (`ustar` at offset 257, or too short to say).
pub fn plausible_start(b: &[u8]) -> bool {
    b.starts_with(&[0x1f, 0x8b])
        || b.starts_with(b"BZh")
        || b.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || b.get(257..262) == Some(b"ustar")
}

fn cipher_error(e: impl std::fmt::Display) -> Error {
    Error::corrupt("an OpenSSL stream", e)
}

/// Reads the plaintext of an `openssl enc -aes-256-cfb` stream.
pub struct Decrypt<R> {
    inner: R,
    dec: BufDecryptor<Aes256>,
    /// Plaintext already decrypted (by [`Decrypt::detect`]), served first.
    ahead: Vec<u8>,
    at: usize,
}

impl<R> std::fmt::Debug for Decrypt<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypt").finish_non_exhaustive()
    }
}

impl<R: Read> Decrypt<R> {
    /// Reads the header of `inner` and decrypts the rest with the key `pass` and `digest`
    /// give. A stream without the `Salted__` header is an error saying so (a backup made
    /// without `encrypt_pass_file`, or not OpenSSL's).
    pub fn new(mut inner: R, pass: &[u8], digest: KeyDigest) -> Result<Self> {
        let salt = read_header(&mut inner)?;
        let (key, iv) = derive(pass, &salt, digest);
        let dec = BufDecryptor::<Aes256>::new_from_slices(&key, &iv).map_err(cipher_error)?;
        Ok(Decrypt {
            inner,
            dec,
            ahead: Vec::new(),
            at: 0,
        })
    }

    /// As [`Decrypt::new`], finding the digest: the first one (SHA-256, then MD5) under which
    /// the first bytes pass `plausible` (e.g. [`plausible_start`]). When neither does, the
    /// passphrase is wrong (or the data is not what upstream encrypts): a
    /// [`Error::WrongKey`] saying so.
    pub fn detect(
        mut inner: R,
        pass: &[u8],
        plausible: impl Fn(&[u8]) -> bool,
    ) -> Result<(Self, KeyDigest)> {
        let salt = read_header(&mut inner)?;
        let mut head = Vec::with_capacity(512);
        (&mut inner)
            .take(512)
            .read_to_end(&mut head)
            .map_err(|e| Error::io("an encrypted stream", e))?;
        for digest in [KeyDigest::Sha256, KeyDigest::Md5] {
            let (key, iv) = derive(pass, &salt, digest);
            let mut dec =
                BufDecryptor::<Aes256>::new_from_slices(&key, &iv).map_err(cipher_error)?;
            let mut plain = head.clone();
            dec.decrypt(&mut plain);
            if plausible(&plain) {
                return Ok((
                    Decrypt {
                        inner,
                        dec,
                        ahead: plain,
                        at: 0,
                    },
                    digest,
                ));
            }
        }
        Err(Error::WrongKey {
            what: "the passphrase does not decrypt this backup (neither OpenSSL's SHA-256 nor its older MD5 key derivation gives a compressed stream or a tar archive): a wrong encrypt_pass_file, or damaged data".into(),
        })
    }
}

fn read_header(inner: &mut impl Read) -> Result<[u8; 8]> {
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match inner.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("an encrypted stream", e)),
        }
    }
    if got < 16 || &head[..8] != MAGIC {
        return Err(Error::corrupt(
            "an encrypted stream",
            "it does not start with OpenSSL's Salted__ header (a backup made without encrypt_pass_file, or not made by openssl enc)",
        ));
    }
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&head[8..]);
    Ok(salt)
}

impl<R: Read> Read for Decrypt<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at < self.ahead.len() {
            let n = buf.len().min(self.ahead.len() - self.at);
            buf[..n].copy_from_slice(&self.ahead[self.at..self.at + n]);
            self.at += n;
            if self.at == self.ahead.len() {
                self.ahead = Vec::new();
                self.at = 0;
            }
            return Ok(n);
        }
        let n = self.inner.read(buf)?;
        self.dec.decrypt(&mut buf[..n]);
        Ok(n)
    }
}

/// Writes what `openssl enc -aes-256-cfb -md sha256 -salt` writes: the header, then the
/// encrypted data, as long as the plaintext.
pub struct Encrypt<W: Write> {
    inner: W,
    enc: BufEncryptor<Aes256>,
    buf: Vec<u8>,
}

impl<W: Write> std::fmt::Debug for Encrypt<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encrypt").finish_non_exhaustive()
    }
}

impl<W: Write> Encrypt<W> {
    /// Starts the stream with a random salt.
    pub fn new(inner: W, pass: &[u8]) -> Result<Self> {
        let mut salt = [0u8; 8];
        getrandom::fill(&mut salt)
            .map_err(|e| Error::io("a random salt", io::Error::other(e.to_string())))?;
        Self::with_salt(inner, pass, salt)
    }

    /// Starts the stream with `salt` (tests compare with `openssl enc -S`).
    pub fn with_salt(mut inner: W, pass: &[u8], salt: [u8; 8]) -> Result<Self> {
        inner
            .write_all(MAGIC)
            .and_then(|()| inner.write_all(&salt))
            .map_err(|e| Error::io("an encrypted stream", e))?;
        let (key, iv) = derive(pass, &salt, KeyDigest::Sha256);
        let enc = BufEncryptor::<Aes256>::new_from_slices(&key, &iv).map_err(cipher_error)?;
        Ok(Encrypt {
            inner,
            enc,
            buf: Vec::new(),
        })
    }

    /// The writer underneath, once everything was written.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Encrypt<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(1 << 16);
        self.buf.clear();
        self.buf.extend_from_slice(&data[..n]);
        self.enc.encrypt(&mut self.buf);
        self.inner.write_all(&self.buf)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the openssl program (Debian package openssl) is needed by these tests");
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn sample() -> Vec<u8> {
        // A gzip stream's start, then bytes of every value, of a length no block divides.
        let mut v = vec![0x1f, 0x8b, 8, 0];
        v.extend((0..100_003u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        v
    }

    fn pass_file(dir: &std::path::Path) -> String {
        let p = dir.join("pass");
        std::fs::write(&p, "correct horse\nsecond line ignored\n").unwrap();
        format!("file:{}", p.display())
    }

    #[test]
    fn reads_what_openssl_writes_with_either_digest() {
        let dir = tempfile::tempdir().unwrap();
        let pass = pass_file(dir.path());
        let plain = sample();
        for (md, want) in [("sha256", KeyDigest::Sha256), ("md5", KeyDigest::Md5)] {
            let enc = openssl(
                &["enc", "-aes-256-cfb", "-salt", "-md", md, "-pass", &pass],
                &plain,
            );
            assert_eq!(&enc[..8], MAGIC);
            assert_eq!(enc.len(), plain.len() + 16, "CFB adds no padding");
            let key = passphrase_of_file(b"correct horse\nsecond line ignored\n");
            let (mut r, digest) = Decrypt::detect(&enc[..], key, plausible_start).unwrap();
            assert_eq!(digest, want, "{md}");
            let mut got = Vec::new();
            // Small reads cross the boundary of what detect decrypted ahead.
            let mut buf = [0u8; 777];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got == plain, "{md}: the plaintext differs");
            let mut r = Decrypt::new(&enc[..], key, want).unwrap();
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert!(got == plain, "{md}: new");
        }
    }

    #[test]
    fn openssl_reads_what_we_write() {
        let dir = tempfile::tempdir().unwrap();
        let pass = pass_file(dir.path());
        let plain = sample();
        let mut w = Encrypt::new(Vec::new(), b"correct horse").unwrap();
        for part in plain.chunks(4099) {
            w.write_all(part).unwrap();
        }
        let enc = w.finish().unwrap();
        let back = openssl(
            &["enc", "-d", "-aes-256-cfb", "-md", "sha256", "-pass", &pass],
            &enc,
        );
        assert!(back == plain, "openssl's decryption differs");
        // Same salt, same bytes as openssl's own output.
        let salt = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut w = Encrypt::with_salt(Vec::new(), b"correct horse", salt).unwrap();
        w.write_all(&plain).unwrap();
        let ours = w.finish().unwrap();
        let theirs = openssl(
            &[
                "enc",
                "-aes-256-cfb",
                "-md",
                "sha256",
                "-S",
                "0102030405060708",
                "-pass",
                &pass,
            ],
            &plain,
        );
        // With -S, OpenSSL 3 leaves out the header: the rest is the same, byte for byte.
        assert_eq!(&ours[..16], b"Salted__\x01\x02\x03\x04\x05\x06\x07\x08");
        assert!(ours[16..] == theirs[..], "byte-identical to openssl enc");
    }

    #[test]
    fn a_wrong_passphrase_or_a_plain_stream_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let pass = pass_file(dir.path());
        let enc = openssl(
            &[
                "enc",
                "-aes-256-cfb",
                "-salt",
                "-md",
                "sha256",
                "-pass",
                &pass,
            ],
            &sample(),
        );
        let e = Decrypt::detect(&enc[..], b"wrong", plausible_start)
            .err()
            .unwrap();
        assert_eq!(e.kind(), crate::error::ErrorKind::WrongKey);
        assert!(e.to_string().contains("encrypt_pass_file"), "{e}");
        // An unencrypted backup given a passphrase: named, not garbage.
        let e = Decrypt::detect(&sample()[..], b"correct horse", plausible_start)
            .err()
            .unwrap();
        assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt);
        assert!(e.to_string().contains("Salted__"), "{e}");
        // A stream cut inside its header.
        let e = Decrypt::new(&enc[..12], b"correct horse", KeyDigest::Sha256)
            .err()
            .unwrap();
        assert!(e.to_string().contains("Salted__"), "{e}");
    }

    #[test]
    fn key_derivation_matches_openssl() {
        // `openssl enc -P` prints the key and IV it derives.
        for (md, digest) in [("sha256", KeyDigest::Sha256), ("md5", KeyDigest::Md5)] {
            let out = openssl(
                &[
                    "enc",
                    "-aes-256-cfb",
                    "-md",
                    md,
                    "-S",
                    "a1b2c3d4e5f60718",
                    "-pass",
                    "pass:correct horse",
                    "-P",
                ],
                b"",
            );
            let out = String::from_utf8(out).unwrap();
            let field = |name: &str| {
                out.lines()
                    .find_map(|l| l.trim().strip_prefix(name))
                    .map(|v| v.trim_start_matches([' ', '=']).trim().to_ascii_lowercase())
                    .unwrap()
            };
            let salt = [0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18];
            let (key, iv) = derive(b"correct horse", &salt, digest);
            assert_eq!(hex::encode(key), field("key"), "{md}");
            assert_eq!(hex::encode(iv), field("iv"), "{md}");
        }
    }
}
