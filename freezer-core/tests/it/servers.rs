//! Real servers on loopback, started by the tests that need them. A server that is not
//! installed fails the test loudly, naming the command that installs it (`./test.sh` does).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Finds a server program: `FREEZER_TEST_<VAR>`, the workspace's `target/tools/bin`, or PATH.
pub fn find_tool(name: &str, var: &str, install: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let tools = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tools/bin")
        .join(name);
    if tools.exists() {
        return tools;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join(name).exists() {
                return dir.join(name);
            }
        }
    }
    panic!(
        "{name} is not installed; this test needs the real server. Install it with: {install} (./test.sh does), or set {var}"
    );
}

fn wait_for(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what} exited early: {st}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on port {port} within 20 s");
}

/// An s3s-fs server (an S3 implementation that checks request signatures) on loopback.
pub struct S3Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> S3Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = S3Server {
            endpoint: String::new(),
            access_key: "freezer-test-key".into(),
            secret_key: "freezer-test-secret-do-not-log".into(),
            port: free_port(),
            dir,
            child: None,
            _tmp: tmp,
        };
        s.endpoint = format!("http://127.0.0.1:{}", s.port);
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let bin = find_tool(
            "s3s-fs",
            "FREEZER_TEST_S3S_FS",
            "cargo install s3s-fs --version 0.14.1 --features binary --locked",
        );
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--access-key",
                &self.access_key,
                "--secret-key",
                &self.secret_key,
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs starts");
        wait_for(self.port, &mut child, "s3s-fs");
        self.child = Some(child);
    }

    /// Kills the server (the port closes, the data stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// S3 options for a bucket on this server.
    pub fn options(&self, bucket: &str, prefix: &str) -> freezer_core::sink::S3Options {
        freezer_core::sink::S3Options {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key: Some(self.access_key.clone()),
            secret_key: Some(self.secret_key.clone()),
            ..Default::default()
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
