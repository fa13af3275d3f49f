-- Upload quotas and upload session files in chunks, PostgreSQL flavour. Append-only.
-- Kept table-for-table identical to migrations/sqlite/0005_upload_quotas.sql.
--
-- An upload session now counts its files and bytes (the per-project and server-wide upload
-- quotas are sums over the open sessions) and remembers its last activity (idle sessions are
-- reaped). Its files are stored in chunks of at most 1 MiB (upload_chunks), so that no request
-- holds a whole file in memory to store it or to read it back. Sessions open when this
-- migration runs are discarded: a session lives minutes, and its client is told
-- "upload-session ... not found" and starts again.

DROP TABLE upload_files;
DROP TABLE upload_sessions;

CREATE TABLE upload_sessions (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id  TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    create_time TEXT COLLATE "C" NOT NULL,
    touch_time  TEXT COLLATE "C" NOT NULL,
    files       BIGINT NOT NULL DEFAULT 0,
    bytes       BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX upload_sessions_project ON upload_sessions (project_id);
CREATE INDEX upload_sessions_touch_time ON upload_sessions (touch_time);

CREATE TABLE upload_files (
    session_id TEXT COLLATE "C" NOT NULL REFERENCES upload_sessions (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    size       BIGINT NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE upload_chunks (
    session_id TEXT COLLATE "C" NOT NULL,
    file_seq   BIGINT NOT NULL,
    chunk      BIGINT NOT NULL,
    data       BYTEA NOT NULL,
    PRIMARY KEY (session_id, file_seq, chunk),
    FOREIGN KEY (session_id, file_seq) REFERENCES upload_files (session_id, seq) ON DELETE CASCADE
);

-- One row, locked by every transaction that adds to the upload quotas (PostgreSQL:
-- SELECT ... FOR UPDATE), so that uploads into two projects cannot both pass the server-wide
-- cap. SQLite has one writer at a time anyway; the table is kept identical.
CREATE TABLE upload_quota_lock (
    id BIGINT NOT NULL PRIMARY KEY
);
INSERT INTO upload_quota_lock (id) VALUES (1);
