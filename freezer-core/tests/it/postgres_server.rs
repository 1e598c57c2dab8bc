//! A PostgreSQL server of its own for a test (or one shared by a test binary): Debian's
//! postgresql-15 (`initdb`, `postgres` run as user `postgres`, which initdb requires) on a free
//! loopback port with its own data folder and socket folder, the superuser `postgres` with
//! [`PASSWORD`] over scram-sha-256. Used by `db_postgres.rs` and by the CLI's tests.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::servers::{free_port, reap_at_exit, show_log_on_failure};

pub const INSTALL: &str =
    "apt-get install -y --no-install-recommends postgresql-15 (./test.sh does)";
/// The superuser's password: no error, snapshot or report may show it.
pub const PASSWORD: &str = "Pg-Sesame-4Kz8-pw";

/// The newest `/usr/lib/postgresql/<version>/bin/<name>`.
pub fn bin(name: &str) -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            let p = e.path().join("bin").join(name);
            p.exists().then_some((v, p))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).unwrap_or_else(|| {
        panic!("{name} is not installed; these tests need a real PostgreSQL server: {INSTALL}")
    })
}

/// The uid and gid of the `postgres` user (initdb refuses root).
pub fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        assert!(out.status.success(), "no postgres user: {INSTALL}");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

pub fn as_postgres(cmd: &mut Command) -> &mut Command {
    let (uid, gid) = postgres_ids();
    cmd.uid(uid)
        .gid(gid)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C.UTF-8")
}

/// A PostgreSQL server on a free loopback port, its data folder under `dir`.
pub struct Pg {
    pub port: u16,
    pub dir: PathBuf,
    pub data: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Pg {
    /// The server every test of this binary shares (each test on its own databases).
    pub fn shared() -> &'static Pg {
        static SHARED: OnceLock<Pg> = OnceLock::new();
        let pg = SHARED.get_or_init(|| {
            let mut pg = Pg::init(&tempfile::tempdir().unwrap().keep());
            pg.start();
            let pid = pg.child.as_ref().unwrap().id();
            reap_at_exit(pid, Some(&pg.dir));
            pg
        });
        show_log_on_failure("postgres", &pg.log);
        pg
    }

    /// A new cluster (initdb) in `dir`, not started.
    pub fn init(dir: &Path) -> Pg {
        let (uid, gid) = postgres_ids();
        std::fs::create_dir_all(dir).unwrap();
        // The postgres user must reach its folder.
        let mut p = Some(dir);
        while let Some(d) = p {
            if d.starts_with(std::env::temp_dir()) && d != std::env::temp_dir() {
                std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .unwrap();
            }
            p = d.parent();
        }
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        let data = dir.join("data");
        let out = as_postgres(&mut Command::new(bin("initdb")))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(&pwfile).unwrap();
        Pg::on(dir, &data)
    }

    /// A server (not started) on the data folder `data`.
    pub fn on(dir: &Path, data: &Path) -> Pg {
        Pg {
            port: free_port(),
            dir: dir.to_path_buf(),
            data: data.to_path_buf(),
            log: dir.join(format!("postgres-{}.log", free_port())),
            child: None,
        }
    }

    pub fn start(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(&self.log, Some(uid), Some(gid)).unwrap();
        let mut child = as_postgres(&mut Command::new(bin("postgres")))
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("postgres starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "postgres exited early: {st}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if self.try_sql("postgres", "SELECT 1").is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "postgres was not ready on port {} within 60 s: {}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// Stops the server (a fast shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(&c),
                rustix::process::Signal::INT,
            );
            c.wait().unwrap();
        }
    }

    /// A password file (0600) the tests' own psql uses.
    pub fn pgpass(&self) -> PathBuf {
        let p = self.dir.join(format!("test-pgpass-{}", self.port));
        if !p.exists() {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .unwrap();
            writeln!(f, "*:*:*:*:{PASSWORD}").unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        }
        p
    }

    pub fn psql(&self, db: &str) -> Command {
        let mut c = Command::new(bin("psql"));
        c.env_clear()
            .env("PGPASSFILE", self.pgpass())
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGCONNECT_TIMEOUT", "5")
            .env("PGCLIENTENCODING", "UTF8")
            .args(["-X", "-w", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!("dbname='{}'", db.replace('\'', "\\'")));
        c
    }

    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = self
            .psql(db)
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("psql -d {db:?} -c {sql:?}: {e}"))
    }

    /// A postgres_conf for this server, written under `dir`.
    pub fn conf(&self, dir: &Path, extra: &str) -> PathBuf {
        let p = dir.join(format!("pg-{}.ini", free_port()));
        std::fs::write(
            &p,
            format!(
                "[default]\nhost = 127.0.0.1\nport = {}\nuser = postgres\npassword = {PASSWORD}\n{extra}",
                self.port
            ),
        )
        .unwrap();
        p
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Quotes an identifier for SQL.
pub fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
