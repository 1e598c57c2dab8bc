//! The compression (and encryption) stage of [`super::write_level`]: the archive is cut into
//! fixed-size blocks, worker threads compress each into an independent gzip member, bzip2
//! stream, xz stream or zstd frame, and the calling thread writes them in order (through
//! [`crate::upstream::openssl::Encrypt`] when a passphrase is set). Every queue is bounded:
//! at most about `3 × threads + 2` blocks are in memory whatever the size of the backup.
//!
//! Concatenations of those units are single valid streams for `gzip -d`, `bzip2 -d`, `xz -d`
//! and `zstd -d` (what `tar -z/-j/-J` run on restore).

use std::io::{self, Write};
use std::thread;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::{Counted, TarWriteOptions, TarWriteReport};
use crate::error::{Error, Result};
use crate::upstream::openssl::Encrypt;

pub use crate::upstream::layout::Compression;

impl Compression {
    /// The level used when none is given. bzip2 9 and xz 6 are what `tar -j`/`-J` run;
    /// gzip is 1, not gzip's own 6: level 1 meets the speed target (a 512 MiB tree in half
    /// of upstream's time on two cores, docs/UPSTREAM-TAR.md §12) where 6 does not, for a
    /// few percent more bytes. zstd 3 is zstd's default.
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Gzip => 1,
            Compression::Bzip2 => 9,
            Compression::Xz => 6,
            Compression::Zstd => 3,
        }
    }

    /// The levels the compressor accepts.
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Compression::Gzip => 1..=9,
            Compression::Bzip2 => 1..=9,
            Compression::Xz => 0..=9,
            Compression::Zstd => 1..=22,
        }
    }

    /// Bytes of archive per independently compressed block: large enough that the blocks'
    /// boundaries cost little ratio (gzip's window is 32 KiB, bzip2's blocks 900 kB, xz -6's
    /// dictionary 8 MiB), small enough to keep every thread busy and the memory bounded.
    pub fn default_block_size(self) -> usize {
        match self {
            Compression::Gzip => 1 << 20,
            Compression::Bzip2 => 9 * 100_000 * 4,
            Compression::Xz => 8 << 20,
            Compression::Zstd => 4 << 20,
        }
    }

    /// Compresses one block into a complete, independent stream.
    fn compress(self, level: u32, data: &[u8]) -> io::Result<Vec<u8>> {
        let cap = data.len() / 2 + 1024;
        match self {
            Compression::Gzip => {
                // As `gzip` writes reading a pipe: no name, mtime 0, OS 3 (Unix).
                let mut e = flate2::GzBuilder::new()
                    .operating_system(3)
                    .write(Vec::with_capacity(cap), flate2::Compression::new(level));
                e.write_all(data)?;
                e.finish()
            }
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(
                    Vec::with_capacity(cap),
                    bzip2::Compression::new(level),
                );
                e.write_all(data)?;
                e.finish()
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::with_capacity(cap), level);
                e.write_all(data)?;
                e.finish()
            }
            Compression::Zstd => zstd::bulk::compress(data, level as i32),
        }
    }
}

/// One block on its way: the archive bytes and where the compressed result goes.
type Job = (Vec<u8>, Sender<io::Result<Vec<u8>>>);

/// Collects the archive into blocks and hands each to the workers, in order.
struct Blocks {
    buf: Vec<u8>,
    size: usize,
    jobs: Sender<Job>,
    order: Sender<Receiver<io::Result<Vec<u8>>>>,
}

impl Blocks {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(self.size));
        let (tx, rx) = bounded(1);
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "the output stage stopped");
        self.order.send(rx).map_err(|_| closed())?;
        self.jobs.send((block, tx)).map_err(|_| closed())
    }
}

impl Write for Blocks {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let room = self.size - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.size {
                self.send()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Out<W: Write> {
    Plain(Counted<W>),
    Encrypted(Box<Encrypt<Counted<W>>>),
}

impl<W: Write> Out<W> {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Out::Plain(w) => w.write_all(b),
            Out::Encrypted(w) => w.write_all(b),
        }
    }

    fn finish(self) -> io::Result<u64> {
        let mut c = match self {
            Out::Plain(c) => c,
            Out::Encrypted(e) => e.finish()?,
        };
        c.flush()?;
        Ok(c.n)
    }
}

/// Runs `produce` (which writes the archive) on its own thread, compresses on
/// `opts.threads` workers and writes the result to `out` on the calling thread.
pub(super) fn run<W: Write>(
    opts: &TarWriteOptions,
    out: W,
    produce: impl FnOnce(&mut dyn Write) -> Result<TarWriteReport> + Send,
) -> Result<TarWriteReport> {
    let comp = opts.compression;
    let level = opts.compression_level.unwrap_or(comp.default_level());
    if !comp.levels().contains(&level) {
        return Err(Error::bad_input(
            "compression_level",
            format!(
                "{level} is not a {} level ({}..={})",
                comp.as_str(),
                comp.levels().start(),
                comp.levels().end()
            ),
        ));
    }
    let threads = crate::memory::workers(opts.threads);
    let size = match opts.block_size {
        0 => comp.default_block_size(),
        n => n.max(512),
    };
    let counted = Counted { inner: out, n: 0 };
    let mut w = match &opts.encrypt_pass {
        Some(pass) => Out::Encrypted(Box::new(Encrypt::new(counted, pass)?)),
        None => Out::Plain(counted),
    };
    thread::scope(|s| {
        let (job_tx, job_rx) = bounded::<Job>(threads);
        let (ord_tx, ord_rx) = bounded(threads + 1);
        let producer = thread::Builder::new()
            .name("tar-archive".into())
            .spawn_scoped(s, move || {
                let mut blocks = Blocks {
                    buf: Vec::with_capacity(size),
                    size,
                    jobs: job_tx,
                    order: ord_tx,
                };
                let report = produce(&mut blocks)?;
                blocks
                    .send()
                    .map_err(|e| Error::io("the backup stream", e))?;
                Ok::<_, Error>(report)
            })
            .map_err(|e| Error::io("starting the archive thread", e))?;
        for i in 0..threads {
            let rx = job_rx.clone();
            thread::Builder::new()
                .name(format!("tar-{}-{i}", comp.as_str()))
                .spawn_scoped(s, move || {
                    for (block, reply) in rx {
                        // The receiver is gone only when the output stage stopped.
                        let _ = reply.send(comp.compress(level, &block));
                    }
                })
                .map_err(|e| Error::io("starting a compression thread", e))?;
        }
        drop(job_rx);
        let mut failed: Option<Error> = None;
        for rx in ord_rx.iter() {
            let r = match rx.recv() {
                Ok(Ok(data)) => w
                    .write_all(&data)
                    .map_err(|e| Error::io("the backup output", e)),
                Ok(Err(e)) => Err(Error::io(format!("{} compression", comp.as_str()), e)),
                Err(_) => Err(Error::io(
                    format!("{} compression", comp.as_str()),
                    io::Error::other("a compression thread stopped"),
                )),
            };
            if let Err(e) = r {
                failed = Some(e);
                break;
            }
        }
        // Stops the producer if the output failed (its next block finds no receiver).
        drop(ord_rx);
        let produced = producer
            .join()
            .map_err(|_| Error::io("the archive thread", io::Error::other("it panicked")))?;
        if let Some(e) = failed {
            return Err(e);
        }
        let mut report = produced?;
        report.written_bytes = w.finish().map_err(|e| Error::io("the backup output", e))?;
        Ok(report)
    })
}
