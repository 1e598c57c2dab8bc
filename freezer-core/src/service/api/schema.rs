//! Upstream freezer-api's JSON schemas (`freezer_api/common/json_schemas.py`) as checks that
//! name the field at fault: `job.job_schedule.schedule_interval: ...`.
//!
//! The job's top level and every schedule object are closed (an unknown field is refused);
//! actions, clients, backups and sessions are open, with their known fields typed. One
//! leniency over upstream: a schedule field set to `null` counts as unset (the web UI sends
//! unset fields as null). This module only checks: it never changes a document.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::error::ApiError;

/// `SUPPORTED_ACTIONS`.
pub const ACTIONS: &[&str] = &["backup", "restore", "info", "admin", "exec"];
/// `SUPPORTED_MODES`: upstream's, then this release's own (`postgres`, `image`,
/// `command`), which upstream's API refuses and this one takes. `stdin` is not among them:
/// a job the API holds has no standard input.
pub const MODES: &[&str] = &[
    "fs",
    "mongo",
    "mysql",
    "sqlserver",
    "cinder",
    "glance",
    "cindernative",
    "nova",
    "postgres",
    "image",
    "command",
];
/// `SUPPORTED_STORAGES`.
pub const STORAGES: &[&str] = &["local", "swift", "ssh", "s3", "ftp", "ftps"];
/// `SUPPORTED_ENGINES`.
pub const ENGINES: &[&str] = &["tar", "rsync", "rsyncv2", "nova", "osbrick", "glance"];
/// `SUPPORTED_BACKUP_STATUSES`.
pub const BACKUP_STATUSES: &[&str] = &["creating", "available", "error", "deleting", "deleted"];

const EVENTS: &[&str] = &["", "stop", "start", "abort", "remove"];
const STATUSES: &[&str] = &[
    "",
    "completed",
    "stop",
    "scheduled",
    "running",
    "aborting",
    "removed",
];
const RESULTS: &[&str] = &["", "success", "fail", "aborted"];

const FQDN: &str = r"([a-zA-Z\d]|[a-zA-Z\d][a-zA-Z\d\-]{0,61}[a-zA-Z\d])(\.([a-zA-Z\d]|[a-zA-Z\d][a-zA-Z\d\-]{0,61}[a-zA-Z\d]))*";

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a constant pattern")
}

static ID: LazyLock<Regex> = LazyLock::new(|| re(r"^[\w-]+$"));
static SESSION_ID: LazyLock<Regex> = LazyLock::new(|| re(r"^[\w-]*$"));
static CLIENT_ID: LazyLock<Regex> = LazyLock::new(|| re(&format!(r"^(?:([\w-]+)_)?{FQDN}$")));
static HOSTNAME: LazyLock<Regex> = LazyLock::new(|| re(&format!("^{FQDN}$")));
static DATE_TIME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^(-?(?:[1-9][0-9]*)?[0-9]{4})-(1[0-2]|0[1-9])-(3[01]|0[1-9]|[12][0-9])T(2[0-3]|[01][0-9]):([0-5][0-9]):([0-5][0-9])(\.[0-9]+)?(Z|[+-](?:2[0-3]|[01][0-9]):[0-5][0-9])?$",
    )
});
static INTERVAL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(continuous|(\d+ +(weeks|days|hours|minutes|seconds)))$"));
static YEAR: LazyLock<Regex> = LazyLock::new(|| re(r"^\d{4}$"));

/// The JSON type names, for messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(path: &str, want: &str, v: &Value) -> ApiError {
    ApiError::bad_request(format!("{path}: must be {want}, not {}", type_name(v)))
}

/// The object at `path`, or a 400 naming it.
pub fn object<'a>(path: &str, v: &'a Value) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object().ok_or_else(|| wrong(path, "an object", v))
}

fn string<'a>(path: &str, v: &'a Value) -> Result<&'a str, ApiError> {
    v.as_str().ok_or_else(|| wrong(path, "a string", v))
}

fn opt_string<'a>(path: &str, v: &'a Value) -> Result<Option<&'a str>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    string(path, v).map(Some)
}

fn integer(path: &str, v: &Value) -> Result<i64, ApiError> {
    v.as_i64().ok_or_else(|| wrong(path, "an integer", v))
}

fn boolean(path: &str, v: &Value) -> Result<bool, ApiError> {
    v.as_bool().ok_or_else(|| wrong(path, "a boolean", v))
}

fn pattern(path: &str, s: &str, re: &Regex, what: &str) -> Result<(), ApiError> {
    if re.is_match(s) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{path}: {s:?} is not {what}"
        )))
    }
}

fn one_of(path: &str, s: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&s) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{path}: {s:?} is not one of {allowed:?}"
        )))
    }
}

fn required<'a>(path: &str, o: &'a Map<String, Value>, key: &str) -> Result<&'a Value, ApiError> {
    o.get(key)
        .ok_or_else(|| ApiError::bad_request(format!("{path}.{key}: required")))
}

fn id_field(path: &str, v: &Value) -> Result<(), ApiError> {
    pattern(
        path,
        string(path, v)?,
        &ID,
        "a valid id (letters, digits, _ and -)",
    )
}

/// A schedule object (`job_schedule`, a session's `schedule`): closed.
pub fn schedule(path: &str, v: &Value) -> Result<(), ApiError> {
    for (key, v) in object(path, v)? {
        let at = format!("{path}.{key}");
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            "time_created" | "time_started" | "time_ended" | "current_pid" => {
                integer(&at, v)?;
            }
            "event" => one_of(&at, string(&at, v)?, EVENTS)?,
            "status" => one_of(&at, string(&at, v)?, STATUSES)?,
            "result" => one_of(&at, string(&at, v)?, RESULTS)?,
            "schedule_date" | "schedule_start_date" | "schedule_end_date" => pattern(
                &at,
                string(&at, v)?,
                &DATE_TIME,
                "an ISO 8601 date and time (2015-06-02T16:20:00)",
            )?,
            "schedule_interval" => pattern(
                &at,
                string(&at, v)?,
                &INTERVAL,
                "\"continuous\" or \"N weeks|days|hours|minutes|seconds\"",
            )?,
            "schedule_year" => {
                let s = v.as_i64().map(|y| y.to_string());
                let s = match &s {
                    Some(s) => s.as_str(),
                    None => string(&at, v)?,
                };
                pattern(&at, s, &YEAR, "a four-digit year")?
            }
            "schedule_month"
            | "schedule_day"
            | "schedule_week"
            | "schedule_day_of_week"
            | "schedule_hour"
            | "schedule_minute"
            | "schedule_second" => {
                if !(v.is_string() || v.is_i64()) {
                    return Err(wrong(&at, "a string", v));
                }
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{path}: unknown field {key:?}"
                )));
            }
        }
    }
    Ok(())
}

/// A `freezer_action` (open: agent options are free-form; the known ones typed).
pub fn freezer_action(path: &str, v: &Value) -> Result<(), ApiError> {
    for (key, v) in object(path, v)? {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "action" => one_of(&at, string(&at, v)?, ACTIONS)?,
            "mode" => {
                if let Some(m) = opt_string(&at, v)? {
                    one_of(&at, m, MODES)?
                }
            }
            "path_to_backup" | "backup_name" | "container" | "restore_abs_path" => {
                opt_string(&at, v)?;
            }
            "cindernative_freezer_only" if !v.is_null() => {
                boolean(&at, v)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// One item of `job_actions` (open).
fn job_action(path: &str, v: &Value) -> Result<(), ApiError> {
    let o = object(path, v)?;
    for (key, v) in o {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "freezer_action" => freezer_action(&at, v)?,
            "max_retries" | "max_retries_interval" => {
                integer(&at, v)?;
            }
            "mandatory" => {
                boolean(&at, v)?;
            }
            "action_id" => id_field(&at, v)?,
            _ => {}
        }
    }
    if !o.contains_key("freezer_action") && !o.contains_key("action_id") {
        return Err(ApiError::bad_request(format!(
            "{path}: give freezer_action or the action_id of a stored action"
        )));
    }
    Ok(())
}

/// Whether a job check is for a whole document or a patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whole {
    /// A whole job: `job_actions` and `client_id` are required.
    Document,
    /// A patch: nothing is required, `user_credentials` is refused.
    Patch,
}

/// A job as a caller sends it (closed at the top level and in `job_schedule`).
pub fn job(v: &Value, whole: Whole) -> Result<(), ApiError> {
    let path = "job";
    let o = object(path, v)?;
    for (key, v) in o {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "job_actions" => {
                let items = v.as_array().ok_or_else(|| wrong(&at, "an array", v))?;
                for (i, item) in items.iter().enumerate() {
                    job_action(&format!("{at}[{i}]"), item)?;
                }
            }
            "job_schedule" => schedule(&at, v)?,
            "job_id" | "user_id" | "project_id" => id_field(&at, v)?,
            "client_id" => pattern(
                &at,
                string(&at, v)?,
                &CLIENT_ID,
                "a valid client id ([<project>_]<hostname>)",
            )?,
            "session_id" => {
                if let Some(s) = opt_string(&at, v)? {
                    pattern(&at, s, &SESSION_ID, "a valid session id")?
                }
            }
            "session_tag" | "_version" => {
                integer(&at, v)?;
            }
            "session_name" | "description" => {
                opt_string(&at, v)?;
            }
            "action_defaults" => freezer_action(&at, v)?,
            "user_credentials" if whole == Whole::Document => {
                let c = object(&at, v)?;
                string(&format!("{at}.trust_id"), required(&at, c, "trust_id")?)?;
                id_field(
                    &format!("{at}.trustor_user_id"),
                    required(&at, c, "trustor_user_id")?,
                )?;
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{path}: unknown field {key:?}"
                )));
            }
        }
    }
    if whole == Whole::Document {
        required(path, o, "job_actions")?;
        required(path, o, "client_id")?;
    }
    Ok(())
}

/// An action of the library (open); `freezer_action` is required for a whole one.
pub fn action(v: &Value, whole: Whole) -> Result<(), ApiError> {
    let path = "action";
    let o = object(path, v)?;
    for (key, v) in o {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "freezer_action" => freezer_action(&at, v)?,
            "max_retries" | "max_retries_interval" => {
                integer(&at, v)?;
            }
            "mandatory" => {
                boolean(&at, v)?;
            }
            "action_id" | "user_id" | "project_id" => id_field(&at, v)?,
            _ => {}
        }
    }
    if whole == Whole::Document {
        required(path, o, "freezer_action")?;
    }
    Ok(())
}

/// A client's `client_info` (open; `client_id` required).
pub fn client(v: &Value) -> Result<(), ApiError> {
    let path = "client";
    let o = object(path, v)?;
    for (key, v) in o {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "client_id" => pattern(
                &at,
                string(&at, v)?,
                &CLIENT_ID,
                "a valid client id ([<project>_]<hostname>)",
            )?,
            "hostname" => pattern(&at, string(&at, v)?, &HOSTNAME, "a valid host name")?,
            "description" | "uuid" => {
                string(&at, v)?;
            }
            "is_central" => {
                boolean(&at, v)?;
            }
            "supported_actions" | "supported_modes" | "supported_storages"
            | "supported_engines" => {
                let allowed = match key.as_str() {
                    "supported_actions" => ACTIONS,
                    "supported_modes" => MODES,
                    "supported_storages" => STORAGES,
                    _ => ENGINES,
                };
                let items = v.as_array().ok_or_else(|| wrong(&at, "an array", v))?;
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{at}[{i}]");
                    one_of(&at, string(&at, item)?, allowed)?;
                }
            }
            _ => {}
        }
    }
    required(path, o, "client_id")?;
    Ok(())
}

/// Backup metadata as posted (open; `container`, `hostname`, `backup_name` required and not
/// empty; `status` one of the backup statuses).
pub fn backup(v: &Value) -> Result<(), ApiError> {
    let path = "backup";
    let o = object(path, v)?;
    for key in ["container", "hostname", "backup_name"] {
        let at = format!("{path}.{key}");
        if string(&at, required(path, o, key)?)?.is_empty() {
            return Err(ApiError::bad_request(format!("{at}: must not be empty")));
        }
    }
    if let Some(s) = o.get("status") {
        one_of(
            "backup.status",
            string("backup.status", s)?,
            BACKUP_STATUSES,
        )?;
    }
    Ok(())
}

/// A backup patch: `status` and `backup_metadata` (an object).
pub fn backup_patch(v: &Value) -> Result<(), ApiError> {
    let path = "backup";
    let o = object(path, v)?;
    if let Some(s) = o.get("status") {
        one_of(
            "backup.status",
            string("backup.status", s)?,
            BACKUP_STATUSES,
        )?;
    }
    if let Some(m) = o.get("backup_metadata") {
        object("backup.backup_metadata", m)?;
    }
    Ok(())
}

/// A session (open; `schedule` required for a whole one).
pub fn session(v: &Value, whole: Whole) -> Result<(), ApiError> {
    let path = "session";
    let o = object(path, v)?;
    for (key, v) in o {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "schedule" => schedule(&at, v)?,
            "session_id" => pattern(&at, string(&at, v)?, &SESSION_ID, "a valid session id")?,
            "user_id" | "project_id" => id_field(&at, v)?,
            "session_tag" | "hold_off" | "time_started" | "time_ended" | "time_start"
            | "time_end" => {
                integer(&at, v)?;
            }
            "description" => {
                opt_string(&at, v)?;
            }
            "jobs" => {
                object(&at, v)?;
            }
            "status" | "result" => {
                string(&at, v)?;
            }
            _ => {}
        }
    }
    if whole == Whole::Document {
        required(path, o, "schedule")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn is_client_id(id: &str) -> bool {
        CLIENT_ID.is_match(id)
    }

    #[test]
    fn client_ids_as_tempest_checks_them() {
        assert!(is_client_id("padawan-ccp-c1-m1-mgmt"));
        assert!(is_client_id("p1_node1.example.org"));
        assert!(is_client_id("node_2"));
        assert!(!is_client_id("bad%project$id_host.domain.tld"));
        assert!(!is_client_id("project_bad_hostname.bad/domain.b"));
    }

    #[test]
    fn jobs_are_closed_and_typed_with_named_fields() {
        let ok = json!({"client_id": "node1", "job_actions": [{"freezer_action": {"action": "backup", "mode": null}}],
            "job_schedule": {"schedule_interval": "2 seconds", "schedule_date": "2015-06-02T16:20:00Z", "schedule_end_date": null}});
        job(&ok, Whole::Document).unwrap();
        let cases = [
            (
                json!({"client_id": "n", "job_actions": [], "frob": 1}),
                "job: unknown field \"frob\"",
            ),
            (
                json!({"client_id": "n", "job_actions": [], "job_schedule": {"x": 1}}),
                "job.job_schedule: unknown field \"x\"",
            ),
            (
                json!({"client_id": "n", "job_actions": [], "job_schedule": {"schedule_interval": "2 fortnights"}}),
                "job.job_schedule.schedule_interval:",
            ),
            (
                json!({"client_id": "n", "job_actions": [], "job_schedule": {"time_created": "now"}}),
                "job.job_schedule.time_created: must be an integer, not a string",
            ),
            (
                json!({"client_id": "n", "job_actions": [{"freezer_action": {"action": "dance"}}]}),
                "job.job_actions[0].freezer_action.action:",
            ),
            (
                json!({"client_id": "n", "job_actions": [{"max_retries": "5", "freezer_action": {}}]}),
                "job.job_actions[0].max_retries: must be an integer",
            ),
            (
                json!({"client_id": "n", "job_actions": [{}]}),
                "job.job_actions[0]: give freezer_action",
            ),
            (json!({"job_actions": []}), "job.client_id: required"),
            (json!({"client_id": "n"}), "job.job_actions: required"),
            (
                json!({"client_id": "a b", "job_actions": []}),
                "job.client_id:",
            ),
            (
                json!({"client_id": "n", "job_actions": [], "job_id": "a/b"}),
                "job.job_id:",
            ),
            (json!([1]), "job: must be an object, not an array"),
        ];
        for (doc, want) in cases {
            let e = job(&doc, Whole::Document).unwrap_err();
            assert!(e.description.starts_with(want), "{doc}: {}", e.description);
        }
        job(&json!({"description": "x"}), Whole::Patch).unwrap();
        assert!(job(&json!({"user_credentials": {}}), Whole::Patch).is_err());
    }

    #[test]
    fn backups_clients_sessions() {
        backup(&json!({"container": "c", "hostname": "h", "backup_name": "b", "x": 1})).unwrap();
        assert!(backup(&json!({"container": "", "hostname": "h", "backup_name": "b"})).is_err());
        assert!(
            backup(&json!({"container": "c", "hostname": "h"}))
                .unwrap_err()
                .description
                .contains("backup_name: required")
        );
        assert!(
            backup(
                &json!({"container": "c", "hostname": "h", "backup_name": "b", "status": "lost"})
            )
            .is_err()
        );
        client(&json!({"client_id": "p_h1", "supported_actions": ["backup"]})).unwrap();
        assert!(
            client(&json!({"client_id": "p_h1", "supported_modes": ["tape"]}))
                .unwrap_err()
                .description
                .starts_with("client.supported_modes[0]")
        );
        session(&json!({"schedule": {}, "hold_off": 10}), Whole::Document).unwrap();
        assert!(session(&json!({"description": "x"}), Whole::Document).is_err());
        assert!(
            session(
                &json!({"schedule": {}, "session_tag": "1"}),
                Whole::Document
            )
            .is_err()
        );
    }
}
