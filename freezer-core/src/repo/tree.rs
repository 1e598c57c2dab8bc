//! Trees: one blob per directory, listing its entries sorted by name.
//!
//! ```text
//! tree = "FRZT" || 0x01 || uvar(n) || n * node
//! node = bytes(name) || u8 kind || uvar(mode) || uvar(uid) || uvar(gid)
//!        || ivar(mtime_s) || uvar(mtime_ns) || ivar(ctime_s) || uvar(ctime_ns)
//!        || uvar(inode) || uvar(device) || uvar(links) || uvar(size) || uvar(flags)
//!        || kind-specific || uvar(nx) || nx * (bytes(xattr name) || bytes(xattr value))
//! file:    uvar(nc) || nc * id[32] || uvar(ne) || ne * (uvar(offset) || uvar(length))
//! dir:     id[32] (the subtree)
//! symlink: bytes(target)
//! chardev, blockdev: uvar(rdev)
//! ```
//!
//! Decoding refuses a name that is empty, `.`, `..`, or holds `/` or NUL, and names that are
//! not strictly ascending: a tree can never steer a restore outside its target.

use super::wire::{Put, Reader};
use crate::error::Result;
use crate::id::Id;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDev,
    /// A block device.
    BlockDev,
    /// A Unix socket (recorded, not restored).
    Socket,
}

impl NodeKind {
    fn code(self) -> u8 {
        match self {
            NodeKind::File => 1,
            NodeKind::Dir => 2,
            NodeKind::Symlink => 3,
            NodeKind::Fifo => 4,
            NodeKind::CharDev => 5,
            NodeKind::BlockDev => 6,
            NodeKind::Socket => 7,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => NodeKind::File,
            2 => NodeKind::Dir,
            3 => NodeKind::Symlink,
            4 => NodeKind::Fifo,
            5 => NodeKind::CharDev,
            6 => NodeKind::BlockDev,
            7 => NodeKind::Socket,
            _ => return None,
        })
    }
}

/// The file changed while it was read; its content may be torn.
pub const FLAG_CHANGED_WHILE_READ: u64 = 1;

/// One entry of a directory.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Node {
    /// The entry's name: raw bytes, as the file system has them.
    pub name: Vec<u8>,
    /// File, directory, link...
    pub kind: Option<NodeKind>,
    /// Permission bits, with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_ns: u32,
    /// Status-change time, seconds (used to recognise unchanged files).
    pub ctime: i64,
    /// Nanoseconds of the status-change time.
    pub ctime_ns: u32,
    /// Inode number at backup time.
    pub inode: u64,
    /// Device number at backup time.
    pub device: u64,
    /// Hard link count at backup time.
    pub links: u64,
    /// Size in bytes (files) or 0.
    pub size: u64,
    /// `FLAG_*` bits.
    pub flags: u64,
    /// File content: the chunks, in order.
    pub content: Vec<Id>,
    /// For sparse files, the data extents `(offset, length)` the chunks fill, in order; empty
    /// means one extent covering the whole file.
    pub extents: Vec<(u64, u64)>,
    /// For directories, the subtree.
    pub subtree: Option<Id>,
    /// For symlinks, the target.
    pub target: Vec<u8>,
    /// For devices, the device number.
    pub rdev: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Node {
    /// The kind (every decoded node has one).
    pub fn kind(&self) -> NodeKind {
        self.kind.unwrap_or(NodeKind::File)
    }

    /// The name, lossily as UTF-8, for messages.
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Whether `name` may be a directory entry.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// A directory: its entries, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// The entries.
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Encodes the plaintext of a tree blob.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.nodes.len() * 96);
        out.extend_from_slice(b"FRZT");
        out.put_u8(1);
        out.put_uvar(self.nodes.len() as u64);
        for n in &self.nodes {
            out.put_bytes(&n.name);
            out.put_u8(n.kind().code());
            out.put_uvar(u64::from(n.mode));
            out.put_uvar(u64::from(n.uid));
            out.put_uvar(u64::from(n.gid));
            out.put_ivar(n.mtime);
            out.put_uvar(u64::from(n.mtime_ns));
            out.put_ivar(n.ctime);
            out.put_uvar(u64::from(n.ctime_ns));
            out.put_uvar(n.inode);
            out.put_uvar(n.device);
            out.put_uvar(n.links);
            out.put_uvar(n.size);
            out.put_uvar(n.flags);
            match n.kind() {
                NodeKind::File => {
                    out.put_uvar(n.content.len() as u64);
                    for id in &n.content {
                        out.put_id(id);
                    }
                    out.put_uvar(n.extents.len() as u64);
                    for (o, l) in &n.extents {
                        out.put_uvar(*o);
                        out.put_uvar(*l);
                    }
                }
                NodeKind::Dir => out.put_id(&n.subtree.unwrap_or_default()),
                NodeKind::Symlink => out.put_bytes(&n.target),
                NodeKind::CharDev | NodeKind::BlockDev => out.put_uvar(n.rdev),
                NodeKind::Fifo | NodeKind::Socket => {}
            }
            out.put_uvar(n.xattrs.len() as u64);
            for (k, v) in &n.xattrs {
                out.put_bytes(k);
                out.put_bytes(v);
            }
        }
        out
    }

    /// Decodes and validates the plaintext of a tree blob.
    pub fn decode(data: &[u8], what: &str) -> Result<Tree> {
        let mut r = Reader::new(data, what);
        r.expect_magic(b"FRZT", 1)?;
        let count = r.count(16)?;
        // A node takes at least 16 bytes encoded but ~240 in memory: do not trust the count.
        let mut nodes: Vec<Node> = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let name = r.bytes()?.to_vec();
            if !valid_name(&name) {
                return Err(r.err(format!(
                    "invalid entry name {:?}",
                    String::from_utf8_lossy(&name)
                )));
            }
            if let Some(prev) = nodes.last()
                && prev.name >= name
            {
                return Err(r.err(format!(
                    "entry {:?} is out of order or repeated",
                    String::from_utf8_lossy(&name)
                )));
            }
            let code = r.u8()?;
            let kind = NodeKind::from_code(code)
                .ok_or_else(|| r.err(format!("unknown entry kind {code}")))?;
            let u32v = |r: &mut Reader<'_>| -> Result<u32> {
                let v = r.uvar()?;
                u32::try_from(v).map_err(|_| r.err(format!("{v} exceeds 32 bits")))
            };
            let mut n = Node {
                name,
                kind: Some(kind),
                mode: u32v(&mut r)?,
                uid: u32v(&mut r)?,
                gid: u32v(&mut r)?,
                mtime: r.ivar()?,
                mtime_ns: u32v(&mut r)?,
                ctime: r.ivar()?,
                ctime_ns: u32v(&mut r)?,
                inode: r.uvar()?,
                device: r.uvar()?,
                links: r.uvar()?,
                size: r.uvar()?,
                flags: r.uvar()?,
                ..Node::default()
            };
            if n.mode > 0o7777 || n.mtime_ns >= 1_000_000_000 || n.ctime_ns >= 1_000_000_000 {
                return Err(r.err("mode or time out of range"));
            }
            match kind {
                NodeKind::File => {
                    let nc = r.count(32)?;
                    n.content = (0..nc).map(|_| r.id()).collect::<Result<_>>()?;
                    let ne = r.count(2)?;
                    n.extents = (0..ne)
                        .map(|_| Ok((r.uvar()?, r.uvar()?)))
                        .collect::<Result<_>>()?;
                    let mut end = 0u64;
                    for &(o, l) in &n.extents {
                        if o < end || o.checked_add(l).is_none_or(|e| e > n.size) {
                            return Err(r.err("sparse extents overlap or exceed the file"));
                        }
                        end = o + l;
                    }
                }
                NodeKind::Dir => n.subtree = Some(r.id()?),
                NodeKind::Symlink => n.target = r.bytes()?.to_vec(),
                NodeKind::CharDev | NodeKind::BlockDev => n.rdev = r.uvar()?,
                NodeKind::Fifo | NodeKind::Socket => {}
            }
            let nx = r.count(2)?;
            for _ in 0..nx {
                let k = r.bytes()?.to_vec();
                let v = r.bytes()?.to_vec();
                if n.xattrs.last().is_some_and(|(prev, _)| *prev >= k) {
                    return Err(r.err("extended attributes out of order or repeated"));
                }
                n.xattrs.push((k, v));
            }
            nodes.push(n);
        }
        r.finish()?;
        Ok(Tree { nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: Some(NodeKind::File),
            mode: 0o644,
            mtime: -5,
            mtime_ns: 7,
            size: 100,
            content: vec![Id([1; 32]), Id([2; 32])],
            extents: vec![(0, 10), (50, 50)],
            xattrs: vec![(b"user.a".to_vec(), b"\x00\xff".to_vec())],
            ..Node::default()
        }
    }

    #[test]
    fn trees_round_trip() {
        let t = Tree {
            nodes: vec![
                file("a"),
                Node {
                    name: b"d".to_vec(),
                    kind: Some(NodeKind::Dir),
                    subtree: Some(Id([3; 32])),
                    ..Node::default()
                },
                Node {
                    name: b"l".to_vec(),
                    kind: Some(NodeKind::Symlink),
                    target: b"../x".to_vec(),
                    ..Node::default()
                },
                Node {
                    name: "ü ✓".as_bytes().to_vec(),
                    kind: Some(NodeKind::CharDev),
                    rdev: 0x0501,
                    ..Node::default()
                },
            ],
        };
        let enc = t.encode();
        assert_eq!(Tree::decode(&enc, "tree").unwrap(), t);
        for cut in [0, 5, enc.len() / 2, enc.len() - 1] {
            assert!(Tree::decode(&enc[..cut], "tree").is_err());
        }
    }

    #[test]
    fn hostile_names_and_orders_are_refused() {
        for bad in ["..", ".", "", "a/b", "../../etc/passwd", "x\0y"] {
            let t = Tree {
                nodes: vec![file(bad)],
            };
            let e = Tree::decode(&t.encode(), "tree 42").unwrap_err();
            assert!(e.to_string().contains("tree 42"), "{e}");
        }
        let t = Tree {
            nodes: vec![file("b"), file("a")],
        };
        assert!(Tree::decode(&t.encode(), "tree").is_err());
        let t = Tree {
            nodes: vec![file("a"), file("a")],
        };
        assert!(Tree::decode(&t.encode(), "tree").is_err());
    }
}
