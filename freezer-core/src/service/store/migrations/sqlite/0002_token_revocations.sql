-- Revoked tokens of the standalone identity (DELETE /identity/v3/auth/tokens), by audit id, so
-- that every API server on this database, and this one after a restart, refuses them. A table
-- of its own rather than a kind of document: revocations are never exposed by the API's
-- routes, are read by time (`revoked_at`, every few seconds by every server) rather than by
-- kind and project, and are pruned when their tokens expire.
-- `expires_at`: the latest expiry of a token carrying the audit id (seconds since the epoch);
-- `revoked_at`: when the revocation was written, by the database's clock (seconds).
CREATE TABLE token_revocations (
  audit_id TEXT PRIMARY KEY NOT NULL,
  expires_at INTEGER NOT NULL,
  revoked_at INTEGER NOT NULL
);
CREATE INDEX token_revocations_revoked_at ON token_revocations (revoked_at);
CREATE INDEX token_revocations_expires_at ON token_revocations (expires_at);
