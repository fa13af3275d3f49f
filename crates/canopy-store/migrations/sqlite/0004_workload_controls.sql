-- Operator actions on workloads (VM power state, restarts), SQLite flavour. Append-only.
-- Kept table-for-table identical to migrations/postgres/0004_workload_controls.sql.
--
-- One row per workload an operator acted on through the resource-manager API; a workload
-- without a row runs and was never restarted. Rows go with their edge, deployment or project.

CREATE TABLE workload_controls (
    project_id    TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    edge_id       TEXT NOT NULL REFERENCES edges (id) ON DELETE CASCADE,
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    app           TEXT NOT NULL,
    kind          TEXT NOT NULL,
    workload      TEXT NOT NULL,
    running       BIGINT NOT NULL DEFAULT 1,
    restarts      BIGINT NOT NULL DEFAULT 0,
    update_time   TEXT NOT NULL,
    PRIMARY KEY (edge_id, deployment_id, app, kind, workload)
);

CREATE INDEX workload_controls_deployment ON workload_controls (deployment_id);
