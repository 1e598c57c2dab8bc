//! A MariaDB server of its own for a test (or one shared by a test binary): `mariadbd` of
//! Debian's mariadb-server on a newly installed data folder (or a given one, as a restored
//! copy), on a free loopback port, with its own socket and temporary folder, and an
//! administrator ([`ADMIN`], [`PASSWORD`]) reachable over TCP. Used by `db_mysql.rs` and by
//! the CLI's tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::servers::{find_tool, free_port, reap_at_exit, show_log_on_failure};

pub const INSTALL: &str =
    "apt-get install -y --no-install-recommends mariadb-server mariadb-client mariadb-backup";

/// The administrator the backups connect as, and its password (no error may show it).
pub const ADMIN: &str = "fz_admin";
pub const PASSWORD: &str = "Open-Sesame-4Zq8";

pub fn tool(name: &str) -> PathBuf {
    let var = format!("FREEZER_TEST_{}", name.to_uppercase().replace('-', "_"));
    for dir in ["/usr/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if std::env::var_os(&var).is_none() && p.exists() {
            return p;
        }
    }
    find_tool(name, &var, INSTALL)
}

/// A server's own temporary folder: a server starting removes the `#sql*` files of the
/// temporary folder, which would be another's (installing) if they shared one.
fn tmpdir(dir: &Path) -> PathBuf {
    let t = dir.join("tmp");
    std::fs::create_dir_all(&t).unwrap();
    t
}

pub fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A running mariadbd, stopped when dropped.
pub struct Server {
    pub port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    next: AtomicUsize,
}

impl Server {
    /// The server the tests of this binary share (each on databases of its own).
    pub fn shared() -> &'static Server {
        static SHARED: OnceLock<Server> = OnceLock::new();
        let s = SHARED.get_or_init(Server::new);
        show_log_on_failure("mariadbd", &s.log);
        s
    }

    /// A new server on a newly installed data folder, with [`ADMIN`].
    pub fn new() -> Server {
        let dir = tempfile::tempdir().unwrap().keep();
        let data = dir.join("data");
        let out = Command::new(tool("mariadb-install-db"))
            .env("TMPDIR", tmpdir(&dir))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                &format!("--user={}", user()),
            ])
            .stdin(Stdio::null())
            .output()
            .expect("mariadb-install-db runs");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let s = Server::start(dir, &data);
        s.sql(&format!(
            "CREATE USER '{ADMIN}'@'%' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL PRIVILEGES ON *.* TO '{ADMIN}'@'%' WITH GRANT OPTION;"
        ));
        s
    }

    /// Starts mariadbd on `data`, its socket, pid file and log in `dir` (on another port
    /// when the one chosen was taken meanwhile).
    pub fn start(dir: PathBuf, data: &Path) -> Server {
        let log = dir.join("mariadbd.log");
        for attempt in 0.. {
            let port = free_port();
            let child = Command::new(tool("mariadbd"))
                .env("TMPDIR", tmpdir(&dir))
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", dir.join("sock").display()))
                .arg(format!("--pid-file={}", dir.join("pid").display()))
                .arg(format!("--log-error={}", log.display()))
                .arg(format!("--port={port}"))
                .args([
                    "--bind-address=127.0.0.1",
                    "--skip-name-resolve",
                    "--innodb-buffer-pool-size=32M",
                    "--performance-schema=OFF",
                    "--max-connections=100",
                    &format!("--user={}", user()),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mariadbd starts");
            reap_at_exit(child.id(), Some(&dir));
            let mut s = Server {
                port,
                dir: dir.clone(),
                log: log.clone(),
                child: Some(child),
                next: AtomicUsize::new(0),
            };
            show_log_on_failure("mariadbd", &s.log);
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                if let Ok(Some(st)) = s.child.as_mut().unwrap().try_wait() {
                    let text = std::fs::read_to_string(&s.log).unwrap_or_default();
                    s.child = None;
                    if attempt < 3 && text.contains("Address already in use") {
                        break;
                    }
                    panic!("mariadbd exited early: {st}: {text}");
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && s.try_sql("SELECT 1").is_ok()
                {
                    return s;
                }
                assert!(
                    Instant::now() < deadline,
                    "mariadbd was not ready on port {port} within 90 s: {}",
                    std::fs::read_to_string(&s.log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        unreachable!()
    }

    /// Stops it cleanly (SIGTERM, then waits).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    pub fn client(&self) -> Command {
        let mut c = Command::new(tool("mariadb"));
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .args(["-uroot", "--batch", "--skip-column-names"]);
        c
    }

    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = self
            .client()
            .args(["-e", sql])
            .stdin(Stdio::null())
            .output()
            .expect("the mariadb client runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs `sql` as root; its output, trimmed.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("mariadb -e {sql:?} failed: {e}"))
    }

    /// A new database name for one test.
    pub fn database(&self) -> String {
        format!(
            "fzm_{}_{}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A `mysql_conf` reaching it as [`ADMIN`], with `more` lines.
    pub fn conf(&self, dir: &Path, more: &str) -> PathBuf {
        write_conf(
            dir,
            &format!(
                "[default]\nhost = 127.0.0.1\nport = {}\nuser = {ADMIN}\npassword = {PASSWORD}\n{more}",
                self.port
            ),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn write_conf(dir: &Path, text: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = dir.join(format!("my{}.cnf", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&p, text).unwrap();
    p
}
