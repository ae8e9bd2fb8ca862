"""Retention: the payloads of old finished runs expire (or are redacted); the skeleton stays.

A tenant keeps rules (`retention_rules`): after how many days a finished run's payloads are
*expired* or *redacted*, for one workflow or for every workflow without a rule of its own
(`workflow=None`). `apply_retention` walks the tenant's finished runs older than each rule's
cut-off, oldest first, in batches of `BATCH_SIZE` runs per transaction.

Expiring a run replaces its payloads — the run's input, result and error; each step's result,
error and detail — and keeps its skeleton: run id, workflow, status, timestamps, parent; each
step's seq, kind, name, status and times. What observability still needs and is not a payload
is kept too: the error `code` and `type`, a model step's model, usage and finish reason (so
costs stay right), a tool step's status and policy decision, a tool call's id, a retry's code
and decision, the child run a `child.start` step started. Everything removed becomes the JSON
string `"[expired]"` (`EXPIRED`), or an object marked `"expired": true` when parts are kept.

Redacting is done by a `RedactRun` the caller passes in (the CLI passes
`corral.governance.retention.redact_run`; observability does not import governance).

The *retention floor* protects logs that must be kept: no run younger than it is expired, and an
expire rule below it is refused (`CORRAL_RETENTION_FLOOR_DAYS`, default 180 days: the EU AI Act
asks deployers to keep logs at least six months, Art. 19 and 26(6)). Redaction keeps the record
and removes personal data only, so it may come sooner.

Tables that grow per run and serve no purpose once it has finished are pruned with its payloads:
its consumed signals (the journal holds their payloads; an expired run's unconsumed ones go too),
its settled budget reservations and run budget counters, the arguments kept by its decided
approvals (expired runs only). Beyond the floor (and never within `HISTORY_MIN_DAYS`),
`breaker_transitions`, stale `breakers` rows and daily budget counters are pruned as well. The
audit log is never touched: its chain holds decisions, not payloads, and verifies as before.

Only finished runs are touched (a live run replays its payloads), and not a child run whose
parent is still running (the parent may yet read the child's result from its row). Each run is
processed once per action (`retention_applied`), and each rule remembers how far its walk got
(`done_before`), so a daily apply does not rescan years of history.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from corral.errors import UsageError
from corral.store import Store
from corral.store.scripts import Dialect, Script, Statement

RetentionAction = Literal["expire", "redact"]
ACTIONS: Final[tuple[RetentionAction, ...]] = ("expire", "redact")
ALL_WORKFLOWS: Final = "*"
"""How a tenant-wide rule is stored (`workflow=None` in the API)."""
FLOOR_SETTING: Final = "CORRAL_RETENTION_FLOOR_DAYS"
DEFAULT_FLOOR_DAYS: Final = 180
BATCH_SIZE: Final = 1000
"""Runs changed per transaction."""
HISTORY_MIN_DAYS: Final = 7
"""History (breaker transitions, stale breakers, daily budget counters) younger than this is
never pruned, whatever the floor: a floor of 0 (a demo, a test) must not drop live breakers."""
DAY: Final = 86400.0
EXPIRED: Final = "[expired]"
EXPIRED_JSON: Final = json.dumps(EXPIRED)

_FINISHED = "('cancelled', 'failed', 'succeeded')"  # literal: it must match the partial index
_KEPT_RESULTS = ("child.start", "now", "sleep")  # engine facts, not payloads
_KEPT_MODEL = ("model", "usage", "finish_reason", "fallbacks")
_KEPT_TOOL = ("status", "decision")
_KEPT_CALL = ("call_id", "tool", "approval_id")
_KEPT_ERROR = ("code", "type")

RedactRun = Callable[[str, Dialect], Script[int]]
"""Redacts one finished run's payloads inside the calling transaction; how many changed."""


class RetentionRule(BaseModel):
    """How long a tenant keeps the payloads of one workflow's finished runs (or of all)."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    workflow: str | None
    """None: every workflow without a rule of its own for this action."""
    action: RetentionAction
    days: int
    updated_at: float
    updated_by: str

    @property
    def scope(self) -> str:
        """`*` or the workflow, for messages and the audit log."""
        return self.workflow or ALL_WORKFLOWS

    def effective_days(self, floor_days: int) -> int:
        """The rule's days, raised to the floor for an expire rule (the floor may have been
        raised since the rule was set)."""
        return max(self.days, floor_days) if self.action == "expire" else self.days

    def cutoff(self, now: float, *, floor_days: int) -> float:
        """Runs that finished before this are due."""
        return now - self.effective_days(floor_days) * DAY


@dataclass(frozen=True)
class RetentionBatch:
    """One transaction's work, handed to the caller's `record` hook (to audit it)."""

    tenant: str
    rule: RetentionRule | None
    """None for the history pruned beyond the floor."""
    cutoff: float
    at: float
    run_ids: tuple[str, ...] = ()
    payloads_changed: int = 0
    pruned: Mapping[str, int] = field(default_factory=dict)
    """Rows deleted or emptied, by table."""


RecordBatch = Callable[[RetentionBatch, Dialect], Script[object]]
"""Runs in the batch's transaction after its changes (the CLI appends an audit entry)."""


@dataclass
class RuleOutcome:
    """What applying (or, in a dry run, what would apply) one rule did."""

    rule: RetentionRule
    cutoff: float
    runs: int = 0
    payloads_changed: int = 0
    pruned: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    raised_to_floor: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "workflow": self.rule.workflow,
            "action": self.rule.action,
            "days": self.rule.days,
            "cutoff": _iso(self.cutoff),
            "raised_to_floor": self.raised_to_floor,
            "runs": self.runs,
            "payloads_changed": self.payloads_changed,
            "pruned": dict(sorted(self.pruned.items())),
            "batches": self.batches,
        }


@dataclass
class RetentionReport:
    """The outcome of `apply_retention` for one tenant."""

    tenant: str
    at: float
    floor_days: int
    dry_run: bool
    rules: list[RuleOutcome] = field(default_factory=list)
    history_cutoff: float = 0.0
    history_pruned: dict[str, int] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return sum(outcome.runs for outcome in self.rules)

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "at": _iso(self.at),
            "dry_run": self.dry_run,
            "floor_days": self.floor_days,
            "rules": [outcome.to_json() for outcome in self.rules],
            "history": {
                "cutoff": _iso(self.history_cutoff),
                "pruned": dict(sorted(self.history_pruned.items())),
            },
        }


# -- settings and rules ---------------------------------------------------------------------------


def floor_days(environ: Mapping[str, str] | None = None) -> int:
    """The retention floor in days: `CORRAL_RETENTION_FLOOR_DAYS`, else 180."""
    value = (os.environ if environ is None else environ).get(FLOOR_SETTING, "").strip()
    if not value:
        return DEFAULT_FLOOR_DAYS
    try:
        days = int(value)
    except ValueError:
        days = -1
    if days < 0:
        raise UsageError(
            f"{FLOOR_SETTING}={value!r}: the retention floor is a whole number of days (0 or "
            f"more; default {DEFAULT_FLOOR_DAYS})",
            setting=FLOOR_SETTING,
        )
    return days


def check_rule(days: int, action: str, *, floor: int) -> None:
    """Refuse a rule that is malformed or, for expiry, below the retention floor."""
    if action not in ACTIONS:
        raise UsageError(f"unknown retention action {action!r}: use expire or redact")
    if days < 0:
        raise UsageError(f"retention days must be 0 or more, not {days}", days=days)
    if action == "expire" and days < floor:
        raise UsageError(
            f"cannot expire payloads after {days} day(s): the retention floor is {floor} days "
            f"(logs must be kept at least six months: EU AI Act Art. 19 and 26(6)). Use "
            f"--days {floor} or more; --action redact removes personal data sooner; the floor "
            f"is set by {FLOOR_SETTING}",
            days=days,
            floor=floor,
        )


def set_rule(rule: RetentionRule, *, floor: int) -> Script[RetentionRule]:
    """Insert or replace a rule (checked against `floor` first)."""
    check_rule(rule.days, rule.action, floor=floor)
    yield Statement(
        "INSERT INTO retention_rules (tenant, workflow, action, days, updated_at, updated_by)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, workflow, action) DO UPDATE SET"
        " days = excluded.days, updated_at = excluded.updated_at,"
        " updated_by = excluded.updated_by",
        (rule.tenant, rule.scope, rule.action, rule.days, rule.updated_at, rule.updated_by),
    )
    yield from _rescan_tenant_rule(rule.tenant, rule.action, rule.workflow)
    return rule


def remove_rule(tenant: str, *, workflow: str | None, action: RetentionAction) -> Script[bool]:
    """Delete a rule; False if there was none."""
    deleted = yield Statement(
        "DELETE FROM retention_rules WHERE tenant = ? AND workflow = ? AND action = ?",
        (tenant, workflow or ALL_WORKFLOWS, action),
    )
    if deleted.rowcount == 0:
        return False
    yield from _rescan_tenant_rule(tenant, action, workflow)
    return True


def _rescan_tenant_rule(tenant: str, action: str, workflow: str | None) -> Script[None]:
    """A workflow's rule came or went: the tenant-wide rule's scope changed, so its next apply
    must look at the whole history again (what it had skipped may now be its own)."""
    if workflow is not None:
        yield Statement(
            "UPDATE retention_rules SET done_before = NULL"
            " WHERE tenant = ? AND action = ? AND workflow = ?",
            (tenant, action, ALL_WORKFLOWS),
        )


def list_rules(tenant: str) -> Script[list[RetentionRule]]:
    """The tenant's rules: tenant-wide first, then by workflow; expire before redact."""
    found = yield Statement(
        "SELECT tenant, workflow, action, days, updated_at, updated_by FROM retention_rules"
        " WHERE tenant = ? ORDER BY workflow, action",
        (tenant,),
    )
    rules = [
        RetentionRule(
            tenant=row[0],
            workflow=None if row[1] == ALL_WORKFLOWS else row[1],
            action=row[2],
            days=int(row[3]),
            updated_at=float(row[4]),
            updated_by=row[5],
        )
        for row in found.rows
    ]
    return sorted(rules, key=lambda r: (r.workflow is not None, r.workflow or "", r.action))


# -- choosing runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    """The runs one rule governs, and where its walk stands."""

    rule: RetentionRule
    others: tuple[str, ...]
    """Workflows with a rule of their own for the same action (a tenant-wide rule skips them)."""
    cutoff: float
    since: float | None
    """The rule's `done_before`: runs that finished earlier were processed by earlier applies."""

    def where(
        self, after: tuple[float, str] | None, *, held: bool = False
    ) -> tuple[str, list[Any]]:
        """The FROM and WHERE of the runs due after `after` (the keyset of the last batch);
        `held`: instead, those held back because their parent is still running."""
        sql = f" FROM runs r WHERE r.tenant = ? AND r.status IN {_FINISHED} AND r.updated_at < ?"
        params: list[Any] = [self.rule.tenant, self.cutoff]
        if self.since is not None:
            sql += " AND r.updated_at >= ?"
            params.append(self.since)
        if self.rule.workflow is not None:
            sql += " AND r.workflow = ?"
            params.append(self.rule.workflow)
        elif self.others:
            sql += f" AND r.workflow NOT IN ({_marks(self.others)})"
            params.extend(self.others)
        if after is not None:
            sql += " AND (r.updated_at > ? OR (r.updated_at = ? AND r.run_id > ?))"
            params.extend([after[0], after[0], after[1]])
        # A parent that is still running may yet read its child's result from the child's row.
        parent_finished = (
            f"EXISTS (SELECT 1 FROM runs p WHERE p.run_id = r.parent_run_id"
            f" AND p.status IN {_FINISHED})"
        )
        if held:
            sql += f" AND r.parent_run_id IS NOT NULL AND NOT {parent_finished}"
        else:
            sql += f" AND (r.parent_run_id IS NULL OR {parent_finished})"
        # An expired run has nothing left to redact; a redacted one may still expire.
        applied = "" if self.rule.action == "redact" else " AND a.action = 'expire'"
        sql += (
            " AND NOT EXISTS (SELECT 1 FROM retention_applied a"
            f" WHERE a.run_id = r.run_id{applied})"
        )
        return sql, params


def _due(
    scope: _Scope, after: tuple[float, str] | None, limit: int
) -> Script[list[tuple[str, float]]]:
    where, params = scope.where(after)
    found = yield Statement(
        f"SELECT r.run_id, r.updated_at{where} ORDER BY r.updated_at, r.run_id LIMIT ?",
        (*params, limit),
    )
    return [(str(row[0]), float(row[1])) for row in found.rows]


def _count_due(scope: _Scope) -> Script[int]:
    where, params = scope.where(None)
    found = yield Statement(f"SELECT count(*){where}", params)
    return int(found.scalar() or 0)


# -- expiring -------------------------------------------------------------------------------------


def expire_runs(run_ids: list[str]) -> Script[int]:
    """Replace the payloads of these finished runs, keeping their skeleton; how many payloads
    changed. The caller chooses the runs (only finished ones: a live run replays its payloads)."""
    if not run_ids:
        return 0
    changed = 0
    runs = yield Statement(
        f"SELECT run_id, input, result, error FROM runs WHERE run_id IN ({_marks(run_ids)})",
        run_ids,
    )
    run_updates = []
    for run_id, *payloads in runs.rows:
        expired = [
            EXPIRED_JSON,
            None if payloads[1] is None else EXPIRED_JSON,
            expired_error(payloads[2]),
        ]
        changed += sum(a != b for a, b in zip(expired, payloads, strict=True))
        run_updates.append((*expired, run_id))
    if run_updates:
        yield Statement(
            "UPDATE runs SET input = ?, result = ?, error = ? WHERE run_id = ?",
            run_updates,
            many=True,
        )
    # One run's journal at a time: payloads can be large, and a batch holds many runs.
    for run_id in run_ids:
        steps = yield Statement(
            "SELECT seq, kind, name, result, error, detail FROM steps WHERE run_id = ?",
            (run_id,),
        )
        updates = []
        for seq, kind, name, *payloads in steps.rows:
            expired = [
                expired_result(kind, name, payloads[0]),
                expired_error(payloads[1]),
                expired_detail(payloads[2]),
            ]
            if expired != payloads:
                changed += sum(a != b for a, b in zip(expired, payloads, strict=True))
                updates.append((*expired, run_id, seq))
        if updates:
            yield Statement(
                "UPDATE steps SET result = ?, error = ?, detail = ? WHERE run_id = ? AND seq = ?",
                updates,
                many=True,
            )
    return changed


def expired_result(kind: str, name: str, text: str | None) -> str | None:
    """A step's result with its payload removed (what observability needs is kept)."""
    if text is None or kind in _KEPT_RESULTS:
        return text
    if kind == "step" and name.startswith(("model:", "tool:")):
        keep = _KEPT_MODEL if name.startswith("model:") else _KEPT_TOOL
        value = _load(text)
        if isinstance(value, dict):
            return _dumps({**_pick(value, keep), "expired": True})
    return EXPIRED_JSON


def expired_error(text: str | None) -> str | None:
    """An error with its message and traceback removed: its `code` and `type` stay."""
    if text is None:
        return None
    value = _load(text)
    kept = _pick(value, _KEPT_ERROR) if isinstance(value, dict) else {}
    return _dumps({**kept, "expired": True})


def expired_detail(text: str | None) -> str | None:
    """A step's detail without the input it was called with (a tool call keeps its id and
    tool) and without its attempts' error messages (their codes and decisions stay)."""
    if text is None:
        return None
    value = _load(text)
    if not isinstance(value, dict):
        return EXPIRED_JSON
    detail = dict(value)
    recorded = detail.get("input")
    if "input" in detail:
        picked = _pick(recorded, _KEPT_CALL) if isinstance(recorded, dict) else {}
        detail["input"] = {**picked, "expired": True}
    attempts = detail.get("attempts")
    if isinstance(attempts, list):
        detail["attempts"] = [
            {k: v for k, v in entry.items() if k != "error"} if isinstance(entry, dict) else entry
            for entry in attempts
        ]
    # Unchanged (a timer's, a wait's detail): keep the text as it was, so it does not count.
    return text if detail == value else _dumps(detail)


# -- pruning --------------------------------------------------------------------------------------


def prune_finished_runs(run_ids: list[str], *, expired: bool) -> Script[dict[str, int]]:
    """Delete what these finished runs no longer need: consumed signals (all their signals when
    `expired`), settled budget reservations and run budget counters; when `expired`, also empty
    the arguments their decided approvals kept."""
    pruned: dict[str, int] = {}
    if not run_ids:
        return pruned
    marks = _marks(run_ids)
    consumed = "" if expired else " AND consumed_seq IS NOT NULL"
    signals = yield Statement(f"DELETE FROM signals WHERE run_id IN ({marks}){consumed}", run_ids)
    pruned["signals"] = signals.rowcount
    # Reservations are keyed `<run_id>:<seq>`: the range [`<run_id>:`, `<run_id>;`) holds a
    # run's own, and uses the primary key.
    total = 0
    for run_id in run_ids:
        reservations = yield Statement(
            "DELETE FROM budget_reservations WHERE reservation_id >= ? AND reservation_id < ?"
            " AND status <> 'reserved'",
            (f"{run_id}:", f"{run_id};"),
        )
        total += reservations.rowcount
    pruned["budget_reservations"] = total
    scopes = [f"run:{run_id}" for run_id in run_ids]
    counters = yield Statement(
        f"DELETE FROM budget_counters WHERE period = 'run' AND reserved = 0"
        f" AND scope IN ({_marks(scopes)})",
        scopes,
    )
    pruned["budget_counters"] = counters.rowcount
    if expired:
        approvals = yield Statement(
            "UPDATE approvals SET arguments = ?, edited_arguments = CASE WHEN edited_arguments"
            f" IS NULL THEN NULL ELSE ? END WHERE run_id IN ({marks}) AND status <> 'pending'"
            " AND arguments <> ?",
            (EXPIRED_JSON, EXPIRED_JSON, *run_ids, EXPIRED_JSON),
        )
        pruned["approvals"] = approvals.rowcount
    return pruned


def prune_history(
    tenant: str, *, before: float, batch_size: int = BATCH_SIZE, dry_run: bool = False
) -> Script[dict[str, int]]:
    """Delete (or, in a dry run, count) operational history older than `before`: at most
    `batch_size` breaker transitions, the `breakers` rows of workers that stopped publishing,
    and the tenant's daily budget counters."""
    day = dt.datetime.fromtimestamp(before, tz=dt.UTC).date().isoformat()
    targets = [
        ("breaker_transitions", "breaker_transitions WHERE at < ?", (before,)),
        ("breakers", "breakers WHERE updated_at < ?", (before,)),
        (
            "budget_counters",
            "budget_counters WHERE tenant = ? AND period <> 'run' AND period < ? AND reserved = 0",
            (tenant, day),
        ),
    ]
    pruned: dict[str, int] = {}
    for table, where, params in targets:
        if dry_run:
            counted = yield Statement(f"SELECT count(*) FROM {where}", params)
            pruned[table] = int(counted.scalar() or 0)
        elif table == "breaker_transitions":
            # Oldest first by id, a batch at a time: the first prune of a long history does
            # not hold the writer for long.
            deleted = yield Statement(
                "DELETE FROM breaker_transitions WHERE transition_id IN (SELECT transition_id"
                " FROM breaker_transitions WHERE at < ? ORDER BY transition_id LIMIT ?)",
                (before, batch_size),
            )
            pruned[table] = deleted.rowcount
        else:
            deleted = yield Statement(f"DELETE FROM {where}", params)
            pruned[table] = deleted.rowcount
    return pruned


def _mark_applied(
    run_ids: list[str], tenant: str, action: RetentionAction, *, now: float
) -> Script[None]:
    # Expiry supersedes redaction; redaction never downgrades an expiry.
    conflict = (
        "DO UPDATE SET action = 'expire', applied_at = excluded.applied_at"
        if action == "expire"
        else "DO NOTHING"
    )
    yield Statement(
        "INSERT INTO retention_applied (run_id, tenant, action, applied_at) VALUES (?, ?, ?, ?)"
        f" ON CONFLICT (run_id) {conflict}",
        [(run_id, tenant, action, now) for run_id in run_ids],
        many=True,
    )


def _mark_done(scope: _Scope) -> Script[None]:
    """Every due run has been processed: the next apply may start at the cut-off, or at the
    oldest run held back for its running parent, whichever is earlier."""
    where, params = scope.where(None, held=True)
    held = yield Statement(f"SELECT min(r.updated_at){where}", params)
    oldest_held = held.scalar()
    done = scope.cutoff if oldest_held is None else min(scope.cutoff, float(oldest_held))
    rule = scope.rule
    # Never backwards: a rule's days raised since do not re-open what was processed.
    yield Statement(
        "UPDATE retention_rules SET done_before = ? WHERE tenant = ? AND workflow = ?"
        " AND action = ? AND (done_before IS NULL OR done_before < ?)",
        (done, rule.tenant, rule.scope, rule.action, done),
    )


# -- applying -------------------------------------------------------------------------------------


async def apply_retention(
    store: Store,
    tenant: str,
    *,
    now: float,
    floor: int | None = None,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    redact: RedactRun | None = None,
    record: RecordBatch | None = None,
) -> RetentionReport:
    """Apply the tenant's retention rules to its finished runs, and prune old history.

    Expire rules run first (a run both expired and due for redaction is not redacted too).
    Each batch of at most `batch_size` runs is one transaction: payloads changed, per-run
    tables pruned, the runs marked as processed, and `record(batch)` (the CLI's audit entry)
    commit together.

    Args:
        store: An open store.
        tenant: Whose rules and runs.
        now: The current time (a `Clock`'s `now()`).
        floor: The retention floor in days (default: `floor_days()`).
        dry_run: Count what would change; change nothing.
        batch_size: Runs per transaction.
        redact: Redacts one run (required when the tenant has redact rules, unless `dry_run`).
        record: Called inside each batch's transaction, after its changes.

    Raises:
        UsageError: a redact rule without `redact`; a bad floor setting.
    """
    floor = floor_days() if floor is None else floor
    if batch_size < 1:
        raise UsageError(f"batch size must be 1 or more, not {batch_size}")
    rules = await store.read_script(lambda d: list_rules(tenant))
    rules.sort(key=lambda r: (ACTIONS.index(r.action), r.workflow is not None, r.workflow or ""))
    if not dry_run and redact is None and any(r.action == "redact" for r in rules):
        raise UsageError("the tenant has redact rules: apply_retention needs a `redact` function")
    report = RetentionReport(tenant=tenant, at=now, floor_days=floor, dry_run=dry_run)
    for rule in rules:
        report.rules.append(
            await _apply_rule(store, rule, rules, now, floor, dry_run, batch_size, redact, record)
        )
    report.history_cutoff = now - max(floor, HISTORY_MIN_DAYS) * DAY
    report.history_pruned = await _apply_history(
        store, tenant, report.history_cutoff, now, dry_run, batch_size, record
    )
    return report


async def _apply_rule(
    store: Store,
    rule: RetentionRule,
    rules: list[RetentionRule],
    now: float,
    floor: int,
    dry_run: bool,
    batch_size: int,
    redact: RedactRun | None,
    record: RecordBatch | None,
) -> RuleOutcome:
    others = tuple(
        sorted(r.scope for r in rules if r.action == rule.action and r.workflow is not None)
    )
    cutoff = rule.cutoff(now, floor_days=floor)
    since = await store.read_script(lambda d: _done_before(rule))
    scope = _Scope(rule, others, cutoff, since)
    outcome = RuleOutcome(rule, cutoff, raised_to_floor=rule.effective_days(floor) > rule.days)
    if dry_run:
        outcome.runs = await store.read_script(lambda d: _count_due(scope))
        return outcome
    after: tuple[float, str] | None = None
    while True:

        def batch(
            dialect: Dialect, after: tuple[float, str] | None = after
        ) -> Script[tuple[RetentionBatch, tuple[float, str] | None]]:
            due = yield from _due(scope, after, batch_size)
            run_ids = [run_id for run_id, _ in due]
            if rule.action == "expire":
                changed = yield from expire_runs(run_ids)
            else:
                assert redact is not None
                changed = 0
                for run_id in run_ids:
                    changed += yield from redact(run_id, dialect)
            pruned = yield from prune_finished_runs(run_ids, expired=rule.action == "expire")
            if run_ids:
                yield from _mark_applied(run_ids, rule.tenant, rule.action, now=now)
            done = RetentionBatch(rule.tenant, rule, cutoff, now, tuple(run_ids), changed, pruned)
            if run_ids and record is not None:
                yield from record(done, dialect)
            if len(due) < batch_size:
                yield from _mark_done(scope)
                return done, None
            return done, (due[-1][1], due[-1][0])

        done, after = await store.run_script(batch)
        if done.run_ids:
            outcome.batches += 1
            outcome.runs += len(done.run_ids)
            outcome.payloads_changed += done.payloads_changed
            for table, count in done.pruned.items():
                outcome.pruned[table] = outcome.pruned.get(table, 0) + count
        if after is None:
            return outcome


async def _apply_history(
    store: Store,
    tenant: str,
    cutoff: float,
    now: float,
    dry_run: bool,
    batch_size: int,
    record: RecordBatch | None,
) -> dict[str, int]:
    if dry_run:
        return await store.read_script(lambda d: prune_history(tenant, before=cutoff, dry_run=True))
    total: dict[str, int] = {}
    while True:

        def script(dialect: Dialect) -> Script[dict[str, int]]:
            pruned = yield from prune_history(tenant, before=cutoff, batch_size=batch_size)
            if any(pruned.values()) and record is not None:
                yield from record(RetentionBatch(tenant, None, cutoff, now, pruned=pruned), dialect)
            return pruned

        pruned = await store.run_script(script)
        for table, count in pruned.items():
            total[table] = total.get(table, 0) + count
        if pruned["breaker_transitions"] < batch_size:
            return total


def _done_before(rule: RetentionRule) -> Script[float | None]:
    found = yield Statement(
        "SELECT done_before FROM retention_rules WHERE tenant = ? AND workflow = ? AND action = ?",
        (rule.tenant, rule.scope, rule.action),
    )
    value = found.scalar()
    return None if value is None else float(value)


# -- helpers --------------------------------------------------------------------------------------


def _marks(values: Any) -> str:
    return ", ".join("?" for _ in values)


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _pick(value: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: value[key] for key in keys if key in value}


def _iso(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


__all__ = [
    "ACTIONS",
    "ALL_WORKFLOWS",
    "BATCH_SIZE",
    "DEFAULT_FLOOR_DAYS",
    "EXPIRED",
    "FLOOR_SETTING",
    "HISTORY_MIN_DAYS",
    "RecordBatch",
    "RedactRun",
    "RetentionAction",
    "RetentionBatch",
    "RetentionReport",
    "RetentionRule",
    "RuleOutcome",
    "apply_retention",
    "check_rule",
    "expire_runs",
    "expired_detail",
    "expired_error",
    "expired_result",
    "floor_days",
    "list_rules",
    "prune_finished_runs",
    "prune_history",
    "remove_rule",
    "set_rule",
]
