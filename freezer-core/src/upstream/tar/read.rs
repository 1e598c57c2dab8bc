//! The stream of one level: storage bytes → (decryption) → decompression → tar bytes, on its
//! own thread, handed to the extractor in large buffers through a bounded channel.
//!
//! Three stages run at once for every level: the async pump ([`super::restore`]) moves the
//! sink's stream into a bounded tokio channel; the decoder thread ([`decode_level`]) decrypts and
//! decompresses into 1 MiB buffers; the extractor reads those buffers as a [`Read`]. Memory
//! stays bounded by the channels' capacities whatever the size of the backup.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::super::layout::{Compression, TarMetadata};
use super::super::openssl::{Decrypt, KeyDigest};
use crate::error::{Error, ErrorKind, Result};

/// The size of the buffers handed from the decoder to the extractor.
pub(crate) const CHUNK: usize = 1 << 20;
/// How many decoded buffers may wait for the extractor.
pub(crate) const DEPTH: usize = 4;

/// The sink's bytes as a blocking [`Read`], fed by the async pump. A sink error is kept in
/// `error` (the reader fails with a placeholder) so that the caller reports the sink's own.
pub(crate) struct SinkReader {
    pub rx: tokio::sync::mpsc::Receiver<Result<Bytes>>,
    pub cur: Bytes,
    pub error: Arc<Mutex<Option<Error>>>,
}

impl Read for SinkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => {
                    let msg = e.to_string();
                    *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return Err(io::Error::other(msg));
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Opens the plaintext tar stream of a level's `data` (`key`, for messages): decrypts when
/// the metadata says so (trying SHA-256, then MD5 key derivation), then decompresses with a
/// multi-member / multi-stream decoder. A passphrase given for an unencrypted backup is
/// ignored (upstream fails there, §10.3).
pub fn open_data<R: Read + Send + 'static>(
    raw: R,
    metadata: &TarMetadata,
    passphrase: Option<&[u8]>,
    key: &str,
) -> Result<(Box<dyn Read + Send>, Option<KeyDigest>)> {
    let compression = metadata.compression;
    let (plain, digest): (Box<dyn Read + Send>, Option<KeyDigest>) = if metadata.encryption {
        let Some(pass) = passphrase else {
            return Err(Error::WrongKey {
                what: format!(
                    "Cannot restore encrypted backup without key: {key} is encrypted (its metadata says \"encryption\": true); give its passphrase (encrypt_pass_file)"
                ),
            });
        };
        match Decrypt::detect(raw, pass, |b| compression.magic_matches(b)) {
            Ok((d, digest)) => (Box::new(d), Some(digest)),
            Err(e) if e.kind() == ErrorKind::WrongKey => {
                return Err(Error::WrongKey {
                    what: format!(
                        "{key}: wrong passphrase or unsupported key derivation (neither OpenSSL's SHA-256 nor MD5 derivation of this passphrase gives a {compression} stream)"
                    ),
                });
            }
            Err(e) => return Err(e.context(key)),
        }
    } else {
        (Box::new(raw), None)
    };
    Ok((decompress(plain, compression, key)?, digest))
}

fn decompress(
    r: Box<dyn Read + Send>,
    compression: Compression,
    key: &str,
) -> Result<Box<dyn Read + Send>> {
    Ok(match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(r).map_err(|e| Error::io(key.to_string(), e))?,
        ),
    })
}

/// The error for a level whose stream could not be read: the sink's own error when it failed,
/// else the data is truncated or damaged (the decompressor or the tar reader refused it).
pub(crate) fn stream_error(key: &str, e: io::Error, sink_error: &Mutex<Option<Error>>) -> Error {
    if let Some(s) = sink_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return s.context(format!("reading {key}"));
    }
    Error::corrupt(
        key,
        format!("truncated or damaged (the decompressor or the tar reader refused it): {e}"),
    )
}

/// The decoder thread of a level: reads the plaintext tar stream and sends it in [`CHUNK`]
/// buffers. Returns when the stream ends or when the extractor hung up (its error wins).
pub(crate) fn decode_level(
    mut plain: Box<dyn Read + Send>,
    tx: crossbeam_channel::Sender<Vec<u8>>,
    free: crossbeam_channel::Receiver<Vec<u8>>,
    key: &str,
    sink_error: &Mutex<Option<Error>>,
) -> Result<()> {
    loop {
        let mut buf = free.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut got = 0;
        while got < CHUNK {
            match plain.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(stream_error(key, e, sink_error)),
            }
        }
        if got == 0 {
            return Ok(());
        }
        buf.truncate(got);
        if tx.send(buf).is_err() {
            return Ok(());
        }
    }
}

/// The extractor's side of the decoder's channel, as a [`Read`]; used buffers go back to the
/// decoder.
pub(crate) struct ChunkReader {
    pub rx: crossbeam_channel::Receiver<Vec<u8>>,
    pub free: crossbeam_channel::Sender<Vec<u8>>,
    pub cur: Vec<u8>,
    pub at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.cur.len() {
            match self.rx.recv() {
                Ok(next) => {
                    let old = std::mem::replace(&mut self.cur, next);
                    let _ = self.free.try_send(old);
                    self.at = 0;
                }
                // The decoder ended (or failed: the caller asks it which).
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
