-- Cost reports from a daily roll-up (`corral.observe.cost_days`): a report over a million
-- journaled steps reads a few thousand pre-summed rows instead of every model call. The roll-up
-- is derived from the journal and can always be rebuilt from it; the journal stays the truth.
-- SQLite and PostgreSQL each have their own copy of this file: they round a day differently.

-- The model calls that finished on one UTC day (`day`: days since 1970-01-01), summed per
-- tenant, root workflow, starting principal, agent (its `model:<agent>` step name), model and
-- price band. `*_runs` count the runs whose first call of that agent, of that model, or of their
-- whole tree of runs is in the row, so that a report can count runs by adding rows.
CREATE TABLE cost_days (
    day            BIGINT NOT NULL,
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

CREATE INDEX cost_days_by_day ON cost_days (day, tenant);

-- Days whose roll-up is out of date: a model call finished on them since they were summed (the
-- search indexer notes it when it reads the journal's change notes). `marks` counts the notes,
-- so a roll-up that read a day before a new note arrived leaves the day marked.
CREATE TABLE cost_days_stale (
    day    BIGINT PRIMARY KEY,
    marks  BIGINT NOT NULL
);

INSERT INTO cost_days_stale (day, marks)
SELECT DISTINCT floor(finished_at / 86400)::bigint, 1 FROM steps WHERE call_model IS NOT NULL;

-- Finds a tree's runs: whether a tree made a call before a given moment.
CREATE INDEX runs_by_root ON runs (root_run_id);
