//! Registered clients (the nodes that run jobs): registration, which updates a client its
//! project registered before, and visibility (a project's own clients plus every central
//! one).

use serde_json::{Value, json};

use super::{Caller, Documents, body_object, new_id};
use crate::service::api::error::ApiError;
use crate::service::api::schema;
use crate::service::api::search::{Page, Search};
use crate::service::store::{Doc, Kind, Scope, StoreError};

fn is_central(d: &Doc) -> bool {
    d.body
        .pointer("/client/is_central")
        .and_then(Value::as_bool)
        == Some(true)
}

impl Caller {
    fn sees_client(&self, d: &Doc) -> bool {
        d.project_id == self.project_id || is_central(d) || self.privileged()
    }
}

impl Documents {
    /// `POST /clients` with the bare `client_info`: registers the client, or updates it when
    /// the same project registered it before; another project's client id is 409.
    pub async fn register_client(&self, caller: &Caller, body: Value) -> Result<String, ApiError> {
        let central = body.get("is_central").and_then(Value::as_bool) == Some(true);
        if central {
            // `clients:create_central` (admin or service): a central scheduler runs as a
            // service user, which holds no member role.
            caller.own_url()?;
            if !caller.privileged() {
                return Err(ApiError::forbidden());
            }
        } else {
            caller.may_write()?;
        }
        schema::client(&body)?;
        let mut info = body_object("client", body)?;
        let client_id = info
            .get("client_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        for (k, all) in [
            ("supported_actions", schema::ACTIONS),
            ("supported_modes", schema::MODES),
            ("supported_storages", schema::STORAGES),
            ("supported_engines", schema::ENGINES),
        ] {
            info.entry(k).or_insert(json!(all));
        }
        let user = caller.identity.user_id.clone();
        match self
            .store
            .get(Kind::Client, &Scope::All, &client_id)
            .await?
        {
            Some(d) if d.project_id == caller.project_id => {
                self.modify(Kind::Client, &caller.project_scope(), &client_id, |c| {
                    let mut info = info.clone();
                    if let (false, Some(uuid)) =
                        (info.contains_key("uuid"), c.pointer("/client/uuid"))
                    {
                        info.insert("uuid".into(), uuid.clone());
                    }
                    c["client"] = Value::Object(info);
                    c["user_id"] = json!(user);
                    Ok(())
                })
                .await?;
                Ok(client_id)
            }
            Some(_) => Err(ApiError::conflict(format!(
                "client {client_id} is registered by another project"
            ))),
            None => {
                info.entry("uuid").or_insert_with(|| json!(new_id()));
                let doc = json!({"client": info, "user_id": user, "project_id": caller.project_id});
                match self
                    .store
                    .insert(Kind::Client, &caller.project_id, &client_id, &doc)
                    .await
                {
                    Ok(_) => Ok(client_id),
                    Err(StoreError::Exists(..)) => Err(ApiError::conflict(format!(
                        "client {client_id} is registered by another project"
                    ))),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// `GET /clients/{client_id}`: the project's own client, or a central one.
    pub async fn get_client(&self, caller: &Caller, client_id: &str) -> Result<Value, ApiError> {
        caller.may_read()?;
        match self.store.get(Kind::Client, &Scope::All, client_id).await? {
            Some(d) if caller.sees_client(&d) => Ok(d.body),
            _ => Err(ApiError::not_found(format!("client {client_id}"))),
        }
    }

    /// `GET /clients`: the project's clients and every central client.
    pub async fn list_clients(
        &self,
        caller: &Caller,
        page: Page,
        search: &Value,
    ) -> Result<Vec<Value>, ApiError> {
        caller.may_read()?;
        let search = Search::parse(search)?;
        let project = caller.project_id.clone();
        let visible = move |d: &Doc| d.project_id == project || is_central(d);
        let docs = self
            .list(
                Kind::Client,
                &Scope::All,
                page,
                search.as_ref(),
                Some(&visible),
            )
            .await?;
        Ok(docs.into_iter().map(|d| d.body).collect())
    }

    /// `DELETE /clients/{client_id}`: idempotent; another project's central client is 403.
    pub async fn delete_client(&self, caller: &Caller, client_id: &str) -> Result<(), ApiError> {
        let found = self.store.get(Kind::Client, &Scope::All, client_id).await?;
        // The service user that registered a central client may delete it again.
        let own_central = found
            .as_ref()
            .is_some_and(|d| d.project_id == caller.project_id && is_central(d));
        if own_central && caller.privileged() {
            caller.own_url()?;
        } else {
            caller.may_write()?;
        }
        match found {
            Some(d) if d.project_id == caller.project_id || caller.identity.is_admin() => {
                self.delete_doc(Kind::Client, &Scope::All, client_id).await
            }
            Some(d) if is_central(&d) => Err(ApiError::forbidden()),
            _ => Ok(()),
        }
    }
}
