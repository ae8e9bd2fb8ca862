-- Runs, their journals and their signals.

CREATE TABLE runs (
    run_id            TEXT PRIMARY KEY,
    tenant            TEXT NOT NULL,
    workflow          TEXT NOT NULL,
    workflow_version  TEXT NOT NULL,
    status            TEXT NOT NULL,
    input             TEXT NOT NULL,
    result            TEXT,
    error             TEXT,
    idempotency_key   TEXT,
    parent_run_id     TEXT REFERENCES runs (run_id),
    parent_step_seq   INTEGER,
    created_at        DOUBLE PRECISION NOT NULL,
    updated_at        DOUBLE PRECISION NOT NULL,
    -- When a waiting run becomes runnable; NULL waits for an event (signal, child) only.
    wake_at           DOUBLE PRECISION,
    -- Bumped by every event for the run, so a run parking itself sees events it raced with.
    wake_seq          INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    -- Bumped by every claim and by cancellation; every journal write must carry the current one.
    lease_epoch       INTEGER NOT NULL DEFAULT 0,
    lease_expires_at  DOUBLE PRECISION,
    claims            INTEGER NOT NULL DEFAULT 0,
    CHECK (status IN ('pending', 'running', 'waiting', 'succeeded', 'failed', 'cancelled',
                      'needs_reconciliation'))
);

CREATE UNIQUE INDEX runs_idempotency_key ON runs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_status_created ON runs (status, created_at);
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
-- The claim query's three kinds of runnable run.
CREATE INDEX runs_pending ON runs (created_at) WHERE status = 'pending';
CREATE INDEX runs_waiting_wake ON runs (wake_at) WHERE status = 'waiting';
CREATE INDEX runs_running_lease ON runs (lease_expires_at) WHERE status = 'running';

CREATE TABLE steps (
    run_id           TEXT NOT NULL REFERENCES runs (run_id),
    seq              INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    name             TEXT NOT NULL,
    status           TEXT NOT NULL,
    at_most_once     INTEGER NOT NULL DEFAULT 0,
    detail           TEXT,
    result           TEXT,
    error            TEXT,
    started_at       DOUBLE PRECISION NOT NULL,
    finished_at      DOUBLE PRECISION,
    PRIMARY KEY (run_id, seq),
    CHECK (status IN ('started', 'succeeded', 'failed'))
);

CREATE TABLE signals (
    signal_id     {{serial_primary_key}},
    run_id        TEXT NOT NULL REFERENCES runs (run_id),
    name          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_at    DOUBLE PRECISION NOT NULL,
    consumed_seq  INTEGER
);

CREATE INDEX signals_waiting ON signals (run_id, name, signal_id) WHERE consumed_seq IS NULL;
