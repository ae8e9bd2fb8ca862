"""`corral runs search QUERY`, `corral runs index`: full-text search across runs' journals.

The search itself is `corral.observe.search`; this module parses the filters (`--since 1d`),
checks the viewer role in the tenant searched, and prints the hits: a table with the matched
words highlighted, or `--json`. Snippets go through the same redaction as every payload the CLI
prints (CORRAL_REDACT).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from corral.cli.display import console, status_text, when
from corral.cli.exits import reporting_errors
from corral.cli.reading import parse_moment, reading
from corral.cli.remote import timestamp
from corral.cli.session import Settings, run_async
from corral.cli.shapes import dumps, iso, output_redactor
from corral.observe.indexer import index_once
from corral.observe.search import MATCH_END, MATCH_START, SearchHit, search_runs
from corral.store import RUN_STATUSES, Store

SEARCH_EPILOG = """\
Examples:

  corral runs search "refund declined" --agent refunds --since 1d

  corral runs search "timeout OR unavailable" --tool lookup_order --status failed

  corral runs search '"order A-1" -shipped' --since 2026-11-01 --until 2026-11-15 --json

Searched: run inputs and results, model answers, tool arguments and values, and errors. Words
must all appear (stemmed: refunds finds refunded); "a phrase" as written; a OR b; -word
excludes. The newest matching runs come first, each with the step that matched best. Needs the
viewer role once the tenant has principals.
"""

INDEX_EPILOG = """\
Examples:

  corral runs index

  */5 * * * *  corral runs index   # cron: keep the search index current

A search indexes what was journaled since the last index first; running this periodically
(or after `corral db migrate` on a large database) keeps searches fast.
"""


T = TypeVar("T")
Redact = Callable[[str], str]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _check_status(value: str | None) -> str | None:
    if value is not None and value not in RUN_STATUSES:
        raise typer.BadParameter(
            f"unknown status {value!r}; valid statuses: {', '.join(RUN_STATUSES)}"
        )
    return value


def search_command(
    ctx: typer.Context,
    query: Annotated[
        str,
        typer.Argument(
            metavar="QUERY", help='Words, "phrases", OR, -excluded.', show_default=False
        ),
    ],
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent", metavar="NAME", help="Only runs of this agent.", show_default=False
        ),
    ] = None,
    tool: Annotated[
        str | None,
        typer.Option(
            "--tool", metavar="NAME", help="Only runs that called this tool.", show_default=False
        ),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            "-s",
            metavar="STATUS",
            callback=_check_status,
            help=f"Only runs in this status: {', '.join(RUN_STATUSES)}.",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="WHEN",
            help="Only runs created since: 30m, 6h, 1d, 2w ago, or an ISO date/time.",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            metavar="WHEN",
            help="Only runs created until: a duration ago or an ISO date/time.",
            show_default=False,
        ),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            metavar="TENANT",
            help="Search this tenant (default: the global --tenant).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="At most this many runs.")
    ] = 20,
    json_output: JsonOption = False,
) -> None:
    """Search runs' journals (inputs, outputs, tool arguments, errors); newest runs first."""
    settings = Settings.of(ctx).in_tenant(tenant)
    searched = settings.tenant
    now = time.time()
    with reporting_errors():
        start = None if since is None else parse_moment(since, option="--since", now=now)
        end = None if until is None else parse_moment(until, option="--until", now=now)

    async def find(store: Store) -> list[SearchHit]:
        return await search_runs(
            store,
            query,
            tenant=searched,
            agent=agent,
            tool=tool,
            status=status,
            since=start,
            until=end,
            limit=limit,
        )

    if settings.server is not None:
        query_params: dict[str, Any] = {"q": query, "agent": agent, "tool": tool, "status": status}
        query_params |= {"since": since, "until": until, "limit": min(limit, 100)}
        with reporting_errors(), settings.remote() as remote:
            answers = remote.get("/search", query_params)["hits"]
        hits = [_hit_of(answer) for answer in answers]
        searched = "(the key's tenant)"
    else:
        hits = run_async(lambda: reading(settings, "search runs", find, tenant=searched))
    redactor = output_redactor()
    if json_output:
        found = [_hit_json(hit, redactor.redact_text) for hit in hits]
        typer.echo(dumps({"tenant": searched, "query": query, "hits": found}))
        return
    if not hits:
        typer.echo(f"no runs of tenant {searched!r} match {query!r}", err=True)
        return
    console().print(_hits_table(hits, redactor.redact_text))


def index_command(
    ctx: typer.Context,
    json_output: JsonOption = False,
) -> None:
    """Bring the search index and the cost roll-up (hours and days) up to date with the journal.

    Searches and cost reports do this themselves before they answer, and a running `corral
    server` does it every 5 s. Run it after migrating a database with history, or where no
    server runs, so that the first search or report answers at once.
    """
    settings = Settings.of(ctx)
    started = time.perf_counter()

    done = run_async(lambda: reading(settings, "index runs for search", index_once))
    elapsed = time.perf_counter() - started
    indexed, hours = done.changes, done.cost_hours
    if json_output:
        typer.echo(dumps({"indexed": indexed, "cost_hours": hours, "seconds": round(elapsed, 3)}))
        return
    typer.echo(f"indexed {indexed} change(s), summed {hours} hour(s) of costs in {elapsed:.2f}s")


def _hit_of(answer: dict[str, Any]) -> SearchHit:
    """A hit of the API (remote mode) as `search_runs` returns it."""
    return SearchHit(
        run_id=answer["run_id"],
        tenant="",
        workflow=answer["workflow"],
        status=answer["status"],
        created_at=timestamp(answer["created_at"]) or 0.0,
        seq=answer.get("seq"),
        step_name=answer.get("step_name"),
        field=answer["field"],
        snippet=answer["snippet"],
    )


def _hit_json(hit: SearchHit, redact: Redact) -> dict[str, Any]:
    return {
        "run_id": hit.run_id,
        "tenant": hit.tenant,
        "workflow": hit.workflow,
        "status": hit.status,
        "created_at": iso(hit.created_at),
        "seq": hit.seq,
        "step_name": hit.step_name,
        "field": hit.field,
        "snippet": redact(hit.snippet),
    }


def highlighted(snippet: str) -> Text:
    """A snippet as rich text, its matched words in bold (markers dropped; never markup)."""
    text = Text()
    for index, part in enumerate(re.split(f"{MATCH_START}|{MATCH_END}", snippet)):
        text.append(part, style="bold yellow" if index % 2 else "")
    return text


def _hits_table(hits: list[SearchHit], redact: Redact) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("run", no_wrap=True)
    table.add_column("workflow", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("matched", overflow="fold")
    table.add_column("snippet", overflow="fold")
    for hit in hits:
        table.add_row(
            Text(hit.run_id),
            Text(hit.workflow),
            status_text(hit.status),
            Text(when(hit.created_at)),
            Text(hit.where),
            highlighted(redact(hit.snippet)),
        )
    return table


def register(app: typer.Typer, runs_app: typer.Typer) -> None:
    """Add `corral runs search` and `corral runs index`."""
    del app  # both commands belong under `runs`
    runs_app.command("search", epilog=SEARCH_EPILOG)(search_command)
    runs_app.command("index", epilog=INDEX_EPILOG)(index_command)
