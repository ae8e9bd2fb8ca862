-- Cost attribution (`corral costs`, `corral.observe.costs`): who started each run, the root of
-- each run's tree of child runs, and each model call's model and tokens decoded from the journal.
-- SQLite and PostgreSQL each have their own copy of this file: generated columns and JSON
-- differ between them (SQLite can only add VIRTUAL ones; PostgreSQL 15 only STORED ones).

-- The principal who started a run (`corral --as ada run …`); a child run carries its parent's.
-- NULL: not recorded (runs started before this migration, or without a principal).
ALTER TABLE runs ADD COLUMN started_by TEXT;

-- The top of the run's tree of child runs (the run itself for a run that has no parent), set when
-- the run is created: costs of delegated agents count under the run that was started.
ALTER TABLE runs ADD COLUMN root_run_id TEXT;

WITH RECURSIVE tree (run_id, root_run_id) AS (
    SELECT run_id, run_id FROM runs WHERE parent_run_id IS NULL
    UNION ALL
    SELECT runs.run_id, tree.root_run_id FROM runs JOIN tree ON runs.parent_run_id = tree.run_id
)
UPDATE runs SET root_run_id = tree.root_run_id FROM tree WHERE tree.run_id = runs.run_id;

-- A model call (a succeeded `model:<agent>` step) as cost reports read it: the model that
-- answered and the tokens it reported, decoded from the step's result (NULL for other steps).
-- They are an index of the journal, not a copy: they change with the result they are read from.
-- Stored (PostgreSQL 15 has no virtual generated columns), so they are written with the step.
ALTER TABLE steps
    ADD COLUMN call_model TEXT GENERATED ALWAYS AS (
        CASE WHEN kind = 'step' AND substr(name, 1, 6) = 'model:' AND status = 'succeeded'
        THEN result::jsonb ->> 'model' END
    ) STORED,
    ADD COLUMN call_input_tokens BIGINT GENERATED ALWAYS AS (
        CASE WHEN kind = 'step' AND substr(name, 1, 6) = 'model:' AND status = 'succeeded'
        THEN (result::jsonb -> 'usage' ->> 'input_tokens')::bigint END
    ) STORED,
    ADD COLUMN call_output_tokens BIGINT GENERATED ALWAYS AS (
        CASE WHEN kind = 'step' AND substr(name, 1, 6) = 'model:' AND status = 'succeeded'
        THEN (result::jsonb -> 'usage' ->> 'output_tokens')::bigint END
    ) STORED;

-- Covers the cost report (an index-only scan): it reads model calls in a time window without
-- decoding a JSON result.
CREATE INDEX steps_model_calls ON steps (finished_at)
    INCLUDE (call_model, call_input_tokens, call_output_tokens, name, run_id)
    WHERE call_model IS NOT NULL;
