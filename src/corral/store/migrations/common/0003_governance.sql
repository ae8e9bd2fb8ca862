-- Governance: versioned policies, approvals, budgets, pauses (kill switches), human principals,
-- and the hash-chained audit log. The store owns these tables; `corral.governance` owns the
-- statements that use them (transaction scripts, `corral.store.scripts`).

CREATE TABLE policies (
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    -- The YAML document exactly as applied, and its sha256: an unchanged apply adds no version.
    document      TEXT NOT NULL,
    digest        TEXT NOT NULL,
    created_at    DOUBLE PRECISION NOT NULL,
    created_by    TEXT NOT NULL,
    -- A rollback is a new version with an old document; this says which.
    restored_from INTEGER,
    PRIMARY KEY (tenant, name, version)
);

CREATE TABLE approvals (
    approval_id      TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    run_id           TEXT NOT NULL,
    -- The journal step that asked: one approval per step, however often the step is retried.
    step_seq         INTEGER NOT NULL,
    agent            TEXT,
    tool             TEXT NOT NULL,
    -- The exact call: JSON arguments, their canonical hash, and the tool's JSON schema (so an
    -- approver's edited arguments can be validated without the tool's code).
    arguments        TEXT NOT NULL,
    arguments_hash   TEXT NOT NULL,
    parameters       TEXT NOT NULL,
    reason           TEXT NOT NULL,
    policy           TEXT,
    policy_version   INTEGER,
    rule             TEXT,
    approvers        TEXT NOT NULL,
    deadline         DOUBLE PRECISION,
    on_deadline      TEXT NOT NULL,
    escalate_to      TEXT,
    escalations      INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL,
    decided_by       TEXT,
    decided_at       DOUBLE PRECISION,
    decision_reason  TEXT,
    edited_arguments TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    -- Seconds the escalated approvers get (NULL: as long as the first deadline gave).
    escalation_deadline DOUBLE PRECISION,
    CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    CHECK (on_deadline IN ('reject', 'approve', 'escalate'))
);

CREATE UNIQUE INDEX approvals_by_step ON approvals (run_id, step_seq);
CREATE INDEX approvals_by_status ON approvals (tenant, status, created_at);

-- Budget counters: used and reserved amounts per scope (`run:<id>`, `agent:<name>`, `tenant`),
-- period (`run`, or a UTC day `2026-11-21`) and metric (`tokens`, `usd`, `tool_calls`).
CREATE TABLE budget_counters (
    tenant    TEXT NOT NULL,
    scope     TEXT NOT NULL,
    period    TEXT NOT NULL,
    metric    TEXT NOT NULL,
    used      DOUBLE PRECISION NOT NULL DEFAULT 0,
    reserved  DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, scope, period, metric)
);

-- One reservation per step (its idempotency key): a resumed run never counts a call twice.
CREATE TABLE budget_reservations (
    reservation_id  TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    -- JSON: [[scope, period, metric, amount], ...] as reserved.
    counters        TEXT NOT NULL,
    status          TEXT NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    settled_at      DOUBLE PRECISION,
    CHECK (status IN ('reserved', 'settled', 'released'))
);

-- Kill switches: while a row exists, no tool call of that agent (or of the tenant) starts.
CREATE TABLE pauses (
    tenant     TEXT NOT NULL,
    target     TEXT NOT NULL,
    paused_at  DOUBLE PRECISION NOT NULL,
    paused_by  TEXT NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (tenant, target)
);

-- Humans (and services) with roles in a tenant: viewer, operator, approver, admin; and the
-- approver groups they belong to.
CREATE TABLE principals (
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    roles       TEXT NOT NULL,
    groups      TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, name),
    CHECK (kind IN ('human', 'service'))
);

-- The audit log: append-only, one hash chain per tenant. An entry holds the decision (who,
-- what, which policy and rule, why), never the payload: `payload_ref` says where the payload is
-- (a journal step), so payloads can be redacted or expired without breaking the chain.
CREATE TABLE audit_log (
    tenant       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    at           DOUBLE PRECISION NOT NULL,
    kind         TEXT NOT NULL,
    actor        TEXT NOT NULL,
    subject      TEXT NOT NULL,
    decision     TEXT NOT NULL,
    payload_ref  TEXT,
    -- One entry per decision, however often the step that made it is retried.
    dedupe_key   TEXT,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL,
    PRIMARY KEY (tenant, seq)
);

CREATE UNIQUE INDEX audit_log_dedupe ON audit_log (tenant, dedupe_key);

-- The head of each tenant's chain: appends lock this row, so concurrent writers (many worker
-- processes on PostgreSQL) extend the chain one at a time.
CREATE TABLE audit_heads (
    tenant  TEXT PRIMARY KEY,
    seq     INTEGER NOT NULL,
    hash    TEXT NOT NULL
);

-- Signed checkpoints (Ed25519) of a chain's head, for export and for `corral audit verify`.
CREATE TABLE audit_checkpoints (
    tenant     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    hash       TEXT NOT NULL,
    at         DOUBLE PRECISION NOT NULL,
    key_id     TEXT NOT NULL,
    signature  TEXT NOT NULL,
    PRIMARY KEY (tenant, seq, key_id)
);
