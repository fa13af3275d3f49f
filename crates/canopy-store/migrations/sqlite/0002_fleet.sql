-- Canopy fleet (edges, enrollment tokens, deployments), SQLite flavour. Append-only.
-- Kept table-for-table identical to migrations/postgres/0002_fleet.sql.
--
-- The server keeps the fleet in memory while it runs (the hub); these tables are what it is
-- rebuilt from at start. Secrets are stored as SHA-256 hex of the secret, never the secret.

CREATE TABLE enrollment_tokens (
    id          TEXT NOT NULL PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    create_time TEXT NOT NULL,
    expire_time TEXT NOT NULL,
    revoke_time TEXT,
    max_uses    BIGINT NOT NULL DEFAULT 0,
    uses        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX enrollment_tokens_project ON enrollment_tokens (project_id, create_time);

CREATE TABLE edges (
    id              TEXT NOT NULL PRIMARY KEY,
    project_id      TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    labels          TEXT NOT NULL,
    credential_hash TEXT NOT NULL UNIQUE,
    token_id        TEXT NOT NULL DEFAULT '',
    create_time     TEXT NOT NULL,
    agent           TEXT NOT NULL DEFAULT '{}',
    last_seen       TEXT,
    last_status     TEXT,
    UNIQUE (project_id, name)
);

CREATE TABLE deployments (
    id          TEXT NOT NULL PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    body        TEXT NOT NULL,
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE fleet_revision (
    id       INTEGER NOT NULL PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO fleet_revision (id, revision) VALUES (1, 0);
