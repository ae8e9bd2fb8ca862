-- Full-text search over runs' journals (`corral.observe.search`, `corral runs search`).
-- SQLite and PostgreSQL each have their own copy of this file: SQLite indexes with FTS5,
-- PostgreSQL with tsvector and a GIN index.
--
-- The engine's writes stay cheap: triggers only note *which* run or step changed (one small
-- row); a catch-up indexer (`corral.observe.search.catch_up`) reads the notes, decodes the
-- payloads and indexes them later, off the hot path. Triggers, not a rowid cursor, because
-- payloads change after they are first written: a step's intent gets its outcome, a finished
-- run gets its result, redaction and retention rewrite payloads in place, and the index must
-- follow every one of those (a redacted payload must stop being findable).

-- Runs and steps whose payloads changed since the indexer last looked (seq NULL: the run's own
-- input, result or error). The indexer deletes the notes it has indexed.
CREATE TABLE search_changes (
    change_id  INTEGER PRIMARY KEY,
    run_id     TEXT NOT NULL,
    seq        INTEGER
);

CREATE TRIGGER search_run_inserted AFTER INSERT ON runs
BEGIN INSERT INTO search_changes (run_id, seq) VALUES (new.run_id, NULL); END;

-- A run's status counts when it settles (or is reopened): claims and waits change nothing here.
CREATE TRIGGER search_run_updated AFTER UPDATE OF input, result, error, status ON runs
WHEN new.input IS NOT old.input OR new.result IS NOT old.result OR new.error IS NOT old.error
    OR (new.status IS NOT old.status AND (new.status IN ('succeeded', 'failed', 'cancelled', 'needs_reconciliation')
        OR old.status IN ('succeeded', 'failed', 'cancelled', 'needs_reconciliation')))
BEGIN INSERT INTO search_changes (run_id, seq) VALUES (new.run_id, NULL); END;

CREATE TRIGGER search_step_inserted AFTER INSERT ON steps
BEGIN INSERT INTO search_changes (run_id, seq) VALUES (new.run_id, new.seq); END;

CREATE TRIGGER search_step_updated AFTER UPDATE OF detail, result, error ON steps
WHEN new.detail IS NOT old.detail OR new.result IS NOT old.result OR new.error IS NOT old.error
BEGIN INSERT INTO search_changes (run_id, seq) VALUES (new.run_id, new.seq); END;

CREATE TRIGGER search_step_deleted AFTER DELETE ON steps
BEGIN INSERT INTO search_changes (run_id, seq) VALUES (old.run_id, old.seq); END;

-- What was journaled before this migration is indexed too, oldest runs first, by the first
-- catch-up after it (`corral runs index` runs one).
INSERT INTO search_changes (run_id, seq)
SELECT run_id, seq FROM (
    SELECT run_id, NULL AS seq, created_at FROM runs
    UNION ALL
    SELECT steps.run_id, steps.seq, runs.created_at FROM steps JOIN runs ON runs.run_id = steps.run_id
) AS journaled ORDER BY created_at, run_id, seq NULLS FIRST;

-- The runs the index knows, numbered in the order it first saw them (about creation order).
-- A document's rowid is `run_key << 24 | slot`, so one run's documents are contiguous and the
-- newest runs' documents come first in a descending scan.
CREATE TABLE search_runs (
    run_key     INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL UNIQUE,
    tenant      TEXT NOT NULL,
    workflow    TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    -- Its status once settled (succeeded, failed, cancelled, needs_reconciliation); NULL before.
    status      TEXT
);

CREATE INDEX search_runs_created ON search_runs (created_at, run_key);
CREATE INDEX search_runs_status ON search_runs (tenant, status, run_key);

-- What a run did, for the --agent and --tool filters: `agent:<name>` (its workflow, or a
-- `model:<name>` step) and `tool:<name>` (a `tool:<name>` step).
CREATE TABLE search_run_tags (
    tag      TEXT NOT NULL,
    run_key  INTEGER NOT NULL,
    PRIMARY KEY (tag, run_key)
) WITHOUT ROWID;

-- One document per run input (slot 0), run outcome (slot 1) and step (slot seq + 2). `tags`
-- holds the tenant's token, matched only through its own column, so that a tenant filter is
-- part of the full-text match itself.
CREATE VIRTUAL TABLE search_text USING fts5(
    input, output, arguments, error, tags,
    tokenize = 'porter unicode61 remove_diacritics 2'
);

-- Merge segments two at a time (the indexer asks for some merging after each batch): a query
-- opens every segment, so fewer segments make searches faster.
INSERT INTO search_text (search_text, rank) VALUES ('usermerge', 2);
