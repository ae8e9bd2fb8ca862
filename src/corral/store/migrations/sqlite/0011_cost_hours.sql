-- The cost roll-up (`corral.observe.cost_days`) by hour, and by day for each dimension a report
-- groups by, so that a report reads from the journal only the current hour and the parts of
-- hours its window cuts, and reads a day as a few rows per key, not one per combination of keys.
-- Out-of-date marks move from days to hours. Replaces migration 0008's tables.
-- SQLite and PostgreSQL each have their own copy of this file: they round an hour differently.

-- The model calls that finished in one UTC hour (`hour`: hours since 1970-01-01), summed per
-- tenant, root workflow, starting principal, agent (its `model:<agent>` step name), model and
-- price band. `*_runs` count the runs whose first call of that agent, of that model, or of their
-- whole tree of runs is in the row, so that a report can count runs by adding rows.
CREATE TABLE cost_hours (
    hour           INTEGER NOT NULL,
    tenant         TEXT NOT NULL,
    workflow       TEXT NOT NULL,
    started_by     TEXT,
    agent          TEXT NOT NULL,
    model          TEXT NOT NULL,
    band           INTEGER NOT NULL,
    calls          BIGINT NOT NULL,
    input_tokens   BIGINT,
    output_tokens  BIGINT,
    first_at       DOUBLE PRECISION NOT NULL,
    last_at        DOUBLE PRECISION NOT NULL,
    agent_runs     BIGINT NOT NULL,
    model_runs     BIGINT NOT NULL,
    tree_runs      BIGINT NOT NULL
);

CREATE INDEX cost_hours_by_hour ON cost_hours (hour, tenant);

-- One UTC day's calls (`day`: days since 1970-01-01) summed for one dimension of a report
-- (`agent`, `workflow`, `tenant`, `user`, `model`) per tenant, key, model and price band, from
-- the day's hour rows; `runs` counts the runs whose first call under the key is in the row.
CREATE TABLE cost_day_keys (
    dimension      TEXT NOT NULL,
    day            INTEGER NOT NULL,
    tenant         TEXT NOT NULL,
    k              TEXT,
    model          TEXT NOT NULL,
    band           INTEGER NOT NULL,
    calls          BIGINT NOT NULL,
    input_tokens   BIGINT,
    output_tokens  BIGINT,
    first_at       DOUBLE PRECISION NOT NULL,
    last_at        DOUBLE PRECISION NOT NULL,
    runs           BIGINT NOT NULL
);

CREATE INDEX cost_day_keys_by_day ON cost_day_keys (dimension, day, tenant);

-- Hours whose roll-up is out of date: a model call finished in them since they were summed.
-- `marks` counts the change notes, so a roll-up that read an hour before a new note arrived
-- leaves the hour marked.
CREATE TABLE cost_stale_hours (
    hour   INTEGER PRIMARY KEY,
    marks  BIGINT NOT NULL
);

-- Every hour with a call is summed again, and its day with it.
INSERT INTO cost_stale_hours (hour, marks)
SELECT DISTINCT CAST(finished_at / 3600 AS INTEGER), 1 FROM steps WHERE call_model IS NOT NULL;

DROP TABLE cost_days;

DROP TABLE cost_days_stale;
