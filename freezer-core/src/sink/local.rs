//! A folder as a sink: local disks and NFS mounts alike.
//!
//! Every put writes a temporary file beside its target (`.tmp-*`, never listed), fsyncs it,
//! then renames it into place (or hard-links it, for [`PutMode::Create`], which fails if the
//! target exists) and fsyncs the folder. A reader therefore never sees a partial object, even
//! after a crash or `kill -9`; leftovers are temporary files that `list` ignores and
//! `list_temporaries` returns.
//! Files are created `0600` and folders `0700`: a repository is private to its owner.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{ByteStream, GetBody, ObjectMeta, Payload, PutMode, Sink, Temporary, check_key, clamp};
use crate::error::{Error, IoContext, Result};

/// Reads above this size are streamed in pieces of this size.
const STREAM_PIECE: u64 = 8 * 1024 * 1024;
const TMP_PREFIX: &str = ".tmp-";

/// A repository in a local folder (or an NFS mount).
#[derive(Clone, Debug)]
pub struct LocalSink {
    root: PathBuf,
}

impl LocalSink {
    /// A sink rooted at `root`. The folder is created by the first put if it does not exist.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalSink { root: root.into() }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn what(&self, key: &str) -> String {
        format!("{}/{key}", self.root.display())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io("local sink worker", std::io::Error::other(e)))?
}

fn create_dirs(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A new temporary file beside `path`, created `0600` (its folders `0700` when missing).
fn open_temp(path: &Path, what: &str) -> Result<(File, PathBuf)> {
    let dir = path.parent().expect("an object path has a folder");
    let mut suffix = [0u8; 8];
    crate::crypto::random_bytes(&mut suffix);
    let tmp = dir.join(format!("{TMP_PREFIX}{}", hex::encode(suffix)));
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
    };
    let file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_dirs(dir).ctx(dir.display())?;
            open().ctx(what)?
        }
        r => r.ctx(what)?,
    };
    Ok((file, tmp))
}

/// Makes the temporary file `tmp` durable and puts it in place at `path` (removed on failure,
/// or when `written` says the writing failed).
fn place(
    file: File,
    tmp: &Path,
    path: &Path,
    what: &str,
    mode: PutMode,
    written: std::io::Result<()>,
) -> Result<()> {
    let written = written.and_then(|()| file.sync_all());
    drop(file);
    let placed = written.and_then(|()| match mode {
        PutMode::Overwrite => fs::rename(tmp, path),
        PutMode::Create => fs::hard_link(tmp, path).and_then(|()| fs::remove_file(tmp)),
    });
    if let Err(e) = placed {
        let _ = fs::remove_file(tmp);
        return Err(Error::io(what, e));
    }
    // Make the rename itself durable.
    let dir = path.parent().expect("an object path has a folder");
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(dir.display())
}

fn put_blocking(path: &Path, what: &str, payload: &Payload, mode: PutMode) -> Result<()> {
    let (mut file, tmp) = open_temp(path, what)?;
    let written = payload.parts().iter().try_for_each(|p| file.write_all(p));
    place(file, &tmp, path, what, mode, written)
}

/// Every file under `prefix`: the objects, or with `temporaries` the `.tmp-*` leftovers
/// instead, each with its metadata, sorted by key.
fn walk_blocking(
    root: &Path,
    prefix: &str,
    temporaries: bool,
) -> Result<Vec<(String, fs::Metadata)>> {
    // Walk from the deepest folder the prefix names completely.
    let base = match prefix.rfind('/') {
        Some(i) => &prefix[..i],
        None => "",
    };
    let start = if base.is_empty() {
        root.to_path_buf()
    } else {
        root.join(base)
    };
    let mut out = Vec::new();
    let mut stack = vec![(start, base.to_string())];
    while let Some((dir, key_dir)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(dir.display(), e)),
        };
        for entry in entries {
            let entry = entry.ctx(dir.display())?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_tmp = name.starts_with(TMP_PREFIX);
            let key = if key_dir.is_empty() {
                name.to_string()
            } else {
                format!("{key_dir}/{name}")
            };
            let ft = entry.file_type().ctx(entry.path().display())?;
            if ft.is_dir() {
                if key.starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                    stack.push((entry.path(), key));
                }
            } else if ft.is_file() && is_tmp == temporaries && key.starts_with(prefix) {
                match entry.metadata() {
                    Ok(m) => out.push((key, m)),
                    // A temporary renamed into place since the listing.
                    Err(e) if is_tmp && e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(entry.path().display(), e)),
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<ObjectMeta>> {
    Ok(walk_blocking(root, prefix, false)?
        .into_iter()
        .map(|(key, m)| ObjectMeta { key, size: m.len() })
        .collect())
}

fn temporaries_blocking(root: &Path, prefix: &str) -> Result<Vec<Temporary>> {
    walk_blocking(root, prefix, true)?
        .into_iter()
        .map(|(key, m)| {
            let modified = m
                .modified()
                .ctx(format!("{}/{key}", root.display()))
                .and_then(|t| {
                    jiff::Timestamp::try_from(t).map_err(|e| {
                        Error::io(
                            format!("{}/{key}", root.display()),
                            std::io::Error::other(e),
                        )
                    })
                })?;
            Ok(Temporary {
                key,
                size: m.len(),
                modified,
            })
        })
        .collect()
}

fn read_at(file: &mut File, at: u64, len: u64, what: &str) -> Result<Bytes> {
    let mut buf = crate::buffer::IoBuf::new(len as usize);
    file.seek(SeekFrom::Start(at)).ctx(what)?;
    file.read_exact(buf.as_mut()).ctx(what)?;
    Ok(buf.freeze(len as usize))
}

#[async_trait]
impl Sink for LocalSink {
    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    async fn put(&self, key: &str, payload: Payload, mode: PutMode) -> Result<()> {
        let path = self.path(key)?;
        let what = self.what(key);
        blocking(move || put_blocking(&path, &what, &payload, mode)).await
    }

    /// Written to the temporary file as it arrives: the object is never held whole.
    async fn put_stream(&self, key: &str, mut body: ByteStream, mode: PutMode) -> Result<u64> {
        let path = self.path(key)?;
        let what = self.what(key);
        let (file, tmp) = {
            let (path, what) = (path.clone(), what.clone());
            blocking(move || open_temp(&path, &what)).await?
        };
        let mut state = Some(file);
        let mut total = 0u64;
        let mut failed: Option<Error> = None;
        while let Some(piece) = body.next().await {
            let piece = match piece {
                Ok(p) => p,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            total += piece.len() as u64;
            let mut file = state.take().expect("the file is back after each write");
            let what2 = what.clone();
            match blocking(move || file.write_all(&piece).ctx(&what2).map(|()| file)).await {
                Ok(f) => state = Some(f),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let file = state.expect("the file is back after each write");
        blocking(move || place(file, &tmp, &path, &what, mode, Ok(()))).await?;
        Ok(total)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<GetBody> {
        let path = self.path(key)?;
        let what = self.what(key);
        let (file, range) = {
            let what = what.clone();
            blocking(move || {
                let file = File::open(&path).ctx(&what)?;
                let size = file.metadata().ctx(&what)?.len();
                Ok((file, clamp(range, size)))
            })
            .await?
        };
        let len = range.end - range.start;
        if len <= STREAM_PIECE {
            let mut file = file;
            let b = blocking(move || read_at(&mut file, range.start, len, &what)).await?;
            return Ok(GetBody::Bytes(b));
        }
        let state = (file, range.start, range.end, what);
        let stream = futures::stream::unfold(Some(state), |state| async move {
            let (mut file, at, end, what) = state?;
            if at >= end {
                return None;
            }
            let n = (end - at).min(STREAM_PIECE);
            let res = blocking(move || {
                let b = read_at(&mut file, at, n, &what)?;
                Ok((b, file, what))
            })
            .await;
            match res {
                Ok((b, file, what)) => Some((Ok(b), Some((file, at + n, end, what)))),
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(GetBody::Stream(stream.boxed()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || list_blocking(&root, &prefix)).await
    }

    async fn list_temporaries(&self, prefix: &str) -> Result<Vec<Temporary>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || temporaries_blocking(&root, &prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        let what = self.what(key);
        blocking(move || match fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.ctx(what),
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.path(key)?;
        let what = self.what(key);
        let key = key.to_string();
        blocking(move || {
            let m = fs::metadata(&path).ctx(&what)?;
            if !m.is_file() {
                return Err(Error::not_found(what));
            }
            Ok(ObjectMeta { key, size: m.len() })
        })
        .await
    }
}
