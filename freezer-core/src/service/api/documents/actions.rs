//! The action library: actions stored on their own and referenced by jobs. A job holds a
//! copy of each of its actions (so that listing jobs reads nothing else); changing or
//! deleting an action changes or removes those copies.

use serde_json::{Map, Value, json};

use super::{Caller, Documents, body_object, merge_top, new_id, strip};
use crate::service::api::error::ApiError;
use crate::service::api::schema::{self, Whole};
use crate::service::api::search::Page;
use crate::service::store::{Kind, Scope, StoreError};

/// `max_retries` when an action does not say.
pub const DEFAULT_MAX_RETRIES: i64 = 5;
/// `max_retries_interval` (seconds) when an action does not say.
pub const DEFAULT_MAX_RETRIES_INTERVAL: i64 = 6;

/// The fields of an action that a job's copy carries.
const DEFINITION: [&str; 4] = [
    "freezer_action",
    "max_retries",
    "max_retries_interval",
    "mandatory",
];

/// The stored action for `src` (a posted action or a job's item).
fn action_doc(
    src: &Map<String, Value>,
    id: &str,
    project: &str,
    user_id: &str,
    all: bool,
) -> Value {
    let mut o = Map::new();
    if all {
        for (k, v) in src {
            o.insert(k.clone(), v.clone());
        }
    } else {
        for k in DEFINITION {
            if let Some(v) = src.get(k) {
                o.insert(k.into(), v.clone());
            }
        }
    }
    o.entry("max_retries").or_insert(json!(DEFAULT_MAX_RETRIES));
    o.entry("max_retries_interval")
        .or_insert(json!(DEFAULT_MAX_RETRIES_INTERVAL));
    o.entry("freezer_action").or_insert(json!({}));
    o.insert("action_id".into(), json!(id));
    o.insert("project_id".into(), json!(project));
    o.insert("user_id".into(), json!(user_id));
    Value::Object(o)
}

fn same_definition(stored: &Value, item: &Map<String, Value>) -> bool {
    DEFINITION.iter().all(|k| stored.get(*k) == item.get(*k))
}

impl Documents {
    /// The library action a job's inline item stands for: the given `action_id` when the
    /// library holds the same definition under it (or does not hold it yet), else a new one.
    pub(super) async fn library_action(
        &self,
        caller: &Caller,
        project: &str,
        item: &Map<String, Value>,
        given: Option<String>,
    ) -> Result<String, ApiError> {
        if let Some(id) = given {
            match self.store.get(Kind::Action, &Scope::All, &id).await? {
                Some(d) if d.project_id == project && same_definition(&d.body, item) => {
                    return Ok(id);
                }
                Some(_) => {}
                None => {
                    let doc = action_doc(item, &id, project, &caller.identity.user_id, false);
                    match self.store.insert(Kind::Action, project, &id, &doc).await {
                        Ok(_) => return Ok(id),
                        Err(StoreError::Exists(..)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        let id = new_id();
        let doc = action_doc(item, &id, project, &caller.identity.user_id, false);
        self.store.insert(Kind::Action, project, &id, &doc).await?;
        Ok(id)
    }

    /// `POST /actions`: its `action_id` (the one given, or a new uuid4 hex).
    pub async fn create_action(&self, caller: &Caller, body: Value) -> Result<String, ApiError> {
        caller.may_write()?;
        schema::action(&body, Whole::Document)?;
        let mut o = body_object("action", body)?;
        strip(&mut o, &["user_id", "project_id"]);
        let id = match o.get("action_id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => new_id(),
        };
        let doc = action_doc(&o, &id, &caller.project_id, &caller.identity.user_id, true);
        self.store
            .insert(Kind::Action, &caller.project_id, &id, &doc)
            .await?;
        Ok(id)
    }

    /// `POST /actions/{id}`: replaces (or creates) the action; its id and version.
    pub async fn replace_action(
        &self,
        caller: &Caller,
        action_id: &str,
        body: Value,
    ) -> Result<(String, i64), ApiError> {
        caller.may_write()?;
        schema::action(&body, Whole::Document)?;
        let mut o = body_object("action", body)?;
        strip(&mut o, &["user_id", "project_id", "action_id"]);
        let scope = caller.write_scope();
        match self.store.get(Kind::Action, &Scope::All, action_id).await? {
            Some(d) if scope.contains(&d.project_id) => {
                let doc = action_doc(&o, action_id, &d.project_id, &caller.identity.user_id, true);
                let (stored, ()) = self
                    .modify(Kind::Action, &scope, action_id, |a| {
                        *a = doc.clone();
                        Ok(())
                    })
                    .await?;
                self.propagate_action(&d.project_id, action_id, Some(&stored.body))
                    .await?;
                Ok((action_id.to_string(), stored.version))
            }
            Some(_) => Err(ApiError::conflict(format!(
                "action {action_id} already exists"
            ))),
            None => {
                let doc = action_doc(
                    &o,
                    action_id,
                    &caller.project_id,
                    &caller.identity.user_id,
                    true,
                );
                let d = self
                    .store
                    .insert(Kind::Action, &caller.project_id, action_id, &doc)
                    .await?;
                Ok((action_id.to_string(), d.version))
            }
        }
    }

    /// `GET /actions/{id}`.
    pub async fn get_action(&self, caller: &Caller, action_id: &str) -> Result<Value, ApiError> {
        self.read_body(caller, Kind::Action, action_id).await
    }

    /// `GET /actions`.
    pub async fn list_actions(
        &self,
        caller: &Caller,
        page: Page,
        search: &Value,
    ) -> Result<Vec<Value>, ApiError> {
        self.list_bodies(caller, Kind::Action, page, search).await
    }

    /// `PATCH /actions/{id}`: merges the top level; the jobs holding it follow.
    pub async fn patch_action(
        &self,
        caller: &Caller,
        action_id: &str,
        patch: Value,
    ) -> Result<(String, i64), ApiError> {
        caller.may_write()?;
        schema::action(&patch, Whole::Patch)?;
        let mut p = body_object("action", patch)?;
        strip(&mut p, &["user_id", "project_id", "action_id"]);
        let (doc, ()) = self
            .modify(Kind::Action, &caller.write_scope(), action_id, |a| {
                merge_top(a, p.clone());
                Ok(())
            })
            .await?;
        self.propagate_action(&doc.project_id, action_id, Some(&doc.body))
            .await?;
        Ok((action_id.to_string(), doc.version))
    }

    /// `DELETE /actions/{id}`: idempotent; the action also leaves every job holding it.
    pub async fn delete_action(&self, caller: &Caller, action_id: &str) -> Result<(), ApiError> {
        caller.may_write()?;
        let scope = caller.write_scope();
        let Some(doc) = self.store.get(Kind::Action, &scope, action_id).await? else {
            return Ok(());
        };
        self.delete_doc(Kind::Action, &scope, action_id).await?;
        self.propagate_action(&doc.project_id, action_id, None)
            .await
    }

    /// Updates (or, with `None`, removes) the copies of an action in its project's jobs.
    async fn propagate_action(
        &self,
        project: &str,
        action_id: &str,
        action: Option<&Value>,
    ) -> Result<(), ApiError> {
        let scope = Scope::Project(project.to_string());
        let holds = |job: &Value| {
            job.get("job_actions")
                .and_then(Value::as_array)
                .is_some_and(|a| {
                    a.iter()
                        .any(|i| i.get("action_id").and_then(Value::as_str) == Some(action_id))
                })
        };
        for job in self.store.list(Kind::Job, &scope, 0, None).await? {
            if !holds(&job.body) {
                continue;
            }
            let changed = self
                .modify(Kind::Job, &scope, &job.id, |j| {
                    let Some(Value::Array(items)) = j.get_mut("job_actions") else {
                        return Ok(());
                    };
                    let mine =
                        |i: &Value| i.get("action_id").and_then(Value::as_str) == Some(action_id);
                    match action {
                        None => items.retain(|i| !mine(i)),
                        Some(a) => {
                            for item in items.iter_mut().filter(|i| mine(i)) {
                                if let Value::Object(item) = item {
                                    for k in DEFINITION {
                                        match a.get(k) {
                                            Some(v) => item.insert(k.into(), v.clone()),
                                            None => item.remove(k),
                                        };
                                    }
                                }
                            }
                        }
                    }
                    Ok(())
                })
                .await;
            match changed {
                Ok(_) => {}
                Err(e) if e.kind == crate::service::api::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
