-- Canopy catalog, PostgreSQL flavour. Append-only: never edit a released migration; add a new file.
-- Kept table-for-table identical to migrations/sqlite/0001_catalog.sql.
-- Text columns use the "C" collation so ordering and LOWER() behave exactly as on SQLite
-- (byte order, ASCII-only case folding) whatever the server's locale.
--
-- Every catalog row is scoped by project_id, which leads every primary key. `body` is the
-- entity's JSON (the canopy-core struct); the other columns are copies used to filter, order
-- and check references. `*_lc` columns are lowercased in Rust (Unicode-aware, identical on both
-- backends). Timestamps are fixed-width UTC RFC 3339 text with microseconds, so they sort and
-- substring-filter as text.

CREATE TABLE projects (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    create_time TEXT COLLATE "C" NOT NULL
);

CREATE TABLE registries (
    project_id      TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name            TEXT COLLATE "C" NOT NULL,
    display_name    TEXT COLLATE "C" NOT NULL DEFAULT '',
    display_name_lc TEXT COLLATE "C" NOT NULL DEFAULT '',
    description     TEXT COLLATE "C" NOT NULL DEFAULT '',
    description_lc  TEXT COLLATE "C" NOT NULL DEFAULT '',
    type            TEXT COLLATE "C" NOT NULL DEFAULT '',
    body            TEXT COLLATE "C" NOT NULL,
    create_time     TEXT COLLATE "C" NOT NULL,
    update_time     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (project_id, name)
);
CREATE INDEX registries_display_name ON registries (project_id, display_name_lc);

CREATE TABLE applications (
    project_id      TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name            TEXT COLLATE "C" NOT NULL,
    version         TEXT COLLATE "C" NOT NULL,
    display_name    TEXT COLLATE "C" NOT NULL DEFAULT '',
    display_name_lc TEXT COLLATE "C" NOT NULL DEFAULT '',
    description     TEXT COLLATE "C" NOT NULL DEFAULT '',
    description_lc  TEXT COLLATE "C" NOT NULL DEFAULT '',
    kind            TEXT COLLATE "C" DEFAULT 'normal',
    chart_name      TEXT COLLATE "C" NOT NULL DEFAULT '',
    chart_version   TEXT COLLATE "C" NOT NULL DEFAULT '',
    helm_registry   TEXT COLLATE "C" NOT NULL DEFAULT '',
    image_registry  TEXT COLLATE "C" NOT NULL DEFAULT '',
    default_profile TEXT COLLATE "C" NOT NULL DEFAULT '',
    body            TEXT COLLATE "C" NOT NULL,
    create_time     TEXT COLLATE "C" NOT NULL,
    update_time     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (project_id, name, version)
);
CREATE INDEX applications_display_name ON applications (project_id, display_name_lc);
CREATE INDEX applications_create_time ON applications (project_id, create_time);
CREATE INDEX applications_update_time ON applications (project_id, update_time);
CREATE INDEX applications_helm_registry ON applications (project_id, helm_registry);
CREATE INDEX applications_image_registry ON applications (project_id, image_registry);

CREATE TABLE deployment_packages (
    project_id      TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name            TEXT COLLATE "C" NOT NULL,
    version         TEXT COLLATE "C" NOT NULL,
    display_name    TEXT COLLATE "C" NOT NULL DEFAULT '',
    display_name_lc TEXT COLLATE "C" NOT NULL DEFAULT '',
    description     TEXT COLLATE "C" NOT NULL DEFAULT '',
    description_lc  TEXT COLLATE "C" NOT NULL DEFAULT '',
    kind            TEXT COLLATE "C" DEFAULT 'normal',
    is_deployed     BOOLEAN NOT NULL DEFAULT FALSE,
    body            TEXT COLLATE "C" NOT NULL,
    create_time     TEXT COLLATE "C" NOT NULL,
    update_time     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (project_id, name, version)
);
CREATE INDEX deployment_packages_display_name ON deployment_packages (project_id, display_name_lc);
CREATE INDEX deployment_packages_create_time ON deployment_packages (project_id, create_time);
CREATE INDEX deployment_packages_update_time ON deployment_packages (project_id, update_time);

-- package -> application references (applicationReferences), maintained by put/delete package.
CREATE TABLE package_app_refs (
    project_id  TEXT COLLATE "C" NOT NULL,
    pkg_name    TEXT COLLATE "C" NOT NULL,
    pkg_version TEXT COLLATE "C" NOT NULL,
    app_name    TEXT COLLATE "C" NOT NULL,
    app_version TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (project_id, pkg_name, pkg_version, app_name, app_version),
    FOREIGN KEY (project_id, pkg_name, pkg_version)
        REFERENCES deployment_packages (project_id, name, version) ON DELETE CASCADE
);
CREATE INDEX package_app_refs_app ON package_app_refs (project_id, app_name, app_version);

-- package -> artifact references (artifacts[].name), maintained by put/delete package.
CREATE TABLE package_artifact_refs (
    project_id    TEXT COLLATE "C" NOT NULL,
    pkg_name      TEXT COLLATE "C" NOT NULL,
    pkg_version   TEXT COLLATE "C" NOT NULL,
    artifact_name TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (project_id, pkg_name, pkg_version, artifact_name),
    FOREIGN KEY (project_id, pkg_name, pkg_version)
        REFERENCES deployment_packages (project_id, name, version) ON DELETE CASCADE
);
CREATE INDEX package_artifact_refs_artifact ON package_artifact_refs (project_id, artifact_name);

CREATE TABLE artifacts (
    project_id      TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name            TEXT COLLATE "C" NOT NULL,
    display_name    TEXT COLLATE "C" NOT NULL DEFAULT '',
    display_name_lc TEXT COLLATE "C" NOT NULL DEFAULT '',
    description     TEXT COLLATE "C" NOT NULL DEFAULT '',
    description_lc  TEXT COLLATE "C" NOT NULL DEFAULT '',
    mime_type       TEXT COLLATE "C" NOT NULL DEFAULT '',
    body            TEXT COLLATE "C" NOT NULL,
    create_time     TEXT COLLATE "C" NOT NULL,
    update_time     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (project_id, name)
);
CREATE INDEX artifacts_display_name ON artifacts (project_id, display_name_lc);

-- Multi-request uploads: files are held here until the last one arrives, then applied in one
-- catalog transaction and deleted.
CREATE TABLE upload_sessions (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    project_id  TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    create_time TEXT COLLATE "C" NOT NULL
);
CREATE INDEX upload_sessions_project ON upload_sessions (project_id);
CREATE INDEX upload_sessions_create_time ON upload_sessions (create_time);

CREATE TABLE upload_files (
    session_id TEXT COLLATE "C" NOT NULL REFERENCES upload_sessions (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    content    BYTEA NOT NULL,
    size       BIGINT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
