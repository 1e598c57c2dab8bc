-- Revoked tokens of the standalone identity (DELETE /identity/v3/auth/tokens), by audit id, so
-- that every API server on this database, and each one after a restart, refuses them. A table
-- of its own rather than a kind of document: revocations are never exposed by the API's
-- routes, are read by time (`revoked_at`, every few seconds by every server) rather than by
-- kind and project, and are pruned when their tokens expire.
-- `expires_at`: the latest expiry of a token carrying the audit id (seconds since the epoch);
-- `revoked_at`: when the revocation was written, by the database server's clock (seconds), so
-- the servers reading it never compare their own clocks.
-- Idempotent (IF NOT EXISTS), as every migration here.
CREATE TABLE IF NOT EXISTS freezer_token_revocations (
  audit_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  expires_at BIGINT NOT NULL,
  revoked_at BIGINT NOT NULL,
  PRIMARY KEY (audit_id),
  KEY freezer_token_revocations_revoked_at (revoked_at),
  KEY freezer_token_revocations_expires_at (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;
