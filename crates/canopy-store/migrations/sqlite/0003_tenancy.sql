-- Canopy tenancy and security (organizations, project owners, built-in users, API tokens, audit
-- log), SQLite flavour. Append-only.
-- Kept table-for-table identical to migrations/postgres/0003_tenancy.sql.
--
-- Passwords are argon2id PHC strings and tokens SHA-256 hex of the token: neither is ever
-- stored in a form that can be presented back to the server.

CREATE TABLE orgs (
    id          TEXT NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    create_time TEXT NOT NULL
);

ALTER TABLE projects ADD COLUMN org_id TEXT REFERENCES orgs (id);
ALTER TABLE projects ADD COLUMN description TEXT NOT NULL DEFAULT '';

CREATE TABLE users (
    id            TEXT NOT NULL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    roles         TEXT NOT NULL DEFAULT '[]',
    create_time   TEXT NOT NULL,
    update_time   TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id          TEXT NOT NULL PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    create_time TEXT NOT NULL,
    expire_time TEXT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, create_time);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    project     TEXT NOT NULL DEFAULT '',
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    result      TEXT NOT NULL,
    status      BIGINT NOT NULL,
    request_id  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_project_at ON audit_log (project, at);
