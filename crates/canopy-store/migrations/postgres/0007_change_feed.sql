-- The change feed between server replicas, PostgreSQL flavour. Append-only.
-- Kept table-for-table identical to migrations/sqlite/0007_change_feed.sql.
--
-- fleet_changes: one row per entity a fleet write touched, written in the write's own
-- transaction, keyed by the fleet revision it committed at (several rows may share one).
-- Revisions are taken under the fleet_revision row lock, held until commit, so they commit
-- in order: a replica that has applied revision R reads `revision > R` and misses nothing.
-- Rows name what changed (kind, project, entity id), never a body or a secret: a replica
-- re-reads the entity from its table. Pruned by age; a replica further behind than the
-- oldest row kept reloads the whole fleet.
--
-- live_changes: the same for what must not bump generations (a stored status report or
-- "last seen" of an edge, a revocation of API tokens), under its own counter live_revision.

CREATE TABLE fleet_changes (
    revision    BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    project_id  TEXT COLLATE "C" NOT NULL,
    entity_id   TEXT COLLATE "C" NOT NULL,
    origin      TEXT COLLATE "C" NOT NULL,
    commit_time TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (revision, seq)
);
CREATE INDEX fleet_changes_time ON fleet_changes (commit_time);

CREATE TABLE live_revision (
    id       INTEGER NOT NULL PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO live_revision (id, revision) VALUES (1, 0);

CREATE TABLE live_changes (
    revision    BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    entity_id   TEXT COLLATE "C" NOT NULL,
    origin      TEXT COLLATE "C" NOT NULL,
    commit_time TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (revision, seq)
);
CREATE INDEX live_changes_time ON live_changes (commit_time);
