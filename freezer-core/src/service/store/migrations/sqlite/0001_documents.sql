-- The document store: one row per document of any kind (jobs, actions, sessions, clients,
-- backups). `seq` orders documents by creation (AUTOINCREMENT: never reused, so a document
-- created later always lists later); (kind, id) is the key every API call uses.
CREATE TABLE documents (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  project_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  body TEXT NOT NULL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  UNIQUE (kind, id)
);
CREATE INDEX documents_project ON documents (kind, project_id, seq);
