"""Full-text search across runs' journals: which runs mention "refund declined", and where.

What is searched, per run: its input, its result and error, and each step's payloads — a model
call's answer (content, and the tool calls it asked for), a tool call's arguments and value, any
other step's input and result, and every step's error. A hit names the run and the place that
matched best: the run itself or a step (seq and name), and the field (`input`, `output`,
`arguments`, `error`) with a snippet around the match. Filters narrow the runs: tenant, status,
agent (a run of workflow `agent:<name>`, or one with a `model:<name>` step), tool (a run with a
`tool:<name>` step) and the time the run was created. The newest runs come first.

The query language is the web-search one of PostgreSQL's `websearch_to_tsquery`, on both
databases: words must all appear (`refund declined`), `"a phrase"` must appear as written,
`a OR b` takes either, `-word` excludes. Words are stemmed (English), so `refunds` finds
`refunded`.

How it is indexed: the engine's writes only note which run or step changed (a trigger inserts
one small row into `search_changes`, see the `0006_search` migrations); `catch_up` turns the
notes into documents, off the engine's hot path. A search catches up first, so it sees
everything journaled before it started; workers (or `corral runs index`) may catch up
periodically so that searches find the index current. Each run's documents have consecutive
keys (`run_key << 24 | slot`, slot 0 the run's input, 1 its outcome, seq + 2 a step), so a
descending scan meets the newest runs first and one run's documents together. On SQLite the
documents live in an FTS5 table whose `tags` column holds the tenant's token; on PostgreSQL in a
GIN-indexed tsvector holding the lexeme `~t:<digest>`, which no word of a payload can produce
(the parser splits on `~` and `:`): either way the tenant filter is part of the full-text match.
Beside the documents, `search_runs` keeps each run's tenant, workflow, creation time and settled
status, and `search_run_tags` what it did (`agent:<name>`, `tool:<name>`), for the filters. A
search scans the matches newest first until it has enough runs that pass the filters; on
PostgreSQL, when the filters alone leave few runs, it matches those runs' documents instead.
Each hit's tenant and status are checked once more against `runs` before it is returned.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from corral.errors import UsageError
from corral.observe.cost_days import mark_stale
from corral.observe.journal_view import step_view
from corral.store import RUN_STATUSES, StepKind, StepRecord, StepStatus, Store, unscoped
from corral.store.scripts import Dialect, Script, Statement

Field = Literal["input", "output", "arguments", "error"]
FIELDS: tuple[Field, ...] = ("input", "output", "arguments", "error")
MATCH_START = "«"
"""What a snippet puts before each matched word."""
MATCH_END = "»"
"""What a snippet puts after each matched word."""

SLOT_BITS = 24
"""A document key is `run_key << SLOT_BITS | slot`: steps beyond seq 2**24 - 3 are not indexed."""
FIELD_CHARS = 16_000
"""Characters of one field of one document that are indexed (the rest is not searchable)."""
CATCH_UP_BATCH = 500
"""Changes indexed per transaction: small enough not to hold up the engine's writer for long."""
_PG_LOCK = 7006
"""Second key of the advisory lock (the first is the schema's hash) that makes one indexer at a
time work on a PostgreSQL schema."""
_MERGE_PAGES = 500
"""FTS5 pages merged after each batch (with `usermerge` 2, see the SQLite migration)."""
SETTLED = ("succeeded", "failed", "cancelled", "needs_reconciliation")
"""Statuses the index keeps (a run's status changes index nothing until it settles)."""
RUNS_FIRST = 1000
"""PostgreSQL: when the filters leave at most this many runs, their documents are matched
directly instead of scanning every match of the words."""
_SKIPPED_KINDS = frozenset({"child.start", "sleep", "now"})
"""Steps whose payloads are ids or times, not words."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A run that matched, and where in its journal it matched best."""

    run_id: str
    tenant: str
    workflow: str
    status: str
    created_at: float
    seq: int | None
    """The step that matched; None when the run's own input, result or error did."""
    step_name: str | None
    field: Field
    snippet: str
    """Text around the match, matched words between `MATCH_START` and `MATCH_END`."""

    @property
    def where(self) -> str:
        """`step 4 tool:refund (error)`, or `run (input)`."""
        if self.seq is None:
            return f"run ({self.field})"
        return f"step {self.seq} {self.step_name or '?'} ({self.field})"


async def catch_up(
    store: Store, *, batch: int = CATCH_UP_BATCH, max_batches: int | None = None
) -> int:
    """Index what was journaled before the call; the number of changes indexed.

    Each batch is one transaction on the store's writer. On PostgreSQL one indexer works at a
    time per schema: a catch-up that finds another one at work returns at once. It runs outside
    any tenant scope (`corral.store.unscoped`): the index covers every tenant's steps.
    """
    with unscoped():
        latest = await store.read_script(lambda dialect: _latest_change())
        if latest is None:
            return 0
        total = 0
        rounds = 0
        while max_batches is None or rounds < max_batches:
            done = await store.run_script(
                lambda dialect: index_changes(batch, up_to=latest, dialect=dialect)
            )
            total += done
            rounds += 1
            if done < batch:
                break
        return total


async def search_runs(
    store: Store,
    query: str,
    *,
    tenant: str | None,
    agent: str | None = None,
    tool: str | None = None,
    status: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 20,
    index_first: bool = True,
) -> list[SearchHit]:
    """The newest runs (at most `limit`) whose journal matches `query` and the filters.

    Args:
        store: An open store.
        query: Words, `"phrases"`, `OR`, `-excluded` (see the module's docstring).
        tenant: Only this tenant's runs; None searches every tenant (an operator's view).
        agent: Only runs of this agent (workflow `agent:<name>` or a `model:<name>` step).
        tool: Only runs that called this tool (a `tool:<name>` step).
        status: Only runs in this status.
        since: Only runs created at or after this time (seconds since the epoch).
        until: Only runs created at or before this time.
        limit: At most this many runs.
        index_first: Catch the index up first (see `catch_up`).

    Raises:
        UsageError: The query has no word that must appear, or a filter is invalid.
    """
    if status is not None and status not in RUN_STATUSES:
        raise UsageError(f"unknown status {status!r}; valid: {', '.join(RUN_STATUSES)}")
    if limit < 1:
        raise UsageError(f"limit must be at least 1, not {limit}")
    parsed = SearchQuery.parse(query)
    if index_first:
        await catch_up(store)
    filters = _Filters(tenant, agent, tool, status, since, until)
    return await store.read_script(
        lambda dialect: _search(parsed, filters, limit=limit, dialect=dialect)
    )


# -- the query language ----------------------------------------------------------------------

_QUERY_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed query: groups of alternatives that must all appear, and excluded terms.

    A term is a word or a phrase. Exclusion applies to the whole run: a run none of whose
    documents holds an excluded term.
    """

    groups: tuple[tuple[str, ...], ...]
    excluded: tuple[str, ...] = ()

    @staticmethod
    def parse(text: str) -> SearchQuery:
        """Parse web-search syntax: `word`, `"a phrase"`, `a OR b`, `-word`, `-"a phrase"`.

        Raises:
            UsageError: `text` has no word that must appear.
        """
        groups: list[list[str]] = []
        excluded: list[str] = []
        pending_or = False
        for match in _QUERY_TOKEN.finditer(text):
            negated, phrase, word = match[1] == "-", match[2], match[3]
            if word is not None and word.upper() == "OR":
                pending_or = bool(groups)
                continue
            if word is not None and word.startswith("-") and len(word) > 1:
                negated, word = True, word[1:]
            term = (phrase if phrase is not None else word or "").replace('"', " ").strip()
            if not re.search(r"\w", term):
                continue
            if negated:
                excluded.append(term)
            elif pending_or:
                groups[-1].append(term)
            else:
                groups.append([term])
            pending_or = False
        if not groups:
            raise UsageError(f"search {text!r} has no word that must appear")
        return SearchQuery(tuple(tuple(g) for g in groups), tuple(excluded))

    def fts5(self, *, excluded: bool = False) -> str:
        """The terms (or the excluded ones, any of them) as an FTS5 expression over the payload
        columns. Every term is quoted, so nothing typed is FTS5 syntax: a search cannot reach
        the `tags` column, nor fail to parse."""
        groups = ((*self.excluded,),) if excluded else self.groups
        expression = " AND ".join(
            "(" + " OR ".join(f'"{term}"' for term in group) + ")" for group in groups
        )
        return "{input output arguments error} : (" + expression + ")"

    def websearch(self, *, excluded: bool = False) -> str:
        """The terms (or the excluded ones, any of them) for `websearch_to_tsquery`."""
        groups = ((*self.excluded,),) if excluded else self.groups
        return " ".join(" or ".join(f'"{term}"' for term in group) for group in groups)


def tenant_token(tenant: str, dialect: Dialect) -> str:
    """The token that stands for `tenant` in its documents (never a word of a payload)."""
    digest = hashlib.blake2b(tenant.encode(), digest_size=8).hexdigest()
    return f"tn{digest}" if dialect == "sqlite" else f"~t:{digest}"


# -- documents -------------------------------------------------------------------------------


def _decode(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _text(*values: Any) -> str:
    """The words of JSON values: their strings and numbers (not keys), up to FIELD_CHARS."""
    found: list[str] = []
    size = 0
    stack = list(reversed(values))
    while stack and size < FIELD_CHARS:
        value = stack.pop()
        if isinstance(value, str):
            if value:
                found.append(value)
                size += len(value) + 1
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int | float):
            found.append(str(value))
            size += 8
        elif isinstance(value, Mapping):
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, list | tuple):
            stack.extend(reversed(value))
    return " ".join(found)[:FIELD_CHARS]


def _error_text(error: Any) -> str:
    """`Type: message` of a journaled error (never its traceback)."""
    if isinstance(error, Mapping):
        return ": ".join(str(error[k]) for k in ("type", "message") if error.get(k))
    return _text(error)


def run_texts(
    input: str | None, result: str | None, error: str | None
) -> tuple[dict[Field, str], dict[Field, str]]:
    """The fields of a run's two documents: its input, and its outcome (result and error)."""
    value = _decode(input)
    if isinstance(value, Mapping) and "input" in value and "depth" in value:
        value = value["input"]  # an agent's task: the rest is bookkeeping
    return {"input": _text(value)}, {
        "output": _text(_decode(result)),
        "error": _error_text(_decode(error)),
    }


def step_texts(
    kind: str, name: str, status: str, detail: str | None, result: str | None, error: str | None
) -> dict[Field, str]:
    """The fields of a step's document, decoded as `journal_view` reads the step."""
    record = StepRecord(
        "",
        0,
        cast(StepKind, kind),
        name,
        cast(StepStatus, status),
        False,
        detail,
        result,
        error,
        0.0,
        None,
    )
    view = step_view(record)
    output: str = ""
    arguments: str = ""
    if view.category == "model":
        message = view.message or {}
        calls = [c for c in message.get("tool_calls") or [] if isinstance(c, Mapping)]
        output = _text(message.get("content"))
        arguments = _text([[c.get("name"), _decode(c.get("arguments"))] for c in calls])
    elif view.category == "tool":
        call = view.call or {}
        decision = view.decision or {}
        denied = decision.get("effect") not in (None, "allow")
        arguments = _text(call.get("arguments"), call.get("approved_arguments"))
        output = _text(view.tool_value, decision.get("reason") if denied else None)
    elif kind not in _SKIPPED_KINDS:
        output = _text(view.result)
        arguments = _text(view.detail.get("input"))
    errors = [_error_text(view.error)] + [str(a["error"]) for a in view.attempts if a.get("error")]
    joined = " ".join(dict.fromkeys(e for e in errors if e))[:FIELD_CHARS]
    return {"output": output, "arguments": arguments, "error": joined}


# -- the catch-up indexer --------------------------------------------------------------------

_CHANGES = (
    "SELECT c.change_id, c.run_id, c.seq, r.tenant, r.workflow, r.created_at,"
    " CASE WHEN c.seq IS NULL THEN r.input END, CASE WHEN c.seq IS NULL THEN r.result END,"
    " CASE WHEN c.seq IS NULL THEN r.error END, s.kind, s.name, s.status, s.detail, s.result,"
    " s.error, r.status, s.finished_at, s.call_model FROM search_changes c"
    " LEFT JOIN runs r ON r.run_id = c.run_id"
    " LEFT JOIN steps s ON s.run_id = c.run_id AND s.seq = c.seq WHERE c.change_id <= ?"
    " ORDER BY c.change_id LIMIT ?"
)
_SQLITE_INSERT = (
    "INSERT INTO search_text (rowid, input, output, arguments, error, tags)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_PG_UPSERT = (
    "INSERT INTO search_docs (doc_key, run_key, words) VALUES (?, ?,"
    " array_to_tsvector(ARRAY[?]::text[])"
    " || setweight(to_tsvector('english', ?), 'B') || setweight(to_tsvector('english', ?), 'C')"
    " || setweight(to_tsvector('english', ?), 'D'))"
    " ON CONFLICT (doc_key) DO UPDATE SET words = excluded.words"
)


def _latest_change() -> Script[int | None]:
    found = yield Statement("SELECT max(change_id) FROM search_changes")
    latest = found.scalar()
    return None if latest is None else int(latest)


def index_changes(limit: int, *, up_to: int | None = None, dialect: Dialect) -> Script[int]:
    """Index up to `limit` noted changes (oldest first; none after `up_to`) and drop their
    notes; how many."""
    if dialect == "sqlite":
        return (yield from _index_changes(limit, up_to, dialect))
    locked = yield Statement(
        f"SELECT pg_try_advisory_xact_lock(hashtext(current_schema()), {_PG_LOCK})"
    )
    if not locked.scalar():
        return 0  # another indexer is at work; it will index these changes
    # The statements below run thousands of times per batch as prepared statements, whose
    # generic plans are made once per connection. Made while the index tables were small (a
    # new database), or never re-planned because their statistics are stale (a catch-up grows
    # them far faster than autovacuum re-analyzes them, if it runs at all), those plans scan
    # `search_docs` whole for every document removed: a first catch-up of a million steps ran
    # at 1,200 changes a second and slowing, against 10,000 steady with plans made per
    # execution (bench/observe_bench.py). So this script plans per execution, and restores the
    # transaction's setting after (the writer's transaction is shared with other operations).
    before = yield Statement(
        "SELECT current_setting('plan_cache_mode'),"
        " set_config('plan_cache_mode', 'force_custom_plan', true)"
    )
    indexed = yield from _index_changes(limit, up_to, dialect)
    yield Statement("SELECT set_config('plan_cache_mode', ?, true)", (before.rows[0][0],))
    return indexed


def _index_changes(limit: int, up_to: int | None, dialect: Dialect) -> Script[int]:
    found = yield Statement(_CHANGES, (up_to if up_to is not None else 1 << 62, limit))
    if not found.rows:
        return 0
    latest: dict[tuple[str, int | None], tuple[Any, ...]] = {}
    runs: dict[str, tuple[str, str, float]] = {}
    for row in found.rows:
        latest[(row[1], row[2])] = row  # same snapshot: one read per document is enough
        if row[3] is not None:
            runs.setdefault(row[1], (row[3], row[4], float(row[5])))
    keys = yield from _run_keys(runs)
    gone = {run_id for run_id, _ in latest if run_id not in runs}
    if gone:
        yield from _forget_runs(gone, dialect)
    tags: set[tuple[str, int]] = set()
    settled: list[tuple[str | None, int]] = []
    documents: dict[int, tuple[str, dict[Field, str]]] = {}
    for (run_id, seq), row in latest.items():
        if run_id not in keys:
            continue  # the run is gone (forgotten above)
        key, tenant = keys[run_id], runs[run_id][0]
        base = key << SLOT_BITS
        if seq is None:
            if row[4].startswith("agent:"):
                tags.add((row[4], key))
            settled.append((row[15] if row[15] in SETTLED else None, key))
            started, outcome = run_texts(row[6], row[7], row[8])
            documents[base] = (tenant, started)
            documents[base + 1] = (tenant, outcome)
        elif 0 <= seq < (1 << SLOT_BITS) - 2:
            if row[9] == "step" and row[10].startswith("model:"):
                tags.add(("agent:" + row[10][len("model:") :], key))
            elif row[9] == "step" and row[10].startswith("tool:"):
                tags.add((row[10], key))
            texts = step_texts(*row[9:15]) if row[9] is not None else {}
            documents[base + seq + 2] = (tenant, texts)
    if tags:
        yield Statement(
            "INSERT INTO search_run_tags (tag, run_key) VALUES (?, ?)"
            " ON CONFLICT (tag, run_key) DO NOTHING",
            sorted(tags),
            many=True,
        )
    if settled:
        yield Statement("UPDATE search_runs SET status = ? WHERE run_key = ?", settled, many=True)
    yield from _write_documents(documents, dialect)
    # The cost roll-up follows the same notes: a model call's hour must be summed again.
    yield from mark_stale(float(row[16]) for row in found.rows if row[17] is not None)
    yield Statement(
        "DELETE FROM search_changes WHERE change_id = ?", [(r[0],) for r in found.rows], many=True
    )
    return len(found.rows)


def _forget_runs(run_ids: set[str], dialect: Dialect) -> Script[None]:
    """Remove deleted runs from the index: their documents, tags and key."""
    marks = ", ".join("?" * len(run_ids))
    found = yield Statement(
        f"SELECT run_key FROM search_runs WHERE run_id IN ({marks})", sorted(run_ids)
    )
    for (key,) in found.rows:
        bounds = (int(key) << SLOT_BITS, (int(key) + 1) << SLOT_BITS)
        table, column = (
            ("search_text", "rowid") if dialect == "sqlite" else ("search_docs", "doc_key")
        )
        yield Statement(f"DELETE FROM {table} WHERE {column} >= ? AND {column} < ?", bounds)
        yield Statement("DELETE FROM search_run_tags WHERE run_key = ?", (key,))
        yield Statement("DELETE FROM search_runs WHERE run_key = ?", (key,))


def _run_keys(runs: Mapping[str, tuple[str, str, float]]) -> Script[dict[str, int]]:
    """The index's key of each run, numbering the runs it has not seen yet."""
    keys: dict[str, int] = {}
    for attempt in range(2):
        missing = [run_id for run_id in runs if run_id not in keys]
        for offset in range(0, len(missing), 500):
            chunk = missing[offset : offset + 500]
            got = yield Statement(
                "SELECT run_id, run_key FROM search_runs"
                f" WHERE run_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            keys.update((run_id, int(key)) for run_id, key in got.rows)
        new = [(run_id, *runs[run_id]) for run_id in missing if run_id not in keys]
        if not new or attempt:
            break
        yield Statement(
            "INSERT INTO search_runs (run_id, tenant, workflow, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (run_id) DO NOTHING",
            new,
            many=True,
        )
    return keys


def _write_documents(
    documents: Mapping[int, tuple[str, Mapping[Field, str]]], dialect: Dialect
) -> Script[None]:
    """Replace these documents (an empty one is removed)."""
    filled = {key: doc for key, doc in documents.items() if any(doc[1].values())}
    if dialect == "sqlite":
        # FTS5 has no upsert: delete whatever was there, then insert.
        yield Statement(
            "DELETE FROM search_text WHERE rowid = ?", [(k,) for k in documents], many=True
        )
        rows = [
            (key, *(texts.get(f, "") for f in FIELDS), tenant_token(tenant, dialect))
            for key, (tenant, texts) in filled.items()
        ]
        if rows:
            yield Statement(_SQLITE_INSERT, rows, many=True)
            # A little merging per batch keeps FTS5's segments few: a query opens every one.
            yield Statement(
                "INSERT INTO search_text (search_text, rank) VALUES ('merge', ?)", (_MERGE_PAGES,)
            )
        return
    empty = [(key,) for key in documents if key not in filled]
    if empty:
        yield Statement("DELETE FROM search_docs WHERE doc_key = ?", empty, many=True)
    rows = [
        (
            key,
            key >> SLOT_BITS,
            tenant_token(tenant, dialect),
            " ".join((texts.get("input", ""), texts.get("arguments", ""))),
            texts.get("output", ""),
            texts.get("error", ""),
        )
        for key, (tenant, texts) in filled.items()
    ]
    if rows:
        yield Statement(_PG_UPSERT, rows, many=True)


# -- searching -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Filters:
    tenant: str | None
    agent: str | None
    tool: str | None
    status: str | None
    since: float | None
    until: float | None


def _pg_tsquery(query: SearchQuery, tenant: str | None) -> tuple[str, list[str]]:
    """PostgreSQL's tsquery of the search (and of the tenant's token), with its parameters."""
    if tenant is None:
        return "websearch_to_tsquery('english', ?)", [query.websearch()]
    return (
        "(websearch_to_tsquery('english', ?) && quote_literal(?)::tsquery)",
        [query.websearch(), tenant_token(tenant, "postgresql")],
    )


def _match(query: SearchQuery, tenant: str | None, dialect: Dialect) -> tuple[str, list[str]]:
    """The condition that a document matches the query (and the tenant's token), with its
    parameters: on SQLite for the table `search_text`, on PostgreSQL for the alias `d`."""
    if dialect == "sqlite":
        match = query.fts5()
        if tenant is not None:
            match += f' AND tags : "{tenant_token(tenant, dialect)}"'
        return "search_text MATCH ?", [match]
    tsquery, params = _pg_tsquery(query, tenant)
    return f"d.words @@ {tsquery}", params


_EXCLUDED = {
    "sqlite": "SELECT DISTINCT rowid >> 24 FROM search_text WHERE search_text MATCH ?"
    " AND rowid >= ? AND rowid < ?",
    "postgresql": "SELECT DISTINCT run_key FROM search_docs WHERE"
    " words @@ websearch_to_tsquery('english', ?) AND doc_key >= ? AND doc_key < ?",
}
"""Which of the runs with keys in a range have a document holding an excluded term."""


def _search(
    query: SearchQuery, filters: _Filters, *, limit: int, dialect: Dialect
) -> Script[list[SearchHit]]:
    sqlite = dialect == "sqlite"
    if not sqlite:
        # Plans must fit each search's own keys and words (psycopg prepares repeated statements,
        # and a generic plan knows neither); and compiling a short query (JIT) costs more than
        # it saves.
        yield Statement("SET LOCAL plan_cache_mode = force_custom_plan")
        yield Statement("SET LOCAL jit = off")
        lexemes = yield Statement(
            "SELECT numnode(websearch_to_tsquery('english', ?))", (query.websearch(),)
        )
        if not lexemes.scalar():
            return []  # only stop words ("the", "again"): PostgreSQL indexes none of them
    window = [
        (clause, bound)
        for clause, bound in (
            ("created_at >= ?", filters.since),
            ("created_at <= ?", filters.until),
        )
        if bound is not None
    ]
    lower: int | None = None
    upper: int | None = None
    if window:
        found = yield Statement(
            # `+ 0`: read the window from the created_at index, not the whole key index
            "SELECT min(run_key + 0), max(run_key + 0) FROM search_runs WHERE "
            + " AND ".join(clause for clause, _ in window),
            [bound for _, bound in window],
        )
        low, high = found.one() or (None, None)
        if low is None:
            return []
        # Keys only bound the scan (runs are numbered about in creation order); the window
        # itself is checked on each run.
        lower, upper = int(low) << SLOT_BITS, (int(high) + 1) << SLOT_BITS
    # What only runs know, as conditions on `sr` (search_runs) and `r` (runs), with parameters.
    run_where: list[str] = [f"sr.{clause}" for clause, _ in window]
    run_params: list[Any] = [bound for _, bound in window]
    if filters.status in SETTLED:
        run_where.append("sr.status = ?")
        run_params.append(filters.status)
    unsettled = filters.status is not None and filters.status not in SETTLED
    for kind, name in (("agent", filters.agent), ("tool", filters.tool)):
        if name is not None:
            run_where.append("sr.run_key IN (SELECT run_key FROM search_run_tags WHERE tag = ?)")
            run_params.append(f"{kind}:{name}")
    join = " CROSS JOIN " if sqlite else " JOIN "
    with_runs = f"{join}runs r ON r.run_id = sr.run_id" if unsettled else ""
    if unsettled:
        run_where.append("r.status = ?")
        run_params.append(filters.status)
    match_sql, match_params = _match(query, filters.tenant, dialect)
    doc_key = "search_text.rowid" if sqlite else "d.doc_key"
    if not sqlite and run_where:
        # Selective filters: match the few runs' documents rather than every match's run.
        tenant = [] if filters.tenant is None else [filters.tenant]
        found = yield Statement(
            f"SELECT sr.run_key FROM search_runs sr{with_runs} WHERE "
            + " AND ".join(run_where + ["sr.tenant = ?"] * len(tenant))
            + " ORDER BY sr.run_key DESC LIMIT ?",
            [*run_params, *tenant, RUNS_FIRST + 1],
        )
        if len(found.rows) <= RUNS_FIRST:
            # Each run's documents by key range; `ts_match_vq` (not `@@`) so that the planner
            # cannot trade the key ranges for a GIN scan of every match.
            tsquery, match_params = _pg_tsquery(query, filters.tenant)
            statement = (
                "WITH m AS MATERIALIZED (SELECT d.doc_key FROM unnest(?::bigint[]) AS k (run_key)"
                " JOIN search_docs d ON d.doc_key >= k.run_key * 16777216"
                " AND d.doc_key < (k.run_key + 1) * 16777216"
                f" WHERE ts_match_vq(d.words, {tsquery}))"
                " SELECT doc_key FROM m WHERE doc_key < ? ORDER BY doc_key DESC LIMIT ?"
            )
            keys = [int(row[0]) for row in found.rows]
            params: list[Any] = [keys, *match_params]
            picked = yield from _newest_runs(statement, params, None, limit, query, dialect)
            return (yield from _checked_hits(picked, query, filters, dialect))
    run_key = "(search_text.rowid >> 24)" if sqlite else "d.run_key"
    source = "search_text" if sqlite else "search_docs d"
    if run_where:
        source += f"{join}search_runs sr ON sr.run_key = {run_key}{with_runs}"
    where = [match_sql, *run_where]
    params = [*match_params, *run_params]
    if lower is not None:
        where.append(f"{doc_key} >= ?")
        params.append(lower)
    statement = (
        f"SELECT {doc_key} FROM {source} WHERE {' AND '.join(where)} AND {doc_key} < ?"
        f" ORDER BY {doc_key} DESC LIMIT ?"
    )
    picked = yield from _newest_runs(statement, params, upper, limit, query, dialect)
    return (yield from _checked_hits(picked, query, filters, dialect))


def _checked_hits(
    picked: Mapping[int, Sequence[int]], query: SearchQuery, filters: _Filters, dialect: Dialect
) -> Script[list[SearchHit]]:
    """The hits, each checked once more against the tenant and the status (both already in the
    match: a run that changed status since it was indexed is left out, never misreported)."""
    hits = yield from _hits(picked, query, dialect)
    return [
        hit
        for hit in hits
        if filters.tenant in (None, hit.tenant) and filters.status in (None, hit.status)
    ]


def _newest_runs(
    statement: str,
    params: Sequence[Any],
    upper: int | None,
    limit: int,
    query: SearchQuery,
    dialect: Dialect,
) -> Script[dict[int, list[int]]]:
    """The newest `limit` matching runs' keys, newest first, each with the keys of its matching
    documents found; scanning document keys downwards a page at a time (`statement` takes
    `params`, the key to stay below, and the page size)."""
    page = max(8 * limit, 64)
    picked: list[int] = []
    documents: dict[int, list[int]] = {}
    below = upper if upper is not None else 1 << 62
    while len(picked) < limit:
        found = yield Statement(statement, [*params, below, page])
        for (doc,) in found.rows:
            documents.setdefault(int(doc) >> SLOT_BITS, []).append(int(doc))
        keys = list(dict.fromkeys(int(row[0]) >> SLOT_BITS for row in found.rows))
        if keys and query.excluded:
            excluded = (
                query.fts5(excluded=True) if dialect == "sqlite" else query.websearch(excluded=True)
            )
            bounds = (min(keys) << SLOT_BITS, (max(keys) + 1) << SLOT_BITS)
            gone = yield Statement(_EXCLUDED[dialect], (excluded, *bounds))
            dropped = {int(row[0]) for row in gone.rows}
            picked += [key for key in keys if key not in dropped]
        else:
            picked += keys
        if len(found.rows) < page:
            break
        # The rest of the last run's documents add nothing: continue below its first one.
        below = (int(found.rows[-1][0]) >> SLOT_BITS) << SLOT_BITS
    return {key: documents[key] for key in picked[:limit]}


def _hits(
    picked: Mapping[int, Sequence[int]], query: SearchQuery, dialect: Dialect
) -> Script[list[SearchHit]]:
    """The runs with these keys (and matching documents) as hits, each with the snippet of its
    best matching document."""
    if not picked:
        return []
    marks = ", ".join("?" * len(picked))
    found = yield Statement(
        "SELECT sr.run_key, r.run_id, r.tenant, r.workflow, r.status, r.created_at, r.input,"
        " r.result, r.error FROM search_runs sr JOIN runs r ON r.run_id = sr.run_id"
        f" WHERE sr.run_key IN ({marks})",
        list(picked),
    )
    runs = {int(row[0]): row[1:] for row in found.rows}
    best: dict[int, int] = {}
    snippets: dict[int, dict[Field, str]] = {}
    if dialect == "sqlite":
        # Not bm25: it counts each term's documents in the whole index, on every statement.
        picks = ", ".join(f"snippet(search_text, {i}, '«', '»', '…', 16)" for i in range(4))
        for key in picked:
            found = yield Statement(
                f"SELECT rowid, {picks} FROM search_text WHERE search_text MATCH ?"
                " AND rowid >= ? AND rowid < ?",
                (query.fts5(), key << SLOT_BITS, (key + 1) << SLOT_BITS),
            )
            shown = {int(row[0]): dict(zip(FIELDS, row[1:], strict=True)) for row in found.rows}
            if shown:
                best[key] = max(shown, key=lambda doc: (_marks(shown[doc]), -doc))
                snippets[key] = shown[best[key]]
    else:
        # The documents the scan found, ranked (each one looked up by key).
        ranked = yield Statement(
            "SELECT doc_key, ts_rank(words, websearch_to_tsquery('english', ?)) FROM search_docs"
            " WHERE doc_key = ANY(?::bigint[])",
            (query.websearch(), [doc for docs in picked.values() for doc in docs]),
        )
        rank = {int(doc): float(score) for doc, score in ranked.rows}
        for key, docs in picked.items():
            known = [doc for doc in docs if doc in rank]
            if known:
                best[key] = max(known, key=lambda doc: (rank[doc], -doc))
    wanted = [(runs[k][0], best[k] - (k << SLOT_BITS) - 2) for k in best if k in runs]
    wanted = [(run_id, seq) for run_id, seq in wanted if seq >= 0]
    steps: dict[tuple[str, int], tuple[Any, ...]] = {}
    if wanted:
        pairs = " OR ".join("(run_id = ? AND seq = ?)" for _ in wanted)
        found = yield Statement(
            "SELECT run_id, seq, kind, name, status, detail, result, error FROM steps"
            f" WHERE {pairs}",
            [value for pair in wanted for value in pair],
        )
        steps = {(row[0], int(row[1])): row[2:] for row in found.rows}
    if dialect == "postgresql":
        snippets = yield from _pg_snippets(runs, best, steps, query.websearch())
    hits: list[SearchHit] = []
    for key in picked:
        if key not in runs or key not in best:
            continue
        run_id, tenant, workflow, status, created_at = runs[key][:5]
        slot = best[key] - (key << SLOT_BITS)
        step = steps.get((run_id, slot - 2))
        field, snippet = _matched_field(snippets.get(key, {}))
        hits.append(
            SearchHit(
                run_id=run_id,
                tenant=tenant,
                workflow=workflow,
                status=status,
                created_at=float(created_at),
                seq=slot - 2 if slot >= 2 else None,
                step_name=step[1] if step is not None else None,
                field=field,
                snippet=snippet,
            )
        )
    return hits


def _pg_snippets(
    runs: Mapping[int, Sequence[Any]],
    best: Mapping[int, int],
    steps: Mapping[tuple[str, int], Sequence[Any]],
    websearch: str,
) -> Script[dict[int, dict[Field, str]]]:
    """Each hit's fields' headlines (PostgreSQL's snippets), from the journal's payloads."""
    texts: list[tuple[int, Field, str]] = []
    for key, doc in best.items():
        if key not in runs:
            continue
        run = runs[key]
        slot = doc - (key << SLOT_BITS)
        if slot < 2:
            fields = run_texts(run[5], run[6], run[7])[slot]
        else:
            step = steps.get((run[0], slot - 2))
            fields = step_texts(*step) if step is not None else {}
        texts += [(key, f, fields[f]) for f in FIELDS if fields.get(f)]
    if not texts:
        return {}
    found = yield Statement(
        "SELECT ts_headline('english', t, websearch_to_tsquery('english', ?),"
        " 'StartSel=«, StopSel=», MaxWords=24, MinWords=10, MaxFragments=2')"
        " FROM unnest(?::text[]) WITH ORDINALITY AS f (t, n) ORDER BY n",
        (websearch, [text for _, _, text in texts]),
    )
    snippets: dict[int, dict[Field, str]] = {}
    for (key, field, _), row in zip(texts, found.rows, strict=True):
        snippets.setdefault(key, {})[field] = str(row[0])
    return snippets


def _marks(snippets: Mapping[Field, str]) -> int:
    """How many matched words the snippets show."""
    return sum(text.count(MATCH_START) for text in snippets.values())


def _matched_field(snippets: Mapping[Field, str]) -> tuple[Field, str]:
    """The field whose snippet shows the most matches (the first field if none shows any)."""
    ranked = sorted(
        (f for f in FIELDS if snippets.get(f)),
        key=lambda f: -snippets[f].count(MATCH_START),
    )
    if not ranked:
        return "output", ""
    return ranked[0], snippets[ranked[0]]


__all__ = [
    "CATCH_UP_BATCH",
    "FIELDS",
    "MATCH_END",
    "MATCH_START",
    "Field",
    "SearchHit",
    "SearchQuery",
    "catch_up",
    "index_changes",
    "run_texts",
    "search_runs",
    "step_texts",
    "tenant_token",
]
