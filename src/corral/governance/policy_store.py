"""Versioned policies in the store: apply, list, show, roll back, and load the active set.

Each `apply` of a changed document adds a version (1, 2, 3, …) of the policy with that name in
the tenant; applying the same text again adds nothing. A rollback adds a new version holding an
old version's text (`restored_from` says which), so history only grows and every version that
was ever active can be shown and diffed. The latest version of each policy is the active one.

Every change is audited in the transaction that makes it (`policy.applied`,
`policy.rolled_back`), so the audit log and the policies table cannot disagree. A document is
parsed and checked before anything is written: a bad document changes nothing and the active
version stays.
"""

from __future__ import annotations

import difflib
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, TypeVar

from corral.errors import PolicyNotFound as PolicyNotFound
from corral.errors import UsageError
from corral.governance import audit
from corral.governance.documents import PolicyDocument
from corral.governance.policies import PolicySet, parse_policy
from corral.store import Store
from corral.store.scripts import Dialect, Script, Statement

K = TypeVar("K")
V = TypeVar("V")

_CONFLICT_ATTEMPTS = 5
_CACHE_SIZE = 256


class _VersionTaken(Exception):
    """Another writer added the same version first (PostgreSQL, concurrent applies): retry."""


@dataclass(frozen=True)
class AppliedPolicy:
    """The outcome of an apply or rollback: the active version, and whether it is new."""

    name: str
    version: int
    changed: bool


@dataclass(frozen=True)
class PolicySummary:
    """A policy's active (latest) version, for `corral policy list`."""

    name: str
    version: int
    versions: int
    """How many versions exist (rollbacks included)."""
    digest: str
    created_at: float
    created_by: str
    restored_from: int | None
    description: str


@dataclass(frozen=True)
class StoredPolicy:
    """One version of a policy as stored: its YAML text exactly as applied."""

    name: str
    version: int
    document: str
    digest: str
    created_at: float
    created_by: str
    restored_from: int | None
    latest_version: int


@dataclass(frozen=True)
class PolicyVersion:
    """One version of a policy as listed (`list_versions`): who made it when, not its text."""

    name: str
    version: int
    digest: str
    created_at: float
    created_by: str
    restored_from: int | None


def digest_of(text: str) -> str:
    """The sha256 of a document's text: an unchanged apply is recognised by it."""
    return hashlib.sha256(text.encode()).hexdigest()


# -- changes ----------------------------------------------------------------------------------


async def apply_policy(
    store: Store, tenant: str, text: str, *, source: str, actor: str, now: float
) -> AppliedPolicy:
    """Parse, check and store a policy document as the next version of its name.

    Args:
        store: an open store.
        tenant: whose policy it is.
        text: the YAML document.
        source: where the text came from, for error messages (a file name).
        actor: who applies it (`human:ada`), recorded on the version and in the audit log.
        now: the time of the change (seconds since the epoch).

    Returns:
        The active version; `changed=False` if the same text was already active.

    Raises:
        PolicyError: the document is invalid (file, line, reason); nothing is written.
    """
    document = parse_policy(text, source=source)
    return await _store_version(
        store,
        tenant,
        document.name,
        text,
        actor=actor,
        now=now,
        restored_from=None,
        source=source,
    )


async def rollback_policy(
    store: Store, tenant: str, name: str, version: int, *, actor: str, now: float
) -> AppliedPolicy:
    """Make version `version` of policy `name` active again, as a new version with its text.

    Rolling back to the text that is already active changes nothing (`changed=False`).

    Raises:
        PolicyNotFound: no such policy or version (the message lists what exists).
        PolicyError: the old text no longer parses with this Corral (nothing is written).
    """
    old = await get_policy(store, tenant, name, version)
    parse_policy(old.document, source=f"{name}@v{version}")
    return await _store_version(
        store,
        tenant,
        name,
        old.document,
        actor=actor,
        now=now,
        restored_from=version,
        source=f"{name}@v{version}",
    )


async def _store_version(
    store: Store,
    tenant: str,
    name: str,
    text: str,
    *,
    actor: str,
    now: float,
    restored_from: int | None,
    source: str,
) -> AppliedPolicy:
    digest = digest_of(text)

    def script(dialect: Dialect) -> Script[AppliedPolicy]:
        lock = " FOR UPDATE" if dialect == "postgresql" else ""
        latest = yield Statement(
            "SELECT version, digest FROM policies WHERE tenant = ? AND name = ?"
            f" ORDER BY version DESC LIMIT 1{lock}",
            (tenant, name),
        )
        row = latest.one()
        if row is not None and row[1] == digest:
            return AppliedPolicy(name=name, version=int(row[0]), changed=False)
        version = 1 if row is None else int(row[0]) + 1
        inserted = yield Statement(
            "INSERT INTO policies (tenant, name, version, document, digest, created_at,"
            " created_by, restored_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (tenant, name, version) DO NOTHING",
            (tenant, name, version, text, digest, now, actor, restored_from),
        )
        if inserted.rowcount != 1:
            raise _VersionTaken()
        decision: dict[str, object] = {"policy": name, "version": version, "digest": digest}
        if restored_from is None:
            decision["source"] = source
        else:
            decision["restored_from"] = restored_from
        yield from audit.append(
            tenant,
            audit.AuditEntry(
                kind="policy.applied" if restored_from is None else "policy.rolled_back",
                actor=actor,
                subject=f"policy:{name}@{version}",
                decision=decision,
            ),
            at=now,
            dialect=dialect,
        )
        return AppliedPolicy(name=name, version=version, changed=True)

    # The row lock above serialises changes to an existing policy; two first applies of a new
    # name race on the insert, and the loser (which wrote nothing) simply tries again.
    for _ in range(_CONFLICT_ATTEMPTS - 1):
        try:
            return await store.run_script(script)
        except _VersionTaken:
            continue
    try:
        return await store.run_script(script)
    except _VersionTaken:
        raise UsageError(
            f"policy {name!r} is being changed by others at the same time; apply it again",
            tenant=tenant,
            policy=name,
        ) from None


# -- reading ----------------------------------------------------------------------------------

_LATEST = (
    "SELECT p.name, p.version, p.document, p.digest, p.created_at, p.created_by,"
    " p.restored_from, (SELECT count(*) FROM policies c WHERE c.tenant = p.tenant"
    " AND c.name = p.name) FROM policies p WHERE p.tenant = ? AND p.version ="
    " (SELECT max(q.version) FROM policies q WHERE q.tenant = p.tenant AND q.name = p.name)"
    " ORDER BY p.name"
)


async def list_policies(store: Store, tenant: str) -> list[PolicySummary]:
    """The tenant's policies at their active (latest) versions, by name."""

    def script(dialect: Dialect) -> Script[list[tuple[Any, ...]]]:
        result = yield Statement(_LATEST, (tenant,))
        return list(result.rows)

    rows = await store.read_script(script)
    summaries = []
    for name, version, text, digest, created_at, created_by, restored, count in rows:
        try:
            description = _parsed(str(text), str(digest), f"{name}@v{version}").description
        except UsageError:  # stored by another Corral version: still listed
            description = "(does not parse with this Corral version)"
        summaries.append(
            PolicySummary(
                name=str(name),
                version=int(version),
                versions=int(count),
                digest=str(digest),
                created_at=float(created_at),
                created_by=str(created_by),
                restored_from=None if restored is None else int(restored),
                description=description,
            )
        )
    return summaries


async def get_policy(
    store: Store, tenant: str, name: str, version: int | None = None
) -> StoredPolicy:
    """One version of a policy (the active one when `version` is None).

    Raises:
        PolicyNotFound: naming the policies or versions that do exist.
    """

    def script(dialect: Dialect) -> Script[tuple[list[tuple[Any, ...]], list[str]]]:
        versions = yield Statement(
            "SELECT version, document, digest, created_at, created_by, restored_from"
            " FROM policies WHERE tenant = ? AND name = ? ORDER BY version",
            (tenant, name),
        )
        names: list[str] = []
        if not versions.rows:
            names = yield from _policy_names(tenant)
        return list(versions.rows), names

    rows, names = await store.read_script(script)
    if not rows:
        raise _no_policy(tenant, name, names, version)
    latest = int(rows[-1][0])
    chosen = rows[-1] if version is None else next((r for r in rows if r[0] == version), None)
    if chosen is None:
        raise PolicyNotFound(
            f"policy {name!r} has no version {version}; its versions are 1 to {latest}",
            tenant=tenant,
            policy=name,
            version=version,
        )
    number, text, digest, created_at, created_by, restored = chosen
    return StoredPolicy(
        name=name,
        version=int(number),
        document=str(text),
        digest=str(digest),
        created_at=float(created_at),
        created_by=str(created_by),
        restored_from=None if restored is None else int(restored),
        latest_version=latest,
    )


async def list_versions(store: Store, tenant: str, name: str) -> list[PolicyVersion]:
    """Every version of policy `name`, oldest first (the last is the active one).

    Raises:
        PolicyNotFound: the tenant has no such policy (naming those it has).
    """

    def script(dialect: Dialect) -> Script[tuple[list[tuple[Any, ...]], list[str]]]:
        versions = yield Statement(
            "SELECT version, digest, created_at, created_by, restored_from"
            " FROM policies WHERE tenant = ? AND name = ? ORDER BY version",
            (tenant, name),
        )
        names: list[str] = []
        if not versions.rows:
            names = yield from _policy_names(tenant)
        return list(versions.rows), names

    rows, names = await store.read_script(script)
    if not rows:
        raise _no_policy(tenant, name, names, None)
    return [
        PolicyVersion(
            name=name,
            version=int(number),
            digest=str(digest),
            created_at=float(created_at),
            created_by=str(created_by),
            restored_from=None if restored is None else int(restored),
        )
        for number, digest, created_at, created_by, restored in rows
    ]


def _policy_names(tenant: str) -> Script[list[str]]:
    result = yield Statement(
        "SELECT DISTINCT name FROM policies WHERE tenant = ? ORDER BY name", (tenant,)
    )
    return [str(row[0]) for row in result.rows]


def _no_policy(tenant: str, name: str, names: list[str], version: int | None) -> PolicyNotFound:
    existing = ", ".join(names) if names else "none yet (apply one with `corral policy apply`)"
    return PolicyNotFound(
        f"no policy {name!r} in tenant {tenant!r}; its policies: {existing}",
        tenant=tenant,
        policy=name,
        version=version,
    )


async def load_policy_set(store: Store, tenant: str) -> PolicySet:
    """The tenant's active policies (the latest version of each), ready to decide.

    Parsed documents and built sets are cached by digest, so a worker reads a few rows per call
    but parses and compiles only when a policy changed.

    Raises:
        PolicyError: an active document no longer parses (callers deny: fail-closed).
    """

    def script(dialect: Dialect) -> Script[list[tuple[str, int, str]]]:
        result = yield Statement(
            "SELECT p.name, p.version, p.digest FROM policies p WHERE p.tenant = ? AND"
            " p.version = (SELECT max(q.version) FROM policies q WHERE q.tenant = p.tenant"
            " AND q.name = p.name) ORDER BY p.name",
            (tenant,),
        )
        return [(str(row[0]), int(row[1]), str(row[2])) for row in result.rows]

    active = tuple(await store.read_script(script))
    if not active:
        return _EMPTY
    key = (tenant, active)
    cached = _sets.get(key)
    if cached is not None:
        _sets.move_to_end(key)
        return cached
    missing = [
        (name, version, digest) for name, version, digest in active if digest not in _documents
    ]
    texts: dict[str, str] = {}
    if missing:
        texts = await store.read_script(lambda d: _documents_by_digest(tenant, missing))
    documents = [
        (_parsed(texts.get(digest, ""), digest, f"{name}@v{version}"), version)
        for name, version, digest in active
    ]
    policy_set = PolicySet(documents)
    _remember(_sets, key, policy_set)
    return policy_set


def _documents_by_digest(tenant: str, wanted: list[tuple[str, int, str]]) -> Script[dict[str, str]]:
    texts: dict[str, str] = {}
    for name, version, digest in wanted:
        result = yield Statement(
            "SELECT document FROM policies WHERE tenant = ? AND name = ? AND version = ?",
            (tenant, name, version),
        )
        texts[digest] = str(result.scalar())
    return texts


_EMPTY = PolicySet()
_documents: OrderedDict[str, PolicyDocument] = OrderedDict()
_sets: OrderedDict[tuple[str, tuple[tuple[str, int, str], ...]], PolicySet] = OrderedDict()


def _remember(cache: OrderedDict[K, V], key: K, value: V) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def _parsed(text: str, digest: str, source: str) -> PolicyDocument:
    """The parsed document with this digest (the text is parsed only on a cache miss)."""
    document = _documents.get(digest)
    if document is None:
        document = parse_policy(text, source=source)
        _remember(_documents, digest, document)
    else:
        _documents.move_to_end(digest)
    return document


def diff_policies(a_text: str, b_text: str, *, a_label: str = "a", b_label: str = "b") -> str:
    """A unified diff between two versions' texts ("" when they are the same)."""
    return "".join(
        difflib.unified_diff(
            _lines(a_text),
            _lines(b_text),
            fromfile=a_label,
            tofile=b_label,
        )
    )


def _lines(text: str) -> list[str]:
    return [line if line.endswith("\n") else line + "\n" for line in text.splitlines(True)]
