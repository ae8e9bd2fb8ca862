"""API keys: how scripts, the web UI and the CLI's `--server` mode prove who they are.

A key is bound to one tenant and one role (viewer, operator, approver or admin: ordered, as for
principals) and acts as one principal of that tenant: the name its actions are recorded and
authorised under (deciding an approval also needs that principal to be an approver of the
request; see `governance.approvals`). The secret is shown once, when the key is made; the store
keeps only its SHA-256 (a key is 256 random bits, so a slow password hash would add nothing).

A key reads `crl_<key id>_<secret>`. The key id is public: it names the key in lists and in the
audit log. Making and revoking keys are audited; so are a known key's failures (wrong secret,
revoked, expired), in its tenant's chain.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from corral.errors import UsageError
from corral.governance.audit import AuditEntry, append
from corral.governance.identity import ROLES, Role
from corral.store.scripts import Dialect, Script, Statement

PREFIX = "crl_"
_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l: read aloud, typed from a log
_ID_LENGTH = 12
_COLUMNS = (
    "key_id, tenant, role, principal, name, created_at, created_by, expires_at, last_used_at,"
    " revoked_at"
)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as the store knows it (never its secret)."""

    key_id: str
    tenant: str
    role: Role
    principal: str
    """Whom the key acts as."""
    name: str
    """What it is for, in its maker's words."""
    created_at: float
    created_by: str
    expires_at: float | None
    last_used_at: float | None
    revoked_at: float | None

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def has_role(self, role: Role) -> bool:
        """Roles are ordered: an admin key may do what a viewer key may."""
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made, with the only copy of its token."""

    key: ApiKey
    token: str


@dataclass(frozen=True, slots=True)
class Checked:
    """What presenting a token found: the key if it is good, else why not (for the audit)."""

    key: ApiKey | None
    failure: str | None = None
    known: ApiKey | None = None
    """The key the token names, when it names one: its tenant records the failure."""


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token; None otherwise."""
    if not token.startswith(PREFIX):
        return None
    key_id, separator, secret = token[len(PREFIX) :].partition("_")
    if not separator or len(key_id) != _ID_LENGTH or len(secret) < 32:
        return None
    if any(c not in _ID_ALPHABET for c in key_id):
        return None
    return key_id, secret


def create_key(
    *,
    tenant: str,
    role: Role,
    principal: str | None,
    name: str,
    actor: str,
    now: float,
    expires_at: float | None,
    dialect: Dialect,
) -> Script[NewKey]:
    """Make a key (audited as `key.created`); its token is in the result and nowhere else."""
    if role not in ROLES:
        raise UsageError(f"unknown role {role!r}: roles are {', '.join(ROLES)}", role=role)
    if expires_at is not None and expires_at <= now:
        raise UsageError("a key's expiry must be in the future", expires_at=expires_at)
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
    secret = secrets.token_urlsafe(32)
    acting = principal or f"key:{key_id}"
    yield Statement(
        "INSERT INTO api_keys (key_id, tenant, role, principal, name, secret_hash, created_at,"
        " created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (key_id, tenant, role, acting, name, secret_hash(secret), now, actor, expires_at),
    )
    yield from append(
        tenant,
        AuditEntry(
            kind="key.created",
            actor=actor,
            subject=f"key:{key_id}",
            decision={"role": role, "principal": acting, "name": name, "expires_at": expires_at},
        ),
        at=now,
        dialect=dialect,
    )
    key = ApiKey(key_id, tenant, role, acting, name, now, actor, expires_at, None, None)
    return NewKey(key=key, token=f"{PREFIX}{key_id}_{secret}")


def revoke_key(
    tenant: str, key_id: str, *, actor: str, now: float, dialect: Dialect
) -> Script[ApiKey | None]:
    """Revoke a key of `tenant` (audited as `key.revoked`); None if it has no such key."""
    found = yield from get_key(key_id)
    if found is None or found.tenant != tenant:
        return None
    if found.revoked_at is not None:
        return found
    yield Statement("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", (now, key_id))
    yield from append(
        tenant,
        AuditEntry(kind="key.revoked", actor=actor, subject=f"key:{key_id}", decision={}),
        at=now,
        dialect=dialect,
    )
    return (yield from get_key(key_id))


def get_key(key_id: str) -> Script[ApiKey | None]:
    found = yield Statement(
        f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE key_id = ?", (key_id,)
    )
    row = found.one()
    return None if row is None else _key(row)


def list_keys(tenant: str) -> Script[list[ApiKey]]:
    found = yield Statement(
        f"SELECT {_COLUMNS} FROM api_keys WHERE tenant = ? ORDER BY created_at, key_id", (tenant,)
    )
    return [_key(row) for row in found.rows]


def check_token(token: str, *, now: float) -> Script[Checked]:
    """Which key `token` is, if it is a good one (read only: failures are recorded apart)."""
    parsed = parse_token(token)
    if parsed is None:
        return Checked(key=None, failure="malformed")
    key_id, secret = parsed
    found = yield Statement(
        f"SELECT {_COLUMNS}, secret_hash FROM api_keys WHERE key_id = ?", (key_id,)
    )
    row = found.one()
    if row is None:
        return Checked(key=None, failure="unknown")
    key = _key(row)
    if not hmac.compare_digest(str(row[-1]), secret_hash(secret)):
        return Checked(key=None, failure="wrong secret", known=key)
    if key.revoked_at is not None:
        return Checked(key=None, failure="revoked", known=key)
    if key.expires_at is not None and now >= key.expires_at:
        return Checked(key=None, failure="expired", known=key)
    return Checked(key=key)


def record_failure(key: ApiKey, failure: str, *, now: float, dialect: Dialect) -> Script[None]:
    """Audit a failed use of a known key, in its tenant's chain (`key.refused`)."""
    yield from append(
        key.tenant,
        AuditEntry(
            kind="key.refused",
            actor=f"key:{key.key_id}",
            subject=f"key:{key.key_id}",
            decision={"failure": failure},
        ),
        at=now,
        dialect=dialect,
    )


def record_use(
    key: ApiKey, *, action: str, status: int, now: float, dialect: Dialect
) -> Script[None]:
    """Audit a change made with a key (`key.used`: the method and route, and the answer's
    status) and note when the key was last used."""
    yield Statement("UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", (now, key.key_id))
    yield from append(
        key.tenant,
        AuditEntry(
            kind="key.used",
            actor=key.principal,
            subject=f"key:{key.key_id}",
            decision={"action": action, "status": status},
        ),
        at=now,
        dialect=dialect,
    )


def touch(key_id: str, *, now: float) -> Script[None]:
    """Note a read made with a key (not audited: reads change nothing)."""
    yield Statement("UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", (now, key_id))


def _key(row: Sequence[object]) -> ApiKey:
    role = str(row[2])
    if role not in ROLES:
        raise UsageError(f"key {row[0]} has an unknown role {role!r}")
    return ApiKey(
        key_id=str(row[0]),
        tenant=str(row[1]),
        role=role,  # narrowed by the check above
        principal=str(row[3]),
        name=str(row[4]),
        created_at=float(str(row[5])),
        created_by=str(row[6]),
        expires_at=None if row[7] is None else float(str(row[7])),
        last_used_at=None if row[8] is None else float(str(row[8])),
        revoked_at=None if row[9] is None else float(str(row[9])),
    )


__all__ = [
    "PREFIX",
    "ApiKey",
    "Checked",
    "NewKey",
    "check_token",
    "create_key",
    "get_key",
    "list_keys",
    "parse_token",
    "record_failure",
    "record_use",
    "revoke_key",
    "touch",
]
