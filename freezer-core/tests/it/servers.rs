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

thread_local! {
    /// The server logs the current test has used, shown when it fails.
    static TEST_LOGS: std::cell::RefCell<Vec<(String, PathBuf)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Shows the end of `log` (`what` names it) when the current test fails: a server's own account
/// of a failure that the test only sees as a timeout or a status code. The logs are shown by a
/// panic hook, in the failing test's captured output.
pub fn show_log_on_failure(what: &str, log: &Path) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let _ = TEST_LOGS.try_with(|logs| {
                for (what, log) in logs.borrow().iter() {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    if text.trim().is_empty() {
                        continue;
                    }
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(40)..];
                    eprintln!(
                        "--- {what}: the last {} lines of {}\n{}",
                        tail.len(),
                        log.display(),
                        tail.join("\n")
                    );
                }
            });
        }));
    });
    TEST_LOGS.with(|logs| {
        let mut logs = logs.borrow_mut();
        if !logs.iter().any(|(_, l)| l == log) {
            logs.push((what.to_string(), log.to_path_buf()));
        }
    });
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

/// Debian's sshd on loopback with its own host key; root logs in with a generated key, and
/// `freezer-sftp-test` (created when missing) with a password.
pub struct SshServer {
    pub port: u16,
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl SshServer {
    pub fn start() -> SshServer {
        let sshd = find_tool(
            "sshd",
            "FREEZER_TEST_SSHD",
            "apt-get install openssh-server",
        );
        let _ = sshd;
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        for key in ["host_key", "client_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(p(key)));
        }
        std::fs::copy(p("client_key.pub"), p("authorized_keys")).unwrap();
        let port = free_port();
        std::fs::write(
            p("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication yes\nKbdInteractiveAuthentication no\nLogLevel ERROR\nMaxStartups 100\n",
                p("host_key").display(),
                p("sshd.pid").display(),
                p("authorized_keys").display()
            ),
        )
        .unwrap();
        let host_pub = std::fs::read_to_string(p("host_key.pub")).unwrap();
        let mut parts = host_pub.split_whitespace();
        std::fs::write(
            p("known_hosts"),
            format!(
                "[127.0.0.1]:{port} {} {}\n",
                parts.next().unwrap(),
                parts.next().unwrap()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let mut s = SshServer {
            port,
            client_key: p("client_key"),
            known_hosts: p("known_hosts"),
            config: p("sshd_config"),
            child: None,
            dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        wait_for(self.port, &mut child, "sshd");
        self.child = Some(child);
    }

    /// Kills the server and every session it serves: connections drop. sshd moves each
    /// session into a process group of its own, so the whole process tree is killed.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            kill_tree(c);
        }
    }

    /// A user who logs in with a password (created once per machine, its home owned by it):
    /// `(name, password)`.
    pub fn password_user() -> (String, String) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        let (user, password) = ("freezer-sftp-test", "sftp-test-password-do-not-log");
        ONCE.call_once(|| {
            let home = format!("/home/{user}");
            if !Command::new("id")
                .arg(user)
                .output()
                .is_ok_and(|o| o.status.success())
            {
                run(Command::new("useradd").args(["-M", "-d", &home, "-s", "/bin/sh", user]));
            }
            std::fs::create_dir_all(&home).unwrap();
            run(Command::new("chown").args(["-R", &format!("{user}:{user}"), &home]));
            let mut chpasswd = Command::new("chpasswd")
                .stdin(Stdio::piped())
                .spawn()
                .expect("chpasswd runs");
            use std::io::Write;
            chpasswd
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{user}:{password}\n").as_bytes())
                .unwrap();
            assert!(chpasswd.wait().unwrap().success());
        });
        (user.into(), password.into())
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Options to reach `path` as root with the key.
    pub fn options(&self, path: &str) -> freezer_core::sink::SshOptions {
        freezer_core::sink::SshOptions {
            host: "127.0.0.1".into(),
            port: self.port,
            username: "root".into(),
            key_file: Some(self.client_key.clone()),
            password: None,
            path: path.into(),
            known_hosts: self.known_hosts.clone(),
            accept_new_host_key: false,
        }
    }
}

/// Kills `child` and every process below it (servers that fork a process per session).
fn kill_tree(mut child: Child) {
    let pids = descendants(child.id());
    let _ = child.kill();
    for pid in pids {
        let _ = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.wait();
}

/// Every process below `root`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        if let Some(ppid) = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent.push((pid, ppid));
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out.remove(0);
    out
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What installs Swift's servers (Debian 12).
const SWIFT_INSTALL: &str = "apt-get install -y --no-install-recommends swift swift-proxy swift-object swift-account swift-container python3-swiftclient memcached";

/// The user the Swift servers run as: whoever runs the tests.
fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until `port` accepts connections and, when `health` is given, answers it with 200.
fn wait_ready(port: u16, health: Option<&str>, child: &mut Child, what: &str, log: &Path) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "{what} exited early: {st}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let Some(path) = health else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            let mut answer = String::new();
            if s.write_all(req.as_bytes()).is_ok()
                && s.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 200")
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} was not ready on port {port} within 90 s");
}

/// Kills `pid` (and removes `dir`) when this test process ends, for servers shared by every
/// test of the run, which no `Drop` stops.
pub fn reap_at_exit(pid: u32, dir: Option<&Path>) {
    let rm = dir
        .map(|d| format!("; rm -rf '{}'", d.display()))
        .unwrap_or_default();
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(while kill -0 {} 2>/dev/null; do sleep 1; done; kill -9 {pid} 2>/dev/null{rm}) &",
            std::process::id()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sh runs");
}

/// A program of Swift's packages: `FREEZER_TEST_<NAME>` (`FREEZER_TEST_SWIFT_PROXY_SERVER`), or PATH.
fn swift_tool(name: &str) -> PathBuf {
    let var = format!("FREEZER_TEST_{}", name.to_uppercase().replace('-', "_"));
    find_tool(name, &var, SWIFT_INSTALL)
}

/// Swift's storage side, shared by every proxy of the test run: memcached, one ring of one
/// device per server kind, and the account, container and object servers.
struct SwiftBackend {
    dir: PathBuf,
    memcached: u16,
}

fn swift_backend() -> &'static SwiftBackend {
    static BACKEND: std::sync::OnceLock<SwiftBackend> = std::sync::OnceLock::new();
    BACKEND.get_or_init(|| {
        swift_tool("swift-proxy-server");
        assert!(
            Path::new("/etc/swift/swift.conf").exists(),
            "/etc/swift/swift.conf is missing; install Swift with: {SWIFT_INSTALL}"
        );
        let dir = tempfile::tempdir().unwrap().keep();
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(dir.join("srv/d1")).unwrap();
        let user = current_user();
        let memcached = free_port();
        let mut mc = Command::new(swift_tool("memcached"))
            .args(["-l", "127.0.0.1", "-U", "0", "-u", &user, "-p"])
            .arg(memcached.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("memcached starts");
        reap_at_exit(mc.id(), None);
        let ports = [
            ("account", free_port()),
            ("container", free_port()),
            ("object", free_port()),
        ];
        // One interpreter builds the three rings (swift-ring-builder takes a second each).
        let script = ports
            .iter()
            .map(|(kind, port)| {
                format!(
                    "b = RingBuilder(10, 1, 1)\n\
                     b.add_dev({{'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': {port}, 'device': 'd1', 'weight': 1}})\n\
                     b.rebalance()\n\
                     b.get_ring().save('{}/{kind}.ring.gz')\n",
                    etc.display()
                )
            })
            .collect::<String>();
        run(Command::new("/usr/bin/python3").arg("-c").arg(format!(
            "from swift.common.ring import RingBuilder\n{script}"
        )));
        let mut children = Vec::new();
        // `fallocate_reserve = 0`: Swift's default keeps 1% of the disk free and answers 507
        // below it (the proxy turns that into 503), which a nearly full CI disk hits.
        for (kind, port) in ports {
            let conf = etc.join(format!("{kind}-server.conf"));
            std::fs::write(
                &conf,
                format!(
                    "[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {port}\nworkers = 0\nmount_check = false\n\
                     fallocate_reserve = 0\ndisable_fallocate = true\n\
                     devices = {}\nswift_dir = {}\nuser = {user}\n\
                     [pipeline:main]\npipeline = {kind}-server\n[app:{kind}-server]\nuse = egg:swift#{kind}\n",
                    dir.join("srv").display(),
                    etc.display()
                ),
            )
            .unwrap();
            let log = dir.join(format!("{kind}.log"));
            // `--verbose` logs to the console (the log file) as well as to syslog.
            let child = Command::new(swift_tool(&format!("swift-{kind}-server")))
                .arg(&conf)
                .arg("--verbose")
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
                .spawn()
                .unwrap_or_else(|e| panic!("swift-{kind}-server: {e}"));
            reap_at_exit(child.id(), Some(&dir));
            children.push((kind, port, child, log));
        }
        wait_ready(memcached, None, &mut mc, "memcached", Path::new("/dev/null"));
        for (kind, port, child, log) in &mut children {
            wait_ready(*port, None, child, &format!("swift-{kind}-server"), log);
        }
        SwiftBackend { dir, memcached }
    })
}

/// How a Swift proxy authenticates.
pub enum ProxyAuth {
    /// TempAuth: `test:tester` / `testing`, plus `test:expiring` / `expiring`, whose tokens
    /// live `expiring_token_life` seconds (memcached keeps one token per user, shared by every
    /// proxy of the run, so short-lived tokens get a user of their own).
    TempAuth { expiring_token_life: u32 },
    /// Keystone's auth_token middleware and keystoneauth, against `keystone`; a validated
    /// token is trusted for one second only, so a revoked token is refused soon after.
    Keystone {
        keystone: String,
        admin_password: String,
    },
}

/// Debian's Swift proxy (2.30) on loopback, in front of the shared [`SwiftBackend`], with
/// TempAuth (and s3api) or Keystone, SLO and DLO.
pub struct SwiftServer {
    pub port: u16,
    pub url: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl SwiftServer {
    /// A TempAuth proxy of its own.
    pub fn start() -> SwiftServer {
        SwiftServer::start_with(
            free_port(),
            ProxyAuth::TempAuth {
                expiring_token_life: 3600,
            },
        )
    }

    /// One TempAuth proxy for every test that neither stops it nor changes its settings.
    pub fn shared() -> &'static SwiftServer {
        static SHARED: std::sync::OnceLock<SwiftServer> = std::sync::OnceLock::new();
        let s = SHARED.get_or_init(|| {
            let s = SwiftServer::start();
            if let Some(c) = &s.child {
                reap_at_exit(c.id(), Some(s._dir.path()));
            }
            s
        });
        s.show_logs_on_failure();
        s
    }

    /// The proxy's and the backend servers' logs are shown when the current test fails.
    fn show_logs_on_failure(&self) {
        show_log_on_failure("swift-proxy-server", &self.log);
        for kind in ["account", "container", "object"] {
            show_log_on_failure(
                &format!("swift-{kind}-server"),
                &swift_backend().dir.join(format!("{kind}.log")),
            );
        }
    }

    /// A proxy on `port` authenticating with `auth`.
    pub fn start_with(port: u16, auth: ProxyAuth) -> SwiftServer {
        let backend = swift_backend();
        let dir = tempfile::tempdir().unwrap();
        let (auth_filters, auth_conf) = match auth {
            ProxyAuth::TempAuth {
                expiring_token_life,
            } => (
                "s3api tempauth",
                format!(
                    "[filter:s3api]\nuse = egg:swift#s3api\n\
                     [filter:tempauth]\nuse = egg:swift#tempauth\nuser_test_tester = testing .admin\n\
                     user_test_expiring = expiring .admin\ntoken_life = {expiring_token_life}\n"
                ),
            ),
            ProxyAuth::Keystone {
                keystone,
                admin_password,
            } => (
                "authtoken keystoneauth",
                format!(
                    "[filter:authtoken]\npaste.filter_factory = keystonemiddleware.auth_token:filter_factory\n\
                     www_authenticate_uri = {keystone}\nauth_url = {keystone}\nauth_type = password\n\
                     username = admin\npassword = {admin_password}\nproject_name = admin\n\
                     user_domain_name = Default\nproject_domain_name = Default\n\
                     delay_auth_decision = True\nmemcached_servers = 127.0.0.1:{}\ntoken_cache_time = 1\n\
                     [filter:keystoneauth]\nuse = egg:swift#keystoneauth\noperator_roles = admin, member\n",
                    backend.memcached
                ),
            ),
        };
        let config = dir.path().join("proxy-server.conf");
        let mut filters: String = [
            "catch_errors",
            "gatekeeper",
            "healthcheck",
            "listing_formats",
            "bulk",
            "tempurl",
            "copy",
            "slo",
            "dlo",
            "versioned_writes",
            "symlink",
        ]
        .iter()
        .map(|f| format!("[filter:{f}]\nuse = egg:swift#{f}\n"))
        .collect();
        filters += "[filter:proxy-logging]\nuse = egg:swift#proxy_logging\n";
        filters += &format!(
            "[filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:{}\n",
            backend.memcached
        );
        std::fs::write(
            &config,
            format!(
                "[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = {port}\nworkers = 0\nswift_dir = {}\nuser = {}\n\
                 [pipeline:main]\npipeline = catch_errors gatekeeper healthcheck proxy-logging cache \
                 listing_formats bulk tempurl {auth_filters} copy slo dlo versioned_writes symlink \
                 proxy-logging proxy-server\n\
                 [app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\
                 {filters}{auth_conf}",
                backend.dir.join("etc").display(),
                current_user(),
            ),
        )
        .unwrap();
        let mut s = SwiftServer {
            port,
            url: format!("http://127.0.0.1:{port}"),
            config,
            log: dir.path().join("proxy.log"),
            child: None,
            _dir: dir,
        };
        s.show_logs_on_failure();
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(swift_tool("swift-proxy-server"))
            .arg(&self.config)
            .arg("--verbose")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("swift-proxy-server starts");
        wait_ready(
            self.port,
            Some("/healthcheck"),
            &mut child,
            "swift-proxy-server",
            &self.log,
        );
        self.child = Some(child);
    }

    /// Kills the proxy (connections drop; the data stays in the backend).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// TempAuth's URL.
    pub fn auth_url(&self) -> String {
        format!("{}/auth/v1.0", self.url)
    }

    /// TempAuth credentials of `test:tester`.
    pub fn tempauth(&self) -> freezer_core::sink::SwiftAuth {
        freezer_core::sink::SwiftAuth::TempAuth {
            url: self.auth_url(),
            user: "test:tester".into(),
            key: "testing".into(),
        }
    }

    /// Options for `container` (`container/prefix`), as `test:tester`, with segments of
    /// `segment_size` bytes.
    pub fn options(
        &self,
        container: &str,
        segment_size: usize,
    ) -> freezer_core::sink::SwiftOptions {
        let mut o = freezer_core::sink::SwiftOptions::new(container, self.tempauth());
        o.segment_size = segment_size;
        o
    }

    /// S3 options for a bucket of this proxy's s3api, as `test:tester`.
    pub fn s3_options(&self, bucket: &str, prefix: &str) -> freezer_core::sink::S3Options {
        freezer_core::sink::S3Options {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint: Some(self.url.clone()),
            region: Some("us-east-1".into()),
            access_key: Some("test:tester".into()),
            secret_key: Some("testing".into()),
            ..Default::default()
        }
    }
}

impl Drop for SwiftServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real Keystone (Debian's `keystone`, SQLite, fernet tokens) on loopback, set up by
/// `keystone_fixture.py`: project `freezer-test`, user `freezer` (role `member`), and an
/// `object-store` catalog entry pointing at the Swift proxy on `swift_port`.
pub struct KeystoneServer {
    pub url: String,
    pub admin_password: String,
    pub user_password: String,
    pub project_id: String,
    pub user_id: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl KeystoneServer {
    pub fn start(swift_port: u16) -> KeystoneServer {
        KeystoneServer::start_with(swift_port, true)
    }

    /// A Keystone without Swift (the catalog's `object-store` entry points at a closed port):
    /// for the tests of the service's Keystone authentication.
    #[allow(dead_code)] // used by the service tests only
    pub fn start_alone() -> KeystoneServer {
        KeystoneServer::start_with(free_port(), false)
    }

    fn start_with(swift_port: u16, with_swift: bool) -> KeystoneServer {
        find_tool(
            "keystone-manage",
            "FREEZER_TEST_KEYSTONE_MANAGE",
            "apt-get install -y --no-install-recommends keystone python3-keystonemiddleware",
        );
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("keystone_fixture.py");
        std::fs::write(&script, include_str!("keystone_fixture.py")).unwrap();
        let port = free_port();
        let (admin_password, user_password) = (
            "keystone-admin-pw-do-not-log",
            "keystone-user-pw-do-not-log",
        );
        let log = dir.path().join("keystone.log");
        show_log_on_failure("keystone", &log);
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(dir.path())
            .args([
                &port.to_string(),
                &swift_port.to_string(),
                admin_password,
                user_password,
            ])
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("python3 runs");
        // Swift's backend starts while Keystone sets itself up.
        if with_swift {
            swift_backend();
        }
        let ready = dir.path().join("ready");
        let deadline = Instant::now() + Duration::from_secs(120);
        let doc = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break text;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "keystone exited early ({st}): {} {}",
                    std::fs::read_to_string(dir.path().join("failed")).unwrap_or_default(),
                    std::fs::read_to_string(dir.path().join("keystone-manage.log"))
                        .unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "keystone was not ready within 120 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        KeystoneServer {
            url: format!("http://127.0.0.1:{port}/v3"),
            admin_password: admin_password.into(),
            user_password: user_password.into(),
            project_id: doc["project_id"].as_str().unwrap().to_string(),
            user_id: doc["user_id"].as_str().unwrap().to_string(),
            dir,
            child,
        }
    }

    /// How many tokens `user` asked for.
    pub fn token_requests(&self, user: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("token-requests.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == user)
            .count()
    }

    /// Enables or disables user `freezer`, as an administrator. Disabling revokes every token
    /// the user holds.
    pub fn set_user_enabled(&self, enabled: bool) {
        let script = r#"
import json, sys, urllib.request
url, password, user, enabled = sys.argv[1:5]
def call(method, path, body, token=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode())
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    return urllib.request.urlopen(req)
token = call("POST", "/auth/tokens", {"auth": {
    "identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"name": "Default"}, "password": password}}},
    "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}).headers["X-Subject-Token"]
call("PATCH", "/users/" + user, {"user": {"enabled": enabled == "true"}}, token)
"#;
        run(Command::new("/usr/bin/python3")
            .args(["-c", script, &self.url, &self.admin_password, &self.user_id])
            .arg(enabled.to_string()));
    }

    /// The `OS_*` variables of user `freezer` in project `freezer-test`, as an openrc sets them.
    pub fn env(&self) -> freezer_core::job::Environment {
        [
            ("OS_AUTH_URL", self.url.as_str()),
            ("OS_USERNAME", "freezer"),
            ("OS_PASSWORD", self.user_password.as_str()),
            ("OS_PROJECT_NAME", "freezer-test"),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_NAME", "Default"),
            ("OS_REGION_NAME", "RegionOne"),
            ("OS_INTERFACE", "public"),
            ("OS_IDENTITY_API_VERSION", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for KeystoneServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's vsftpd on loopback with its own configuration (no system instance is involved):
/// passive ports from a free range, the password user of [`SshServer::password_user`] writing
/// into `root`, and for ftps explicit TLS with a server certificate signed by a CA made here
/// (`ca_file`), so that a client trusts it only when told to.
pub struct FtpServer {
    pub port: u16,
    pub tls: bool,
    pub user: String,
    pub password: String,
    /// A folder the user owns: the sinks' folders go below it.
    pub root: PathBuf,
    /// The CA that signed the server's certificate (ftps).
    pub ca_file: PathBuf,
    /// A client certificate and its key, signed by the same CA.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// Where the certificates are, kept as long as the server.
    pub pki: TestPki,
}

/// A run of `n` free ports on loopback (for a server's passive data connections).
fn free_port_range(n: u16) -> (u16, u16) {
    for _ in 0..100 {
        let lo = free_port();
        if lo > u16::MAX - n {
            continue;
        }
        let held: Vec<_> = (lo..lo + n)
            .map_while(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == n as usize {
            return (lo, lo + n - 1);
        }
    }
    panic!("no run of {n} free ports on loopback");
}

impl FtpServer {
    pub fn start(tls: bool) -> FtpServer {
        FtpServer::start_with(tls, false)
    }

    /// An ftps server that also demands a client certificate signed by its CA.
    pub fn start_requiring_client_certificates() -> FtpServer {
        FtpServer::start_with(true, true)
    }

    fn start_with(tls: bool, client_certs: bool) -> FtpServer {
        find_tool(
            "vsftpd",
            "FREEZER_TEST_VSFTPD",
            "apt-get install vsftpd openssl",
        );
        let (user, password) = SshServer::password_user();
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(p("empty")).unwrap();
        std::fs::create_dir(p("data")).unwrap();
        run(Command::new("chown").arg(&user).arg(p("data")));
        // A CA, a server certificate for 127.0.0.1 (not localhost) signed by it, and a
        // client's.
        let pki = TestPki::for_names("IP:127.0.0.1");
        if client_certs {
            pki.issue_client();
        }
        let port = free_port();
        let (pasv_lo, pasv_hi) = free_port_range(16);
        let ssl = if tls {
            format!(
                "ssl_enable=YES\nrsa_cert_file={}\nrsa_private_key_file={}\nforce_local_logins_ssl=YES\n\
                 force_local_data_ssl=YES\nrequire_ssl_reuse=YES\nssl_ciphers=HIGH\n",
                pki.path("server.pem").display(),
                pki.path("server.key").display()
            )
        } else {
            "ssl_enable=NO\n".to_string()
        };
        let ssl = if client_certs {
            format!(
                "{ssl}require_cert=YES\nvalidate_cert=YES\nca_certs_file={}\n",
                pki.path("ca.pem").display()
            )
        } else {
            ssl
        };
        std::fs::write(
            p("vsftpd.conf"),
            format!(
                "listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\n\
                 anonymous_enable=NO\nlocal_enable=YES\nwrite_enable=YES\nlocal_umask=022\n\
                 pasv_enable=YES\npasv_min_port={pasv_lo}\npasv_max_port={pasv_hi}\npasv_address=127.0.0.1\n\
                 port_enable=NO\nconnect_from_port_20=NO\nseccomp_sandbox=NO\nisolate=NO\nisolate_network=NO\n\
                 secure_chroot_dir={}\nxferlog_enable=YES\nxferlog_std_format=NO\nlog_ftp_protocol=YES\nvsftpd_log_file={}\npam_service_name=vsftpd\n\
                 userlist_enable=NO\nutf8_filesystem=YES\nmax_clients=200\nmax_per_ip=200\n{ssl}",
                p("empty").display(),
                p("vsftpd.log").display()
            ),
        )
        .unwrap();
        let mut s = FtpServer {
            port,
            tls,
            user,
            password,
            root: p("data"),
            ca_file: pki.path("ca.pem"),
            client_cert: pki.path("client.pem"),
            client_key: pki.path("client.key"),
            config: p("vsftpd.conf"),
            child: None,
            dir,
            pki,
        };
        // Commands and transfers (vsftpd writes `<password>` for the password).
        show_log_on_failure("vsftpd", &s.dir.path().join("vsftpd.log"));
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        use std::os::unix::process::CommandExt;
        let vsftpd = find_tool(
            "vsftpd",
            "FREEZER_TEST_VSFTPD",
            "apt-get install vsftpd openssl",
        );
        let mut child = Command::new(vsftpd)
            .arg(&self.config)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vsftpd starts");
        wait_for(self.port, &mut child, "vsftpd");
        self.child = Some(child);
    }

    /// Kills the server and every session process it forked: connections drop.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            kill_tree(c);
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Options to reach `name` below `root` as the password user; ftps trusts the test CA.
    pub fn options(&self, name: &str) -> freezer_core::sink::FtpOptions {
        freezer_core::sink::FtpOptions {
            host: "127.0.0.1".into(),
            port: self.port,
            username: self.user.clone(),
            password: self.password.clone(),
            path: self.root.join(name).display().to_string(),
            tls: self.tls,
            ca_file: self.tls.then(|| self.ca_file.clone()),
            ..Default::default()
        }
    }
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The arguments of `openssl req` for a new P-256 key without a passphrase.
const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A private CA made with the `openssl` CLI, and a server certificate it signed for
/// `127.0.0.1` and `localhost`: `ca.pem`, `ca.key`, `server.pem`, `server.key` (0600) in a
/// folder of their own.
pub struct TestPki {
    pub dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> TestPki {
        TestPki::for_names("IP:127.0.0.1,DNS:localhost")
    }

    /// The same, with the server certificate for `names` only (`subjectAltName`).
    pub fn for_names(names: &str) -> TestPki {
        find_tool("openssl", "FREEZER_TEST_OPENSSL", "apt-get install openssl");
        let pki = TestPki {
            dir: tempfile::tempdir().unwrap(),
        };
        let mut ca = vec!["req", "-x509"];
        ca.extend(EC_KEY);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "3",
            "-subj",
            "/CN=freezer test CA",
        ]);
        pki.openssl(&ca);
        pki.private("ca.key");
        pki.issue(
            "server",
            "/CN=127.0.0.1",
            &format!(
                "subjectAltName={names}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        );
        pki
    }

    /// Also `client.pem` and `client.key` (0600), a client certificate signed by the CA.
    pub fn issue_client(&self) {
        self.issue(
            "client",
            "/CN=freezer test client",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
    }

    /// `NAME.key` (0600) and `NAME.pem` for `subject` with the extensions `ext`, signed by the CA.
    fn issue(&self, name: &str, subject: &str, ext: &str) {
        let (key, csr, pem, ext_file) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let mut req = vec!["req"];
        req.extend(EC_KEY);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
        self.openssl(&req);
        std::fs::write(self.path(&ext_file), ext).unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "3",
            "-extfile",
            &ext_file,
        ]);
        self.private(&key);
    }

    fn openssl(&self, args: &[&str]) {
        run(Command::new("openssl")
            .current_dir(self.dir.path())
            .args(args));
    }

    fn private(&self, file: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(file), std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
