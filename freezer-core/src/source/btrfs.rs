//! What changed in a file on btrfs since an earlier backup: the file system's own record.
//!
//! Btrfs never writes file data in place (unless a file is marked `NOCOW`): every write puts
//! the data in a new extent and records it in an extent item stamped with the transaction
//! that wrote it (its *generation*). `btrfs subvolume find-new SUBVOLUME GEN` lists the
//! extent items of generation `GEN` or later, and ends with the subvolume's current
//! generation (its "transid marker"). So:
//!
//! - before a backup reads an image, [`marker`] takes the current generation `G` (with the
//!   file system, subvolume and inode it belongs to); the snapshot records it. `find-new`
//!   commits the running transaction first, so `G` is the last committed one: whatever it
//!   and those before it hold was written before the backup began to read, and every later
//!   write is stamped `G + 1` or more;
//! - the next backup asks for the extent items of generation `G + 1` or later
//!   ([`changed_since`]): every byte range written since `G` was taken is among them. Ranges
//!   outside them hold what the earlier backup read, except where data was removed (a
//!   punched hole, a truncation), which lists no item: the engine sees those as holes in the
//!   file's data extents, which it compares too.
//!
//! - but an extent item cloned in (`cp --reflink`, which coreutils does by default on
//!   btrfs: copying an older image over this one keeps its inode) keeps the generation it had
//!   in the file it came from, older than `G`, and `find-new` does not list it. So the marker
//!   also holds a digest of the file's block map (logical block → physical block, from
//!   `filefrag`'s FIEMAP) over each window of the file (1 MiB, or more so that an image has
//!   at most [`MAX_WINDOWS`]); a window whose map now differs is changed too. A cloned range
//!   maps to the other file's blocks: its window differs. A block freed and reused at the
//!   same place (the same map, new data) carries a new generation: `find-new` lists it.
//!
//! Anything this module cannot vouch for gives `None` (read everything): another file
//! system, a `NOCOW` file (written in place: no new items), a missing `btrfs` program, a
//! caller without the privilege its search needs (`CAP_SYS_ADMIN`), another subvolume or
//! inode than the marker's, output it does not understand.
//!
//! The `btrfs` program of btrfs-progs does the search (its tree-search ioctl) and e2fsprogs'
//! `filefrag` reads the block map (FIEMAP), as `qemu-img` reads images: freezer-core has no
//! unsafe code for an ioctl of its own.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `statfs`'s `f_type` of btrfs.
const BTRFS_SUPER_MAGIC: u64 = 0x9123_683E;
/// The inode number of a subvolume's top folder.
const SUBVOLUME_ROOT_INODE: u64 = 256;
/// The most windows a marker's map digest has (16 hex digits each in the snapshot).
pub const MAX_WINDOWS: u64 = 2048;
const MIB: u64 = 1 << 20;

/// Where a file stood when a backup began to read it: enough to ask, next time, what was
/// written since. Recorded in the snapshot (`image_changes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// `statvfs`'s `f_fsid`: on btrfs, the file system's UUID mixed with the subvolume's id.
    pub fsid: u64,
    /// The file's inode number.
    pub inode: u64,
    /// The subvolume's generation when the backup began to read.
    pub generation: u64,
    /// The length of a window of [`Marker::map`] (a multiple of 1 MiB).
    pub window: u64,
    /// A digest of the file's block map over each window, 16 hex digits each.
    pub map: String,
}

impl Marker {
    /// The snapshot field that holds a marker.
    pub const FIELD: &'static str = "image_changes";

    /// This marker as the snapshot records it.
    pub fn to_extra(&self) -> serde_json::Value {
        serde_json::json!({ "btrfs": self })
    }

    /// The marker a snapshot recorded, if any.
    pub fn from_extra(extra: &BTreeMap<String, serde_json::Value>) -> Option<Marker> {
        let v = extra.get(Self::FIELD)?.get("btrfs")?;
        serde_json::from_value(v.clone()).ok()
    }
}

/// What [`marker`] needs to ask again: the file's identity and its subvolume's top folder.
#[derive(Clone, Debug)]
pub struct Tracked {
    fsid: u64,
    inode: u64,
    subvolume: PathBuf,
}

/// Whether `file` (at `path`) is on btrfs and written copy-on-write, so that its changes
/// can be found; `None` (with why, for the log) when not.
pub fn tracked(file: &File, path: &Path) -> std::result::Result<Tracked, String> {
    let fs = rustix::fs::fstatfs(file).map_err(|e| format!("statfs: {e}"))?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    if fs.f_type as u64 != BTRFS_SUPER_MAGIC {
        return Err("not on btrfs".into());
    }
    let flags = rustix::fs::ioctl_getflags(file).map_err(|e| format!("file flags: {e}"))?;
    if flags.contains(rustix::fs::IFlags::NOCOW) {
        return Err("the file is NOCOW (written in place)".into());
    }
    let vfs = rustix::fs::fstatvfs(file).map_err(|e| format!("statvfs: {e}"))?;
    let md = file.metadata().map_err(|e| format!("stat: {e}"))?;
    let full = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let subvolume = full
        .ancestors()
        .skip(1)
        .find(|d| {
            std::fs::metadata(d)
                .is_ok_and(|m| m.dev() == md.dev() && m.ino() == SUBVOLUME_ROOT_INODE)
        })
        .ok_or("its subvolume's top folder was not found")?
        .to_path_buf();
    Ok(Tracked {
        fsid: vfs.f_fsid,
        inode: md.ino(),
        subvolume,
    })
}

/// Extent items of `t`'s subvolume from generation `since` on: `(inode, offset, length)`,
/// and the subvolume's generation now.
async fn find_new(
    t: &Tracked,
    since: u64,
    env: &BTreeMap<String, String>,
    cancel: &crate::CancelToken,
) -> Result<Listing> {
    // The listing can be long (every extent written in the subvolume since): it goes to a
    // memory file, not through the tail a command's stdout keeps.
    let out = rustix::fs::memfd_create("find-new", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| Error::io("memfd_create", e.into()))?;
    let mut out = File::from(out);
    let words = vec![
        "btrfs".to_string(),
        "subvolume".into(),
        "find-new".into(),
        t.subvolume.to_string_lossy().into_owned(),
        since.to_string(),
    ];
    let stdout = out
        .try_clone()
        .map_err(|e| Error::io("btrfs find-new", e))?;
    crate::process::Child::spawn(
        &words,
        env,
        std::process::Stdio::null(),
        std::process::Stdio::from(stdout),
    )?
    .wait(cancel)
    .await?;
    out.rewind().map_err(|e| Error::io("btrfs find-new", e))?;
    parse_find_new(std::io::BufReader::new(out))
}

/// Extent items `(inode, offset, length)` and the subvolume's generation.
type Listing = (Vec<(u64, u64, u64)>, u64);

/// Parses `btrfs subvolume find-new`'s output.
fn parse_find_new(r: impl BufRead) -> Result<Listing> {
    let bad =
        |l: &str| Error::corrupt("btrfs subvolume find-new", format!("unexpected line {l:?}"));
    let mut items = Vec::new();
    for line in r.lines() {
        let line = line.map_err(|e| Error::io("btrfs find-new", e))?;
        if let Some(g) = line.strip_prefix("transid marker was ") {
            let g = g.trim().parse().map_err(|_| bad(&line))?;
            return Ok((items, g));
        }
        // inode 257 file offset 0 len 4096 disk start 13631488 offset 0 gen 7 flags NONE NAME
        let w: Vec<&str> = line.splitn(8, ' ').collect();
        match w.as_slice() {
            ["inode", ino, "file", "offset", off, "len", len, _] => {
                let n = |s: &str| s.parse::<u64>().map_err(|_| bad(&line));
                items.push((n(ino)?, n(off)?, n(len)?));
            }
            _ => return Err(bad(&line)),
        }
    }
    Err(Error::corrupt(
        "btrfs subvolume find-new",
        "no transid marker at the end",
    ))
}

/// The marker of `t` (open as `file`) now: its subvolume's current generation and the
/// digest of its block map.
pub async fn marker(
    t: &Tracked,
    file: &File,
    env: &BTreeMap<String, String>,
    cancel: &crate::CancelToken,
) -> Result<Marker> {
    same_file(t, file)?;
    // No item is that new: only the marker is printed (`btrfs` takes at most i64::MAX).
    let (_, generation) = find_new(t, i64::MAX as u64, env, cancel).await?;
    let size = file.metadata().map_err(|e| Error::io("fstat", e))?.len();
    let window = size.div_ceil(MAX_WINDOWS).next_multiple_of(MIB).max(MIB);
    let windows = size.div_ceil(window);
    let sums = map_digest(&block_map(file, env, cancel).await?, window, windows);
    Ok(Marker {
        fsid: t.fsid,
        inode: t.inode,
        generation,
        window,
        map: sums.iter().map(|s| format!("{s:016x}")).collect(),
    })
}

/// The byte ranges of `t`'s file (open as `file`) written since `parent` was taken, sorted
/// and merged; `None` when `parent` is another file's (or another subvolume's) or holds no
/// map digest.
pub async fn changed_since(
    t: &Tracked,
    file: &File,
    parent: &Marker,
    env: &BTreeMap<String, String>,
    cancel: &crate::CancelToken,
) -> Result<Option<Vec<(u64, u64)>>> {
    same_file(t, file)?;
    if (parent.fsid, parent.inode) != (t.fsid, t.inode) || parent.window == 0 {
        return Ok(None);
    }
    let Some(before) = parse_digest(&parent.map) else {
        return Ok(None);
    };
    let since = parent.generation.saturating_add(1);
    let (items, _) = find_new(t, since, env, cancel).await?;
    let mut ranges: Vec<(u64, u64)> = items
        .into_iter()
        .filter(|&(ino, _, len)| ino == t.inode && len > 0)
        .map(|(_, off, len)| (off, off.saturating_add(len)))
        .collect();
    // Windows whose block map moved (a clone), and whatever lies past the parent's windows.
    let windows = before.len() as u64;
    let now = map_digest(&block_map(file, env, cancel).await?, parent.window, windows);
    for (w, (a, b)) in before.iter().zip(&now).enumerate() {
        if a != b {
            let start = w as u64 * parent.window;
            ranges.push((start, start + parent.window));
        }
    }
    ranges.push((windows * parent.window, u64::MAX));
    Ok(Some(merge(&mut ranges)))
}

/// Refuses a `file` that is not the tracked one (the path now names another).
fn same_file(t: &Tracked, file: &File) -> Result<()> {
    let md = file.metadata().map_err(|e| Error::io("fstat", e))?;
    if md.ino() != t.inode {
        return Err(Error::bad_input(
            "btrfs change tracking",
            "the file read is not the one tracked (replaced meanwhile)",
        ));
    }
    Ok(())
}

/// `file`'s block map, `(logical, physical, length)` in bytes, from `filefrag -v -s`
/// (FIEMAP, after writing out what is cached) on the open file itself.
async fn block_map(
    file: &File,
    env: &BTreeMap<String, String>,
    cancel: &crate::CancelToken,
) -> Result<Vec<(u64, u64, u64)>> {
    let out = rustix::fs::memfd_create("filefrag", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| Error::io("memfd_create", e.into()))?;
    let mut out = File::from(out);
    let words: Vec<String> = ["filefrag", "-v", "-s", "/dev/stdin"]
        .map(String::from)
        .to_vec();
    let stdin = file.try_clone().map_err(|e| Error::io("filefrag", e))?;
    let stdout = out.try_clone().map_err(|e| Error::io("filefrag", e))?;
    crate::process::Child::spawn(
        &words,
        env,
        std::process::Stdio::from(stdin),
        std::process::Stdio::from(stdout),
    )?
    .wait(cancel)
    .await?;
    out.rewind().map_err(|e| Error::io("filefrag", e))?;
    parse_filefrag(std::io::BufReader::new(out))
}

/// Parses `filefrag -v`'s output: `(logical, physical, length)` in bytes. An extent whose
/// place is not known yet (`unknown_loc`, `delalloc`) is an error: its map cannot vouch.
fn parse_filefrag(r: impl BufRead) -> Result<Vec<(u64, u64, u64)>> {
    let bad = |l: &str| Error::corrupt("filefrag", format!("unexpected line {l:?}"));
    let mut unit = None;
    let mut extents = Vec::new();
    for line in r.lines() {
        let line = line.map_err(|e| Error::io("filefrag", e))?;
        // File size of /dev/stdin is 3145728 (768 blocks of 4096 bytes)
        if line.starts_with("File size of ") {
            let u = line
                .rsplit_once(" of ")
                .and_then(|(_, t)| t.strip_suffix(" bytes)"))
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|&u| u > 0)
                .ok_or_else(|| bad(&line))?;
            unit = Some(u);
            continue;
        }
        //    0:        0..     767:       3584..      4351:    768:             last,eof
        let f: Vec<&str> = line.split(':').map(str::trim).collect();
        if f.len() < 5 || f[0].is_empty() || !f[0].bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let unit = unit.ok_or_else(|| bad(&line))?;
        let flags = f.last().copied().unwrap_or_default();
        if flags.contains("unknown_loc") || flags.contains("delalloc") {
            return Err(Error::corrupt(
                "filefrag",
                format!("an extent without a place yet: {line:?}"),
            ));
        }
        let start = |s: &str| {
            s.split("..")
                .next()
                .and_then(|n| n.trim().parse::<u64>().ok())
        };
        let (Some(l), Some(p), Ok(n)) = (start(f[1]), start(f[2]), f[3].parse::<u64>()) else {
            return Err(bad(&line));
        };
        extents.push((l * unit, p * unit, n * unit));
    }
    if unit.is_none() {
        return Err(Error::corrupt("filefrag", "no \"File size of\" line"));
    }
    Ok(extents)
}

/// Per window of `window` bytes (the first `windows` of them), a digest of which physical
/// block each 4 KiB block maps to: the wrapping sum of a mix of both addresses.
fn map_digest(extents: &[(u64, u64, u64)], window: u64, windows: u64) -> Vec<u64> {
    const BLOCK: u64 = 4096;
    let mut sums = vec![0u64; windows as usize];
    for &(l, p, n) in extents {
        let mut at = 0;
        while at < n {
            let w = (l + at) / window;
            if w >= windows {
                break;
            }
            sums[w as usize] = sums[w as usize].wrapping_add(mix(l + at, p + at));
            at += BLOCK;
        }
    }
    sums
}

/// Two addresses mixed into one 64-bit value (splitmix64's finalizer, twice).
fn mix(logical: u64, physical: u64) -> u64 {
    fn fin(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fin(fin(logical)
        .wrapping_add(physical)
        .wrapping_add(0x9e37_79b9_7f4a_7c15))
}

/// [`Marker::map`] back into its sums; `None` when it is not 16 hex digits per window.
fn parse_digest(map: &str) -> Option<Vec<u64>> {
    if !map.len().is_multiple_of(16) || !map.is_ascii() {
        return None;
    }
    (0..map.len())
        .step_by(16)
        .map(|i| u64::from_str_radix(&map[i..i + 16], 16).ok())
        .collect()
}

/// Sorts `(start, end)` ranges and joins those that overlap or touch, as `(offset, length)`.
fn merge(ranges: &mut [(u64, u64)]) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(s, e) in ranges.iter() {
        match out.last_mut() {
            Some((ls, ll)) if s <= *ls + *ll => *ll = (*ll).max(e - *ls),
            _ => out.push((s, e - s)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_new_output_is_parsed() {
        let out = "inode 257 file offset 0 len 4096 disk start 1 offset 0 gen 7 flags NONE a b\n\
                   inode 258 file offset 8192 len 10 disk start 0 offset 0 gen 8 flags INLINE c\n\
                   transid marker was 9\n";
        let (items, g) = parse_find_new(out.as_bytes()).unwrap();
        assert_eq!(items, vec![(257, 0, 4096), (258, 8192, 10)]);
        assert_eq!(g, 9);
        assert!(parse_find_new("inode x file offset\ntransid marker was 1\n".as_bytes()).is_err());
        assert!(parse_find_new("".as_bytes()).is_err());
    }

    #[test]
    fn filefrag_output_is_parsed() {
        let out = "Filesystem type is: 9123683e\n\
                   File size of /dev/stdin is 3145728 (768 blocks of 4096 bytes)\n \
                   ext:     logical_offset:        physical_offset: length:   expected: flags:\n   \
                   0:        0..     255:       3584..      3839:    256:             shared\n   \
                   1:      512..     767:       9000..      9255:    256:       3840: last,encoded,eof\n\
                   /dev/stdin: 2 extents found\n";
        assert_eq!(
            parse_filefrag(out.as_bytes()).unwrap(),
            vec![(0, 3584 * 4096, MIB), (2 * MIB, 9000 * 4096, MIB)]
        );
        let late = out.replace("shared", "unknown_loc,delalloc");
        assert!(parse_filefrag(late.as_bytes()).is_err());
        assert!(parse_filefrag("   0:  x..  1:  2..3:  1:  \n".as_bytes()).is_err());
        assert!(parse_filefrag("".as_bytes()).is_err());
    }

    #[test]
    fn a_moved_block_changes_its_windows_digest_only() {
        let map = vec![(0, 1 << 30, 3 * MIB), (4 * MIB, 1 << 31, MIB)];
        let d = map_digest(&map, MIB, 5);
        assert_eq!(d, map_digest(&map, MIB, 5), "the same map, the same digest");
        assert_eq!(d[3], 0, "a hole");
        // One block of the second window now maps elsewhere (a range cloned in).
        let moved = vec![
            (0, 1 << 30, MIB + 4096),
            (MIB + 4096, 7 << 30, 4096),
            (MIB + 8192, (1 << 30) + MIB + 8192, 2 * MIB - 8192),
            (4 * MIB, 1 << 31, MIB),
        ];
        let e = map_digest(&moved, MIB, 5);
        assert_ne!(d[1], e[1]);
        assert_eq!((d[0], d[2], d[3], d[4]), (e[0], e[2], e[3], e[4]));
        // The same blocks in other windows (the map shifted by a block) differ too.
        let shifted = vec![(4096, 1 << 30, 3 * MIB - 4096), (4 * MIB, 1 << 31, MIB)];
        assert_ne!(map_digest(&shifted, MIB, 5)[0], d[0]);
        let hex: String = d.iter().map(|s| format!("{s:016x}")).collect();
        assert_eq!(parse_digest(&hex), Some(d));
        assert_eq!(parse_digest("abc"), None);
        assert_eq!(parse_digest("zzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn ranges_are_merged() {
        let mut r = vec![(10, 20), (0, 5), (5, 8), (15, 30), (40, 41)];
        assert_eq!(merge(&mut r), vec![(0, 8), (10, 20), (40, 1)]);
    }

    #[test]
    fn markers_round_trip_through_snapshot_fields() {
        let m = Marker {
            fsid: u64::MAX,
            inode: 257,
            generation: 9,
            window: MIB,
            map: "00000000000000ff".into(),
        };
        let extra = BTreeMap::from([(Marker::FIELD.to_string(), m.to_extra())]);
        assert_eq!(Marker::from_extra(&extra), Some(m));
        assert_eq!(Marker::from_extra(&BTreeMap::new()), None);
    }
}
