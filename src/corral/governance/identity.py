"""Principals and scopes: who may do what.

**Agents** are principals with the scopes their definition grants (`Agent(scopes=[…])`); **tools**
declare the scopes they need (`@tool(scopes=[…])`). A call is allowed only if every scope the
tool needs is granted (default deny; a tool that needs no scope is open to every agent). A
child run is bounded by its parent: its scopes are a *chain* of grants, the parent's chain plus
its own, and a scope is effective only if every link grants it — so a child never has more than
its parent, and removing a scope anywhere never allows more.

**Humans** (and services) are principals of a tenant with roles — viewer < operator < approver <
admin, each including the ones before — and the approver groups they belong to. Authorization
never depends on model text: scopes come from definitions and run inputs written by code, roles
from the `principals` table.

Scopes are `resource:action` strings; a grant may end in `*` (`payments:*`, or `*` for all).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from corral.errors import NotAuthorized, UsageError
from corral.governance.audit import AuditEntry, append
from corral.store.scripts import Dialect, Script, Statement

__all__ = ["ROLES", "Principal", "Role", "ScopeChain", "Script", "authorize", "grants"]

Role = Literal["viewer", "operator", "approver", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "approver", "admin")
PrincipalKind = Literal["human", "service"]


# -- scopes ------------------------------------------------------------------------------------


def grants(granted: Iterable[str], scope: str) -> bool:
    """Whether a list of grants covers `scope` (a grant may be a glob such as `payments:*`)."""
    return any(g == scope or fnmatch.fnmatchcase(scope, g) for g in granted)


class ScopeChain(BaseModel):
    """The grants of an agent and of every agent above it in its chain of child runs."""

    model_config = ConfigDict(frozen=True)

    links: tuple[tuple[str, ...], ...] = ()

    def extend(self, granted: Iterable[str]) -> ScopeChain:
        """The chain of a child (or a handoff target) granted `granted`."""
        return ScopeChain(links=(*self.links, tuple(granted)))

    def allows(self, scope: str) -> bool:
        """True when every link grants `scope` (an empty chain grants nothing)."""
        return bool(self.links) and all(grants(link, scope) for link in self.links)

    def missing(self, required: Iterable[str]) -> list[str]:
        """The required scopes this chain does not allow."""
        return [scope for scope in required if not self.allows(scope)]

    @property
    def effective(self) -> tuple[str, ...]:
        """The last link's grants that every link allows (for display)."""
        if not self.links:
            return ()
        return tuple(g for g in self.links[-1] if self.allows(g) or "*" in g)


# -- principals --------------------------------------------------------------------------------


class Principal(BaseModel):
    """A human or service of a tenant, with roles and approver groups."""

    model_config = ConfigDict(frozen=True)

    tenant: str
    name: str
    kind: PrincipalKind = "human"
    roles: tuple[Role, ...] = ()
    groups: tuple[str, ...] = ()
    created_at: float = 0.0

    def has_role(self, role: Role) -> bool:
        """Roles are ordered: an approver is also an operator and a viewer; admin is everything."""
        wanted = ROLES.index(role)
        return any(ROLES.index(r) >= wanted for r in self.roles)

    def in_any(self, groups: Iterable[str]) -> bool:
        """Whether this principal is named in, or belongs to a group in, `groups`."""
        wanted = set(groups)
        return self.name in wanted or bool(wanted & set(self.groups))


_COLUMNS = "tenant, name, kind, roles, groups, created_at"


def _principal(row: Sequence[object]) -> Principal:
    return Principal(
        tenant=str(row[0]),
        name=str(row[1]),
        kind=row[2],
        roles=tuple(json.loads(str(row[3]))),
        groups=tuple(json.loads(str(row[4]))),
        created_at=float(row[5]),  # type: ignore[arg-type]
    )


def add_principal(
    principal: Principal, *, actor: str, now: float, dialect: Dialect
) -> Script[Principal]:
    """Create or update a principal (its roles and groups), audited as `principal.saved`."""
    for role in principal.roles:
        if role not in ROLES:
            raise UsageError(f"unknown role {role!r}: roles are {', '.join(ROLES)}", role=role)
    if principal.name.startswith("agent:"):
        raise UsageError(
            "principal names starting with 'agent:' are reserved for agents", name=principal.name
        )
    yield Statement(
        f"INSERT INTO principals ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (tenant, name) DO UPDATE SET kind = excluded.kind,"
        " roles = excluded.roles, groups = excluded.groups",
        (
            principal.tenant,
            principal.name,
            principal.kind,
            json.dumps(list(principal.roles)),
            json.dumps(list(principal.groups)),
            now,
        ),
    )
    yield from append(
        principal.tenant,
        AuditEntry(
            kind="principal.saved",
            actor=actor,
            subject=f"principal:{principal.name}",
            decision={
                "kind": principal.kind,
                "roles": list(principal.roles),
                "groups": list(principal.groups),
            },
        ),
        at=now,
        dialect=dialect,
    )
    saved = yield from get_principal(principal.tenant, principal.name)
    assert saved is not None
    return saved


def remove_principal(
    tenant: str, name: str, *, actor: str, now: float, dialect: Dialect
) -> Script[bool]:
    """Remove a principal; audited as `principal.removed`. False if there was none."""
    result = yield Statement("DELETE FROM principals WHERE tenant = ? AND name = ?", (tenant, name))
    if result.rowcount == 0:
        return False
    yield from append(
        tenant,
        AuditEntry(kind="principal.removed", actor=actor, subject=f"principal:{name}"),
        at=now,
        dialect=dialect,
    )
    return True


def get_principal(tenant: str, name: str) -> Script[Principal | None]:
    result = yield Statement(
        f"SELECT {_COLUMNS} FROM principals WHERE tenant = ? AND name = ?", (tenant, name)
    )
    row = result.one()
    return _principal(row) if row is not None else None


def list_principals(tenant: str) -> Script[list[Principal]]:
    result = yield Statement(
        f"SELECT {_COLUMNS} FROM principals WHERE tenant = ? ORDER BY name", (tenant,)
    )
    return [_principal(row) for row in result.rows]


def authorize(tenant: str, name: str, role: Role, *, action: str) -> Script[Principal | None]:
    """The principal `name` if it holds `role` in `tenant`; `NotAuthorized` otherwise.

    A tenant with no principals yet is in *bootstrap* mode: anyone may act (None is returned),
    so the first admin can be created. Approving is never open: see `governance.approvals`.
    """
    count = yield Statement("SELECT count(*) FROM principals WHERE tenant = ?", (tenant,))
    if int(count.scalar() or 0) == 0:
        return None
    principal = yield from get_principal(tenant, name)
    if principal is None:
        raise NotAuthorized(
            f"{name!r} is not a principal of tenant {tenant!r}, so cannot {action} (an admin "
            f"adds principals: corral principals add NAME --role ROLE)",
            principal=name,
            tenant=tenant,
        )
    if not principal.has_role(role):
        raise NotAuthorized(
            f"{name!r} cannot {action}: that needs the {role} role; {name!r} has "
            f"{', '.join(principal.roles) or 'no roles'}",
            principal=name,
            tenant=tenant,
            role=role,
        )
    return principal
