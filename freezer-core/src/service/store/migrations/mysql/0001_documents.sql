-- The document store: one row per document of any kind (jobs, actions, sessions, clients,
-- backups). `seq` orders documents by creation; (kind, id) is the key every API call uses.
-- InnoDB with a primary key, no triggers and no table locks: fit for a Galera cluster.
-- Idempotent (IF NOT EXISTS), so a migration interrupted between its statements and its
-- record in freezer_schema_migrations is safely run again.
CREATE TABLE IF NOT EXISTS freezer_documents (
  kind VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  project_id VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  version BIGINT NOT NULL,
  body LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  created_at DATETIME(6) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (kind, id),
  UNIQUE KEY freezer_documents_seq (seq),
  KEY freezer_documents_kind_seq (kind, seq),
  KEY freezer_documents_project (kind, project_id, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin ROW_FORMAT=DYNAMIC;
