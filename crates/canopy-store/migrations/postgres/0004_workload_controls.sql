-- Operator actions on workloads (VM power state, restarts), PostgreSQL flavour. Append-only.
-- Kept table-for-table identical to migrations/sqlite/0004_workload_controls.sql.
--
-- One row per workload an operator acted on through the resource-manager API; a workload
-- without a row runs and was never restarted. Rows go with their edge, deployment or project.

CREATE TABLE workload_controls (
    project_id    TEXT COLLATE "C" NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    edge_id       TEXT COLLATE "C" NOT NULL REFERENCES edges (id) ON DELETE CASCADE,
    deployment_id TEXT COLLATE "C" NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    app           TEXT COLLATE "C" NOT NULL,
    kind          TEXT COLLATE "C" NOT NULL,
    workload      TEXT COLLATE "C" NOT NULL,
    running       BIGINT NOT NULL DEFAULT 1,
    restarts      BIGINT NOT NULL DEFAULT 0,
    update_time   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (edge_id, deployment_id, app, kind, workload)
);

CREATE INDEX workload_controls_deployment ON workload_controls (deployment_id);
