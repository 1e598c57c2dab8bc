//! Trusts in a real Keystone (`OS-TRUST`), as upstream freezer-api makes them: with the
//! caller's own token (Keystone lets only the trustor create a trust), reusing one of the
//! same trustor, trustee and project, without impersonation or redelegation. The trustee is
//! the API's service user (`--keystone-user`). No token is ever logged.

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::keystone::KeystoneAuthenticator;
use super::trusts::{Trust, TrustBroker, TrustError};
use super::{Authenticator, Identity};

fn transport(what: &str, e: &reqwest::Error) -> TrustError {
    TrustError::Unavailable(super::keystone::outage(what, e))
}

/// Keystone's error message in an answer body, if any.
fn message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_default()
}

impl KeystoneAuthenticator {
    /// The service user's id (the trustee), from its own token.
    async fn trustee_id(&self) -> Result<String, TrustError> {
        let service = self
            .service_token(None)
            .await
            .map_err(|e| TrustError::Unavailable(e.to_string()))?;
        let me = self
            .validate(&service)
            .await
            .map_err(|e| TrustError::Unavailable(e.to_string()))?;
        Ok(me.user_id)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Vec<u8>), TrustError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("x-auth-token", token)
            .header("accept", "application/json");
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport("a trust request", &e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport("reading a trust answer", &e))?;
        Ok((status, bytes.to_vec()))
    }
}

#[async_trait]
impl TrustBroker for KeystoneAuthenticator {
    async fn ensure_trust(
        &self,
        trustor: &Identity,
        token: Option<&str>,
        roles: &[String],
    ) -> Result<Trust, TrustError> {
        let token = token.ok_or_else(|| {
            TrustError::MissingCredentials(
                "Missing required credentials: no token of the trustor to create the trust with"
                    .into(),
            )
        })?;
        let trustee = self.trustee_id().await?;
        let wanted: Vec<String> = roles.iter().map(|r| r.to_ascii_lowercase()).collect();
        // Reuse one of this trustor, trustee and project (a failed listing is not fatal, as
        // upstream: a new trust is made).
        let path = format!("/OS-TRUST/trusts?trustor_user_id={}", trustor.user_id);
        match self.call(reqwest::Method::GET, &path, token, None).await {
            Ok((s, body)) if s.is_success() => {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let found = v["trusts"].as_array().into_iter().flatten().find_map(|t| {
                    let t = Trust::from_keystone(t)?;
                    (t.trustee_user_id == trustee
                        && t.project_id == trustor.project_id
                        && t.trustor_user_id == trustor.user_id)
                        .then_some(t)
                });
                if let Some(t) = found {
                    tracing::debug!(trust_id = t.id, "reusing a Keystone trust");
                    return Ok(t);
                }
            }
            Ok((s, _)) => tracing::warn!("listing trusts at Keystone: {s}; creating a new one"),
            Err(e) => tracing::warn!("listing trusts at Keystone: {e}; creating a new one"),
        }
        let role_refs: Vec<Value> = wanted.iter().map(|r| json!({"name": r})).collect();
        let body = json!({"trust": {
            "trustor_user_id": trustor.user_id,
            "trustee_user_id": trustee,
            "project_id": trustor.project_id,
            "impersonation": false,
            "allow_redelegation": false,
            "roles": role_refs,
        }});
        let (status, answer) = self
            .call(
                reqwest::Method::POST,
                "/OS-TRUST/trusts",
                token,
                Some(&body),
            )
            .await?;
        match status {
            s if s.is_success() => {
                let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
                let trust = Trust::from_keystone(&v["trust"]).ok_or_else(|| {
                    TrustError::Unavailable("Keystone's trust answer is not as expected".into())
                })?;
                tracing::info!(
                    trust_id = trust.id,
                    trustor = trustor.user_name,
                    "trust created"
                );
                Ok(trust)
            }
            StatusCode::NOT_FOUND => Err(TrustError::MissingCredentials(format!(
                "Failed to find roles {wanted:?} for user {} ({})",
                trustor.user_id,
                message(&answer)
            ))),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(TrustError::Refused(format!(
                "creating a trust ({status}): {}",
                message(&answer)
            ))),
            StatusCode::BAD_REQUEST => Err(TrustError::MissingCredentials(format!(
                "Missing required credentials: Keystone refused the trust: {}",
                message(&answer)
            ))),
            s => Err(TrustError::Unavailable(format!(
                "Keystone answered a trust creation with {s}"
            ))),
        }
    }

    async fn delete_trust(&self, trust_id: &str, token: Option<&str>) -> Result<(), TrustError> {
        let path = format!("/OS-TRUST/trusts/{trust_id}");
        // The trustor's token first (Keystone's policy), then the service user's (an admin
        // may delete any trust).
        let mut last = StatusCode::FORBIDDEN;
        if let Some(t) = token {
            let (s, _) = self.call(reqwest::Method::DELETE, &path, t, None).await?;
            if s.is_success() || s == StatusCode::NOT_FOUND {
                return Ok(());
            }
            last = s;
        }
        let service = self
            .service_token(None)
            .await
            .map_err(|e| TrustError::Unavailable(e.to_string()))?;
        let (s, body) = self
            .call(reqwest::Method::DELETE, &path, &service, None)
            .await?;
        if s.is_success() || s == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(TrustError::Refused(format!(
            "deleting trust {trust_id}: {last} with the trustor's token, {s} with the service \
             user's: {}",
            message(&body)
        )))
    }
}
