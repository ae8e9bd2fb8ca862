"""Namespaced shared state: parallel writers each own one key, and the pattern declares the merge.

When several agents work in parallel on one problem, a shared dict is where they clobber each
other: two branches write `state["summary"]`, and whichever finished last wins. `Namespaces`
gives each writer its own key instead. A writer can read everyone's entries but append only
under its own key; writing under another's key raises `NamespaceViolation`. How the entries
combine into one value is declared once, by the pattern that owns the state (`merge=`), not
decided by whoever wrote last.

```python
state = Namespaces(["billing", "shipping"], merge="concat")
billing, shipping = state.writer("billing"), state.writer("shipping")
billing.write(["invoice 17 is paid"])
shipping.write(["parcel left Oslo"])
shipping.write("late", key="billing")  # raises NamespaceViolation
state.merged()  # ["invoice 17 is paid", "parcel left Oslo"]
```

The state lives in the workflow's memory, not in the journal: write values that came from
journaled steps (a child run's result, an agent's output), so a replay rebuilds the same state.
`fan_out` keeps its results this way, and `GroupChat` each agent's messages.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, Literal

from corral.errors import NamespaceViolation, UsageError

Merge = Literal["collect", "concat"] | Callable[[dict[str, list[Any]]], Any]
"""How namespaces combine: `"collect"` (a dict: owner → entries), `"concat"` (one list, owner
by owner), or a function of the collected dict."""


class Namespaces:
    """Shared state split by owner. Each owner gets one writer; each writer appends only under
    its owner's key.

    Args:
        owners: The keys, one per writer (agent names, task keys); unique.
        merge: How `merged()` combines the entries: `"collect"` gives `{owner: [entries]}`,
            `"concat"` one list of every entry, owner by owner in the order given (an entry that
            is a list is spliced in), and a callable is given the collected dict.
    """

    def __init__(self, owners: Iterable[str], *, merge: Merge = "collect") -> None:
        self.owners: tuple[str, ...] = tuple(owners)
        duplicates = sorted({o for o in self.owners if self.owners.count(o) > 1})
        if duplicates:
            raise UsageError(f"namespaces must be unique; repeated: {', '.join(duplicates)}")
        if not callable(merge) and merge not in ("collect", "concat"):
            raise UsageError(
                f"merge must be 'collect', 'concat' or a callable, not {merge!r}", merge=merge
            )
        self.merge = merge
        self._entries: dict[str, list[Any]] = {owner: [] for owner in self.owners}
        self._writers: dict[str, Namespace] = {}

    def __repr__(self) -> str:
        return f"<Namespaces {', '.join(self.owners)}>"

    def writer(self, owner: str) -> Namespace:
        """The one writer of `owner`'s namespace (asking twice raises: two writers of one key
        are exactly what this class exists to prevent)."""
        self._check_owner(owner, writer=None)
        if owner in self._writers:
            raise NamespaceViolation(
                f"namespace {owner!r} already has a writer; each owner gets exactly one",
                namespace=owner,
            )
        namespace = Namespace(self, owner)
        self._writers[owner] = namespace
        return namespace

    def read(self, owner: str) -> list[Any]:
        """A copy of what `owner` has written, oldest first."""
        self._check_owner(owner, writer=None)
        return copy.deepcopy(self._entries[owner])

    def snapshot(self) -> dict[str, list[Any]]:
        """A copy of every namespace: owner → entries (changing it changes nothing here)."""
        return copy.deepcopy(self._entries)

    def merged(self) -> Any:
        """The namespaces combined as the owner of the state declared (`merge=`)."""
        collected = self.snapshot()
        if callable(self.merge):
            return self.merge(collected)
        if self.merge == "collect":
            return collected
        combined: list[Any] = []
        for owner in self.owners:
            for entry in collected[owner]:
                if isinstance(entry, list):
                    combined.extend(entry)
                else:
                    combined.append(entry)
        return combined

    def _append(self, writer: str, key: str, value: Any) -> None:
        self._check_owner(key, writer=writer)
        if key != writer:
            raise NamespaceViolation(
                f"writer {writer!r} cannot write under {key!r}: each writer writes only under "
                f"its own key ({writer!r}); the pattern merges the namespaces",
                namespace=key,
                writer=writer,
            )
        # A copy, so that a writer mutating its object later cannot change what was written.
        self._entries[key].append(copy.deepcopy(value))

    def _check_owner(self, owner: str, *, writer: str | None) -> None:
        if owner not in self._entries:
            raise NamespaceViolation(
                f"no namespace {owner!r}; the namespaces are: {', '.join(self.owners) or '(none)'}",
                namespace=owner,
                writer=writer,
            )


class Namespace:
    """One owner's handle on `Namespaces`: appends under its own key, reads any key."""

    def __init__(self, state: Namespaces, owner: str) -> None:
        self._state = state
        self.owner = owner

    def __repr__(self) -> str:
        return f"<Namespace {self.owner}>"

    def write(self, value: Any, *, key: str | None = None) -> None:
        """Append `value` under this writer's key. `key` may only name that key: writing under
        another owner's key raises `NamespaceViolation` (nothing is written)."""
        self._state._append(self.owner, self.owner if key is None else key, value)

    def read(self, owner: str | None = None) -> list[Any]:
        """A copy of the entries of `owner` (default: this writer's own)."""
        return self._state.read(self.owner if owner is None else owner)

    @property
    def entries(self) -> list[Any]:
        """A copy of this writer's own entries."""
        return self.read()
