//! The standard input and output a Python caller hands to `run_action` and `run_job`: read by a
//! backup in mode `stdin`, written by a restore to `-`.
//!
//! Each is an int file descriptor or a binary file object. A descriptor, and an object whose
//! descriptor can be used without losing bytes the object buffers, is duplicated and handed to
//! the library (the caller's stays open and theirs). Any other object is wrapped in a Rust
//! reader or writer that takes the GIL for each call of its `read(n)` / `write(b)`: the run
//! releases the GIL, so these calls, made from the library's threads, never wait on it for
//! long. Nothing here keeps a Python object past the run: the wrappers drop theirs with the
//! GIL held.

use std::io::{Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;

use freezer_core::job::StdStreams;

/// The streams of one run; `None` for one not given (an action that needs it fails saying so).
pub(crate) fn std_streams(
    stdin: Option<&Bound<'_, PyAny>>,
    stdout: Option<&Bound<'_, PyAny>>,
) -> PyResult<StdStreams> {
    let input = stdin.map(input_of).transpose()?;
    let output = stdout.map(output_of).transpose()?;
    Ok(StdStreams::from_parts(input, output))
}

fn input_of(obj: &Bound<'_, PyAny>) -> PyResult<freezer_core::source::stream::StreamInput> {
    if let Some(fd) = int_fd(obj, "stdin")? {
        return Ok(Box::new(std::fs::File::from(dup(fd, "stdin")?)));
    }
    if let Some(fd) = readable_fd(obj)? {
        return Ok(Box::new(std::fs::File::from(dup(fd, "stdin")?)));
    }
    if !obj.hasattr("read")? {
        return Err(PyValueError::new_err(
            "stdin must be a file descriptor (int) or a binary file object with read(n)",
        ));
    }
    Ok(Box::new(PyStream(Some(obj.clone().unbind()))))
}

fn output_of(obj: &Bound<'_, PyAny>) -> PyResult<freezer_core::engine::StreamOutput> {
    if let Some(fd) = int_fd(obj, "stdout")? {
        return Ok(Box::new(std::fs::File::from(dup(fd, "stdout")?)));
    }
    if let Some(fd) = fileno(obj)? {
        // What the object buffers goes out before the restore's bytes.
        if obj.hasattr("flush")? {
            obj.call_method0("flush")?;
        }
        return Ok(Box::new(std::fs::File::from(dup(fd, "stdout")?)));
    }
    if !obj.hasattr("write")? {
        return Err(PyValueError::new_err(
            "stdout must be a file descriptor (int) or a binary file object with write(b)",
        ));
    }
    Ok(Box::new(PyStream(Some(obj.clone().unbind()))))
}

/// `obj` as a descriptor when it is an int (a bool is not).
fn int_fd(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Option<RawFd>> {
    if obj.is_instance_of::<pyo3::types::PyBool>() || !obj.is_instance_of::<pyo3::types::PyInt>() {
        return Ok(None);
    }
    let fd: i64 = obj.extract()?;
    match RawFd::try_from(fd) {
        Ok(fd) if fd >= 0 => Ok(Some(fd)),
        _ => Err(PyValueError::new_err(format!(
            "{name}: {fd} is not a file descriptor"
        ))),
    }
}

/// The object's descriptor, when `fileno()` gives one (an in-memory file raises).
fn fileno(obj: &Bound<'_, PyAny>) -> PyResult<Option<RawFd>> {
    if !obj.hasattr("fileno")? {
        return Ok(None);
    }
    match obj
        .call_method0("fileno")
        .and_then(|n| n.extract::<RawFd>())
    {
        Ok(fd) if fd >= 0 => Ok(Some(fd)),
        _ => Ok(None),
    }
}

/// The descriptor of an object to read from, when reading it directly loses nothing: a raw
/// file (`io.FileIO`, `open(..., buffering=0)`), or a seekable buffered one whose position is
/// the descriptor's (it buffers nothing yet). A buffered pipe (`sys.stdin.buffer`) may hold
/// bytes already read from its descriptor: it is read through `read(n)`.
fn readable_fd(obj: &Bound<'_, PyAny>) -> PyResult<Option<RawFd>> {
    let Some(fd) = fileno(obj)? else {
        return Ok(None);
    };
    let py = obj.py();
    let io = py.import("io")?;
    if obj.is_instance(&io.getattr("RawIOBase")?)? {
        return Ok(Some(fd));
    }
    let seekable = obj.hasattr("seekable")?
        && obj
            .call_method0("seekable")
            .and_then(|b| b.is_truthy())
            .unwrap_or(false);
    if !seekable {
        return Ok(None);
    }
    let os = py.import("os")?;
    let told = obj.call_method0("tell").and_then(|t| t.extract::<i64>());
    let raw = os
        .call_method1("lseek", (fd, 0, os.getattr("SEEK_CUR")?))
        .and_then(|t| t.extract::<i64>());
    Ok(match (told, raw) {
        (Ok(a), Ok(b)) if a == b => Some(fd),
        _ => None,
    })
}

/// A duplicate of the caller's descriptor, close-on-exec; theirs stays open.
fn dup(fd: RawFd, name: &str) -> PyResult<OwnedFd> {
    // SAFETY: the descriptor is only borrowed for the duplication (an fcntl); a descriptor
    // that is not open makes it fail with EBADF, reported below.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned().map_err(|e| {
        PyValueError::new_err(format!("{name}: file descriptor {fd} cannot be used: {e}"))
    })
}

/// A Python file object read with `read(n)` or written with `write(b)`, each call with the GIL.
struct PyStream(Option<Py<PyAny>>);

impl PyStream {
    fn call<T>(
        &self,
        f: impl for<'py> FnOnce(&Bound<'py, PyAny>) -> Result<T, String>,
    ) -> std::io::Result<T> {
        let obj = self.0.as_ref().expect("held until dropped");
        Python::attach(|py| f(obj.bind(py))).map_err(std::io::Error::other)
    }
}

impl Read for PyStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len();
        self.call(|obj| {
            let got = obj
                .call_method1("read", (want,))
                .map_err(|e| format!("the object's read() raised {e}"))?;
            if got.is_none() {
                return Err(
                    "the object's read() returned None (a non-blocking stream with no data ready)"
                        .into(),
                );
            }
            let bytes: PyBackedBytes = got.extract().map_err(|_| {
                let t = got
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                format!("the object's read() returned {t}, not bytes (open it in binary mode)")
            })?;
            if bytes.len() > want {
                return Err(format!(
                    "the object's read({want}) returned {} bytes",
                    bytes.len()
                ));
            }
            buf[..bytes.len()].copy_from_slice(&bytes);
            Ok(bytes.len())
        })
    }
}

impl Write for PyStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.call(|obj| {
            let py = obj.py();
            let n = obj
                .call_method1("write", (pyo3::types::PyBytes::new(py, buf),))
                .map_err(|e| format!("stdout: the object's write() raised {e}"))?;
            // A buffered writer writes everything and says so; `None` (a plain object's
            // write) is taken as everything written.
            if n.is_none() {
                return Ok(buf.len());
            }
            match n.extract::<usize>() {
                Ok(n) if n <= buf.len() && (n > 0 || buf.is_empty()) => Ok(n),
                _ => Err(format!(
                    "stdout: the object's write() of {} bytes returned {n}",
                    buf.len()
                )),
            }
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.call(|obj| {
            if obj.hasattr("flush").unwrap_or(false) {
                obj.call_method0("flush")
                    .map_err(|e| format!("stdout: the object's flush() raised {e}"))?;
            }
            Ok(())
        })
    }
}

impl Drop for PyStream {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            Python::attach(move |_| drop(obj));
        }
    }
}
