-- Retention: how long each tenant keeps the payloads of finished runs, per workflow and action,
-- and which runs retention has already processed (`corral.observe.retention`).

-- One rule per tenant, workflow and action. `workflow` '*' is the tenant's rule for every
-- workflow without a rule of its own for that action.
CREATE TABLE retention_rules (
    tenant       TEXT NOT NULL,
    workflow     TEXT NOT NULL,
    action       TEXT NOT NULL,
    days         INTEGER NOT NULL,
    updated_at   DOUBLE PRECISION NOT NULL,
    updated_by   TEXT NOT NULL,
    -- Every run of the rule that finished before this has been processed: the next apply
    -- starts here instead of rescanning the tenant's whole history (NULL: from the start).
    done_before  DOUBLE PRECISION,
    PRIMARY KEY (tenant, workflow, action),
    CHECK (action IN ('expire', 'redact')),
    CHECK (days >= 0)
);

-- Runs retention has processed, with the strongest action applied (an expired run is never
-- redacted again; a redacted one may still expire later).
CREATE TABLE retention_applied (
    run_id      TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    action      TEXT NOT NULL,
    applied_at  DOUBLE PRECISION NOT NULL,
    CHECK (action IN ('expire', 'redact'))
);

-- A tenant's finished runs in the order they finished: what an apply walks.
CREATE INDEX runs_finished_by_tenant ON runs (tenant, updated_at, run_id)
    WHERE status IN ('cancelled', 'failed', 'succeeded');
