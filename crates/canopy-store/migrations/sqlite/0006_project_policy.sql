-- Project policies (what a project's deployments may run: canopy_core::policy), SQLite flavour.
-- Append-only. Kept table-for-table identical to migrations/postgres/0006_project_policy.sql.
--
-- One row per project whose policy was ever set; a project without a row has the default
-- policy. The body is the policy's JSON; it goes with its project.

CREATE TABLE project_policies (
    project_id  TEXT NOT NULL PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    body        TEXT NOT NULL,
    update_time TEXT NOT NULL
);
