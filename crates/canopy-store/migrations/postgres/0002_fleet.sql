-- Canopy fleet (edges, enrollment tokens, deployments), PostgreSQL flavour. Append-only.
-- Kept table-for-table identical to migrations/sqlite/0002_fleet.sql.
--
-- The server keeps the fleet in memory while it runs (the hub); these tables are what it is
-- rebuilt from at start. Secrets are stored as SHA-256 hex of the secret, never the secret.

CREATE TABLE enrollment_tokens (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id  TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    secret_hash TEXT COLLATE "C" NOT NULL UNIQUE,
    description TEXT COLLATE "C" NOT NULL DEFAULT '',
    create_time TEXT COLLATE "C" NOT NULL,
    expire_time TEXT COLLATE "C" NOT NULL,
    revoke_time TEXT COLLATE "C",
    max_uses    BIGINT NOT NULL DEFAULT 0,
    uses        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX enrollment_tokens_project ON enrollment_tokens (project_id, create_time);

CREATE TABLE edges (
    id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id      TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name            TEXT COLLATE "C" NOT NULL,
    labels          TEXT COLLATE "C" NOT NULL,
    credential_hash TEXT COLLATE "C" NOT NULL UNIQUE,
    token_id        TEXT COLLATE "C" NOT NULL DEFAULT '',
    create_time     TEXT COLLATE "C" NOT NULL,
    agent           TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    last_seen       TEXT COLLATE "C",
    last_status     TEXT COLLATE "C",
    UNIQUE (project_id, name)
);

CREATE TABLE deployments (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id  TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name        TEXT COLLATE "C" NOT NULL,
    body        TEXT COLLATE "C" NOT NULL,
    create_time TEXT COLLATE "C" NOT NULL,
    update_time TEXT COLLATE "C" NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE fleet_revision (
    id       INTEGER NOT NULL PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO fleet_revision (id, revision) VALUES (1, 0);
