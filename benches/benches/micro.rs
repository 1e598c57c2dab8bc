//! Micro benchmarks of the CPU stages of a backup: chunking, chunk ids, compression and
//! encryption, each with its throughput in bytes. Run with `cargo bench -p freezer-benches`.
//!
//! The inputs are generated in memory from a fixed seed: pseudo-random bytes (incompressible)
//! and text-like bytes (source-code-like lines that zstd shrinks about 3-5x), the two ends of
//! what a backup reads.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use freezer_core::repo::pack::{BlobEncoder, BlobType};
use freezer_core::{ChunkState, Chunker, ChunkerParams, Crypto, MasterKey};

const MIB: usize = 1024 * 1024;

/// SplitMix64: a tiny deterministic generator, so every run measures the same bytes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `len` incompressible bytes.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `len` bytes of source-code-like lines, in the spirit of the comparison corpus's `text/`.
fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "fn",
        "let",
        "mut",
        "impl",
        "struct",
        "enum",
        "match",
        "return",
        "self",
        "pub",
        "use",
        "crate",
        "async",
        "await",
        "backup",
        "restore",
        "storage",
        "container",
        "segment",
        "level",
        "snapshot",
        "volume",
        "instance",
        "error",
        "result",
        "option",
        "some",
        "none",
        "ok",
        "err",
        "vec",
        "string",
        "bytes",
        "stream",
        "sink",
        "source",
        "if",
        "else",
        "for",
        "while",
        "loop",
        "break",
        "continue",
        "true",
        "false",
        "const",
        "static",
        "where",
        "trait",
    ];
    let mut rng = SplitMix(seed);
    let mut out = Vec::with_capacity(len + 256);
    while out.len() < len {
        let indent = 4 * rng.below(4) as usize;
        out.resize(out.len() + indent, b' ');
        let words = 2 + rng.below(10);
        for i in 0..words {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        }
        out.extend_from_slice(format!(" {};\n", rng.below(1_000_000)).as_bytes());
    }
    out.truncate(len);
    out
}

fn chunking(c: &mut Criterion) {
    let chunker = Chunker::new(ChunkerParams::default(), &[7u8; 32]).expect("default params");
    let inputs = [
        ("random", random_bytes(16 * MIB, 1)),
        ("text", text_bytes(16 * MIB, 2)),
    ];
    let mut group = c.benchmark_group("chunking");
    group.throughput(Throughput::Bytes(16 * MIB as u64));
    for (name, data) in &inputs {
        group.bench_with_input(BenchmarkId::new("chunk_lengths", name), data, |b, data| {
            b.iter(|| chunker.chunk_lengths(black_box(data)));
        });
        // The way the engine drives it: resumable state over 1 MiB read blocks.
        group.bench_with_input(
            BenchmarkId::new("next_cut_1MiB_blocks", name),
            data,
            |b, data| {
                b.iter(|| {
                    let mut state = ChunkState::default();
                    let mut cuts = 0usize;
                    for block in black_box(data).chunks(MIB) {
                        let mut at = 0;
                        while let Some(n) = chunker.next_cut(&mut state, &block[at..]) {
                            cuts += 1;
                            at += n;
                        }
                    }
                    cuts
                });
            },
        );
    }
    group.finish();
}

fn blob_id(c: &mut Criterion) {
    let crypto = Crypto::new(&MasterKey::generate(true));
    let data = random_bytes(MIB, 3);
    let mut group = c.benchmark_group("blob_id");
    group.throughput(Throughput::Bytes(MIB as u64));
    group.bench_function("blake3_keyed_1MiB", |b| {
        b.iter(|| crypto.blob_id(&[black_box(&data[..])]));
    });
    group.finish();
}

fn compression(c: &mut Criterion) {
    let crypto = Crypto::new(&MasterKey::generate(true));
    let inputs = [
        ("text", Bytes::from(text_bytes(MIB, 4))),
        ("random", Bytes::from(random_bytes(MIB, 5))),
    ];
    let mut group = c.benchmark_group("blob_encode");
    group.throughput(Throughput::Bytes(MIB as u64));
    for level in [1, 3] {
        let mut encoder = BlobEncoder::new(crypto.clone(), Some(level));
        for (name, data) in &inputs {
            let id = crypto.blob_id(&[&data[..]]);
            let parts = [data.clone()];
            group.bench_with_input(
                BenchmarkId::new(format!("zstd{level}+seal"), name),
                &parts,
                |b, parts| {
                    b.iter(|| encoder.encode(id, BlobType::Data, black_box(parts)));
                },
            );
        }
    }
    group.finish();
}

fn encryption(c: &mut Criterion) {
    let crypto = Crypto::new(&MasterKey::generate(true));
    let plain = random_bytes(MIB, 6);
    let mut sealed = Vec::new();
    crypto.seal_into(&plain, &mut sealed);
    let mut group = c.benchmark_group("aes256gcm");
    group.throughput(Throughput::Bytes(MIB as u64));
    let mut out = Vec::with_capacity(MIB + 64);
    group.bench_function("seal_into_1MiB", |b| {
        b.iter(|| crypto.seal_into(black_box(&plain), &mut out));
    });
    group.bench_function("open_into_1MiB", |b| {
        b.iter(|| {
            crypto
                .open_into(black_box(&sealed), &mut out, &"bench blob")
                .expect("sealed by the same key")
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = micro;
    config = config();
    targets = chunking, blob_id, compression, encryption
}
criterion_main!(micro);
