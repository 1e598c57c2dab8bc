//! The users of the standalone identity: the `--users FILE` of `freezer api serve`.
//!
//! The file is a JSON list of `{"user", "password" | "password_hash", "project", "roles"}`
//! (optionally `"user_id"` and `"project_id"`). Plaintext passwords are hashed with Argon2id
//! as the file is loaded and never kept; a `password_hash` is a PHC Argon2 string, as
//! [`hash_password`] writes. Loading refuses anything doubtful, naming the entry: unknown or
//! missing fields, duplicate users, empty passwords, unknown roles, and a plaintext password
//! in a file that group or others may read. Nothing here logs a password or a hash.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use serde::Deserialize;

use crate::Error;

/// The roles a users file may grant (upstream freezer-api's policy knows these).
pub const KNOWN_ROLES: [&str; 4] = ["admin", "member", "reader", "service"];

/// One user of the standalone identity, as loaded (the password only as a hash).
#[derive(Clone)]
pub struct User {
    /// The user's id: given in the file, else derived from the name (stable across restarts).
    pub id: String,
    /// The user's name, unique in the file.
    pub name: String,
    /// The id of the user's project (given, else derived from the project's name).
    pub project_id: String,
    /// The project's name.
    pub project_name: String,
    /// The roles granted, lower-cased, without duplicates.
    pub roles: Vec<String>,
    hash: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("project_id", &self.project_id)
            .field("project_name", &self.project_name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// The users of the standalone identity, by name and by id.
#[derive(Debug, Clone)]
pub struct Users {
    by_name: HashMap<String, User>,
    id_to_name: HashMap<String, String>,
    /// A hash of a random password: checked when the user is unknown, so that an unknown
    /// user costs the same time as a wrong password.
    decoy: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    user: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_hash: Option<String>,
    project: String,
    roles: Vec<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
}

/// The Argon2id cost of the hashes made here: the least memory of OWASP's equally strong
/// minimums (7 MiB, five passes, one lane; the same strength as 19 MiB and two passes), a few
/// tens of milliseconds, so logins stay fast and an API server's memory stays small. Hashes
/// given in a users file keep their own parameters.
fn hasher() -> Argon2<'static> {
    let params = argon2::Params::new(7 * 1024, 5, 1, None).expect("constant Argon2 parameters");
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// Hashes `password` into a PHC Argon2id string for a users file's `password_hash`.
pub fn hash_password(password: &str) -> Result<String, Error> {
    if password.is_empty() {
        return Err(Error::bad_input("password", "is empty"));
    }
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::bad_input("password", format!("could not be hashed: {e}")))
}

/// Reads one password from `input` (its first line, without the line end) and hashes it:
/// what `freezer api hash-password` prints, reading standard input.
pub fn hash_password_from(mut input: impl BufRead) -> Result<String, Error> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| Error::io("the password (standard input)", e))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    hash_password(password)
}

/// A stable 32-hex-digit id (the shape of Keystone's) for `name` of kind `what`.
pub(crate) fn derived_id(what: &str, name: &str) -> String {
    let context = format!("freezer-rs standalone identity {what} id v1");
    let key = blake3::derive_key(&context, name.as_bytes());
    hex::encode(&key[..16])
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Users {
    /// Loads a users file. Refuses a plaintext password in a file group or others may read.
    pub fn load(path: &Path) -> Result<Users, Error> {
        let what = format!("users file {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(&what, e))?;
        let shared = {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|e| Error::io(&what, e))?;
            meta.permissions().mode() & 0o077 != 0
        };
        let users = Users::parse(&text, &what)?;
        if shared && users.1 {
            return Err(Error::bad_input(
                &what,
                format!(
                    "holds a plaintext password and group or others may read it: run \
                     `chmod 600 {}` (or give password_hash instead, see `freezer api \
                     hash-password`)",
                    path.display()
                ),
            ));
        }
        Ok(users.0)
    }

    /// Parses the text of a users file named `what` in errors; the flag says whether any
    /// entry had a plaintext password.
    fn parse(text: &str, what: &str) -> Result<(Users, bool), Error> {
        let list: Vec<serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| Error::bad_input(what, format!("is not a JSON list of users: {e}")))?;
        let mut by_name = HashMap::new();
        let mut id_to_name = HashMap::new();
        let mut plaintext = false;
        for (i, value) in list.into_iter().enumerate() {
            let label = match value.get("user").and_then(|u| u.as_str()) {
                Some(name) => format!("{what}, entry {} (user {name:?})", i + 1),
                None => format!("{what}, entry {}", i + 1),
            };
            let entry: Entry =
                serde_path_to_error::deserialize(value).map_err(|e| Error::bad_input(&label, e))?;
            let (user, had_plaintext) = User::from_entry(entry, &label)?;
            plaintext |= had_plaintext;
            if by_name.contains_key(&user.name) {
                return Err(Error::bad_input(
                    &label,
                    "duplicate user: each user appears once",
                ));
            }
            if let Some(other) = id_to_name.insert(user.id.clone(), user.name.clone()) {
                return Err(Error::bad_input(
                    &label,
                    format!("user id {} is also user {other:?}'s", user.id),
                ));
            }
            by_name.insert(user.name.clone(), user);
        }
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| Error::bad_input(what, e))?;
        let decoy = hash_password(&hex::encode(random))?;
        Ok((
            Users {
                by_name,
                id_to_name,
                decoy,
            },
            plaintext,
        ))
    }

    /// Parses users from JSON text, as [`Users::load`] does, without the file checks.
    pub fn from_json(text: &str) -> Result<Users, Error> {
        Users::parse(text, "users").map(|(u, _)| u)
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The user named `name`.
    pub fn by_name(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    /// The user whose id is `id`.
    pub fn by_id(&self, id: &str) -> Option<&User> {
        self.id_to_name.get(id).and_then(|n| self.by_name.get(n))
    }

    /// The name of the project whose id is `project_id`, if a user is in it.
    pub fn project_name(&self, project_id: &str) -> Option<&str> {
        self.by_name
            .values()
            .find(|u| u.project_id == project_id)
            .map(|u| u.project_name.as_str())
    }

    /// Checks a password: the user when it matches. An unknown user and a wrong password
    /// both give `None` after the same work (an Argon2 check whose comparison is constant
    /// time). CPU-bound: run it off the async runtime.
    pub fn check_password<'a>(
        &'a self,
        user: Option<&'a User>,
        password: &str,
    ) -> Option<&'a User> {
        let hash = user.map_or(self.decoy.as_str(), |u| u.hash.as_str());
        let ok = PasswordHash::new(hash).ok().is_some_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        if ok { user } else { None }
    }
}

impl User {
    fn from_entry(entry: Entry, label: &str) -> Result<(User, bool), Error> {
        let field = |f: &str| format!("{label}: {f}");
        if entry.user.is_empty() {
            return Err(Error::bad_input(field("user"), "is empty"));
        }
        if entry.project.is_empty() {
            return Err(Error::bad_input(field("project"), "is empty"));
        }
        let (hash, plaintext) = match (entry.password, entry.password_hash) {
            (Some(_), Some(_)) => {
                return Err(Error::bad_input(
                    label,
                    "give either password or password_hash, not both",
                ));
            }
            (None, None) => {
                return Err(Error::bad_input(
                    label,
                    "missing field `password` (or `password_hash`)",
                ));
            }
            (Some(p), None) => {
                if p.is_empty() {
                    return Err(Error::bad_input(field("password"), "is empty"));
                }
                (hash_password(&p)?, true)
            }
            (None, Some(h)) => {
                let parsed = PasswordHash::new(&h).map_err(|e| {
                    Error::bad_input(field("password_hash"), format!("is not a PHC string: {e}"))
                })?;
                if !parsed.algorithm.as_str().starts_with("argon2") || parsed.hash.is_none() {
                    return Err(Error::bad_input(
                        field("password_hash"),
                        "is not an Argon2 hash (make one with `freezer api hash-password`)",
                    ));
                }
                (h, false)
            }
        };
        let mut roles: Vec<String> = Vec::new();
        for role in &entry.roles {
            let lower = role.to_ascii_lowercase();
            if !KNOWN_ROLES.contains(&lower.as_str()) {
                return Err(Error::bad_input(
                    field("roles"),
                    format!("unknown role {role:?} (known: {})", KNOWN_ROLES.join(", ")),
                ));
            }
            if !roles.contains(&lower) {
                roles.push(lower);
            }
        }
        if roles.is_empty() {
            return Err(Error::bad_input(
                field("roles"),
                "is empty: grant at least one role",
            ));
        }
        for (name, id) in [
            ("user_id", &entry.user_id),
            ("project_id", &entry.project_id),
        ] {
            if id.as_deref().is_some_and(|id| !valid_id(id)) {
                return Err(Error::bad_input(
                    field(name),
                    "must be 1 to 64 letters, digits, '-' or '_'",
                ));
            }
        }
        Ok((
            User {
                id: entry
                    .user_id
                    .unwrap_or_else(|| derived_id("user", &entry.user)),
                project_id: entry
                    .project_id
                    .unwrap_or_else(|| derived_id("project", &entry.project)),
                name: entry.user,
                project_name: entry.project,
                roles,
                hash,
            },
            plaintext,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Users::from_json(text).unwrap_err().to_string()
    }

    #[test]
    fn loads_plaintext_and_hashed_users() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let text = format!(
            r#"[{{"user":"alice","password":"pw-a","project":"demo","roles":["Member"]}},
                {{"user":"bob","password_hash":"{hash}","project":"demo","roles":["reader","reader"],
                  "user_id":"bob-id","project_id":"p-1"}}]"#
        );
        let users = Users::from_json(&text).unwrap();
        assert_eq!(users.len(), 2);
        let alice = users.by_name("alice").unwrap();
        assert_eq!(alice.roles, ["member"]);
        assert_eq!(alice.id, derived_id("user", "alice"));
        assert_eq!(alice.id.len(), 32);
        assert_eq!(alice.project_id, derived_id("project", "demo"));
        assert!(!format!("{alice:?}").contains("argon2"));
        let bob = users.by_id("bob-id").unwrap();
        assert_eq!((bob.name.as_str(), bob.project_id.as_str()), ("bob", "p-1"));
        assert_eq!(bob.roles, ["reader"]);
        assert!(users.check_password(Some(alice), "pw-a").is_some());
        assert!(users.check_password(Some(alice), "pw-b").is_none());
        assert!(users.check_password(Some(bob), "s3cret").is_some());
        assert!(users.check_password(None, "s3cret").is_none());
        // Ids are stable: a second load derives the same.
        let again = Users::from_json(&text).unwrap();
        assert_eq!(again.by_name("alice").unwrap().id, alice.id);
    }

    #[test]
    fn refuses_bad_entries_naming_them() {
        let e = err(r#"[{"user":"a","password":"x","project":"p","roles":["member"],"colour":1}]"#);
        assert!(
            e.contains("entry 1") && e.contains("\"a\"") && e.contains("colour"),
            "{e}"
        );
        let e = err(r#"[{"user":"a","password":"x","roles":["member"]}]"#);
        assert!(e.contains("entry 1") && e.contains("project"), "{e}");
        let e = err(r#"[{"user":"a","project":"p","roles":["member"]}]"#);
        assert!(e.contains("password"), "{e}");
        let e = err(r#"[{"user":"a","password":"","project":"p","roles":["member"]}]"#);
        assert!(e.contains("password") && e.contains("empty"), "{e}");
        let e = err(r#"[{"user":"a","password":"x","project":"p","roles":["owner"]}]"#);
        assert!(e.contains("unknown role") && e.contains("owner"), "{e}");
        let e = err(r#"[{"user":"a","password":"x","project":"p","roles":[]}]"#);
        assert!(e.contains("roles"), "{e}");
        let e = err(r#"[{"user":"a","password":"x","project":"p","roles":"member"}]"#);
        assert!(e.contains("roles"), "{e}");
        let e = err(
            r#"[{"user":"a","password":"x","project":"p","roles":["member"]},
                {"user":"a","password":"y","project":"p","roles":["member"]}]"#,
        );
        assert!(e.contains("entry 2") && e.contains("duplicate"), "{e}");
        let e = err(r#"[{"user":"a","password_hash":"plain","project":"p","roles":["member"]}]"#);
        assert!(e.contains("password_hash"), "{e}");
        let e = err(
            r#"[{"user":"a","password":"x","password_hash":"$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA","project":"p","roles":["member"]}]"#,
        );
        assert!(e.contains("not both"), "{e}");
        let e = err(r#"{"user":"a"}"#);
        assert!(e.contains("JSON list"), "{e}");
        let e = err(
            r#"[{"user":"a","password":"x","project":"p","roles":["member"],"user_id":"a b"}]"#,
        );
        assert!(e.contains("user_id"), "{e}");
        // No message shows a password.
        let e = err(r#"[{"user":"a","password":"hunter2","project":"p","roles":["x"]}]"#);
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn refuses_a_shared_file_with_plaintext_passwords() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        std::fs::write(
            &path,
            r#"[{"user":"a","password":"x","project":"p","roles":["member"]}]"#,
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Users::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("users.json"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Users::load(&path).unwrap().len(), 1);
        // Hashed passwords only: a shared file is fine.
        let hash = hash_password("x").unwrap();
        std::fs::write(
            &path,
            format!(
                r#"[{{"user":"a","password_hash":"{hash}","project":"p","roles":["member"]}}]"#
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(Users::load(&path).unwrap().len(), 1);
        let e = Users::load(&dir.path().join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.json"), "{e}");
    }

    #[test]
    fn hash_password_reads_one_line() {
        let hash = hash_password_from(&b"pass word\r\nnext\n"[..]).unwrap();
        let users = Users::from_json(&format!(
            r#"[{{"user":"a","password_hash":"{hash}","project":"p","roles":["member"]}}]"#
        ))
        .unwrap();
        assert!(
            users
                .check_password(users.by_name("a"), "pass word")
                .is_some()
        );
        assert!(hash_password_from(&b"\n"[..]).is_err());
        assert!(hash_password_from(&b""[..]).is_err());
    }
}
