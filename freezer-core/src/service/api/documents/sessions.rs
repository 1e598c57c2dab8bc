//! Sessions: several jobs (on several nodes) that start together and whose results the
//! session records. `start` and `end` are versioned read-modify-writes of the session, so
//! concurrent calls from many nodes never lose a job's result.

use serde_json::{Map, Value, json};

use super::{Caller, Documents, body_object, merge_top, new_id, now, strip};
use crate::service::api::error::{ApiError, ErrorKind};
use crate::service::api::schema::{self, Whole};
use crate::service::api::search::Page;
use crate::service::store::{Kind, Scope};

/// `hold_off` (seconds) when a session does not say.
pub const DEFAULT_HOLD_OFF: i64 = 30;

/// What `start` answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionActionResult {
    /// `success`, `hold-off` or `out-of-sync`.
    pub result: &'static str,
    /// The session's tag after the action.
    pub session_tag: i64,
}

fn with_defaults(mut o: Map<String, Value>, id: &str, project: &str, user: &str) -> Value {
    o.entry("session_tag").or_insert(json!(0));
    o.entry("status").or_insert(json!("active"));
    o.entry("hold_off").or_insert(json!(DEFAULT_HOLD_OFF));
    for k in ["time_start", "time_end", "time_started", "time_ended"] {
        o.entry(k).or_insert(json!(-1));
    }
    o.entry("jobs").or_insert(json!({}));
    o.insert("session_id".into(), json!(id));
    o.insert("project_id".into(), json!(project));
    o.insert("user_id".into(), json!(user));
    Value::Object(o)
}

fn int_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn jobs_mut<'a>(
    s: &'a mut Value,
    session_id: &str,
    job_id: &str,
) -> Result<&'a mut Map<String, Value>, ApiError> {
    match s.get_mut("jobs").and_then(|j| j.get_mut(job_id)) {
        Some(Value::Object(job)) => Ok(job),
        _ => Err(ApiError::bad_request(format!(
            "job_id {job_id} not found in session {session_id}"
        ))),
    }
}

/// Marks a job of the session running (`time_started`) or completed (`time_ended`).
fn set_job_state(job: &mut Map<String, Value>, status: &str, result: &str, at: i64) {
    job.insert("status".into(), json!(status));
    job.insert("result".into(), json!(result));
    let key = if status == "running" {
        "time_started"
    } else {
        "time_ended"
    };
    job.insert(key.into(), json!(at));
}

/// `running` while a job is not completed, then `fail` if any result is not `success`,
/// else `success`. (Upstream stopped at the first failed job it met, so a session could
/// complete while other jobs still ran.)
fn overall(s: &Value) -> &'static str {
    let Some(Value::Object(jobs)) = s.get("jobs") else {
        return "success";
    };
    let field = |j: &Value, k: &str| j.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if jobs.values().any(|j| field(j, "status") != "completed") {
        "running"
    } else if jobs.values().any(|j| field(j, "result") != "success") {
        "fail"
    } else {
        "success"
    }
}

impl Documents {
    /// `POST /sessions`: a new session (a given `session_id` is ignored); its id.
    pub async fn create_session(&self, caller: &Caller, body: Value) -> Result<String, ApiError> {
        caller.may_write()?;
        schema::session(&body, Whole::Document)?;
        let mut o = body_object("session", body)?;
        strip(&mut o, &["session_id", "user_id", "project_id"]);
        let id = new_id();
        let doc = with_defaults(o, &id, &caller.project_id, &caller.identity.user_id);
        self.store
            .insert(Kind::Session, &caller.project_id, &id, &doc)
            .await?;
        Ok(id)
    }

    /// `POST /sessions/{id}`: replaces (or creates) the session; its id and version. The
    /// jobs of a replaced session stay in it unless the body gives `jobs`.
    pub async fn replace_session(
        &self,
        caller: &Caller,
        session_id: &str,
        body: Value,
    ) -> Result<(String, i64), ApiError> {
        caller.may_write()?;
        schema::session(&body, Whole::Document)?;
        let mut o = body_object("session", body)?;
        strip(&mut o, &["session_id", "user_id", "project_id"]);
        let scope = caller.write_scope();
        match self
            .store
            .get(Kind::Session, &Scope::All, session_id)
            .await?
        {
            Some(d) if scope.contains(&d.project_id) => {
                let user = caller.identity.user_id.clone();
                let (doc, ()) = self
                    .modify(Kind::Session, &scope, session_id, |s| {
                        let mut o = o.clone();
                        if let (false, Some(jobs)) = (o.contains_key("jobs"), s.get("jobs")) {
                            o.insert("jobs".into(), jobs.clone());
                        }
                        *s = with_defaults(o, session_id, &d.project_id, &user);
                        Ok(())
                    })
                    .await?;
                Ok((session_id.to_string(), doc.version))
            }
            Some(_) => Err(ApiError::conflict(format!(
                "session {session_id} already exists"
            ))),
            None => {
                let doc =
                    with_defaults(o, session_id, &caller.project_id, &caller.identity.user_id);
                let d = self
                    .store
                    .insert(Kind::Session, &caller.project_id, session_id, &doc)
                    .await?;
                Ok((session_id.to_string(), d.version))
            }
        }
    }

    /// `GET /sessions/{id}`.
    pub async fn get_session(&self, caller: &Caller, session_id: &str) -> Result<Value, ApiError> {
        self.read_body(caller, Kind::Session, session_id).await
    }

    /// `GET /sessions`.
    pub async fn list_sessions(
        &self,
        caller: &Caller,
        page: Page,
        search: &Value,
    ) -> Result<Vec<Value>, ApiError> {
        self.list_bodies(caller, Kind::Session, page, search).await
    }

    /// `PATCH /sessions/{id}`: merges the top level; its id and new version.
    pub async fn patch_session(
        &self,
        caller: &Caller,
        session_id: &str,
        patch: Value,
    ) -> Result<(String, i64), ApiError> {
        caller.may_write()?;
        schema::session(&patch, Whole::Patch)?;
        let mut p = body_object("session", patch)?;
        strip(&mut p, &["session_id", "user_id", "project_id"]);
        let (doc, ()) = self
            .modify(Kind::Session, &caller.write_scope(), session_id, |s| {
                merge_top(s, p.clone());
                Ok(())
            })
            .await?;
        Ok((session_id.to_string(), doc.version))
    }

    /// `DELETE /sessions/{id}`: idempotent.
    pub async fn delete_session(&self, caller: &Caller, session_id: &str) -> Result<(), ApiError> {
        caller.may_write()?;
        self.delete_doc(Kind::Session, &caller.write_scope(), session_id)
            .await
    }

    /// `PUT /sessions/{id}/jobs/{job_id}`: the job joins the session (its state copied into
    /// the session's `jobs`), and takes the session's id, tag and schedule (keeping its own
    /// `time_created`, `time_started`, `time_ended`).
    pub async fn add_session_job(
        &self,
        caller: &Caller,
        session_id: &str,
        job_id: &str,
    ) -> Result<(), ApiError> {
        caller.may_write()?;
        let scope = caller.write_scope();
        let session = self.get_doc(Kind::Session, &scope, session_id).await?;
        let project = Scope::Project(session.project_id.clone());
        let job = self.get_doc(Kind::Job, &project, job_id).await?;
        let sched = job.body.get("job_schedule").cloned().unwrap_or(json!({}));
        let field = |k: &str, default: Value| sched.get(k).cloned().unwrap_or(default);
        let entry = json!({
            "client_id": job.body.get("client_id").cloned().unwrap_or(json!("")),
            "status": field("status", json!("")),
            "result": field("result", json!("")),
            "time_started": field("time_started", json!(-1)),
            "time_ended": field("time_ended", json!(-1)),
        });
        let (session, ()) = self
            .modify(Kind::Session, &project, session_id, |s| {
                let o = s.as_object_mut().ok_or_else(|| {
                    ApiError::internal(format!("session {session_id} is not an object"))
                })?;
                let jobs = o.entry("jobs").or_insert(json!({}));
                if !jobs.is_object() {
                    *jobs = json!({});
                }
                jobs[job_id] = entry.clone();
                Ok(())
            })
            .await?;
        let tag = session.body.get("session_tag").cloned().unwrap_or(json!(0));
        let schedule = session.body.get("schedule").cloned().unwrap_or(json!({}));
        self.modify(Kind::Job, &project, job_id, |j| {
            let mut sched = schedule.clone();
            if let (Some(new), Some(Value::Object(old))) =
                (sched.as_object_mut(), j.get("job_schedule"))
            {
                for k in ["time_created", "time_started", "time_ended"] {
                    if let Some(v) = old.get(k) {
                        new.insert(k.into(), v.clone());
                    }
                }
            }
            j["session_id"] = json!(session_id);
            j["session_tag"] = tag.clone();
            j["job_schedule"] = sched;
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// `DELETE /sessions/{id}/jobs/{job_id}`: the job leaves the session and is stopped
    /// (`event: stop`, its schedule otherwise kept: upstream wiped it).
    pub async fn remove_session_job(
        &self,
        caller: &Caller,
        session_id: &str,
        job_id: &str,
    ) -> Result<(), ApiError> {
        caller.may_write()?;
        let scope = caller.write_scope();
        let (session, ()) = self
            .modify(Kind::Session, &scope, session_id, |s| {
                if let Some(Value::Object(jobs)) = s.get_mut("jobs") {
                    jobs.remove(job_id);
                }
                Ok(())
            })
            .await?;
        let project = Scope::Project(session.project_id.clone());
        let detached = self
            .modify(Kind::Job, &project, job_id, |j| {
                if j.get("session_id").and_then(Value::as_str) != Some(session_id) {
                    return Ok(());
                }
                j["session_id"] = json!("");
                j["session_tag"] = json!(0);
                if !j.get("job_schedule").is_some_and(Value::is_object) {
                    j["job_schedule"] = json!({});
                }
                j["job_schedule"]["event"] = json!("stop");
                Ok(())
            })
            .await;
        match detached {
            Ok(_) => Ok(()),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `POST /sessions/{id}/action`: `{"start": {"job_id", "current_tag"}}` or
    /// `{"end": {"job_id", "current_tag", "result"}}`.
    pub async fn session_action(
        &self,
        caller: &Caller,
        session_id: &str,
        body: Value,
    ) -> Result<SessionActionResult, ApiError> {
        caller.may_write()?;
        let o = body_object("session action", body)?;
        let (action, params) = match o.iter().collect::<Vec<_>>().as_slice() {
            [(k, v)] if k.as_str() == "start" || k.as_str() == "end" => {
                (k.to_string(), (*v).clone())
            }
            [(k, _)] => {
                return Err(ApiError::bad_method(format!(
                    "unknown session action {k:?} (start or end)"
                )));
            }
            _ => {
                return Err(ApiError::bad_request(
                    "session action: give exactly one of start or end",
                ));
            }
        };
        let p = schema::object(&action, &params)?;
        let job_id = p
            .get("job_id")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request(format!("{action}.job_id: required (a string)")))?
            .to_string();
        let current_tag = int_of(p.get("current_tag"));
        let scope = caller.write_scope();
        if action == "start" {
            let current = current_tag
                .ok_or_else(|| ApiError::bad_request("start.current_tag: required (an integer)"))?;
            let (doc, result) = self
                .modify(Kind::Session, &scope, session_id, |s| {
                    start(s, session_id, &job_id, current, now())
                })
                .await?;
            Ok(SessionActionResult {
                result,
                session_tag: int_of(doc.body.get("session_tag")).unwrap_or(0),
            })
        } else {
            let result = p
                .get("result")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request("end.result: required (a string)"))?
                .to_string();
            let (doc, ()) = self
                .modify(Kind::Session, &scope, session_id, |s| {
                    end(s, session_id, &job_id, &result, now())
                })
                .await?;
            Ok(SessionActionResult {
                result: "success",
                session_tag: int_of(doc.body.get("session_tag")).unwrap_or(0),
            })
        }
    }
}

/// Upstream's session start, with one fix: a start that opens a new round (the tag goes up)
/// clears the other jobs' state of the round before, so that the first job to end does not
/// complete the session on the old round's results.
fn start(
    s: &mut Value,
    session_id: &str,
    job_id: &str,
    current: i64,
    at: i64,
) -> Result<&'static str, ApiError> {
    jobs_mut(s, session_id, job_id)?;
    let tag = int_of(s.get("session_tag")).unwrap_or(0);
    if current > tag {
        return Err(ApiError::bad_request(format!(
            "requested tag value too high. Session Tag: {tag} Job Tag: {current}"
        )));
    }
    let hold_off = int_of(s.get("hold_off")).unwrap_or(DEFAULT_HOLD_OFF);
    let time_start = int_of(s.get("time_start")).unwrap_or(-1);
    if time_start >= 0 && at - time_start <= hold_off {
        if current < tag {
            set_job_state(jobs_mut(s, session_id, job_id)?, "running", "", at);
            return Ok("success");
        }
        return Ok("hold-off");
    }
    if current != tag {
        return Ok("out-of-sync");
    }
    s["session_tag"] = json!(tag + 1);
    s["time_start"] = json!(at);
    s["status"] = json!("running");
    s["result"] = json!("");
    if let Some(Value::Object(jobs)) = s.get_mut("jobs") {
        for (id, j) in jobs.iter_mut() {
            if id != job_id
                && let Value::Object(j) = j
            {
                j.insert("status".into(), json!(""));
                j.insert("result".into(), json!(""));
            }
        }
    }
    set_job_state(jobs_mut(s, session_id, job_id)?, "running", "", at);
    Ok("success")
}

/// Upstream's session end: the job is completed with its result; the session completes
/// (with `fail` or `success`) once every job is.
fn end(
    s: &mut Value,
    session_id: &str,
    job_id: &str,
    result: &str,
    at: i64,
) -> Result<(), ApiError> {
    set_job_state(jobs_mut(s, session_id, job_id)?, "completed", result, at);
    let overall = overall(s);
    if s.get("status").and_then(Value::as_str) != Some("completed") && overall != "running" {
        s["time_end"] = json!(at);
        s["result"] = json!(overall);
        s["status"] = json!("completed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(jobs: &[&str]) -> Value {
        let mut s = json!({"session_tag": 0, "hold_off": 30, "time_start": -1, "status": "active", "jobs": {}});
        for j in jobs {
            s["jobs"][*j] = json!({"status": "", "result": ""});
        }
        s
    }

    #[test]
    fn start_tags_hold_off_and_sync() {
        let mut s = session(&["a", "b"]);
        assert!(
            start(&mut s, "s", "zz", 0, 100)
                .unwrap_err()
                .description
                .contains("not found in session")
        );
        assert!(
            start(&mut s, "s", "a", 1, 100)
                .unwrap_err()
                .description
                .contains("too high")
        );
        assert_eq!(start(&mut s, "s", "a", 0, 100).unwrap(), "success");
        assert_eq!(s["session_tag"], 1);
        assert_eq!(s["status"], "running");
        assert_eq!(s["jobs"]["a"]["status"], "running");
        // Within hold-off: a late node with the old tag joins, a node with the new tag waits.
        assert_eq!(start(&mut s, "s", "b", 0, 110).unwrap(), "success");
        assert_eq!(start(&mut s, "s", "b", 1, 110).unwrap(), "hold-off");
        // After hold-off: an old tag is out of sync.
        assert_eq!(start(&mut s, "s", "b", 0, 200).unwrap(), "out-of-sync");
    }

    #[test]
    fn end_completes_only_when_every_job_did() {
        let mut s = session(&["a", "b", "c"]);
        start(&mut s, "s", "a", 0, 100).unwrap();
        start(&mut s, "s", "b", 0, 101).unwrap();
        start(&mut s, "s", "c", 0, 102).unwrap();
        // Upstream would complete here with `fail` (a failed job met before a running one).
        end(&mut s, "s", "a", "fail", 110).unwrap();
        assert_eq!(s["status"], "running");
        end(&mut s, "s", "b", "success", 111).unwrap();
        assert_eq!(s["status"], "running");
        end(&mut s, "s", "c", "success", 112).unwrap();
        assert_eq!(s["status"], "completed");
        assert_eq!(s["result"], "fail");
        assert_eq!(s["time_end"], 112);
        assert!(end(&mut s, "s", "zz", "success", 1).is_err());
        // A new round clears the old results: the first job to end does not complete it.
        assert_eq!(start(&mut s, "s", "a", 1, 500).unwrap(), "success");
        end(&mut s, "s", "a", "success", 510).unwrap();
        assert_eq!(s["status"], "running");
    }
}
