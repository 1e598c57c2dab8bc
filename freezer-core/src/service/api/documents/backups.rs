//! Backup metadata: what a scheduler posts after each backup, and its `status` (PATCH).

use serde_json::{Map, Value, json};

use super::{Caller, Documents, body_object, new_id, strip};
use crate::service::api::error::ApiError;
use crate::service::api::schema;
use crate::service::api::search::{Page, Search, TimeRange};
use crate::service::store::{Doc, Kind};

impl Documents {
    /// `POST /backups` with the raw metadata: stored as
    /// `{backup_id, user_id, project_id, status, backup_metadata}`; its new `backup_id`.
    pub async fn create_backup(&self, caller: &Caller, body: Value) -> Result<String, ApiError> {
        caller.may_write_backups()?;
        schema::backup(&body)?;
        let mut metadata = body_object("backup", body)?;
        let status = metadata.remove("status").unwrap_or(json!("available"));
        let id = new_id();
        let doc = json!({
            "backup_id": id,
            "user_id": caller.identity.user_id,
            "project_id": caller.project_id,
            "status": status,
            "backup_metadata": metadata,
        });
        self.store
            .insert(Kind::Backup, &caller.project_id, &id, &doc)
            .await?;
        Ok(id)
    }

    /// `GET /backups/{id}`.
    pub async fn get_backup(&self, caller: &Caller, backup_id: &str) -> Result<Value, ApiError> {
        self.read_body(caller, Kind::Backup, backup_id).await
    }

    /// `GET /backups`: a page of the backups the search accepts, whose search may also bound
    /// `time_stamp` with `time_after` and `time_before`; paging comes after
    /// every filter.
    pub async fn list_backups(
        &self,
        caller: &Caller,
        page: Page,
        search: &Value,
    ) -> Result<Vec<Value>, ApiError> {
        caller.may_read()?;
        let range = TimeRange::parse(search)?;
        let search = Search::parse(search)?;
        let within = |d: &Doc| range.is_none_or(|r| r.accepts(&d.body));
        let extra: Option<&(dyn Fn(&Doc) -> bool + Send + Sync)> = match range {
            Some(_) => Some(&within),
            None => None,
        };
        let docs = self
            .list(
                Kind::Backup,
                &caller.project_scope(),
                page,
                search.as_ref(),
                extra,
            )
            .await?;
        Ok(docs.into_iter().map(|d| d.body).collect())
    }

    /// `PATCH /backups/{id}`: sets `status`, merges `backup_metadata` key by key; the whole
    /// document after the update.
    pub async fn patch_backup(
        &self,
        caller: &Caller,
        backup_id: &str,
        patch: Value,
    ) -> Result<Value, ApiError> {
        caller.may_write_backups()?;
        schema::backup_patch(&patch)?;
        let mut p = body_object("backup", patch)?;
        strip(&mut p, &["user_id", "backup_id", "project_id"]);
        let scope = if caller.identity.is_admin() {
            caller.write_scope()
        } else {
            caller.project_scope()
        };
        let (doc, ()) = self
            .modify(Kind::Backup, &scope, backup_id, |b| {
                if let Some(s) = p.get("status") {
                    b["status"] = s.clone();
                }
                if let Some(Value::Object(m)) = p.get("backup_metadata") {
                    if !b.get("backup_metadata").is_some_and(Value::is_object) {
                        b["backup_metadata"] = Value::Object(Map::new());
                    }
                    for (k, v) in m {
                        b["backup_metadata"][k] = v.clone();
                    }
                }
                Ok(())
            })
            .await?;
        Ok(doc.body)
    }

    /// `DELETE /backups/{id}`: idempotent.
    pub async fn delete_backup(&self, caller: &Caller, backup_id: &str) -> Result<(), ApiError> {
        caller.may_write_backups()?;
        let scope = if caller.identity.is_admin() {
            caller.write_scope()
        } else {
            caller.project_scope()
        };
        self.delete_doc(Kind::Backup, &scope, backup_id).await
    }
}
