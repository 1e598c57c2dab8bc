//! Upstream's `consistency_check`: one checksum of a whole file set, computed on the source
//! before a backup and on the restored files after a restore.
//!
//! The walk is deterministic (entries sorted by name bytes, depth first), unlike upstream's
//! `os.walk` order, so the same files give the same checksum on any host and file system:
//!
//! ```text
//! checksum = hex(SHA-256( for each entry below the top, in order:
//!     file:     "f" 0x00 path 0x00 SHA-256(content)
//!     folder:   "d" 0x00 path 0x00
//!     symlink:  "l" 0x00 path 0x00 target 0x00
//!     other:    "o" 0x00 path 0x00 ))
//! ```
//!
//! `path` is the entry's path below the top, names joined by `/`. When the top is a single
//! file it counts as a folder holding that file, which is how a restore lays it out. Only
//! names, kinds and contents count: modes, owners and times do not (upstream's do not either),
//! and excluded entries are not part of the set, since the [`Source`] leaves them out.

use sha2::{Digest, Sha256};

use super::{Source, SourceEntry};
use crate::error::{Error, Result};
use crate::repo::tree::NodeKind;

/// The checksum of the file set `source` yields, as 64 lowercase hex digits. Any entry that
/// cannot be listed or read fails it, naming the entry: a checksum of a partial set would
/// prove nothing.
pub fn consistency_checksum(source: &dyn Source) -> Result<String> {
    let mut h = Sha256::new();
    let root = source.root()?;
    let mut buf = vec![0u8; 1 << 20];
    if root.node.kind() == NodeKind::Dir {
        walk(source, &root, &[], &mut h, &mut buf)?;
    } else {
        entry(source, &root, root.node.name.clone(), &mut h, &mut buf)?;
    }
    Ok(hex::encode(h.finalize()))
}

fn walk(
    source: &dyn Source,
    dir: &SourceEntry,
    prefix: &[u8],
    h: &mut Sha256,
    buf: &mut [u8],
) -> Result<()> {
    let listing = source.list(dir)?;
    if let Some((path, why)) = listing.errors.first() {
        return Err(Error::io(
            format!("consistency checksum: {path}"),
            std::io::Error::other(why.clone()),
        ));
    }
    for e in &listing.entries {
        let mut path = prefix.to_vec();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&e.node.name);
        entry(source, e, path.clone(), h, buf)?;
        if e.node.kind() == NodeKind::Dir && e.descend {
            walk(source, e, &path, h, buf)?;
        }
    }
    Ok(())
}

fn entry(
    source: &dyn Source,
    e: &SourceEntry,
    path: Vec<u8>,
    h: &mut Sha256,
    buf: &mut [u8],
) -> Result<()> {
    let tag: &[u8] = match e.node.kind() {
        NodeKind::File => b"f",
        NodeKind::Dir => b"d",
        NodeKind::Symlink => b"l",
        _ => b"o",
    };
    h.update(tag);
    h.update([0]);
    h.update(&path);
    h.update([0]);
    match e.node.kind() {
        NodeKind::File => {
            let mut r = source.open(e)?;
            let mut fh = Sha256::new();
            let mut off = 0u64;
            loop {
                let n = r.read_at(buf, off)?;
                if n == 0 {
                    break;
                }
                fh.update(&buf[..n]);
                off += n as u64;
            }
            h.update(fh.finalize());
        }
        NodeKind::Symlink => {
            h.update(&e.node.target);
            h.update([0]);
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::fs::{FsOptions, FsSource};

    fn sum(p: &std::path::Path, excludes: &[&str]) -> String {
        let opts = FsOptions {
            excludes: excludes.iter().map(|s| s.to_string()).collect(),
            ..FsOptions::default()
        };
        consistency_checksum(&FsSource::new(p, &opts).unwrap()).unwrap()
    }

    #[test]
    fn same_files_same_sum_any_change_another() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
            std::fs::write(d.join("sub/x"), b"hello").unwrap();
            std::fs::write(d.join("y.log"), b"log").unwrap();
            std::os::unix::fs::symlink("sub/x", d.join("link")).unwrap();
        }
        let base = sum(&a, &[]);
        assert_eq!(base.len(), 64);
        assert_eq!(base, sum(&b, &[]), "a different folder with the same files");
        // Times and modes do not count; content, names, link targets and excludes do.
        std::fs::set_permissions(
            b.join("sub/x"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert_eq!(base, sum(&b, &[]));
        std::fs::write(b.join("sub/x"), b"hellO").unwrap();
        assert_ne!(base, sum(&b, &[]));
        std::fs::write(b.join("sub/x"), b"hello").unwrap();
        assert_eq!(base, sum(&b, &[]));
        std::fs::remove_file(b.join("link")).unwrap();
        std::os::unix::fs::symlink("sub/y", b.join("link")).unwrap();
        assert_ne!(base, sum(&b, &[]));
        // Excluded entries are not part of the set.
        let without_log = sum(&a, &["*.log"]);
        assert_ne!(base, without_log);
        std::fs::remove_file(a.join("y.log")).unwrap();
        assert_eq!(sum(&a, &[]), without_log);
        // An empty folder counts.
        std::fs::create_dir(a.join("empty")).unwrap();
        assert_ne!(sum(&a, &[]), without_log);
    }

    #[test]
    fn a_single_file_counts_as_a_folder_holding_it() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("restored")).unwrap();
        std::fs::write(t.path().join("restored/f.txt"), b"data").unwrap();
        std::fs::write(t.path().join("f.txt"), b"data").unwrap();
        assert_eq!(
            sum(&t.path().join("f.txt"), &[]),
            sum(&t.path().join("restored"), &[])
        );
    }
}
