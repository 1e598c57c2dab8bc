//! The standard input and output a C caller hands to the `_fds` and `_callbacks` run
//! functions: descriptors (duplicated; the caller's are never closed) or read and write
//! callbacks with a user-data pointer, called from the library's threads while the run lasts.

#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_void};
use std::io::{Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};

use freezer_core::job::StdStreams;

use super::{FreezerResult, error_doc};

/// Reads up to `len` bytes of the stream into `buf`. Returns how many it read (at most `len`),
/// 0 at the end of the stream, or a negative value on failure (`-errno`, e.g. `-EIO`, names
/// the cause in the error). Called from a thread of the library, one call at a time, only
/// while the run function that took it has not returned.
pub type freezer_read_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, buf: *mut u8, len: usize) -> isize>;

/// Writes up to `len` bytes from `buf` (`len` > 0). Returns how many it wrote (1 to `len`; it
/// is called again with the rest), or a negative value on failure (`-errno` names the cause).
/// Called as a [`freezer_read_cb`] is.
pub type freezer_write_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, buf: *const u8, len: usize) -> isize>;

/// Duplicates of `stdin_fd` and `stdout_fd` (-1: none), or the error to return.
pub(crate) fn from_fds(
    stdin_fd: c_int,
    stdout_fd: c_int,
) -> Result<StdStreams, (FreezerResult, String)> {
    let input = dup(stdin_fd, "stdin_fd")?;
    let output = dup(stdout_fd, "stdout_fd")?;
    Ok(StdStreams::from_fds(input, output))
}

fn dup(fd: c_int, name: &str) -> Result<Option<OwnedFd>, (FreezerResult, String)> {
    let refuse = |why: String| {
        (
            FreezerResult::InvalidArgument,
            error_doc("bad input", &format!("{name} {fd}: {why}")),
        )
    };
    match fd {
        -1 => Ok(None),
        fd if fd < 0 => Err(refuse("not a file descriptor (-1 gives none)".into())),
        fd => {
            // SAFETY: borrowed only for the duplication (an fcntl); a descriptor that is not
            // open makes it fail with EBADF, reported.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            borrowed
                .try_clone_to_owned()
                .map(Some)
                .map_err(|e| refuse(format!("cannot be used: {e}")))
        }
    }
}

/// The streams the callbacks give (a null one: none).
///
/// # Safety
/// Each callback is null or callable with its user data from another thread until the run
/// ends, one call at a time.
pub(crate) unsafe fn from_callbacks(
    read: freezer_read_cb,
    read_data: *mut c_void,
    write: freezer_write_cb,
    write_data: *mut c_void,
) -> StdStreams {
    StdStreams::from_parts(
        read.map(|cb| {
            Box::new(CallbackReader {
                cb,
                data: read_data,
            }) as _
        }),
        write.map(|cb| {
            Box::new(CallbackWriter {
                cb,
                data: write_data,
            }) as _
        }),
    )
}

/// What a callback's negative return says.
fn failed(what: &str, n: isize) -> std::io::Error {
    let cause = i32::try_from(-n)
        .map(|errno| format!(" ({})", std::io::Error::from_raw_os_error(errno)))
        .unwrap_or_default();
    // `other`: the kind of an errno (NotFound...) must not replace the message.
    std::io::Error::other(format!("{what} returned {n}{cause}"))
}

struct CallbackReader {
    cb: unsafe extern "C" fn(*mut c_void, *mut u8, usize) -> isize,
    data: *mut c_void,
}

// SAFETY: the caller of the `_callbacks` functions promises the callback may be called, with
// its user data, from another thread; the reader is used by one thread at a time.
unsafe impl Send for CallbackReader {}

impl Read for CallbackReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writes; the callback's contract is
        // the caller's.
        let n = unsafe { (self.cb)(self.data, buf.as_mut_ptr(), buf.len()) };
        match usize::try_from(n) {
            Ok(k) if k <= buf.len() => Ok(k),
            Ok(_) => Err(std::io::Error::other(format!(
                "the read callback returned {n} for a buffer of {} bytes",
                buf.len()
            ))),
            Err(_) => Err(failed("the read callback", n)),
        }
    }
}

struct CallbackWriter {
    cb: unsafe extern "C" fn(*mut c_void, *const u8, usize) -> isize,
    data: *mut c_void,
}

// SAFETY: as for `CallbackReader`.
unsafe impl Send for CallbackWriter {}

impl Write for CallbackWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // SAFETY: `buf` is valid for `buf.len()` bytes of reads; the callback's contract is
        // the caller's.
        let n = unsafe { (self.cb)(self.data, buf.as_ptr(), buf.len()) };
        match usize::try_from(n) {
            Ok(k) if k >= 1 && k <= buf.len() => Ok(k),
            Ok(_) => Err(std::io::Error::other(format!(
                "stdout: the write callback returned {n} for {} bytes",
                buf.len()
            ))),
            Err(_) => Err(failed("stdout: the write callback", n)),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
