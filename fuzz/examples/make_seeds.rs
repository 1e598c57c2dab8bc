//! Writes valid seed inputs for every fuzz target into `corpus/<target>/`, made with
//! freezer-core's own encoders, so that fuzzing starts from well-formed objects and mutates
//! them rather than having to discover each format's magic and layout.
//!
//! Run from anywhere: `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`.
//! An optional argument names another output folder. Seeds are named `seed-*` and are
//! overwritten; whatever else is in the corpus (inputs found by fuzzing) is left alone.
//! Keys and ids are random, so the bytes differ from run to run; the shapes do not. Every seed
//! is decoded before it is written, so a seed that its decoder refuses stops the program.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use freezer_core::repo::config::{
    Config, DEFAULT_PACK_SIZE, Encryption, FORMAT_NAME, FORMAT_VERSION, KeyFile,
};
use freezer_core::repo::index::IndexFile;
use freezer_core::repo::object;
use freezer_core::repo::pack::{BlobEncoder, BlobType, FinishedPack, PackWriter, decode_header};
use freezer_core::repo::snapshot::{SNAPSHOT_VERSION, Snapshot, SnapshotStats};
use freezer_core::repo::tree::{FLAG_CHANGED_WHILE_READ, Node, NodeKind, Tree};
use freezer_core::{ChunkerParams, Crypto, Id, KdfParams, MasterKey, Passphrase, Timestamp};

/// The passphrase the `key_file` target unwraps with.
const PASSPHRASE: &str = "x";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    // The fuzz targets use an unencrypted repository, so headers and objects are parsed as
    // they are; the seeds must be made the same way.
    let plain_master = MasterKey::generate(false);
    let crypto = Crypto::new(&plain_master);
    let mut seeds = Seeds {
        out,
        crypto: crypto.clone(),
        count: 0,
    };

    // config
    let encrypted_master = MasterKey::generate(true);
    seeds.write(
        "config",
        "seed-unencrypted",
        &config(Some(plain_master.clone()), plain_master.repo_id).encode(),
    )?;
    seeds.write(
        "config",
        "seed-encrypted",
        &config(None, encrypted_master.repo_id).encode(),
    )?;

    // key_file
    let pass = Passphrase::new(PASSPHRASE)?;
    for (name, master) in [
        ("seed-encrypted-master", &encrypted_master),
        ("seed-plain-master", &plain_master),
    ] {
        let key = KeyFile::wrap(master, &pass, KdfParams::insecure_fast(), "host", "user")?;
        seeds.write("key_file", name, &key.encode())?;
    }

    // tree (also a blob of the packs below)
    let tree = every_kind_tree();
    seeds.write("tree", "seed-every-kind", &tree.encode())?;
    seeds.write("tree", "seed-empty", &Tree::default().encode())?;
    seeds.write(
        "tree",
        "seed-one-plain-file",
        &Tree {
            nodes: vec![Node {
                name: b"f".to_vec(),
                kind: Some(NodeKind::File),
                mode: 0o600,
                size: 3,
                content: vec![Id([7; 32])],
                ..Node::default()
            }],
        }
        .encode(),
    )?;

    // pack_header: a control byte (see fuzz_targets/pack_header.rs), then the pack or its tail
    let empty = PackWriter::default().finish(&crypto);
    let one = pack(
        &crypto,
        &[(BlobType::Data, Bytes::from_static(b"a small blob"))],
    );
    let three = pack(
        &crypto,
        &[
            (BlobType::Data, Bytes::from("backup restore ".repeat(200))),
            (BlobType::Data, noise(3000)),
            (BlobType::Tree, Bytes::from(tree.encode())),
        ],
    );
    for (name, p) in [
        ("seed-empty-pack", &empty),
        ("seed-one-blob", &one),
        ("seed-three-blobs", &three),
    ] {
        let bytes = p.payload.to_bytes();
        seeds.write("pack_header", name, &[&[0x00][..], &bytes].concat())?;
    }
    let bytes = three.payload.to_bytes();
    let blobs_end: u32 = three.blobs.iter().map(|b| b.length).sum();
    let tail = &bytes[blobs_end as usize..];
    let size = (bytes.len() as u64).to_le_bytes();
    seeds.write(
        "pack_header",
        "seed-three-blobs-tail-only",
        &[&[0xe0][..], &size, tail].concat(),
    )?;

    // index
    let index = IndexFile {
        packs: vec![
            (one.id, one.blobs.clone()),
            (three.id, three.blobs.clone()),
            (empty.id, vec![]),
        ],
    };
    seeds.write("index", "seed-three-packs", &index.encode())?;
    seeds.write("index", "seed-empty", &IndexFile::default().encode())?;

    // snapshot
    let snapshot = snapshot(&crypto, &tree);
    seeds.write("snapshot", "seed-full", &snapshot.encode())?;
    let mut minimal = snapshot.clone();
    minimal.parent = None;
    minimal.excludes.clear();
    minimal.warnings.clear();
    minimal.extra.clear();
    minimal.stats = SnapshotStats::default();
    seeds.write("snapshot", "seed-minimal", &minimal.encode())?;

    // object: small objects, stored raw (short) or as a zstd frame (long enough to shrink)
    let long = "a line of a lock or a snapshot\n".repeat(40);
    for (name, plain) in [
        ("seed-empty", Vec::new()),
        ("seed-short-raw", b"short".to_vec()),
        ("seed-text-zstd", long.into_bytes()),
        ("seed-index-raw", index.encode()),
        ("seed-snapshot-zstd", snapshot.encode()),
    ] {
        seeds.write("object", name, &object::encode(&crypto, &plain))?;
    }

    println!("wrote {} seeds under {}", seeds.count, seeds.out.display());
    Ok(())
}

/// Where seeds go, and how many were written.
struct Seeds {
    out: PathBuf,
    crypto: Crypto,
    count: usize,
}

impl Seeds {
    /// Checks that `data` is accepted by `target`'s decoder, then writes it.
    fn write(
        &mut self,
        target: &str,
        name: &str,
        data: &[u8],
    ) -> Result<(), Box<dyn std::error::Error>> {
        let what = format!("seed {target}/{name}");
        match target {
            "config" => {
                Config::decode(data, &what)?;
            }
            "key_file" => {
                let key = KeyFile::decode(data, &what)?;
                key.unwrap(&Passphrase::new(PASSPHRASE)?, &what)?
                    .ok_or(format!("{what}: the passphrase does not open it"))?;
            }
            "pack_header" => {
                let (tail, size) = match data.split_first() {
                    Some((0x00, pack)) => (pack, pack.len() as u64),
                    Some((0xe0, rest)) => {
                        let (size, tail) = rest.split_first_chunk::<8>().ok_or("too short")?;
                        (tail, u64::from_le_bytes(*size))
                    }
                    _ => return Err(format!("{what}: unexpected control byte").into()),
                };
                decode_header(&self.crypto, tail, size, &what)?;
            }
            "index" => {
                IndexFile::decode(data, &what)?;
            }
            "tree" => {
                Tree::decode(data, &what)?;
            }
            "snapshot" => {
                Snapshot::decode(data, &what)?;
            }
            "object" => {
                object::decode(&self.crypto, data, &what)?;
            }
            _ => return Err(format!("no fuzz target {target}").into()),
        }
        let dir = self.out.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), data)?;
        self.count += 1;
        Ok(())
    }
}

fn config(master: Option<MasterKey>, id: Id) -> Config {
    Config {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        id,
        created: freezer_core::now_rfc3339(),
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

/// A directory holding one entry of every kind, with every optional field in use.
fn every_kind_tree() -> Tree {
    let node = |name: &str, kind| Node {
        name: name.as_bytes().to_vec(),
        kind: Some(kind),
        mode: 0o644,
        uid: 1000,
        gid: 100,
        mtime: 1_700_000_000,
        mtime_ns: 123_456_789,
        ctime: -5,
        ctime_ns: 999_999_999,
        inode: 4242,
        device: 0x801,
        links: 1,
        ..Node::default()
    };
    Tree {
        nodes: vec![
            Node {
                size: 1 << 20,
                flags: FLAG_CHANGED_WHILE_READ,
                content: vec![Id([1; 32]), Id([2; 32])],
                extents: vec![(0, 4096), (65536, 8192)],
                xattrs: vec![
                    (b"user.a".to_vec(), b"\x00\xff".to_vec()),
                    (b"user.b".to_vec(), Vec::new()),
                ],
                ..node("a-sparse-file", NodeKind::File)
            },
            Node {
                rdev: 0x0501,
                ..node("blockdev", NodeKind::BlockDev)
            },
            Node {
                rdev: 0x0103,
                ..node("chardev", NodeKind::CharDev)
            },
            Node {
                mode: 0o1777,
                links: 2,
                subtree: Some(Id([3; 32])),
                ..node("dir", NodeKind::Dir)
            },
            node("fifo", NodeKind::Fifo),
            Node {
                target: b"../elsewhere".to_vec(),
                ..node("link", NodeKind::Symlink)
            },
            node("socket", NodeKind::Socket),
            Node {
                size: 5,
                content: vec![Id([4; 32])],
                ..node("\u{fc} \u{2713}", NodeKind::File)
            },
        ],
    }
}

/// A pack of `blobs`, compressed where that pays.
fn pack(crypto: &Crypto, blobs: &[(BlobType, Bytes)]) -> FinishedPack {
    let mut encoder = BlobEncoder::new(crypto.clone(), Some(3));
    let mut writer = PackWriter::default();
    for (kind, data) in blobs {
        let id = crypto.blob_id(&[data]);
        writer.add(&encoder.encode(id, *kind, std::slice::from_ref(data)));
    }
    writer.finish(crypto)
}

/// Incompressible bytes (xorshift), so that a blob is stored uncompressed.
fn noise(len: usize) -> Bytes {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect::<Vec<_>>()
        .into()
}

fn snapshot(crypto: &Crypto, tree: &Tree) -> Snapshot {
    let time = Timestamp::from_second(1_700_000_000).expect("a valid time");
    Snapshot {
        version: SNAPSHOT_VERSION,
        time,
        time_stamp: time.as_second(),
        hostname: "host".into(),
        backup_name: "home".into(),
        mode: "fs".into(),
        level: 1,
        parent: Some(Id([9; 32])),
        path_to_backup: "/home".into(),
        tree: crypto.blob_id(&[tree.encode()]),
        excludes: vec!["*.tmp".into(), "/home/*/.cache".into()],
        program: "freezer-rs fuzz seeds".into(),
        username: "user".into(),
        stats: SnapshotStats {
            files: 3,
            dirs: 1,
            others: 4,
            bytes: 1 << 20,
            bytes_read: 4096,
            bytes_added: 2048,
            blobs_added: 2,
            files_new: 1,
            files_changed: 1,
            files_unmodified: 1,
            files_changed_while_read: 1,
            errors: 0,
            duration_secs: 1.25,
        },
        warnings: vec!["/home/user/log: changed while read".into()],
        consistency_checksum: None,
        command: None,
        extra: BTreeMap::from([("future_field".to_string(), serde_json::json!({"n": 5}))]),
    }
}
