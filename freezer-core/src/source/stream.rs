//! The stream sources: one byte stream backed up as one file (mode `command`: a command's
//! stdout; mode `stdin`: a reader the front-end hands over, its standard input).
//!
//! The stream is one entry ([`SourceEntry::stream`]): the snapshot's tree holds one file,
//! named `stdout` or `stdin`, whose content is the stream, cut by the same chunker,
//! deduplicated and encrypted as any file's. The engine reads it once, in order; its size
//! is what was read. A command runs as the `exec` action runs one (`job::exec`: split by
//! POSIX shell-word rules without a shell, or through `/bin/sh -c` when asked; its own
//! process group; only the environment the caller gives); when it exits non-zero, is killed
//! or cannot start, [`ContentReader::finish`] (or [`Source::open`]) fails and so does the
//! backup. A cancel, or the reader dropped before the end (the backup failed elsewhere),
//! kills its process group.
//!
//! Nothing here reads this process's stdin or environment on its own: the front-end gives
//! both.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;

use super::{ContentReader, Listing, Source, SourceEntry, SourceInfo};
use crate::error::{Error, Result};
use crate::process::{Child, ExecResult, command_words, kill_group};
use crate::repo::tree::{Node, NodeKind};

/// A reader a stream backup reads from (a front-end's stdin).
pub type StreamInput = Box<dyn Read + Send>;

/// What a command stream runs.
#[derive(Clone, Debug)]
pub struct StreamCommand {
    /// The command line, as given (recorded in the snapshot).
    pub line: String,
    /// Run it through `/bin/sh -c` instead of splitting it into words.
    pub shell: bool,
    /// The whole environment it gets (see [`crate::job::exec_environment`]).
    pub env: BTreeMap<String, String>,
    /// The program and its arguments, already split (a database mode builds them): when
    /// given, `line` is only what reports show and `shell` is not used.
    pub argv: Option<Vec<String>>,
}

impl StreamCommand {
    /// A program and its arguments, run as they are (no splitting, no shell), with `env`.
    pub fn program(argv: Vec<String>, env: BTreeMap<String, String>) -> Self {
        StreamCommand {
            line: argv.join(" "),
            shell: false,
            env,
            argv: Some(argv),
        }
    }

    /// The program and its arguments: `argv` when given; else `/bin/sh -c LINE` with
    /// `shell`, else `LINE` split by POSIX shell-word rules (an empty line or an unbalanced
    /// quote is an error naming `command`).
    pub fn words(&self) -> Result<Vec<String>> {
        if let Some(argv) = &self.argv {
            if argv.is_empty() {
                return Err(Error::bad_input("command", "no program given"));
            }
            return Ok(argv.clone());
        }
        if self.line.trim().is_empty() {
            return Err(Error::bad_input("command", "no command given"));
        }
        if self.shell {
            return Ok(vec!["/bin/sh".into(), "-c".into(), self.line.clone()]);
        }
        command_words(Some(&self.line))
    }
}

/// One stream of a source made of several (a database mode's dumps): a file named `name`
/// in the snapshot, holding the stdout of `command`.
#[derive(Clone, Debug)]
pub struct NamedStream {
    /// The file's name (one path component).
    pub name: String,
    /// What writes it.
    pub command: StreamCommand,
}

/// Anything a source made of several streams keeps alive while it lives (a private folder
/// holding a client's password file), dropped with it.
pub type KeepAlive = Box<dyn std::any::Any + Send + Sync>;

enum Input {
    Command {
        cmd: StreamCommand,
        words: Vec<String>,
        rt: tokio::runtime::Handle,
    },
    Reader(Mutex<Option<StreamInput>>),
    Named {
        streams: Vec<(NamedStream, Vec<String>)>,
        info: SourceInfo,
        rt: tokio::runtime::Handle,
        _keep: Option<KeepAlive>,
    },
}

/// One byte stream, backed up as one file.
pub struct StreamSource {
    input: Input,
    cancel: crate::CancelToken,
    /// When the backup started, for the file's times.
    time: jiff::Timestamp,
}

impl std::fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.input {
            Input::Command { cmd, .. } => format!("command {:?}", cmd.line),
            Input::Reader(_) => "stdin".into(),
            Input::Named { info, streams, .. } => {
                format!("{} ({} streams)", info.mode, streams.len())
            }
        };
        f.debug_struct("StreamSource")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

impl StreamSource {
    /// Mode `command`: the stdout of `cmd`, run when the engine opens the stream and killed
    /// when `cancel` fires. Must be called within a tokio runtime (the command is watched
    /// there).
    pub fn command(cmd: StreamCommand, cancel: crate::CancelToken) -> Result<Self> {
        let words = cmd.words()?;
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::unsupported("mode command outside a tokio runtime"))?;
        Ok(StreamSource {
            input: Input::Command { cmd, words, rt },
            cancel,
            time: crate::time::now(),
        })
    }

    /// Mode `stdin`: what `input` yields until its end. It can be read once.
    pub fn stdin(input: StreamInput, cancel: crate::CancelToken) -> Self {
        StreamSource {
            input: Input::Reader(Mutex::new(Some(input))),
            cancel,
            time: crate::time::now(),
        }
    }

    /// A folder of streams, one file per [`NamedStream`] (a database mode: a dump per
    /// database), each command run when the engine opens its file; `info` is what the
    /// snapshot records; `keep` lives as long as the source. Names must be distinct single
    /// path components. Must be called within a tokio runtime.
    pub fn named(
        streams: Vec<NamedStream>,
        info: SourceInfo,
        keep: Option<KeepAlive>,
        cancel: crate::CancelToken,
    ) -> Result<Self> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::unsupported(format!("mode {} outside a tokio runtime", info.mode))
        })?;
        if streams.is_empty() {
            return Err(Error::bad_input(
                &info.mode,
                "nothing to back up (no stream)",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::with_capacity(streams.len());
        for s in streams {
            let n = s.name.as_str();
            if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
                return Err(Error::bad_input(
                    &info.mode,
                    format!("{n:?} cannot name a stream"),
                ));
            }
            if !seen.insert(s.name.clone()) {
                return Err(Error::bad_input(
                    &info.mode,
                    format!("two streams named {n:?}"),
                ));
            }
            let words = s.command.words()?;
            out.push((s, words));
        }
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(StreamSource {
            input: Input::Named {
                streams: out,
                info,
                rt,
                _keep: keep,
            },
            cancel,
            time: crate::time::now(),
        })
    }

    fn name(&self) -> &str {
        match &self.input {
            Input::Command { .. } => "stdout",
            Input::Reader(_) => "stdin",
            Input::Named { info, .. } => &info.mode,
        }
    }

    fn node(&self, name: &str, kind: NodeKind, mode: u32) -> Node {
        let (secs, ns) = (self.time.as_second(), self.time.subsec_nanosecond());
        Node {
            name: name.as_bytes().to_vec(),
            kind: Some(kind),
            mode,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            mtime: secs,
            mtime_ns: ns as u32,
            ctime: secs,
            ctime_ns: ns as u32,
            links: 1,
            ..Node::default()
        }
    }

    /// Runs `words` with its stdout into a pipe the returned reader reads.
    fn spawn(
        &self,
        words: &[String],
        env: &BTreeMap<String, String>,
        rt: &tokio::runtime::Handle,
    ) -> Result<Box<dyn ContentReader>> {
        let (pipe, writer) = std::io::pipe().map_err(|e| Error::io("a pipe for the command", e))?;
        let child = {
            let _in_runtime = rt.enter();
            Child::spawn(
                words,
                env,
                std::process::Stdio::null(),
                std::process::Stdio::from(writer),
            )?
        };
        // Only the child holds the pipe's writing end now: its end is the stream's.
        let pid = child.pid();
        let cancel = self.cancel.clone();
        let waiter = rt.spawn(async move { child.wait(&cancel).await });
        Ok(Box::new(CommandReader {
            pipe,
            read: 0,
            pid,
            waiter: Some(waiter),
            rt: rt.clone(),
        }))
    }
}

impl Source for StreamSource {
    fn info(&self) -> SourceInfo {
        match &self.input {
            Input::Command { cmd, .. } => SourceInfo {
                mode: "command".into(),
                path: "-".into(),
                command: Some(cmd.line.clone()),
            },
            Input::Reader(_) => SourceInfo {
                mode: "stdin".into(),
                path: "-".into(),
                command: None,
            },
            Input::Named { info, .. } => info.clone(),
        }
    }

    fn root(&self) -> Result<SourceEntry> {
        if let Input::Named { .. } = self.input {
            return Ok(SourceEntry {
                path: PathBuf::new(),
                node: self.node(self.name(), NodeKind::Dir, 0o700),
                descend: true,
                stream: false,
            });
        }
        Ok(SourceEntry {
            path: PathBuf::from(self.name()),
            node: self.node(self.name(), NodeKind::File, 0o600),
            descend: false,
            stream: true,
        })
    }

    fn list(&self, dir: &SourceEntry) -> Result<Listing> {
        let Input::Named { streams, .. } = &self.input else {
            return Ok(Listing::default());
        };
        if !dir.path.as_os_str().is_empty() {
            return Ok(Listing::default());
        }
        let entries = streams
            .iter()
            .map(|(s, _)| SourceEntry {
                path: PathBuf::from(&s.name),
                node: self.node(&s.name, NodeKind::File, 0o600),
                descend: false,
                stream: true,
            })
            .collect();
        Ok(Listing {
            entries,
            errors: vec![],
        })
    }

    fn xattrs(&self, _entry: &SourceEntry) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(vec![])
    }

    fn open(&self, entry: &SourceEntry) -> Result<Box<dyn ContentReader>> {
        self.cancel.check()?;
        match &self.input {
            Input::Command { cmd, words, rt } => self.spawn(words, &cmd.env, rt),
            Input::Named { streams, rt, .. } => {
                let (s, words) = streams
                    .iter()
                    .find(|(s, _)| entry.path.as_os_str() == s.name.as_str())
                    .ok_or_else(|| {
                        Error::bad_input("path", format!("no stream {:?}", entry.path))
                    })?;
                self.spawn(words, &s.command.env, rt)
                    .map_err(|e| e.context(format!("stream {}", s.name)))
            }
            Input::Reader(r) => {
                let input = r
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| {
                        Error::unsupported("stdin read a second time (it is read once)")
                    })?;
                Ok(Box::new(InputReader { input, read: 0 }))
            }
        }
    }
}

/// Reads `buf` from `r`, retrying on EINTR.
fn read_some(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            res => return res.map_err(|e| Error::io(what, e)),
        }
    }
}

fn in_order(read: u64, offset: u64) -> Result<()> {
    if read != offset {
        return Err(Error::unsupported(format!(
            "a stream read at offset {offset} after {read} bytes (a stream is read once, in order)"
        )));
    }
    Ok(())
}

type Waiter = tokio::task::JoinHandle<Result<ExecResult>>;

struct CommandReader {
    pipe: std::io::PipeReader,
    read: u64,
    pid: Option<u32>,
    waiter: Option<Waiter>,
    rt: tokio::runtime::Handle,
}

impl ContentReader for CommandReader {
    fn data_extents(&mut self) -> Result<Option<Vec<(u64, u64)>>> {
        Ok(None)
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize> {
        in_order(self.read, offset)?;
        let n = read_some(&mut self.pipe, buf, "the command's stdout")?;
        self.read += n as u64;
        Ok(n)
    }

    fn size(&self) -> Option<u64> {
        None
    }

    fn finish(&mut self) -> Result<bool> {
        let Some(waiter) = self.waiter.take() else {
            return Ok(false);
        };
        self.rt
            .block_on(waiter)
            .map_err(|e| Error::io("the command's watcher", std::io::Error::other(e)))??;
        Ok(false)
    }
}

impl Drop for CommandReader {
    fn drop(&mut self) {
        // Dropped before its end (the backup failed or was stopped): stop the command.
        if let Some(w) = &self.waiter
            && !w.is_finished()
        {
            kill_group(self.pid);
        }
    }
}

struct InputReader {
    input: StreamInput,
    read: u64,
}

impl ContentReader for InputReader {
    fn data_extents(&mut self) -> Result<Option<Vec<(u64, u64)>>> {
        Ok(None)
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize> {
        in_order(self.read, offset)?;
        let n = read_some(&mut self.input, buf, "stdin")?;
        self.read += n as u64;
        Ok(n)
    }

    fn size(&self) -> Option<u64> {
        None
    }

    fn finish(&mut self) -> Result<bool> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_without_a_shell_unless_asked() {
        let c = |line: &str, shell| StreamCommand {
            line: line.into(),
            shell,
            env: BTreeMap::new(),
            argv: None,
        };
        assert_eq!(
            c("pg_dumpall -U 'a b'", false).words().unwrap(),
            ["pg_dumpall", "-U", "a b"]
        );
        assert_eq!(
            c("a | b", true).words().unwrap(),
            ["/bin/sh", "-c", "a | b"]
        );
        for (line, shell) in [(" ", false), (" ", true), ("echo 'x", false)] {
            let e = c(line, shell).words().unwrap_err();
            assert!(e.to_string().starts_with("command:"), "{e}");
        }
    }

    #[test]
    fn stdin_is_read_once_and_in_order() {
        let src = StreamSource::stdin(
            Box::new(std::io::Cursor::new(b"hello".to_vec())),
            crate::CancelToken::new(),
        );
        let root = src.root().unwrap();
        assert!(root.stream && root.node.name == b"stdin");
        let mut r = src.open(&root).unwrap();
        let mut buf = [0u8; 3];
        assert!(r.read_at(&mut buf, 1).is_err(), "out of order");
        assert_eq!(r.read_at(&mut buf, 0).unwrap(), 3);
        assert!(src.open(&root).is_err(), "read twice");
        assert_eq!(src.info().mode, "stdin");
    }

    #[tokio::test]
    async fn a_folder_of_named_streams() {
        let prog = |name: &str, argv: &[&str]| NamedStream {
            name: name.into(),
            command: StreamCommand::program(
                argv.iter().map(|s| s.to_string()).collect(),
                BTreeMap::new(),
            ),
        };
        let info = SourceInfo {
            mode: "mysql".into(),
            path: "db".into(),
            command: None,
        };
        let cancel = crate::CancelToken::new();
        let src = StreamSource::named(
            vec![
                prog("b.sql", &["echo", "b"]),
                prog("a.sql", &["echo", "a b"]),
            ],
            info.clone(),
            None,
            cancel.clone(),
        )
        .unwrap();
        let root = src.root().unwrap();
        assert!(root.node.kind() == NodeKind::Dir && root.node.name == b"mysql");
        let l = src.list(&root).unwrap();
        let names: Vec<_> = l.entries.iter().map(|e| e.node.name.clone()).collect();
        assert_eq!(names, [b"a.sql".to_vec(), b"b.sql".to_vec()]);
        assert!(l.entries.iter().all(|e| e.stream));
        let a = l.entries[0].clone();
        let got = tokio::task::spawn_blocking(move || {
            let mut r = src.open(&a).unwrap();
            let mut buf = [0u8; 16];
            let n = r.read_at(&mut buf, 0).unwrap();
            r.finish().unwrap();
            buf[..n].to_vec()
        })
        .await
        .unwrap();
        assert_eq!(got, b"a b\n", "argv taken as given, not split again");
        for bad in [
            vec![],
            vec![prog("x/y", &["true"])],
            vec![prog("x", &["true"]), prog("x", &["true"])],
            vec![prog("x", &[])],
        ] {
            assert!(StreamSource::named(bad, info.clone(), None, cancel.clone()).is_err());
        }
    }
}
