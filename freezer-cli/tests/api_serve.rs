//! `freezer api serve` as a user runs it: the real binary with a users file, a login through
//! its standalone Keystone v3 (`/identity/v3`), a client registered and a job created and read
//! back, a clean stop on SIGTERM, and the job still there after a restart on the same
//! database. Also `freezer api hash-password`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Status, headers (lower-cased names) and body of a response.
type Reply = (u16, Vec<(String, String)>, Value);

/// One HTTP/1.1 request (`Connection: close`): status, headers (lower-cased names), body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("X-Auth-Token: {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    Ok((status, headers, body))
}

struct Server {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let port = free_port();
        let log = dir.join(format!("api-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_freezer"))
            .args(["api", "serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--database")
            .arg(format!("sqlite:{}", dir.join("api.db").display()))
            .arg("--users")
            .arg(dir.join("users.json"))
            .arg("--token-key")
            .arg(dir.join("token.key"))
            .env("XDG_STATE_HOME", dir.join("state"))
            .env_remove("FREEZER_KEYSTONE_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _, _)) = http(port, "GET", "/healthcheck", None, None) {
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("freezer api serve exited ({status}): {}", server.logs());
            }
            assert!(
                Instant::now() < deadline,
                "the API did not answer: {}",
                server.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (within 20 s).
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no stop on SIGTERM: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn login(port: u16, user: &str, password: &str, project: &str) -> (String, String) {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}});
    let (status, headers, resp) =
        http(port, "POST", "/identity/v3/auth/tokens", None, Some(&body)).unwrap();
    assert_eq!(status, 201, "{resp}");
    let token = headers
        .iter()
        .find(|(k, _)| k == "x-subject-token")
        .map(|(_, v)| v.clone())
        .expect("X-Subject-Token");
    let project_id = resp["token"]["project"]["id"].as_str().unwrap().to_string();
    (token, project_id)
}

#[test]
fn serve_login_create_a_job_stop_and_restart() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    std::fs::write(
        &users,
        json!([
            {"user": "alice", "password": "alice-pw", "project": "backups", "roles": ["member"]},
            {"user": "rita", "password": "rita-pw", "project": "backups", "roles": ["reader"]}
        ])
        .to_string(),
    )
    .unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();

    let server = Server::start(dir.path());
    let port = server.port;
    let (status, _, v) = http(port, "GET", "/", None, None).unwrap();
    assert_eq!(status, 300, "{v}");
    let (token, project) = login(port, "alice", "alice-pw", "backups");
    let p = format!("/v2/{project}");
    // No token, a bad token: 401.
    assert_eq!(
        http(port, "GET", &format!("{p}/jobs/"), None, None)
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        http(port, "GET", &format!("{p}/jobs/"), Some("nope"), None)
            .unwrap()
            .0,
        401
    );
    let t = Some(token.as_str());
    let (status, _, v) = http(
        port,
        "POST",
        &format!("{p}/clients/"),
        t,
        Some(&json!({"client_id": "node1", "hostname": "node1"})),
    )
    .unwrap();
    assert_eq!(status, 201, "{v}");
    let job = json!({"client_id": "node1", "description": "etc nightly",
        "job_schedule": {"schedule_interval": "1 days"},
        "job_actions": [{"freezer_action": {"action": "backup", "path_to_backup": "/etc", "backup_name": "etc", "container": "/srv/b"}}]});
    let (status, headers, v) = http(port, "POST", &format!("{p}/jobs/"), t, Some(&job)).unwrap();
    assert_eq!(status, 201, "{v}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "x-openstack-request-id" && v.starts_with("req-"))
    );
    let job_id = v["job_id"].as_str().unwrap().to_string();
    let (status, _, got) = http(port, "GET", &format!("{p}/jobs/{job_id}"), t, None).unwrap();
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["description"], "etc nightly");
    assert_eq!(got["project_id"], project.as_str());
    // A reader reads and may not write.
    let (reader, _) = login(port, "rita", "rita-pw", "backups");
    let r = Some(reader.as_str());
    assert_eq!(
        http(port, "GET", &format!("{p}/jobs/{job_id}"), r, None)
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        http(port, "POST", &format!("{p}/jobs/"), r, Some(&job))
            .unwrap()
            .0,
        403
    );

    let status = server.stop();
    assert!(status.success(), "exit {status}");

    // The job is in the database; the token key too, so the old token still works.
    let server = Server::start(dir.path());
    let (status, _, got) =
        http(server.port, "GET", &format!("{p}/jobs/{job_id}"), t, None).unwrap();
    assert_eq!(status, 200, "{got}: {}", server.logs());
    assert_eq!(
        got["job_actions"][0]["freezer_action"]["backup_name"],
        "etc"
    );
    assert!(server.stop().success());
}

#[test]
fn hash_password_prints_an_argon2_hash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_freezer"))
        .args(["api", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.trim().starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("s3cret"));
}

#[test]
fn serve_refuses_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    // Standalone without a users file, and a Keystone without a password: refused, named.
    let out = Command::new(env!("CARGO_BIN_EXE_freezer"))
        .args(["api", "serve", "--listen", "127.0.0.1:0", "--database"])
        .arg(format!("sqlite:{}", dir.path().join("a.db").display()))
        .env("XDG_STATE_HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--users"));
    let out = Command::new(env!("CARGO_BIN_EXE_freezer"))
        .args(["api", "serve", "--keystone-url", "http://127.0.0.1:1/v3"])
        .env("XDG_STATE_HOME", dir.path())
        .env_remove("FREEZER_KEYSTONE_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--keystone-password-file"));
}

/// A private CA and a server certificate it signed for 127.0.0.1 (`ca.pem`, `server.pem`,
/// `server.key` 0600, and `ca.key`), made with the `openssl` CLI.
fn make_pki(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("the openssl CLI (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let args = |s: String| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let run = |s: String| {
        let a = args(s);
        openssl(&a.iter().map(String::as_str).collect::<Vec<_>>());
    };
    run(format!(
        "req -x509 {ec} -keyout ca.key -out ca.pem -days 3 -subj /CN=test-CA"
    ));
    run(format!(
        "req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1"
    ));
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 3 -extfile server.ext".into());
    use std::os::unix::fs::PermissionsExt;
    for k in ["ca.key", "server.key"] {
        std::fs::set_permissions(dir.join(k), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// `curl` of `https://127.0.0.1:port<path>` trusting `ca`: the status and the JSON answer.
fn curl(port: u16, ca: &Path, args: &[&str], path: &str) -> (u16, Value) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(ca)
        .args(args)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[test]
fn serve_over_tls_and_the_catalog_says_https() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let users = dir.path().join("users.json");
    std::fs::write(
        &users,
        json!([{"user": "alice", "password": "alice-pw", "project": "backups", "roles": ["member"]}])
            .to_string(),
    )
    .unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    let serve = |key: &str| {
        let port = free_port();
        let log = dir.path().join(format!("api-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_freezer"))
            .args(["api", "serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--database")
            .arg(format!("sqlite:{}", dir.path().join("api.db").display()))
            .arg("--users")
            .arg(&users)
            .arg("--token-key")
            .arg(dir.path().join("token.key"))
            .arg("--tls-cert")
            .arg(dir.path().join("server.pem"))
            .arg("--tls-key")
            .arg(dir.path().join(key))
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Server { child, port, log }
    };
    let ca = dir.path().join("ca.pem");

    let mut server = serve("server.key");
    let port = server.port;
    let deadline = Instant::now() + Duration::from_secs(60);
    while curl(port, &ca, &[], "/healthcheck").0 != 200 {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("freezer api serve exited ({status}): {}", server.logs());
        }
        assert!(Instant::now() < deadline, "no answer: {}", server.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Plain HTTP gets no answer from the HTTPS port.
    assert!(http(port, "GET", "/healthcheck", None, None).map_or(true, |r| r.0 != 200));
    let (status, v) = curl(port, &ca, &[], "/identity/v3/");
    assert_eq!(status, 200, "{v}");
    let me = format!("https://127.0.0.1:{port}");
    assert_eq!(
        v["version"]["links"][0]["href"],
        format!("{me}/identity/v3/"),
        "{v}"
    );
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "alice", "domain": {"name": "Default"}, "password": "alice-pw"}}},
        "scope": {"project": {"name": "backups", "domain": {"name": "Default"}}}}});
    let (status, v) = curl(
        port,
        &ca,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &body.to_string(),
        ],
        "/identity/v3/auth/tokens",
    );
    assert_eq!(status, 201, "{v}");
    let backup: Vec<&str> = v["token"]["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "backup")
        .flat_map(|e| e["endpoints"].as_array().unwrap())
        .map(|e| e["url"].as_str().unwrap())
        .collect();
    assert!(
        !backup.is_empty() && backup.iter().all(|u| u.starts_with(&me)),
        "{v}"
    );
    // Without the CA, curl refuses the certificate.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("{me}/healthcheck"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(server.stop().success());

    // A key others may read, a key of another certificate: refused at start, named.
    std::fs::copy(dir.path().join("server.key"), dir.path().join("open.key")).unwrap();
    std::fs::set_permissions(
        dir.path().join("open.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    for (key, says) in [
        ("open.key", "chmod 600"),
        ("ca.key", "server.pem"),
        ("none.key", "none.key"),
    ] {
        let mut s = serve(key);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = s.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{key} was accepted: {}",
                s.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let logs = s.logs();
        assert_eq!(status.code(), Some(1), "{logs}");
        assert!(
            logs.contains("--tls-key") && logs.contains(key) && logs.contains(says),
            "{key}: {logs}"
        );
    }
    // Half a pair: refused by the flags.
    let out = Command::new(env!("CARGO_BIN_EXE_freezer"))
        .args(["api", "serve", "--tls-cert"])
        .arg(dir.path().join("server.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

/// Sends SIGHUP and waits (20 s at most) for the server's log to say `what` `count` times.
fn hangup_and_wait(server: &Server, what: &str, count: usize) {
    let pid = rustix::process::Pid::from_child(&server.child);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.logs().matches(what).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {what:?} after SIGHUP: {}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_reads_the_users_file_again_and_a_bad_one_changes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.json");
    let write = |v: &Value| {
        std::fs::write(&users, v.to_string()).unwrap();
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let alice =
        json!({"user": "alice", "password": "alice-pw", "project": "backups", "roles": ["member"]});
    let bob =
        json!({"user": "bob", "password": "bob-pw", "project": "backups", "roles": ["member"]});
    write(&json!([alice]));
    let server = Server::start(dir.path());
    let port = server.port;
    let try_login = |user: &str, pw: &str| {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"name": "Default"}, "password": pw}}},
            "scope": {"project": {"name": "backups", "domain": {"name": "Default"}}}}});
        http(port, "POST", "/identity/v3/auth/tokens", None, Some(&body))
            .unwrap()
            .0
    };
    assert_eq!(try_login("bob", "bob-pw"), 401, "bob is not a user yet");
    let (alice_token, project) = login(port, "alice", "alice-pw", "backups");
    let jobs = format!("/v2/{project}/jobs/");

    // A user added: bob logs in after SIGHUP, without a restart; alice's token still works.
    write(&json!([alice, bob]));
    hangup_and_wait(&server, "users file read again", 1);
    let (bob_token, _) = login(port, "bob", "bob-pw", "backups");
    let status = |t: &str| http(port, "GET", &jobs, Some(t), None).unwrap().0;
    assert_eq!(status(&alice_token), 200);
    assert_eq!(status(&bob_token), 200);

    // A file that is refused (plaintext passwords others may read; then malformed JSON)
    // changes nothing, and says why.
    std::fs::write(&users, json!([alice]).to_string()).unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o644)).unwrap();
    hangup_and_wait(&server, "the users file was not taken", 1);
    std::fs::write(&users, "[{\"user\": ").unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o600)).unwrap();
    hangup_and_wait(&server, "the users file was not taken", 2);
    assert_eq!(status(&bob_token), 200, "bob is still a user");
    assert_eq!(try_login("bob", "bob-pw"), 201);
    assert!(
        !server.logs().contains("bob-pw") && !server.logs().contains("alice-pw"),
        "{}",
        server.logs()
    );

    // A user removed: their token is refused at once, and they cannot log in.
    write(&json!([alice]));
    hangup_and_wait(&server, "users file read again", 2);
    assert_eq!(status(&bob_token), 401);
    assert_eq!(try_login("bob", "bob-pw"), 401);
    assert_eq!(status(&alice_token), 200);
    assert!(server.stop().success());
}
