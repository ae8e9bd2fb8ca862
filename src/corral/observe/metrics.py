"""Metrics: what runs and steps did, per agent, tool and model, aggregated in SQL.

Every model and tool step in the journal is one observation: its outcome, its duration
(`finished_at - started_at`), and for a model step its tokens and cost. They are aggregated in
the database, never by loading journals:

- **tools** (steps `tool:<name>`): calls, failures, latency percentiles;
- **models** (model steps by the model that answered, or that failed): calls, failures,
  latency percentiles, tokens, cost;
- **agents**: runs of `agent:<name>` by outcome and their duration percentiles; the calls,
  tokens and cost of the agent's model steps (`model:<name>`, wherever it ran);
- **runs** by workflow and status, and **circuit breakers** as workers publish them.

Percentiles are exact nearest-rank ones (p50, p95, p99: the value at rank ⌈p·n⌉), computed with
window functions on both SQLite and PostgreSQL. Costs are priced from the aggregated tokens of
each (agent, model) at today's prices, as `n` calls of the average size (so a price tiered by
request size still applies per call); `corral costs` prices every call at its own time.

`render_prometheus` renders the same numbers in the Prometheus text format (the API serves it):
counters for calls, tokens and cost, summaries (with quantiles) for latencies, gauges for runs
by status and breaker states.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corral.models.messages import Usage
from corral.models.prices import cost_usd
from corral.store import FINISHED_STATUSES, Store
from corral.store.scripts import Dialect, Script, Statement

QUANTILES = (0.5, 0.95, 0.99)
BREAKER_STATES = ("closed", "open", "half_open")
UNKNOWN_MODEL = "unknown"
"""The model of a model step that failed without naming the model it called."""


@dataclass(frozen=True)
class Latency:
    """Durations (seconds) of finished calls or runs: count, sum, percentiles, maximum."""

    count: int
    total: float
    p50: float
    p95: float
    p99: float
    max: float

    def quantile(self, q: float) -> float:
        return {0.5: self.p50, 0.95: self.p95, 0.99: self.p99}[q]


@dataclass(frozen=True)
class ToolMetrics:
    """Calls of one tool (steps `tool:<name>`)."""

    tool: str
    calls: int
    failures: int
    latency: Latency | None

    @property
    def error_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class ModelUsage:
    """The model calls of one agent on one model: the unit tokens and cost are counted in."""

    agent: str
    model: str
    calls: int
    failures: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    """None: the model's price is unknown (its tokens count, its dollars do not)."""


@dataclass(frozen=True)
class ModelMetrics:
    """Calls answered by (or failed on) one model, across agents."""

    model: str
    calls: int
    failures: int
    latency: Latency | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None

    @property
    def error_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class AgentMetrics:
    """One agent: its runs (`agent:<name>`) and its model calls."""

    agent: str
    runs: int
    """Runs of the agent, in any status."""
    finished_runs: int
    failed_runs: int
    """Runs that failed (status `failed` or `needs_reconciliation`)."""
    run_latency: Latency | None
    """How long its finished runs took, from creation to their end."""
    model_calls: int
    model_failures: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    """What its priced model calls cost."""
    unpriced_calls: int

    @property
    def error_rate(self) -> float:
        return self.failed_runs / self.finished_runs if self.finished_runs else 0.0


@dataclass(frozen=True)
class RunCount:
    workflow: str
    status: str
    runs: int


@dataclass(frozen=True)
class BreakerMetrics:
    """One worker's circuit breaker for one dependency, as last published."""

    worker: str
    dependency: str
    state: str
    since: float
    calls: int
    failures: int
    opened_count: int
    updated_at: float


@dataclass(frozen=True)
class Metrics:
    """Everything `corral metrics` shows and `render_prometheus` exposes."""

    since: float | None
    tenant: str | None
    agents: list[AgentMetrics]
    tools: list[ToolMetrics]
    models: list[ModelMetrics]
    usage: list[ModelUsage]
    runs: list[RunCount]
    breakers: list[BreakerMetrics]


async def collect_metrics(
    store: Store, *, since: float | None = None, tenant: str | None = None
) -> Metrics:
    """Aggregate the journal's steps and runs (and the published breakers) into metrics.

    Args:
        store: The store to read.
        since: Only steps that finished, and runs updated, at or after this time (seconds since
            the epoch); by default everything.
        tenant: Only this tenant's runs and steps; by default every tenant's. (Breakers belong
            to workers, not tenants: they are always all shown.)
    """
    return await store.read_script(lambda dialect: _collect(since, tenant, dialect))


async def render_prometheus(
    store: Store, *, since: float | None = None, tenant: str | None = None
) -> str:
    """The metrics in the Prometheus text exposition format (`collect_metrics`' arguments)."""
    return prometheus_text(await collect_metrics(store, since=since, tenant=tenant))


def prometheus_text(metrics: Metrics) -> str:
    """`metrics` in the Prometheus text exposition format, from a fresh registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(_families(metrics)))
    return generate_latest(registry).decode()


# -- queries -----------------------------------------------------------------------------------


def _collect(since: float | None, tenant: str | None, dialect: Dialect) -> Script[Metrics]:
    base, params = _step_rows(since, tenant, dialect)
    sums = yield Statement(
        "SELECT category, subject, model, COUNT(*), SUM(failed), SUM(input_tokens),"
        " SUM(output_tokens)"
        f" FROM ({base}) b GROUP BY category, subject, model",
        params,
    )
    tool_latency = yield from _latencies(
        f"SELECT subject AS k, duration AS d FROM ({base}) b WHERE category = 'tool'", params
    )
    model_latency = yield from _latencies(
        f"SELECT model AS k, duration AS d FROM ({base}) b WHERE category = 'model'", params
    )
    run_where, run_params = _run_filter(since, tenant)
    finished = sorted(FINISHED_STATUSES)
    marks = ", ".join("?" for _ in finished)
    agent_latency = yield from _latencies(
        "SELECT substr(workflow, 7) AS k, updated_at - created_at AS d FROM runs"
        f" WHERE substr(workflow, 1, 6) = 'agent:' AND status IN ({marks}){run_where}",
        (*finished, *run_params),
    )
    counts = yield Statement(
        "SELECT workflow, status, COUNT(*) FROM runs"
        f" WHERE 1 = 1{run_where} GROUP BY workflow, status ORDER BY workflow, status",
        run_params,
    )
    breakers = yield Statement(
        "SELECT worker, dependency, state, since, calls, failures, opened_count, updated_at"
        " FROM breakers ORDER BY dependency, worker"
    )
    tools: list[ToolMetrics] = []
    usage: list[ModelUsage] = []
    for category, subject, model, calls, failures, input_tokens, output_tokens in sums.rows:
        if category == "tool":
            tools.append(
                ToolMetrics(str(subject), int(calls), int(failures), tool_latency.get(subject))
            )
            continue
        name = str(model) if model is not None else UNKNOWN_MODEL
        answered_in, answered_out = int(input_tokens or 0), int(output_tokens or 0)
        usage.append(
            ModelUsage(
                agent=str(subject),
                model=name,
                calls=int(calls),
                failures=int(failures),
                input_tokens=answered_in,
                output_tokens=answered_out,
                cost_usd=_price(name, int(calls) - int(failures), answered_in, answered_out),
            )
        )
    run_counts = [RunCount(str(w), str(s), int(n)) for w, s, n in counts.rows]
    return Metrics(
        since=since,
        tenant=tenant,
        agents=_agents(usage, run_counts, agent_latency),
        tools=sorted(tools, key=lambda t: t.tool),
        models=_models(usage, model_latency),
        usage=sorted(usage, key=lambda u: (u.agent, u.model)),
        runs=run_counts,
        breakers=[
            BreakerMetrics(
                worker=str(row[0]),
                dependency=str(row[1]),
                state=str(row[2]),
                since=float(row[3]),
                calls=int(row[4]),
                failures=int(row[5]),
                opened_count=int(row[6]),
                updated_at=float(row[7]),
            )
            for row in breakers.rows
        ],
    )


def _step_rows(
    since: float | None, tenant: str | None, dialect: Dialect
) -> tuple[str, tuple[Any, ...]]:
    """The finished model and tool steps as rows (category, subject, model, failed, duration,
    input_tokens, output_tokens): the subquery every step aggregate reads."""
    is_model = "substr(s.name, 1, 6) = 'model:'"
    model = (
        f"COALESCE({_json('s.result', ('model',), dialect)},"
        f" {_json('s.error', ('model',), dialect)})"
    )
    tokens = {
        side: f"CAST({_json('s.result', ('usage', side), dialect)} AS BIGINT)"
        for side in ("input_tokens", "output_tokens")
    }
    where = [
        "s.kind = 'step'",
        "s.status <> 'started'",
        f"({is_model} OR substr(s.name, 1, 5) = 'tool:')",
    ]
    params: list[Any] = []
    source = "steps s"
    if since is not None:
        where.append("s.finished_at >= ?")
        params.append(since)
    if tenant is not None:
        source = "steps s JOIN runs r ON r.run_id = s.run_id"
        where.append("r.tenant = ?")
        params.append(tenant)
    sql = (
        f"SELECT CASE WHEN {is_model} THEN 'model' ELSE 'tool' END AS category,"
        f" CASE WHEN {is_model} THEN substr(s.name, 7) ELSE substr(s.name, 6) END AS subject,"
        f" CASE WHEN {is_model} THEN {model} END AS model,"
        " CASE WHEN s.status = 'failed' THEN 1 ELSE 0 END AS failed,"
        " s.finished_at - s.started_at AS duration,"
        f" {tokens['input_tokens']} AS input_tokens,"
        f" {tokens['output_tokens']} AS output_tokens"
        f" FROM {source} WHERE {' AND '.join(where)}"
    )
    return sql, tuple(params)


def _run_filter(since: float | None, tenant: str | None) -> tuple[str, tuple[Any, ...]]:
    where = ""
    params: list[Any] = []
    if since is not None:
        where += " AND updated_at >= ?"
        params.append(since)
    if tenant is not None:
        where += " AND tenant = ?"
        params.append(tenant)
    return where, tuple(params)


def _latencies(rows: str, params: Sequence[Any]) -> Script[dict[Any, Latency]]:
    """Count, sum, nearest-rank percentiles and maximum of `d` for each key `k` of `rows`."""
    ranks = ", ".join(
        f"MAX(CASE WHEN rn = ({round(q * 100)} * n + 99) / 100 THEN d END)" for q in QUANTILES
    )
    result = yield Statement(
        f"WITH b AS ({rows}), r AS (SELECT k, d,"
        " ROW_NUMBER() OVER (PARTITION BY k ORDER BY d) AS rn,"
        " COUNT(*) OVER (PARTITION BY k) AS n FROM b)"
        f" SELECT k, COUNT(*), SUM(d), {ranks}, MAX(d) FROM r GROUP BY k",
        tuple(params),
    )
    return {
        row[0]: Latency(
            count=int(row[1]),
            total=float(row[2]),
            p50=float(row[3]),
            p95=float(row[4]),
            p99=float(row[5]),
            max=float(row[6]),
        )
        for row in result.rows
    }


def _json(column: str, path: tuple[str, ...], dialect: Dialect) -> str:
    """SQL for the text (or number) at `path` in a JSON payload column; NULL if the payload is
    missing or not a JSON object (a redacted or failed step's)."""
    if dialect == "sqlite":
        return (
            f"(CASE WHEN json_valid({column}) THEN json_extract({column}, '$.{'.'.join(path)}')"
            " END)"
        )
    pointer = "'{" + ",".join(path) + "}'"
    return f"(CASE WHEN substr({column}, 1, 1) = '{{' THEN ({column}::jsonb #>> {pointer}) END)"


# -- shaping -----------------------------------------------------------------------------------


def _price(model: str, calls: int, input_tokens: int, output_tokens: int) -> float | None:
    """What `calls` calls with these tokens in all cost, priced as calls of the average size."""
    if calls <= 0 or (input_tokens == 0 and output_tokens == 0):
        return 0.0 if cost_usd(model, Usage()) is not None else None
    each_in, rest_in = divmod(input_tokens, calls)
    each_out, rest_out = divmod(output_tokens, calls)
    each = cost_usd(model, Usage(input_tokens=each_in, output_tokens=each_out))
    rest = cost_usd(model, Usage(input_tokens=rest_in, output_tokens=rest_out))
    if each is None or rest is None:
        return None
    return calls * each + rest


def _agents(
    usage: list[ModelUsage], runs: list[RunCount], latency: dict[Any, Latency]
) -> list[AgentMetrics]:
    names = {u.agent for u in usage} | {
        r.workflow.removeprefix("agent:") for r in runs if r.workflow.startswith("agent:")
    }
    agents = []
    for name in sorted(names):
        own = [u for u in usage if u.agent == name]
        counts = {r.status: r.runs for r in runs if r.workflow == f"agent:{name}"}
        agents.append(
            AgentMetrics(
                agent=name,
                runs=sum(counts.values()),
                finished_runs=sum(counts.get(s, 0) for s in FINISHED_STATUSES),
                failed_runs=counts.get("failed", 0) + counts.get("needs_reconciliation", 0),
                run_latency=latency.get(name),
                model_calls=sum(u.calls for u in own),
                model_failures=sum(u.failures for u in own),
                input_tokens=sum(u.input_tokens for u in own),
                output_tokens=sum(u.output_tokens for u in own),
                cost_usd=sum(u.cost_usd or 0.0 for u in own),
                unpriced_calls=sum(u.calls - u.failures for u in own if u.cost_usd is None),
            )
        )
    return agents


def _models(usage: list[ModelUsage], latency: dict[Any, Latency]) -> list[ModelMetrics]:
    by_model: dict[str, list[ModelUsage]] = defaultdict(list)
    for row in usage:
        by_model[row.model].append(row)
    models = []
    for name in sorted(by_model):
        rows = by_model[name]
        costs = [r.cost_usd for r in rows]
        models.append(
            ModelMetrics(
                model=name,
                calls=sum(r.calls for r in rows),
                failures=sum(r.failures for r in rows),
                latency=latency.get(None if name == UNKNOWN_MODEL else name),
                input_tokens=sum(r.input_tokens for r in rows),
                output_tokens=sum(r.output_tokens for r in rows),
                cost_usd=None if any(c is None for c in costs) else sum(c or 0.0 for c in costs),
            )
        )
    return models


# -- Prometheus --------------------------------------------------------------------------------


class _Families(Collector):
    """A collector handing out metric families computed beforehand."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def _families(metrics: Metrics) -> list[Metric]:
    runs = GaugeMetricFamily(
        "corral_runs", "Runs by workflow and status.", labels=["workflow", "status"]
    )
    for count in metrics.runs:
        runs.add_metric([count.workflow, count.status], count.runs)

    model_calls = CounterMetricFamily(
        "corral_model_calls",
        "Model calls by agent, model and outcome.",
        labels=["agent", "model", "outcome"],
    )
    tokens = CounterMetricFamily(
        "corral_model_tokens",
        "Tokens of model calls by agent, model and type (input, output).",
        labels=["agent", "model", "type"],
    )
    cost = CounterMetricFamily(
        "corral_model_cost_usd",
        "What model calls cost, in USD, by agent and model (models with a known price).",
        labels=["agent", "model"],
    )
    for row in metrics.usage:
        labels = [row.agent, row.model]
        model_calls.add_metric([*labels, "succeeded"], row.calls - row.failures)
        model_calls.add_metric([*labels, "failed"], row.failures)
        tokens.add_metric([*labels, "input"], row.input_tokens)
        tokens.add_metric([*labels, "output"], row.output_tokens)
        if row.cost_usd is not None:
            cost.add_metric(labels, row.cost_usd)

    tool_calls = CounterMetricFamily(
        "corral_tool_calls", "Tool calls by tool and outcome.", labels=["tool", "outcome"]
    )
    for tool in metrics.tools:
        tool_calls.add_metric([tool.tool, "succeeded"], tool.calls - tool.failures)
        tool_calls.add_metric([tool.tool, "failed"], tool.failures)

    families: list[Metric] = [runs, model_calls, tokens, cost, tool_calls]
    families.append(
        _summary(
            "corral_agent_run_duration_seconds",
            "How long an agent's finished runs took.",
            "agent",
            [(a.agent, a.run_latency) for a in metrics.agents],
        )
    )
    families.append(
        _summary(
            "corral_model_call_duration_seconds",
            "How long model calls (model steps) took, by model.",
            "model",
            [(m.model, m.latency) for m in metrics.models],
        )
    )
    families.append(
        _summary(
            "corral_tool_call_duration_seconds",
            "How long tool calls (tool steps) took, by tool.",
            "tool",
            [(t.tool, t.latency) for t in metrics.tools],
        )
    )
    families.extend(_breaker_families(metrics.breakers))
    return families


def _summary(
    name: str, documentation: str, label: str, rows: list[tuple[str, Latency | None]]
) -> Metric:
    summary = Metric(name, documentation, "summary")
    for value, latency in rows:
        if latency is None:
            continue
        for q in QUANTILES:
            summary.add_sample(name, {label: value, "quantile": str(q)}, latency.quantile(q))
        summary.add_sample(f"{name}_count", {label: value}, latency.count)
        summary.add_sample(f"{name}_sum", {label: value}, latency.total)
    return summary


def _breaker_families(breakers: list[BreakerMetrics]) -> list[Metric]:
    labels = ["worker", "dependency"]
    state = GaugeMetricFamily(
        "corral_breaker_state",
        "Circuit breaker state per worker and dependency: 1 for its current state.",
        labels=[*labels, "state"],
    )
    calls = GaugeMetricFamily(
        "corral_breaker_calls", "Calls in the breaker's current window.", labels=labels
    )
    failures = GaugeMetricFamily(
        "corral_breaker_failures", "Failed calls in the breaker's current window.", labels=labels
    )
    opened = CounterMetricFamily(
        "corral_breaker_opened", "How many times the breaker has opened.", labels=labels
    )
    for breaker in breakers:
        key = [breaker.worker, breaker.dependency]
        for name in BREAKER_STATES:
            state.add_metric([*key, name], 1.0 if breaker.state == name else 0.0)
        calls.add_metric(key, breaker.calls)
        failures.add_metric(key, breaker.failures)
        opened.add_metric(key, breaker.opened_count)
    return [state, calls, failures, opened]


__all__ = [
    "AgentMetrics",
    "BreakerMetrics",
    "Latency",
    "Metrics",
    "ModelMetrics",
    "ModelUsage",
    "RunCount",
    "ToolMetrics",
    "collect_metrics",
    "prometheus_text",
    "render_prometheus",
]
