-- Reliability: the circuit breakers of each worker process, and their transitions. A breaker
-- lives in a worker's memory (`corral.reliability`); these rows are what it publishes, so that
-- `corral breakers` can show every worker's view of every dependency. A worker that stops
-- publishing leaves a stale row (its `updated_at` stops moving), which readers may hide.

CREATE TABLE breakers (
    worker        TEXT NOT NULL,
    dependency    TEXT NOT NULL,
    state         TEXT NOT NULL,
    -- When the breaker entered `state`.
    since         DOUBLE PRECISION NOT NULL,
    -- Outcomes in the breaker's window (closed), or of its probes (half_open), or the ones that
    -- opened it (open).
    calls         INTEGER NOT NULL,
    failures      INTEGER NOT NULL,
    opened_count  INTEGER NOT NULL,
    updated_at    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (worker, dependency),
    CHECK (state IN ('closed', 'open', 'half_open'))
);

-- Append-only: one row per state change of a breaker, with why it changed.
CREATE TABLE breaker_transitions (
    transition_id  {{serial_primary_key}},
    worker         TEXT NOT NULL,
    dependency     TEXT NOT NULL,
    from_state     TEXT NOT NULL,
    to_state       TEXT NOT NULL,
    at             DOUBLE PRECISION NOT NULL,
    calls          INTEGER NOT NULL,
    failures       INTEGER NOT NULL,
    reason         TEXT NOT NULL
);

CREATE INDEX breaker_transitions_by_dependency ON breaker_transitions (dependency, at);
