-- Events out (`corral.control.events`, `corral.control.webhooks`): webhook subscriptions, the
-- outbox of their deliveries, every attempt to deliver one, and how far the event scanner got.
-- Events themselves are not stored: they are read from the tables that record them (approvals,
-- runs, the audit log, breaker transitions), which the indexes at the end make cheap to scan
-- by time.

-- A tenant's subscription: where to POST which event types, signed with `secret`. The secret
-- is kept (it signs every delivery) and shown to its maker once.
CREATE TABLE webhooks (
    webhook_id   TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    url          TEXT NOT NULL,
    secret       TEXT NOT NULL,
    -- JSON: the event types subscribed to, e.g. ["approval.requested", "run.failed"].
    event_types  TEXT NOT NULL,
    description  TEXT NOT NULL,
    active       INTEGER NOT NULL DEFAULT 1,
    created_at   DOUBLE PRECISION NOT NULL,
    created_by   TEXT NOT NULL
);

CREATE INDEX webhooks_by_tenant ON webhooks (tenant, created_at);

-- The outbox: one row per (subscription, event). Its id is derived from both, so enqueueing the
-- same event again (scans overlap on purpose) inserts nothing. `body` is the JSON sent on every
-- attempt. A dispatcher claims a row by setting `claimed_by` until `claimed_until`; a claim
-- that lapses (its server died mid-send) is taken again: at-least-once delivery.
CREATE TABLE webhook_deliveries (
    delivery_id      TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL,
    tenant           TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    body             TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       DOUBLE PRECISION NOT NULL,
    next_attempt_at  DOUBLE PRECISION,
    claimed_by       TEXT,
    claimed_until    DOUBLE PRECISION,
    last_status      INTEGER,
    last_error       TEXT,
    finished_at      DOUBLE PRECISION,
    CHECK (status IN ('pending', 'delivered', 'dead'))
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at);

-- Every attempt, as it went: the HTTP status, or the network error, and when.
CREATE TABLE webhook_attempts (
    delivery_id      TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    at               DOUBLE PRECISION NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    -- When the next attempt is due (NULL: this was the last one).
    next_attempt_at  DOUBLE PRECISION,
    PRIMARY KEY (delivery_id, attempt)
);

-- How far each scanner has read the event sources. Scans start a lookback window before this
-- (transactions commit out of order), so it is a lower bound, never a strict cursor.
CREATE TABLE event_scans (
    scanner     TEXT PRIMARY KEY,
    scanned_to  DOUBLE PRECISION NOT NULL
);

-- Reading events by time from where they are recorded.
CREATE INDEX runs_by_updated ON runs (updated_at);
CREATE INDEX approvals_by_created ON approvals (created_at);
CREATE INDEX approvals_pending_deadline ON approvals (deadline) WHERE status = 'pending';
CREATE INDEX audit_log_by_kind ON audit_log (kind, at);
CREATE INDEX breaker_transitions_by_at ON breaker_transitions (at);
