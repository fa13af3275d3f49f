-- Canopy tenancy and security (organizations, project owners, built-in users, API tokens, audit
-- log), PostgreSQL flavour. Append-only.
-- Kept table-for-table identical to migrations/sqlite/0003_tenancy.sql.
--
-- Passwords are argon2id PHC strings and tokens SHA-256 hex of the token: neither is ever
-- stored in a form that can be presented back to the server.

CREATE TABLE orgs (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    description TEXT COLLATE "C" NOT NULL DEFAULT '',
    create_time TEXT COLLATE "C" NOT NULL
);

ALTER TABLE projects ADD COLUMN org_id TEXT COLLATE "C" REFERENCES orgs (id);
ALTER TABLE projects ADD COLUMN description TEXT COLLATE "C" NOT NULL DEFAULT '';

CREATE TABLE users (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name          TEXT COLLATE "C" NOT NULL UNIQUE,
    password_hash TEXT COLLATE "C",
    roles         TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    create_time   TEXT COLLATE "C" NOT NULL,
    update_time   TEXT COLLATE "C" NOT NULL
);

CREATE TABLE api_tokens (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    token_hash  TEXT COLLATE "C" NOT NULL UNIQUE,
    user_id     TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT COLLATE "C" NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    create_time TEXT COLLATE "C" NOT NULL,
    expire_time TEXT COLLATE "C"
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, create_time);

CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    at          TEXT COLLATE "C" NOT NULL,
    actor       TEXT COLLATE "C" NOT NULL,
    project     TEXT COLLATE "C" NOT NULL DEFAULT '',
    action      TEXT COLLATE "C" NOT NULL,
    target      TEXT COLLATE "C" NOT NULL,
    result      TEXT COLLATE "C" NOT NULL,
    status      BIGINT NOT NULL,
    request_id  TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_project_at ON audit_log (project, at);
