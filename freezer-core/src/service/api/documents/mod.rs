//! freezer-api v2's semantics over a [`Store`]: what creating a job fills in, how a session
//! starts and ends, who sees which document. One method per API operation; the HTTP layer
//! only maps requests to these.
//!
//! Every server-side change of a stored document is a versioned read-modify-write retried on
//! [`StoreError::Conflict`] ([`Documents::modify`]), so concurrent requests (many nodes
//! ending one session) never lose each other's updates. This module never speaks HTTP and
//! never logs a token.

mod actions;
mod backups;
mod clients;
mod jobs;
mod sessions;
pub use sessions::SessionActionResult;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::error::ApiError;
use super::search::{Page, Search};
use crate::job::Secret;
use crate::service::auth::Identity;
use crate::service::auth::policy;
use crate::service::auth::trusts::TrustPolicy;
use crate::service::store::{Doc, Kind, Scope, Store, StoreError};

/// How many times a read-modify-write is tried before the request gives up (503).
const MAX_ATTEMPTS: u32 = 200;

/// Who calls, and for which project (the `{project_id}` of the URL).
#[derive(Clone, Debug)]
pub struct Caller {
    /// The validated identity of the request's token.
    pub identity: Identity,
    /// The project the URL names.
    pub project_id: String,
    /// The request's token, when the API must act as the caller (creating a Keystone trust).
    /// Its `Debug` shows nothing of it.
    pub token: Option<Secret>,
}

impl Caller {
    /// A caller of `identity` on the URL's `project_id`.
    pub fn new(identity: Identity, project_id: impl Into<String>) -> Self {
        Caller {
            identity,
            project_id: project_id.into(),
            token: None,
        }
    }

    /// The same caller, holding its request's `token`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret(token.into()));
        self
    }

    /// Whether the caller is an admin or a service user (`jobs:get_all_projects`).
    fn privileged(&self) -> bool {
        policy::sees_all_projects(&self.identity)
    }

    /// Another project's URL is 404 (never 403, which would confirm it exists).
    fn own_url(&self) -> Result<(), ApiError> {
        if self.privileged() || self.identity.project_id == self.project_id {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("project {}", self.project_id)))
        }
    }

    /// `*:get`, `*:get_all`.
    fn may_read(&self) -> Result<(), ApiError> {
        self.own_url()?;
        if policy::can_read(&self.identity, &self.project_id) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }

    /// Creates, updates, deletes, events and session actions (`admin_or_owner`).
    fn may_write(&self) -> Result<(), ApiError> {
        self.own_url()?;
        if policy::can_write(&self.identity, &self.project_id) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }

    /// `backups:create|update|delete` (`admin_or_owner_or_service`).
    fn may_write_backups(&self) -> Result<(), ApiError> {
        self.own_url()?;
        if policy::can_write_backups(&self.identity, &self.project_id) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }

    /// What single-document reads see: every project for an admin or service user (who
    /// may read any project's documents), else the URL's project.
    fn read_scope(&self) -> Scope {
        if self.privileged() {
            Scope::All
        } else {
            Scope::Project(self.project_id.clone())
        }
    }

    /// What updates and deletes reach: every project for an admin, else the URL's project.
    fn write_scope(&self) -> Scope {
        if self.identity.is_admin() {
            Scope::All
        } else {
            Scope::Project(self.project_id.clone())
        }
    }

    fn project_scope(&self) -> Scope {
        Scope::Project(self.project_id.clone())
    }
}

/// freezer-api's documents over a store.
#[derive(Clone, Debug)]
pub struct Documents {
    store: Arc<dyn Store>,
    /// Trusts for the centralized scheduler (`None`: `[centralized_scheduler] enabled =
    /// false`, no trust is made).
    trusts: Option<TrustPolicy>,
}

/// A new id as upstream makes them: `uuid4().hex`.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    // The system's random source does not fail on the systems this runs on; a zeroed
    // buffer would still give a well-formed (if guessable) id.
    let _ = getrandom::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    hex::encode(b)
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn body_object(what: &str, body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(o) => Ok(o),
        other => Err(ApiError::bad_request(format!(
            "{what}: the body must be a JSON object, not {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Null => "null",
                _ => "a scalar",
            }
        ))),
    }
}

impl Documents {
    /// The documents kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Documents {
            store,
            trusts: None,
        }
    }

    /// Makes a trust for each job of a central client (or every job, with
    /// [`TrustPolicy::enforce`]), as upstream's centralized scheduler needs.
    pub fn with_trusts(mut self, trusts: TrustPolicy) -> Self {
        self.trusts = Some(trusts);
        self
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads, changes with `change`, and writes back `kind`/`id` until no other write came in
    /// between. `change` returns `Ok(None)` to leave the document as it is.
    pub(crate) async fn modify<R>(
        &self,
        kind: Kind,
        scope: &Scope,
        id: &str,
        mut change: impl FnMut(&mut Value) -> Result<R, ApiError>,
    ) -> Result<(Doc, R), ApiError> {
        for attempt in 0..MAX_ATTEMPTS {
            let doc = self
                .store
                .get(kind, scope, id)
                .await?
                .ok_or_else(|| not_found(kind, id))?;
            let mut body = doc.body.clone();
            let r = change(&mut body)?;
            if body == doc.body {
                return Ok((doc, r));
            }
            match self.store.update(kind, scope, id, doc.version, &body).await {
                Ok(d) => return Ok((d, r)),
                Err(StoreError::Conflict(..)) => backoff(attempt).await,
                Err(StoreError::NotFound(..)) => return Err(not_found(kind, id)),
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict(kind, id.to_string(), -1).into())
    }

    /// Lists `kind` in `scope` (`extra` filters before paging), with a search applied
    /// before paging: all of them are read when there is a search or a filter.
    async fn list(
        &self,
        kind: Kind,
        scope: &Scope,
        page: Page,
        search: Option<&Search>,
        extra: Option<&(dyn Fn(&Doc) -> bool + Send + Sync)>,
    ) -> Result<Vec<Doc>, ApiError> {
        if search.is_none() && extra.is_none() {
            return Ok(self
                .store
                .list(kind, scope, page.offset, Some(page.limit))
                .await?);
        }
        let all = self.store.list(kind, scope, 0, None).await?;
        Ok(all
            .into_iter()
            .filter(|d| extra.is_none_or(|f| f(d)))
            .filter(|d| search.is_none_or(|s| s.accepts(&d.body)))
            .skip(page.offset)
            .take(page.limit)
            .collect())
    }

    /// `GET /{kind}/{id}` for a reader of the caller's project: the document as stored.
    async fn read_body(&self, caller: &Caller, kind: Kind, id: &str) -> Result<Value, ApiError> {
        caller.may_read()?;
        Ok(self.get_doc(kind, &caller.read_scope(), id).await?.body)
    }

    /// `GET /{kind}` for a reader of the caller's project: a page of the documents the
    /// search accepts.
    async fn list_bodies(
        &self,
        caller: &Caller,
        kind: Kind,
        page: Page,
        search: &Value,
    ) -> Result<Vec<Value>, ApiError> {
        caller.may_read()?;
        let search = Search::parse(search)?;
        let docs = self
            .list(kind, &caller.project_scope(), page, search.as_ref(), None)
            .await?;
        Ok(docs.into_iter().map(|d| d.body).collect())
    }

    async fn get_doc(&self, kind: Kind, scope: &Scope, id: &str) -> Result<Doc, ApiError> {
        self.store
            .get(kind, scope, id)
            .await?
            .ok_or_else(|| not_found(kind, id))
    }

    async fn delete_doc(&self, kind: Kind, scope: &Scope, id: &str) -> Result<(), ApiError> {
        self.store.delete(kind, scope, id).await?;
        Ok(())
    }
}

fn not_found(kind: Kind, id: &str) -> ApiError {
    let name = kind.plural();
    ApiError::not_found(format!("{} {id}", name.strip_suffix('s').unwrap_or(name)))
}

/// A short random pause that grows with the attempt, so that contending writers spread out.
async fn backoff(attempt: u32) {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let cap = 1u64 << attempt.min(5);
    let ms = u64::from(u16::from_le_bytes(b)) % (cap + 1);
    if ms == 0 {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Strips `keys` from a patch (fields no caller may change).
fn strip(o: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        o.remove(*k);
    }
}

/// Merges `patch` into `doc` at the top level (a patched object replaces the stored one,
/// as upstream's SQL driver does).
fn merge_top(doc: &mut Value, patch: Map<String, Value>) {
    if let Value::Object(d) = doc {
        for (k, v) in patch {
            d.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_uuid4_hex() {
        let a = super::new_id();
        let b = super::new_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(&a[12..13], "4");
        assert!("89ab".contains(&a[16..17]));
    }
}
