//! A real MariaDB on loopback for the store tests: `mariadbd` (Debian's mariadb-server) with
//! its own data folder under a temporary folder, started once per test binary and killed when
//! it ends. Each test takes a database of its own ([`MariaDb::database`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::servers::{find_tool, free_port, reap_at_exit, show_log_on_failure};

const INSTALL: &str = "apt-get install -y --no-install-recommends mariadb-server mariadb-client";

/// The user the tests connect as, and its password (which no error may show).
pub const USER: &str = "freezer";
pub const PASSWORD: &str = "Sesame-7Qx9-pw";

/// A running MariaDB server.
pub struct MariaDb {
    pub port: u16,
    dir: PathBuf,
    log: PathBuf,
    next: AtomicUsize,
}

fn tool(name: &str, var: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin"] {
        let p = Path::new(dir).join(name);
        if std::env::var_os(var).is_none() && p.exists() {
            return p;
        }
    }
    find_tool(name, var, INSTALL)
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl MariaDb {
    /// The server every test of this binary shares.
    pub fn shared() -> &'static MariaDb {
        static SHARED: OnceLock<MariaDb> = OnceLock::new();
        let db = SHARED.get_or_init(MariaDb::start);
        show_log_on_failure("mariadbd", &db.log);
        db
    }

    fn start() -> MariaDb {
        let mariadbd = tool("mariadbd", "FREEZER_TEST_MARIADBD");
        let install_db = tool("mariadb-install-db", "FREEZER_TEST_MARIADB_INSTALL_DB");
        let dir = tempfile::tempdir().unwrap().keep();
        let log = dir.join("mariadbd.log");
        let user = user();
        let out = Command::new(&install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                &format!("--user={user}"),
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
        let port = free_port();
        let mut child = Command::new(&mariadbd)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--port={port}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--performance-schema=OFF",
                "--max-connections=500",
                &format!("--user={user}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        reap_at_exit(child.id(), Some(&dir));
        let server = MariaDb {
            port,
            dir,
            log,
            next: AtomicUsize::new(0),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "mariadbd exited early: {st}: {}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && server.try_sql("SELECT 1").is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd was not ready on port {port} within 90 s: {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server.sql(&format!(
            "CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL PRIVILEGES ON `ft\\_%`.* TO '{USER}'@'%';"
        ));
        server
    }

    fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(tool("mariadb", "FREEZER_TEST_MARIADB"))
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .args(["-uroot", "--batch", "--skip-column-names", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .expect("the mariadb client runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs `sql` as the server's root user; its output.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("mariadb -e {sql:?} failed: {e}"))
    }

    /// Kills a connection of the server (`KILL id`).
    pub fn try_kill(&self, id: &str) -> Result<String, String> {
        self.try_sql(&format!("KILL {id}"))
    }

    /// A new empty database for one test: its name and the URL that reaches it as [`USER`].
    pub fn database(&self) -> (String, String) {
        let name = format!(
            "ft_{}_{}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        self.sql(&format!("CREATE DATABASE `{name}`"));
        let url = format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{name}", self.port);
        (name, url)
    }
}
