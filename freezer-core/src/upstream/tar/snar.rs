//! GNU tar's `--listed-incremental` snapshot file, format 2: what upstream Freezer stores as a
//! level's `engine_metadata` (docs/UPSTREAM-TAR.md §2.2), parsed and written.
//!
//! ```text
//! GNU tar-1.34-2\n
//! <start sec>\0<start nsec>\0
//! then per directory:
//! <nfs 0|1>\0<mtime sec>\0<mtime nsec>\0<st_dev>\0<st_ino>\0<name>\0<code><entry>\0...\0
//! ```
//!
//! The start time is when the dump that wrote the file began: the next level dumps every
//! non-directory whose mtime or ctime is not older. The directory records name each directory
//! of the tree (`.`, `./a`, `./a/b`) with its inode (directory identity across levels) and its
//! dumpdir (`Y`, `N`, `D` entries). This module only converts bytes; it never touches the
//! file system.

use crate::error::{Error, Result};

/// The first line this writer puts in a snapshot (the GNU tar release whose output it matches).
pub const HEADER: &[u8] = b"GNU tar-1.34-2\n";

/// A time as GNU tar stores it: seconds since the epoch (negative before 1970) and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TarTime {
    /// Whole seconds since 1970-01-01 UTC.
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: u32,
}

impl TarTime {
    /// A time from seconds and nanoseconds.
    pub fn new(sec: i64, nsec: u32) -> Self {
        TarTime { sec, nsec }
    }

    /// The current time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        TarTime {
            sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsec: d.subsec_nanos(),
        }
    }
}

/// One entry of a dumpdir: a code byte and a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpdirEntry {
    /// `Y` (in this archive), `N` (unchanged, not in it), `D` (a subdirectory); archives may
    /// also carry `R`/`T`/`X` (renames), which a snapshot does not.
    pub code: u8,
    /// The name (relative to the directory for `Y`/`N`/`D`), raw bytes without NUL.
    pub name: Vec<u8>,
}

impl DumpdirEntry {
    /// An entry from a code and a name.
    pub fn new(code: u8, name: impl Into<Vec<u8>>) -> Self {
        DumpdirEntry {
            code,
            name: name.into(),
        }
    }
}

/// Encodes `entries` as a dumpdir: `<code><name>\0` each, then one more `\0`.
pub fn encode_dumpdir(entries: &[DumpdirEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.name.len() + 2).sum::<usize>() + 1);
    for e in entries {
        out.push(e.code);
        out.extend_from_slice(&e.name);
        out.push(0);
    }
    out.push(0);
    out
}

/// Decodes a dumpdir (the data of a `D` member): its entries, up to the empty one that ends it
/// (or the end of `data`). An entry without its NUL is an error.
pub fn decode_dumpdir(data: &[u8]) -> Result<Vec<DumpdirEntry>> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&code, _)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = rest.iter().position(|b| *b == 0).ok_or_else(|| {
            Error::corrupt(
                "a GNU tar dumpdir",
                "an entry is not terminated by a NUL byte",
            )
        })?;
        out.push(DumpdirEntry::new(code, &rest[1..end]));
        rest = &rest[end + 1..];
    }
    Ok(out)
}

/// One directory record of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDir {
    /// Whether the directory was on NFS (tar then ignores device numbers for it).
    pub nfs: bool,
    /// The directory's mtime when it was dumped.
    pub mtime: TarTime,
    /// Its `st_dev`.
    pub dev: u64,
    /// Its `st_ino`: what identifies it at the next level.
    pub ino: u64,
    /// Its name as tar saw it: `.` for the top, `./a/b` below (no trailing `/`).
    pub name: Vec<u8>,
    /// Its dumpdir at that dump.
    pub entries: Vec<DumpdirEntry>,
}

/// A parsed `--listed-incremental` snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// When the dump that wrote it started.
    pub start: TarTime,
    /// Its directories, in the file's order.
    pub dirs: Vec<SnapshotDir>,
}

fn bad(detail: impl std::fmt::Display) -> Error {
    Error::corrupt("a GNU tar snapshot file (engine_metadata)", detail)
}

struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The next NUL-terminated field, or `None` at the end of the data.
    fn next(&mut self) -> Result<Option<&'a [u8]>> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let end = self
            .rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| bad("the last field is not terminated by a NUL byte"))?;
        let f = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        Ok(Some(f))
    }

    fn need(&mut self, what: &str) -> Result<&'a [u8]> {
        self.next()?
            .ok_or_else(|| bad(format!("it ends where the {what} is expected")))
    }

    fn int(&mut self, what: &str) -> Result<i64> {
        let f = self.need(what)?;
        std::str::from_utf8(f)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| {
                bad(format!(
                    "the {what} is not a decimal number: {:?}",
                    String::from_utf8_lossy(f)
                ))
            })
    }

    fn uint(&mut self, what: &str) -> Result<u64> {
        let f = self.need(what)?;
        // tar writes dev_t/ino_t as signed when the type is; a negative value is its bits.
        let s = std::str::from_utf8(f).ok();
        s.and_then(|s| s.parse::<u64>().ok())
            .or_else(|| s.and_then(|s| s.parse::<i64>().ok()).map(|v| v as u64))
            .ok_or_else(|| {
                bad(format!(
                    "the {what} is not a decimal number: {:?}",
                    String::from_utf8_lossy(f)
                ))
            })
    }

    fn nsec(&mut self, what: &str) -> Result<u32> {
        let v = self.int(what)?;
        u32::try_from(v)
            .ok()
            .filter(|n| *n < 1_000_000_000)
            .ok_or_else(|| bad(format!("the {what} is out of range: {v}")))
    }
}

impl Snapshot {
    /// A snapshot of nothing, started at `start`.
    pub fn new(start: TarTime) -> Self {
        Snapshot {
            start,
            dirs: Vec::new(),
        }
    }

    /// Parses a snapshot file. An empty file is `None`: GNU tar reads it as "no snapshot" (a
    /// full dump). Formats 0 and 1 (tar before 1.16) are refused as unsupported; anything
    /// malformed is a [`Error::Corrupt`] naming what is wrong.
    pub fn parse(data: &[u8]) -> Result<Option<Snapshot>> {
        if data.is_empty() {
            return Ok(None);
        }
        let nl = data
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| bad("it has no header line (GNU tar-<version>-2)"))?;
        let head = &data[..nl];
        if !head.starts_with(b"GNU tar-") {
            return Err(bad(format!(
                "its header line is not GNU tar's: {:?}",
                String::from_utf8_lossy(&head[..head.len().min(40)])
            )));
        }
        if !head.ends_with(b"-2") {
            return Err(Error::unsupported(format!(
                "a GNU tar snapshot file of format {:?} (only format 2, GNU tar 1.16 and later)",
                String::from_utf8_lossy(&head[..head.len().min(40)])
            )));
        }
        let mut f = Fields {
            rest: &data[nl + 1..],
        };
        let start = TarTime::new(
            f.int("start time (seconds)")?,
            f.nsec("start time (nanoseconds)")?,
        );
        let mut dirs = Vec::new();
        while let Some(nfs) = f.next()? {
            let nfs = match nfs {
                b"0" => false,
                b"1" => true,
                other => {
                    return Err(bad(format!(
                        "directory record {}: the NFS flag is {:?}, not 0 or 1",
                        dirs.len() + 1,
                        String::from_utf8_lossy(other)
                    )));
                }
            };
            let mtime = TarTime::new(
                f.int("directory mtime (seconds)")?,
                f.nsec("directory mtime (nanoseconds)")?,
            );
            let dev = f.uint("device number")?;
            let ino = f.uint("inode number")?;
            let name = f.need("directory name")?.to_vec();
            let mut entries = Vec::new();
            loop {
                let e = f.need("end of the dumpdir (an empty field)")?;
                let Some((&code, name)) = e.split_first() else {
                    break;
                };
                entries.push(DumpdirEntry::new(code, name));
            }
            // The record's own end: one more empty field after the dumpdir's (GNU tar 1.34
            // writes both; a record never starts with an empty field, so it is unambiguous).
            if f.rest.first() == Some(&0) {
                f.rest = &f.rest[1..];
            }
            dirs.push(SnapshotDir {
                nfs,
                mtime,
                dev,
                ino,
                name,
                entries,
            });
        }
        Ok(Some(Snapshot { start, dirs }))
    }

    /// The file's bytes, as GNU tar 1.34 writes them ([`HEADER`] first).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self
                .dirs
                .iter()
                .map(|d| {
                    80 + d.name.len() + d.entries.iter().map(|e| e.name.len() + 2).sum::<usize>()
                })
                .sum::<usize>(),
        );
        out.extend_from_slice(HEADER);
        let num = |out: &mut Vec<u8>, v: &dyn std::fmt::Display| {
            out.extend_from_slice(v.to_string().as_bytes());
            out.push(0);
        };
        num(&mut out, &self.start.sec);
        num(&mut out, &self.start.nsec);
        for d in &self.dirs {
            num(&mut out, &u8::from(d.nfs));
            num(&mut out, &d.mtime.sec);
            num(&mut out, &d.mtime.nsec);
            num(&mut out, &d.dev);
            num(&mut out, &d.ino);
            out.extend_from_slice(&d.name);
            out.push(0);
            out.extend_from_slice(&encode_dumpdir(&d.entries));
            // The record's end, after the dumpdir's own.
            out.push(0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    fn sample() -> Snapshot {
        Snapshot {
            start: TarTime::new(1_796_528_978, 304_662_133),
            dirs: vec![
                SnapshotDir {
                    nfs: false,
                    mtime: TarTime::new(1_796_528_975, 341_574_623),
                    dev: 65024,
                    ino: 10_232_162,
                    name: b"./newdir/deeper".to_vec(),
                    entries: vec![DumpdirEntry::new(b'N', "m.txt")],
                },
                SnapshotDir {
                    nfs: true,
                    mtime: TarTime::new(-5, 0),
                    dev: 1,
                    ino: 2,
                    name: b".".to_vec(),
                    entries: vec![
                        DumpdirEntry::new(b'Y', "a.txt"),
                        DumpdirEntry::new(b'D', "newdir"),
                        DumpdirEntry::new(b'N', "sp ace \u{fc}.txt"),
                    ],
                },
                SnapshotDir {
                    nfs: false,
                    mtime: TarTime::new(0, 999_999_999),
                    dev: u64::MAX,
                    ino: 3,
                    name: b"./empty".to_vec(),
                    entries: vec![],
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_matches_the_documented_bytes() {
        let s = sample();
        let bytes = s.to_bytes();
        assert!(bytes.starts_with(
            b"GNU tar-1.34-2\n1796528978\x00304662133\x000\x001796528975\x00341574623\x0065024\x0010232162\x00./newdir/deeper\x00Nm.txt\x00\x00\x00"
        ));
        assert!(bytes.ends_with(b"./empty\0\0\0"));
        assert_eq!(Snapshot::parse(&bytes).unwrap().unwrap(), s);
        // Empty: no snapshot. Only a header and a time: no directories.
        assert_eq!(Snapshot::parse(b"").unwrap(), None);
        let bare = Snapshot::new(TarTime::new(7, 8));
        assert_eq!(bare.to_bytes(), b"GNU tar-1.34-2\n7\x008\0");
        assert_eq!(Snapshot::parse(&bare.to_bytes()).unwrap().unwrap(), bare);
    }

    #[test]
    fn dumpdirs_round_trip() {
        let e = vec![DumpdirEntry::new(b'Y', "a"), DumpdirEntry::new(b'D', "b c")];
        let b = encode_dumpdir(&e);
        assert_eq!(b, b"Ya\0Db c\0\0");
        assert_eq!(decode_dumpdir(&b).unwrap(), e);
        assert_eq!(decode_dumpdir(b"\0").unwrap(), vec![]);
        assert!(decode_dumpdir(b"Yab").is_err());
    }

    #[test]
    fn malformed_files_are_named_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"GNU tar-1.34-2\n", "ends where"),
            (b"garbage", "header line"),
            (b"tar-1.34-2\nx", "not GNU tar"),
            (b"GNU tar-1.34-2\nabc\x000\0", "not a decimal"),
            (b"GNU tar-1.34-2\n1\x002000000000\0", "out of range"),
            (b"GNU tar-1.34-2\n1\x000\x002\0", "NFS flag"),
            (
                b"GNU tar-1.34-2\n1\x000\x000\x001\x000\x001\x002\0.\0Ya\0",
                "ends where",
            ),
            (b"GNU tar-1.34-2\n1\x000", "NUL"),
        ];
        for (data, want) in cases {
            let e = Snapshot::parse(data).unwrap_err();
            assert!(e.to_string().contains(want), "{e} (want {want})");
            assert!(e.to_string().contains("engine_metadata"), "{e}");
        }
        let e = Snapshot::parse(b"GNU tar-1.15-1\n123\n").unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Unsupported, "{e}");
    }

    /// A snapshot written by the real GNU tar parses, names what tar saw, and writes back to
    /// the same bytes once its records are in the same order.
    #[test]
    fn reads_what_gnu_tar_writes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(src.join("empty")).unwrap();
        std::fs::write(src.join("a.txt"), "a").unwrap();
        std::fs::write(src.join("sub/b.txt"), "b").unwrap();
        std::fs::write(src.join("sub/deeper/\u{e9}t\u{e9}.txt"), "c").unwrap();
        let snar = dir.path().join("snar");
        let before = TarTime::now();
        let st = Command::new("tar")
            .current_dir(&src)
            .arg("--create")
            .arg("--no-check-device")
            .arg(format!("--listed-incremental={}", snar.display()))
            .args(["--file", "/dev/null", "."])
            .status()
            .expect("GNU tar (Debian package tar) is needed by this test");
        assert!(st.success());
        let bytes = std::fs::read(&snar).unwrap();
        let s = Snapshot::parse(&bytes).unwrap().unwrap();
        assert!(s.start >= TarTime::new(before.sec - 1, 0), "{:?}", s.start);
        let mut names: Vec<_> = s.dirs.iter().map(|d| d.name.clone()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                b".".to_vec(),
                b"./empty".to_vec(),
                b"./sub".to_vec(),
                b"./sub/deeper".to_vec()
            ]
        );
        let sub = s.dirs.iter().find(|d| d.name == b"./sub").unwrap();
        assert_eq!(sub.ino, std::fs::metadata(src.join("sub")).unwrap().ino());
        assert_eq!(
            sub.entries,
            vec![
                DumpdirEntry::new(b'Y', "b.txt"),
                DumpdirEntry::new(b'D', "deeper")
            ]
        );
        let deeper = s.dirs.iter().find(|d| d.name == b"./sub/deeper").unwrap();
        assert_eq!(deeper.entries[0].name, "\u{e9}t\u{e9}.txt".as_bytes());
        // Written back in tar's own record order: byte for byte (the header names 1.34, the
        // release this module writes as; tar here is 1.34 too, else only the first line differs).
        let back = s.to_bytes();
        let skip = |b: &[u8]| b[b.iter().position(|c| *c == b'\n').unwrap()..].to_vec();
        assert!(skip(&back) == skip(&bytes), "re-encoded snapshot differs");
    }
}
