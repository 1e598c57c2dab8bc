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
        if let Some(mut c) = self.child.take() {
            let pids = descendants(c.id());
            let _ = c.kill();
            for pid in pids {
                let _ = Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = c.wait();
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
        // A CA, and a server certificate for 127.0.0.1 signed by it.
        let openssl =
            |args: &[&str]| run(Command::new("openssl").current_dir(dir.path()).args(args));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "3",
            "-subj",
            "/CN=freezer test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            p("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "3",
            "-extfile",
            "server.ext",
        ]);
        if client_certs {
            openssl(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "client.key",
                "-out",
                "client.csr",
                "-subj",
                "/CN=freezer test client",
            ]);
            std::fs::write(
                p("client.ext"),
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
            )
            .unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                "client.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "client.pem",
                "-days",
                "3",
                "-extfile",
                "client.ext",
            ]);
        }
        let port = free_port();
        let (pasv_lo, pasv_hi) = free_port_range(16);
        let ssl = if tls {
            format!(
                "ssl_enable=YES\nrsa_cert_file={}\nrsa_private_key_file={}\nforce_local_logins_ssl=YES\n\
                 force_local_data_ssl=YES\nrequire_ssl_reuse=YES\nssl_ciphers=HIGH\n",
                p("server.pem").display(),
                p("server.key").display()
            )
        } else {
            "ssl_enable=NO\n".to_string()
        };
        let ssl = if client_certs {
            format!(
                "{ssl}require_cert=YES\nvalidate_cert=YES\nca_certs_file={}\n",
                p("ca.pem").display()
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
                 secure_chroot_dir={}\nxferlog_enable=NO\nvsftpd_log_file={}\npam_service_name=vsftpd\n\
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
            ca_file: p("ca.pem"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            config: p("vsftpd.conf"),
            child: None,
            dir,
        };
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
        if let Some(mut c) = self.child.take() {
            let pids = descendants(c.id());
            let _ = c.kill();
            for pid in pids {
                let _ = Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = c.wait();
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
