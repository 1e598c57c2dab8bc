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

/// What an in-process producer writes a stream into ([`ProducedStream`]): byte runs, in
/// order; the stream ends when the producer returns (and drops it).
#[derive(Debug)]
pub struct StreamWriter {
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
}

impl StreamWriter {
    /// Appends `data` to the stream, waiting while the reader is behind (a few runs are
    /// queued at most). Fails with [`Error::Cancelled`] when the reader is gone (the backup
    /// failed or stopped elsewhere): the producer then stops.
    pub async fn write(&self, data: bytes::Bytes) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.tx.send(data).await.map_err(|_| Error::Cancelled)
    }
}

/// The future that writes a produced stream; its error fails the backup (no snapshot).
pub type ProducerFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// Makes the future that writes a produced stream, given the writer, when the engine opens
/// the stream's file.
pub type Producer = Box<dyn FnOnce(StreamWriter) -> ProducerFuture + Send>;

/// One stream of a source made of several whose content comes from this process (a
/// database read through its driver) instead of a command: a file named `name` in the
/// snapshot holding what `producer` writes. As a command's stdout, the stream is whole only
/// when the producer returns `Ok`; an error, a panic or a cancel fails the backup.
pub struct ProducedStream {
    /// The file's name (one path component).
    pub name: String,
    /// What writes it.
    pub producer: Producer,
}

impl std::fmt::Debug for ProducedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducedStream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Byte runs a produced stream's reader keeps queued at most.
const PRODUCED_QUEUE: usize = 4;

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
    Produced {
        streams: Vec<(String, Mutex<Option<Producer>>)>,
        info: SourceInfo,
        extra: BTreeMap<String, serde_json::Value>,
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
            Input::Produced { info, streams, .. } => {
                format!("{} ({} produced streams)", info.mode, streams.len())
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

    /// A folder of streams written by this process, one file per [`ProducedStream`] (a
    /// database read through its driver), each producer run on the runtime when the engine
    /// opens its file; `info` and `extra` are what the snapshot records; `keep` lives as long
    /// as the source. Names must be distinct single path components; an empty list makes an
    /// empty folder. Must be called within a tokio runtime.
    pub fn produced(
        streams: Vec<ProducedStream>,
        info: SourceInfo,
        extra: BTreeMap<String, serde_json::Value>,
        keep: Option<KeepAlive>,
        cancel: crate::CancelToken,
    ) -> Result<Self> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::unsupported(format!("mode {} outside a tokio runtime", info.mode))
        })?;
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
            out.push((s.name, Mutex::new(Some(s.producer))));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(StreamSource {
            input: Input::Produced {
                streams: out,
                info,
                extra,
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
            Input::Named { info, .. } | Input::Produced { info, .. } => &info.mode,
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
            Input::Named { info, .. } | Input::Produced { info, .. } => info.clone(),
        }
    }

    fn extra(&self) -> BTreeMap<String, serde_json::Value> {
        match &self.input {
            Input::Produced { extra, .. } => extra.clone(),
            _ => BTreeMap::new(),
        }
    }

    fn root(&self) -> Result<SourceEntry> {
        if let Input::Named { .. } | Input::Produced { .. } = self.input {
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
        let names: Vec<&str> = match &self.input {
            Input::Named { streams, .. } => streams.iter().map(|(s, _)| s.name.as_str()).collect(),
            Input::Produced { streams, .. } => streams.iter().map(|(n, _)| n.as_str()).collect(),
            _ => return Ok(Listing::default()),
        };
        if !dir.path.as_os_str().is_empty() {
            return Ok(Listing::default());
        }
        let entries = names
            .into_iter()
            .map(|name| SourceEntry {
                path: PathBuf::from(name),
                node: self.node(name, NodeKind::File, 0o600),
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
            Input::Produced { streams, rt, .. } => {
                let (name, producer) = streams
                    .iter()
                    .find(|(n, _)| entry.path.as_os_str() == n.as_str())
                    .ok_or_else(|| {
                        Error::bad_input("path", format!("no stream {:?}", entry.path))
                    })?;
                let producer = producer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| {
                        Error::unsupported(format!(
                            "stream {name} read a second time (it is read once)"
                        ))
                    })?;
                let (tx, rx) = tokio::sync::mpsc::channel(PRODUCED_QUEUE);
                let cancel = self.cancel.clone();
                let fut = producer(StreamWriter { tx });
                // The engine names the stream in its errors.
                let task = rt.spawn(async move {
                    tokio::select! {
                        r = fut => r,
                        _ = cancel.cancelled() => Err(Error::Cancelled),
                    }
                });
                Ok(Box::new(ProducedReader {
                    rx,
                    buf: bytes::Bytes::new(),
                    read: 0,
                    task: Some(task),
                    rt: rt.clone(),
                }))
            }
            Input::Reader(r) => {
                let input = r
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| {
                        Error::unsupported("stdin read a second time (it is read once)")
                    })?;
                Ok(Box::new(InputReader::start(input, self.cancel.clone())?))
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

/// Reads what a [`Producer`] writes; its end is the producer's return.
struct ProducedReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    buf: bytes::Bytes,
    read: u64,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    rt: tokio::runtime::Handle,
}

impl ContentReader for ProducedReader {
    fn data_extents(&mut self) -> Result<Option<Vec<(u64, u64)>>> {
        Ok(None)
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize> {
        in_order(self.read, offset)?;
        while self.buf.is_empty() {
            // The engine reads on its own threads, outside the runtime: waiting here is
            // what a pipe's read would do.
            match self.rx.blocking_recv() {
                Some(b) => self.buf = b,
                // The producer returned (or failed: `finish` says which).
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.buf.len());
        buf[..n].copy_from_slice(&self.buf.split_to(n));
        self.read += n as u64;
        Ok(n)
    }

    fn size(&self) -> Option<u64> {
        None
    }

    fn finish(&mut self) -> Result<bool> {
        let Some(task) = self.task.take() else {
            return Ok(false);
        };
        self.rt
            .block_on(task)
            .map_err(|e| Error::io("a stream's producer", std::io::Error::other(e)))??;
        Ok(false)
    }
}

impl Drop for ProducedReader {
    fn drop(&mut self) {
        // Dropped before its end (the backup failed or was stopped): stop the producer.
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Reads the front-end's input on a thread of its own, a few buffers ahead: a read blocked on
/// a pipe that stays open with nothing to say (a stalled producer) cannot hold a cancelled
/// backup. On a cancel the backup ends at once; the thread ends at its next read's return.
struct InputReader {
    rx: crossbeam_channel::Receiver<std::io::Result<Vec<u8>>>,
    /// The buffer being handed out, and how much of it was.
    pending: Vec<u8>,
    at: usize,
    ended: bool,
    read: u64,
    cancel: crate::CancelToken,
}

/// What the reading thread reads at once, and how many such buffers wait at most.
const INPUT_BUFFER: usize = 256 * 1024;
const INPUT_AHEAD: usize = 2;

impl InputReader {
    fn start(mut input: StreamInput, cancel: crate::CancelToken) -> Result<InputReader> {
        let (tx, rx) = crossbeam_channel::bounded(INPUT_AHEAD);
        std::thread::Builder::new()
            .name("freezer-input".into())
            .spawn(move || {
                loop {
                    let mut buf = vec![0u8; INPUT_BUFFER];
                    let got = loop {
                        match input.read(&mut buf) {
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            other => break other,
                        }
                    };
                    let last = !matches!(got, Ok(n) if n > 0);
                    let msg = got.map(|n| {
                        buf.truncate(n);
                        buf
                    });
                    // The reader is gone (the backup ended or was cancelled): stop reading.
                    if tx.send(msg).is_err() || last {
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("a thread to read the standard input", e))?;
        Ok(InputReader {
            rx,
            pending: Vec::new(),
            at: 0,
            ended: false,
            read: 0,
            cancel,
        })
    }
}

impl ContentReader for InputReader {
    fn data_extents(&mut self) -> Result<Option<Vec<(u64, u64)>>> {
        Ok(None)
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize> {
        in_order(self.read, offset)?;
        while self.at == self.pending.len() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            // Waits for the reading thread, looking at the cancel token between waits.
            let got = loop {
                self.cancel.check()?;
                match self.rx.recv_timeout(std::time::Duration::from_millis(100)) {
                    Ok(got) => break got,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        break Ok(Vec::new());
                    }
                }
            };
            self.pending = got.map_err(|e| Error::io("reading the standard input", e))?;
            self.at = 0;
            self.ended = self.pending.is_empty();
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_folder_of_produced_streams() {
        let produce = |name: &str, parts: Vec<&'static [u8]>, fail: bool| ProducedStream {
            name: name.into(),
            producer: Box::new(move |w: StreamWriter| {
                Box::pin(async move {
                    for p in parts {
                        w.write(bytes::Bytes::from_static(p)).await?;
                    }
                    if fail {
                        return Err(Error::unsupported("the producer's own failure"));
                    }
                    Ok(())
                })
            }),
        };
        let info = SourceInfo {
            mode: "mongo".into(),
            path: "db".into(),
            command: None,
        };
        let extra = BTreeMap::from([("k".to_string(), serde_json::json!(1))]);
        let cancel = crate::CancelToken::new();
        let src = StreamSource::produced(
            vec![
                produce("b.bson", vec![b"hello ", b"", b"world"], false),
                produce("a.bson", vec![b"half"], true),
            ],
            info.clone(),
            extra.clone(),
            None,
            cancel.clone(),
        )
        .unwrap();
        assert_eq!(src.extra(), extra);
        let root = src.root().unwrap();
        assert!(root.node.kind() == NodeKind::Dir && root.node.name == b"mongo");
        let l = src.list(&root).unwrap();
        let names: Vec<_> = l.entries.iter().map(|e| e.node.name.clone()).collect();
        assert_eq!(names, [b"a.bson".to_vec(), b"b.bson".to_vec()]);
        let (a, b) = (l.entries[0].clone(), l.entries[1].clone());
        let read_all = |src: &StreamSource, e: &SourceEntry| -> (Vec<u8>, Result<bool>) {
            let mut r = src.open(e).unwrap();
            let (mut out, mut buf) = (Vec::new(), [0u8; 4]);
            loop {
                let n = r.read_at(&mut buf, out.len() as u64).unwrap();
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            (out, r.finish())
        };
        let (src, got) = tokio::task::spawn_blocking(move || {
            let got_b = read_all(&src, &b);
            let got_a = read_all(&src, &a);
            let again = src.open(&a).err().map(|e| e.to_string());
            (src, (got_a, got_b, again))
        })
        .await
        .unwrap();
        let ((a_data, a_end), (b_data, b_end), again) = got;
        assert_eq!(b_data, b"hello world");
        assert!(!b_end.unwrap());
        assert_eq!(a_data, b"half", "what came before the failure");
        let e = a_end.unwrap_err().to_string();
        assert!(e.contains("own failure"), "{e}");
        assert!(again.unwrap().contains("read once"));
        drop(src);
        for bad in [
            vec![produce("x/y", vec![], false)],
            vec![produce("x", vec![], false), produce("x", vec![], false)],
        ] {
            assert!(
                StreamSource::produced(bad, info.clone(), BTreeMap::new(), None, cancel.clone())
                    .is_err()
            );
        }
    }
}
