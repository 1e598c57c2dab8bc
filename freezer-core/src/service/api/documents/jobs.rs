//! Jobs: create (ids, schedule times, `action_defaults`, actions into the library, the
//! client check), replace, patch, events, delete, and the `current_pid` a foreign caller
//! does not see.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::actions::{DEFAULT_MAX_RETRIES, DEFAULT_MAX_RETRIES_INTERVAL};
use super::{Caller, Documents, body_object, merge_top, new_id, now, strip};
use crate::service::api::error::ApiError;
use crate::service::api::schema::{self, Whole};
use crate::service::api::search::{Page, Search};
use crate::service::store::{Kind, Scope};

/// The job events of `POST /jobs/{id}/event`.
pub const JOB_EVENTS: &[&str] = &["start", "stop", "abort", "remove"];

impl Documents {
    /// `POST /jobs`: stores a new job and returns its `job_id` (the one given, or a new
    /// uuid4 hex).
    pub async fn create_job(&self, caller: &Caller, body: Value) -> Result<String, ApiError> {
        caller.may_write()?;
        schema::job(&body, Whole::Document)?;
        let o = body_object("job", body)?;
        let job_id = match o.get("job_id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => new_id(),
        };
        if self
            .store
            .get(Kind::Job, &Scope::All, &job_id)
            .await?
            .is_some()
        {
            return Err(ApiError::conflict(format!("job {job_id} already exists")));
        }
        let project = caller.project_id.clone();
        let (mut job, central) = self.prepare_job(caller, &project, o, &job_id, None).await?;
        self.attach_trust(caller, &mut job, central).await?;
        self.store
            .insert(Kind::Job, &project, &job_id, &job)
            .await?;
        Ok(job_id)
    }

    /// Upstream's centralized scheduler: a job for a central client (or any job, with
    /// `enforce_trusts`) gets a trust from its creator to the service user, recorded as
    /// `user_credentials: {trust_id, trustor_user_id}`. Without a trust policy (the feature
    /// off), nothing is added.
    async fn attach_trust(
        &self,
        caller: &Caller,
        job: &mut Value,
        central: bool,
    ) -> Result<(), ApiError> {
        let Some(policy) = &self.trusts else {
            return Ok(());
        };
        if !(central || policy.enforce) {
            return Ok(());
        }
        if caller.identity.project_id != caller.project_id {
            // An admin creating a job in another project cannot delegate that project.
            return Err(ApiError::missing_credentials(format!(
                "Missing required credentials: a trust is made in the caller's own project \
                 ({}), not in {}",
                caller.identity.project_id, caller.project_id
            )));
        }
        let token = caller.token.as_ref().map(|t| t.0.as_str());
        let trust = policy
            .broker
            .ensure_trust(&caller.identity, token, &policy.delegated_roles)
            .await?;
        job["user_credentials"] = json!({
            "trust_id": trust.id,
            "trustor_user_id": trust.trustor_user_id,
        });
        Ok(())
    }

    /// Deletes the trust of a deleted job when no other job of its project uses it.
    async fn release_trust(&self, caller: &Caller, project: &str, job: &Value) {
        let (Some(policy), Some(trust_id)) = (
            &self.trusts,
            job.pointer("/user_credentials/trust_id")
                .and_then(Value::as_str),
        ) else {
            return;
        };
        let in_use = match self
            .store
            .list(Kind::Job, &Scope::Project(project.to_string()), 0, None)
            .await
        {
            Ok(jobs) => jobs.iter().any(|j| {
                j.body
                    .pointer("/user_credentials/trust_id")
                    .and_then(Value::as_str)
                    == Some(trust_id)
            }),
            Err(e) => {
                tracing::warn!(trust_id, "not deleting the trust: listing jobs failed: {e}");
                return;
            }
        };
        if in_use {
            return;
        }
        let token = caller.token.as_ref().map(|t| t.0.as_str());
        // Upstream logs a failed delete and still answers the job's delete.
        if let Err(e) = policy.broker.delete_trust(trust_id, token).await {
            tracing::warn!(trust_id, "deleting the trust of a deleted job failed: {e}");
        }
    }

    /// `POST /jobs/{id}`: replaces the job (or creates it); its id and new version.
    pub async fn replace_job(
        &self,
        caller: &Caller,
        job_id: &str,
        body: Value,
    ) -> Result<(String, i64), ApiError> {
        caller.may_write()?;
        schema::job(&body, Whole::Document)?;
        let o = body_object("job", body)?;
        let scope = caller.write_scope();
        match self.store.get(Kind::Job, &Scope::All, job_id).await? {
            Some(d) if scope.contains(&d.project_id) => {
                let (job, _) = self
                    .prepare_job(caller, &d.project_id, o, job_id, Some(&d.body))
                    .await?;
                let (doc, ()) = self
                    .modify(Kind::Job, &scope, job_id, |stored| {
                        *stored = job.clone();
                        Ok(())
                    })
                    .await?;
                Ok((job_id.to_string(), doc.version))
            }
            Some(_) => Err(ApiError::conflict(format!("job {job_id} already exists"))),
            None => {
                let project = caller.project_id.clone();
                let (mut job, central) =
                    self.prepare_job(caller, &project, o, job_id, None).await?;
                self.attach_trust(caller, &mut job, central).await?;
                let doc = self.store.insert(Kind::Job, &project, job_id, &job).await?;
                Ok((job_id.to_string(), doc.version))
            }
        }
    }

    /// `GET /jobs/{id}`.
    pub async fn get_job(&self, caller: &Caller, job_id: &str) -> Result<Value, ApiError> {
        caller.may_read()?;
        let doc = self
            .get_doc(Kind::Job, &caller.read_scope(), job_id)
            .await?;
        Ok(self.present_jobs(caller, vec![doc.body]).await?.remove(0))
    }

    /// `GET /jobs`: the URL project's jobs, or every project's for an admin or service
    /// caller asking `all_projects`.
    pub async fn list_jobs(
        &self,
        caller: &Caller,
        page: Page,
        all_projects: bool,
        search: &Value,
    ) -> Result<Vec<Value>, ApiError> {
        caller.may_read()?;
        let search = Search::parse(search)?;
        let scope = if all_projects && caller.privileged() {
            Scope::All
        } else {
            caller.project_scope()
        };
        let docs = self
            .list(Kind::Job, &scope, page, search.as_ref(), None)
            .await?;
        self.present_jobs(caller, docs.into_iter().map(|d| d.body).collect())
            .await
    }

    /// `PATCH /jobs/{id}`: merges the top level (a given `job_schedule` replaces the stored
    /// one, as upstream's SQL driver does); its id and new version.
    pub async fn patch_job(
        &self,
        caller: &Caller,
        job_id: &str,
        patch: Value,
    ) -> Result<(String, i64), ApiError> {
        caller.may_write()?;
        schema::job(&patch, Whole::Patch)?;
        let mut p = body_object("job", patch)?;
        strip(
            &mut p,
            &["user_id", "job_id", "user_credentials", "project_id"],
        );
        let scope = caller.write_scope();
        let current = self.get_doc(Kind::Job, &scope, job_id).await?;
        let defaults = p.remove("action_defaults");
        if p.contains_key("client_id") || p.contains_key("job_actions") {
            let client_id = p
                .get("client_id")
                .or_else(|| current.body.get("client_id"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let client = self.job_client(&current.project_id, &client_id).await?;
            let items = match p.remove("job_actions") {
                Some(Value::Array(items)) => {
                    let items = with_defaults(items, defaults.as_ref());
                    let items = self
                        .resolve_actions(caller, &current.project_id, items)
                        .await?;
                    p.insert("job_actions".into(), Value::Array(items.clone()));
                    items
                }
                _ => current
                    .body
                    .get("job_actions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            };
            check_capabilities(&client, &client_id, &items)?;
        }
        let (doc, ()) = self
            .modify(Kind::Job, &scope, job_id, |job| {
                merge_top(job, p.clone());
                Ok(())
            })
            .await?;
        Ok((job_id.to_string(), doc.version))
    }

    /// `DELETE /jobs/{id}`: idempotent. A job in a session leaves the session too (upstream
    /// left it there, so the session waited for it forever).
    pub async fn delete_job(&self, caller: &Caller, job_id: &str) -> Result<(), ApiError> {
        caller.may_write()?;
        let scope = caller.write_scope();
        let Some(doc) = self.store.get(Kind::Job, &scope, job_id).await? else {
            return Ok(());
        };
        self.delete_doc(Kind::Job, &scope, job_id).await?;
        self.release_trust(caller, &doc.project_id, &doc.body).await;
        if let Some(session) = doc
            .body
            .get("session_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            let removed = self
                .modify(
                    Kind::Session,
                    &Scope::Project(doc.project_id.clone()),
                    session,
                    |s| {
                        if let Some(Value::Object(jobs)) = s.get_mut("jobs") {
                            jobs.remove(job_id);
                        }
                        Ok(())
                    },
                )
                .await;
            match removed {
                Ok(_) => {}
                Err(e) if e.kind == crate::service::api::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `POST /jobs/{id}/event`: `{"start": null}`, `{"stop": null}`, `{"abort": null}` or
    /// `{"remove": null}`; `success` or `<event> already requested`.
    pub async fn job_event(
        &self,
        caller: &Caller,
        job_id: &str,
        body: Value,
    ) -> Result<String, ApiError> {
        caller.may_write()?;
        let o = body_object("job event", body)?;
        let event = match o.keys().collect::<Vec<_>>().as_slice() {
            [one] if JOB_EVENTS.contains(&one.as_str()) => one.to_string(),
            [other] => {
                return Err(ApiError::bad_request(format!(
                    "Bad Action Method: unknown job event {other:?} (one of {JOB_EVENTS:?})"
                )));
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Bad Action Method: give exactly one job event, one of {JOB_EVENTS:?}"
                )));
            }
        };
        let (_, result) = self
            .modify(Kind::Job, &caller.write_scope(), job_id, |job| {
                let sched = job
                    .as_object_mut()
                    .ok_or_else(|| ApiError::internal(format!("job {job_id} is not an object")))?
                    .entry("job_schedule")
                    .or_insert_with(|| json!({}));
                if !sched.is_object() {
                    *sched = json!({});
                }
                let sched = sched.as_object_mut().expect("an object");
                if sched.get("event").and_then(Value::as_str) == Some(event.as_str()) {
                    return Ok(format!("{event} already requested"));
                }
                sched.insert("event".into(), json!(event));
                if event == "start" {
                    sched.insert("status".into(), json!(""));
                    sched.insert("result".into(), json!(""));
                }
                Ok("success".to_string())
            })
            .await?;
        Ok(result)
    }

    /// A whole job from a caller's document: `action_defaults` applied, actions stored in the
    /// library, the client checked, ids and schedule times set; and whether its client is
    /// central. `user_credentials` are the server's to set: a caller's are dropped, a
    /// replaced job keeps its own.
    async fn prepare_job(
        &self,
        caller: &Caller,
        project: &str,
        mut o: Map<String, Value>,
        job_id: &str,
        previous: Option<&Value>,
    ) -> Result<(Value, bool), ApiError> {
        o.remove("user_credentials");
        if let Some(c) = previous.and_then(|p| p.get("user_credentials")) {
            o.insert("user_credentials".into(), c.clone());
        }
        let client_id = o
            .get("client_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let client = self.job_client(project, &client_id).await?;
        let defaults = o.remove("action_defaults");
        let items = match o.remove("job_actions") {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        let items = with_defaults(items, defaults.as_ref());
        // The capabilities of inline actions are checked before anything is stored.
        let inline: Vec<Value> = items
            .iter()
            .filter(|i| i.get("freezer_action").is_some())
            .cloned()
            .collect();
        check_capabilities(&client, &client_id, &inline)?;
        let items = self.resolve_actions(caller, project, items).await?;
        check_capabilities(&client, &client_id, &items)?;
        o.insert("job_actions".into(), Value::Array(items));
        let mut sched = match o.remove("job_schedule") {
            Some(Value::Object(s)) => s,
            _ => Map::new(),
        };
        let created = previous
            .and_then(|p| p.pointer("/job_schedule/time_created"))
            .and_then(Value::as_i64)
            .unwrap_or_else(now);
        sched.insert("time_created".into(), json!(created));
        sched.insert("time_started".into(), json!(-1));
        sched.insert("time_ended".into(), json!(-1));
        o.insert("job_schedule".into(), Value::Object(sched));
        o.insert("job_id".into(), json!(job_id));
        o.insert("user_id".into(), json!(caller.identity.user_id));
        o.insert("project_id".into(), json!(project));
        Ok((Value::Object(o), is_central(&client)))
    }

    /// The registered client a job of `project` may name: the project's own or a central
    /// one; 422 otherwise.
    async fn job_client(&self, project: &str, client_id: &str) -> Result<Value, ApiError> {
        match self.store.get(Kind::Client, &Scope::All, client_id).await? {
            Some(d) if d.project_id == project || is_central(&d.body) => Ok(d.body),
            _ => Err(ApiError::unprocessable(format!(
                "job.client_id: Client not found with ID {client_id} (register it first: POST /v2/{project}/clients)"
            ))),
        }
    }

    /// Each item with a `freezer_action` becomes (or reuses) an action of the library; an
    /// item with only an `action_id` is read from the library (422 when it is not there).
    async fn resolve_actions(
        &self,
        caller: &Caller,
        project: &str,
        items: Vec<Value>,
    ) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let at = format!("job.job_actions[{i}]");
            let Value::Object(mut item) = item else {
                return Err(ApiError::bad_request(format!("{at}: must be an object")));
            };
            let given = item
                .get("action_id")
                .and_then(Value::as_str)
                .map(str::to_string);
            if item.get("freezer_action").is_none() {
                let id = given.unwrap_or_default();
                let stored = self
                    .store
                    .get(Kind::Action, &Scope::Project(project.to_string()), &id)
                    .await?
                    .ok_or_else(|| {
                        ApiError::unprocessable(format!("{at}.action_id: action {id} not found"))
                    })?;
                for k in [
                    "freezer_action",
                    "max_retries",
                    "max_retries_interval",
                    "mandatory",
                ] {
                    if let (false, Some(v)) = (item.contains_key(k), stored.body.get(k)) {
                        item.insert(k.into(), v.clone());
                    }
                }
            } else {
                item.entry("max_retries")
                    .or_insert(json!(DEFAULT_MAX_RETRIES));
                item.entry("max_retries_interval")
                    .or_insert(json!(DEFAULT_MAX_RETRIES_INTERVAL));
                let id = self.library_action(caller, project, &item, given).await?;
                item.insert("action_id".into(), json!(id));
            }
            out.push(Value::Object(item));
        }
        Ok(out)
    }

    /// Present jobs to `caller`: `job_schedule.current_pid` is hidden unless the caller's
    /// project owns the job's client (or the caller is an admin or service user).
    async fn present_jobs(
        &self,
        caller: &Caller,
        jobs: Vec<Value>,
    ) -> Result<Vec<Value>, ApiError> {
        if caller.privileged() {
            return Ok(jobs);
        }
        let mut owned: HashMap<String, bool> = HashMap::new();
        let mut out = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            if job.pointer("/job_schedule/current_pid").is_some() {
                let client_id = job
                    .get("client_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let own = match owned.get(&client_id) {
                    Some(o) => *o,
                    None => {
                        let o = self
                            .store
                            .get(Kind::Client, &Scope::All, &client_id)
                            .await?
                            .is_some_and(|c| c.project_id == caller.identity.project_id);
                        owned.insert(client_id, o);
                        o
                    }
                };
                if !own && let Some(Value::Object(s)) = job.get_mut("job_schedule") {
                    s.remove("current_pid");
                }
            }
            out.push(job);
        }
        Ok(out)
    }
}

fn is_central(client: &Value) -> bool {
    client
        .pointer("/client/is_central")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Copies each `action_defaults` key into every inline `freezer_action` that lacks it (or
/// has it null).
fn with_defaults(items: Vec<Value>, defaults: Option<&Value>) -> Vec<Value> {
    let Some(Value::Object(d)) = defaults else {
        return items;
    };
    items
        .into_iter()
        .map(|mut item| {
            if let Some(Value::Object(fa)) = item.get_mut("freezer_action") {
                for (k, v) in d {
                    if fa.get(k).is_none_or(Value::is_null) {
                        fa.insert(k.clone(), v.clone());
                    }
                }
            }
            item
        })
        .collect()
}

/// Every action's `action`, `mode`, `storage` and engine must be among the client's
/// `supported_*` (a client without such a list supports all). Upstream looked only at
/// `engine`, which the agent never sets; `engine_name` is checked too.
fn check_capabilities(client: &Value, client_id: &str, items: &[Value]) -> Result<(), ApiError> {
    let checks: [(&str, &[&str]); 4] = [
        ("supported_actions", &["action"]),
        ("supported_modes", &["mode"]),
        ("supported_storages", &["storage"]),
        ("supported_engines", &["engine", "engine_name"]),
    ];
    for (i, item) in items.iter().enumerate() {
        let Some(fa) = item.get("freezer_action") else {
            continue;
        };
        for (list, keys) in checks {
            let Some(supported) = client
                .pointer(&format!("/client/{list}"))
                .and_then(Value::as_array)
            else {
                continue;
            };
            for key in keys {
                if let Some(Value::String(s)) = fa.get(*key)
                    && !supported.iter().any(|v| v.as_str() == Some(s))
                {
                    return Err(ApiError::unprocessable(format!(
                        "job.job_actions[{i}].freezer_action.{key}: client {client_id} does not support {s:?} ({list}: {})",
                        Value::Array(supported.clone())
                    )));
                }
            }
        }
    }
    Ok(())
}
