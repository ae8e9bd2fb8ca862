-- Full-text search over runs' journals (`corral.observe.search`, `corral runs search`).
-- SQLite and PostgreSQL each have their own copy of this file: SQLite indexes with FTS5,
-- PostgreSQL with tsvector and a GIN index.
--
-- The engine's writes stay cheap: triggers only note *which* run or step changed (one small
-- row); a catch-up indexer (`corral.observe.search.catch_up`) reads the notes, decodes the
-- payloads and indexes them later, off the hot path. Triggers, not an id cursor, because
-- payloads change after they are first written (a step's intent gets its outcome, a finished
-- run its result, redaction and retention rewrite payloads in place) and because concurrent
-- transactions commit ids out of order: a cursor would miss rows in both cases.

-- Runs and steps whose payloads changed since the indexer last looked (seq NULL: the run's own
-- input, result or error). The indexer deletes the notes it has indexed.
CREATE TABLE search_changes (
    change_id  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id     TEXT NOT NULL,
    seq        INTEGER
);

-- The trigger functions resolve `search_changes` through the writer's search_path (Corral's
-- schema), like every statement of the store.
CREATE FUNCTION search_note_run() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO search_changes (run_id, seq) VALUES (NEW.run_id, NULL); RETURN NULL; END $$;

CREATE FUNCTION search_note_step() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF TG_OP = 'DELETE' THEN INSERT INTO search_changes (run_id, seq) VALUES (OLD.run_id, OLD.seq); ELSE INSERT INTO search_changes (run_id, seq) VALUES (NEW.run_id, NEW.seq); END IF; RETURN NULL; END $$;

CREATE TRIGGER search_run_inserted AFTER INSERT ON runs
    FOR EACH ROW EXECUTE FUNCTION search_note_run();

-- A run's status counts when it settles (or is reopened): claims and waits change nothing here.
CREATE TRIGGER search_run_updated AFTER UPDATE OF input, result, error, status ON runs
    FOR EACH ROW WHEN (OLD.input IS DISTINCT FROM NEW.input
        OR OLD.result IS DISTINCT FROM NEW.result OR OLD.error IS DISTINCT FROM NEW.error
        OR (OLD.status IS DISTINCT FROM NEW.status AND (NEW.status IN ('succeeded', 'failed', 'cancelled', 'needs_reconciliation')
            OR OLD.status IN ('succeeded', 'failed', 'cancelled', 'needs_reconciliation'))))
    EXECUTE FUNCTION search_note_run();

CREATE TRIGGER search_step_inserted AFTER INSERT ON steps
    FOR EACH ROW EXECUTE FUNCTION search_note_step();

CREATE TRIGGER search_step_updated AFTER UPDATE OF detail, result, error ON steps
    FOR EACH ROW WHEN (OLD.detail IS DISTINCT FROM NEW.detail
        OR OLD.result IS DISTINCT FROM NEW.result OR OLD.error IS DISTINCT FROM NEW.error)
    EXECUTE FUNCTION search_note_step();

CREATE TRIGGER search_step_deleted AFTER DELETE ON steps
    FOR EACH ROW EXECUTE FUNCTION search_note_step();

-- What was journaled before this migration is indexed too, oldest runs first, by the first
-- catch-up after it (`corral runs index` runs one).
INSERT INTO search_changes (run_id, seq)
SELECT run_id, seq FROM (
    SELECT run_id, NULL AS seq, created_at FROM runs
    UNION ALL
    SELECT steps.run_id, steps.seq, runs.created_at FROM steps JOIN runs ON runs.run_id = steps.run_id
) AS journaled ORDER BY created_at, run_id, seq NULLS FIRST;

-- The runs the index knows, numbered in the order it first saw them (about creation order).
-- A document's key is `run_key << 24 | slot`, so one run's documents are contiguous and the
-- newest runs' documents come first in a descending scan.
CREATE TABLE search_runs (
    run_key     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    run_key  BIGINT NOT NULL,
    PRIMARY KEY (tag, run_key)
);

-- One document per run input (slot 0), run outcome (slot 1) and step (slot seq + 2). Weights
-- keep the fields apart (B input and tool arguments, C outputs, D errors); the lexeme
-- `~t:<digest>` stands for the tenant (no word of a payload can produce it: the parser splits on
-- `~` and `:`), so that a tenant filter is part of the full-text match itself.
CREATE TABLE search_docs (
    doc_key  BIGINT PRIMARY KEY,
    run_key  BIGINT NOT NULL,
    words    TSVECTOR NOT NULL
);

CREATE INDEX search_docs_words ON search_docs USING GIN (words);
