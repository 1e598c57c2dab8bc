//! Child processes: the `exec` action's `command`, and the command of a stream backup
//! ([`crate::source::stream`]) or of a restore into a command, each run without a shell.
//!
//! Upstream's agent splits `command` on `|` into a pipeline and each stage on single spaces,
//! with no quoting. Here `command` is split once with POSIX shell-word rules (blanks separate
//! words; single quotes, double quotes and backslashes quote), with no pipeline, expansion or
//! redirection: a job that needs those names a shell itself (`sh -c '...'`), visibly. The child
//! runs in its own process group with only the environment its caller gives
//! ([`crate::job::RunContext::exec_env`]), never the storage credentials of the job; the
//! `exec` action's stdin is empty; the last [`TAIL_BYTES`] of stdout and of stderr are kept for the report. A cancel
//! kills the whole process group.
//!
//! Nothing here prints, and nothing here reads the environment of this process.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};

/// Bytes kept of the end of each of stdout and stderr.
pub const TAIL_BYTES: usize = 16 * 1024;

/// Variables of the caller's environment that a command gets by default (see
/// [`exec_environment`]): what programs need to run, nothing that holds a credential.
const PASSED_VARIABLES: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SHELL", "TERM",
];

/// What an `exec` action did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExecResult {
    /// The program and its arguments, as split.
    pub command: Vec<String>,
    /// The exit status (0: success).
    pub exit_status: i32,
    /// The end of what the command wrote to stdout (lossy UTF-8, at most [`TAIL_BYTES`]).
    pub stdout_tail: String,
    /// The end of what it wrote to stderr.
    pub stderr_tail: String,
    /// Seconds it ran.
    pub duration_secs: f64,
}

/// The environment a command gets, chosen from `vars` (the front-end's own environment):
/// `PATH`, `HOME`, `USER`, `LOGNAME`, `LANG`, `LANGUAGE`, `LC_*`, `TZ`, `TMPDIR`, `SHELL`,
/// `TERM`. Credentials (`OS_*`, `AWS_*`, `ACCESS_KEY`...) are never among them.
pub fn exec_environment(
    vars: impl IntoIterator<Item = (String, String)>,
) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter(|(k, _)| PASSED_VARIABLES.contains(&k.as_str()) || k.starts_with("LC_"))
        .collect()
}

/// Splits `line` into words by POSIX shell rules: blanks separate words; `'...'` quotes
/// everything up to the next `'`; `"..."` quotes, with `\` escaping `"`, `\`, `$` and `` ` ``
/// inside; an unquoted `\` quotes the next character. No expansion of any kind. An unbalanced
/// quote or a trailing `\` is an error naming `field`.
pub fn split_words(line: &str, field: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => {
                            return Err(Error::bad_input(field, "unbalanced single quote (')"));
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => {
                                return Err(Error::bad_input(
                                    field,
                                    "unbalanced double quote (\")",
                                ));
                            }
                        },
                        Some(c) => word.push(c),
                        None => {
                            return Err(Error::bad_input(field, "unbalanced double quote (\")"));
                        }
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err(Error::bad_input(field, "ends with a lone backslash")),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The words of a `command` option: split, and not empty.
pub(crate) fn command_words(command: Option<&str>) -> Result<Vec<String>> {
    let words = split_words(command.unwrap_or(""), "command")?;
    if words.is_empty() {
        return Err(Error::bad_input(
            "command",
            "an exec action needs a command",
        ));
    }
    Ok(words)
}

/// Keeps the last [`TAIL_BYTES`] of a stream.
async fn tail(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * TAIL_BYTES {
                    kept.drain(..kept.len() - TAIL_BYTES);
                }
            }
        }
    }
    if kept.len() > TAIL_BYTES {
        kept.drain(..kept.len() - TAIL_BYTES);
    }
    kept
}

fn shown(words: &[String]) -> String {
    words.join(" ")
}

/// Runs `words` (program first) with environment `env`, killing its process group when
/// `cancel` fires. A non-zero exit or a death by signal is an error naming the command, with
/// the last line of its stderr.
pub(crate) async fn run(
    words: &[String],
    env: &BTreeMap<String, String>,
    cancel: &crate::CancelToken,
) -> Result<ExecResult> {
    cancel.check()?;
    let child = Child::spawn(
        words,
        env,
        std::process::Stdio::null(),
        std::process::Stdio::piped(),
    )?;
    child.wait(cancel).await
}

/// A command started as [`run`] starts it (its own process group, only `env`, stderr kept),
/// its stdin and stdout given by the caller: the stream source reads its stdout, a restore
/// into a command writes its stdin. [`Child::wait`] ends it as [`run`] does.
pub(crate) struct Child {
    child: tokio::process::Child,
    pid: Option<u32>,
    words: Vec<String>,
    started: Instant,
    stdout: Option<tokio::task::JoinHandle<Vec<u8>>>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

impl Child {
    /// Starts `words` (a tokio runtime must be entered). A stdout given as
    /// [`std::process::Stdio::piped`] is kept (its tail) for the result; a program not found
    /// or not executable is a [`Error::BadInput`] naming it.
    pub(crate) fn spawn(
        words: &[String],
        env: &BTreeMap<String, String>,
        stdin: std::process::Stdio,
        stdout: std::process::Stdio,
    ) -> Result<Child> {
        let what = format!("exec `{}`", shown(words));
        let mut cmd = tokio::process::Command::new(&words[0]);
        cmd.args(&words[1..])
            .env_clear()
            .envs(env)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::bad_input("command", format!("{}: program not found", words[0]))
            }
            std::io::ErrorKind::PermissionDenied => Error::bad_input(
                "command",
                format!("{}: not executable (permission denied)", words[0]),
            ),
            _ => Error::io(&what, e),
        })?;
        let stdout = child.stdout.take().map(|o| tokio::spawn(tail(o)));
        let stderr = tokio::spawn(tail(child.stderr.take().expect("piped")));
        Ok(Child {
            pid: child.id(),
            child,
            words: words.to_vec(),
            started: Instant::now(),
            stdout,
            stderr,
        })
    }

    /// Its process id (the id of its process group too).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Waits for it to end, killing its process group when `cancel` fires
    /// ([`Error::Cancelled`]). A non-zero exit or a death by signal is an error naming the
    /// command and the status or signal, with the last line of its stderr.
    pub(crate) async fn wait(mut self, cancel: &crate::CancelToken) -> Result<ExecResult> {
        let what = format!("exec `{}`", shown(&self.words));
        let status = tokio::select! {
            s = self.child.wait() => s.map_err(|e| Error::io(&what, e))?,
            _ = cancel.cancelled() => {
                kill_group(self.pid);
                let _ = self.child.kill().await;
                let _ = self.child.wait().await;
                if let Some(o) = &self.stdout {
                    o.abort();
                }
                self.stderr.abort();
                return Err(Error::Cancelled);
            }
        };
        // The pipes close when the last process holding them exits: a command that leaves a
        // process behind (`daemon &`) is not waited for longer than this.
        let grace = std::time::Duration::from_secs(5);
        let stdout = match self.stdout {
            Some(o) => match tokio::time::timeout(grace, o).await {
                Ok(r) => r.unwrap_or_default(),
                Err(_) => Vec::new(),
            },
            None => Vec::new(),
        };
        let stderr = match tokio::time::timeout(grace, self.stderr).await {
            Ok(r) => r.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let result = ExecResult {
            command: self.words,
            exit_status: status.code().unwrap_or(-1),
            stdout_tail: String::from_utf8_lossy(&stdout).into_owned(),
            stderr_tail: String::from_utf8_lossy(&stderr).into_owned(),
            duration_secs: self.started.elapsed().as_secs_f64(),
        };
        if status.success() {
            return Ok(result);
        }
        use std::os::unix::process::ExitStatusExt;
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => match signal_name(s) {
                Some(n) => format!("killed by signal {s} ({n})"),
                None => format!("killed by signal {s}"),
            },
            _ => "failed".to_string(),
        };
        let last = result
            .stderr_tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!(" (stderr: {})", l.trim()))
            .unwrap_or_default();
        Err(Error::io(
            what,
            std::io::Error::other(format!("{how}{last}")),
        ))
    }
}

/// The name of a common signal.
fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// Sends SIGKILL to the process group led by `pid`.
pub(crate) fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_by_shell_rules() {
        let w = |s: &str| split_words(s, "command").unwrap();
        assert_eq!(w("ls -l  /tmp"), ["ls", "-l", "/tmp"]);
        assert_eq!(
            w(r#"echo 'a b' "c \"d\" $x" e\ f"#),
            ["echo", "a b", "c \"d\" $x", "e f"]
        );
        assert_eq!(w(r#"printf '' x"#), ["printf", "", "x"]);
        assert_eq!(w("a|b >c"), ["a|b", ">c"], "no pipeline, no redirection");
        assert!(w("   ").is_empty());
        for bad in ["echo 'a", "echo \"a", "echo a\\"] {
            let e = split_words(bad, "command").unwrap_err();
            assert!(e.to_string().starts_with("command:"), "{e}");
        }
        assert!(
            command_words(Some(" "))
                .unwrap_err()
                .to_string()
                .starts_with("command:")
        );
    }

    #[test]
    fn only_harmless_variables_pass() {
        let env = exec_environment(
            [
                ("PATH", "/bin"),
                ("LC_ALL", "C"),
                ("OS_PASSWORD", "s"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
                ("SECRET_KEY", "s"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        assert_eq!(env.keys().collect::<Vec<_>>(), ["LC_ALL", "PATH"]);
    }
}
