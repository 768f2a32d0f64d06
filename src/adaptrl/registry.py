"""Named registries: one place per kind of interchangeable part.

Every kind of part an algorithm is composed of — inner surrogates, outer objectives, baselines,
outer optimizers, policies, algorithms — has one :class:`Registry`. Adding a part is one
``REGISTRY.register(name, obj, description)`` call next to its definition; configuration
validation, ``--help`` texts and ``adaptrl train --help`` read the names and descriptions from the
registry, so nothing else needs editing (docs/architecture.md, "Recipes").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from adaptrl.errors import unknown_name_error

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered mapping ``name → part`` with a one-line description per entry.

    ``get`` of an unknown name raises :class:`~adaptrl.errors.ConfigError` naming the kind, the
    closest valid names and all valid names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    @overload
    def register(self, name: str, obj: T, description: str = "") -> T: ...

    @overload
    def register(self, name: str, obj: None = None, description: str = "") -> Callable[[T], T]: ...

    def register(self, name: str, obj: T | None = None, description: str = ""):
        """Add ``obj`` under ``name`` (or use as a decorator when ``obj`` is omitted)."""

        def add(item: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = item
            self._descriptions[name] = description or (item.__doc__ or "").strip().split("\n")[0]
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """The part registered as ``name``; a clear error listing the valid names otherwise."""
        if name not in self._entries:
            raise unknown_name_error(self.kind, name, list(self._entries))
        return self._entries[name]

    __getitem__ = get

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._entries)

    def description(self, name: str) -> str:
        """The one-line description of ``name``."""
        self.get(name)
        return self._descriptions[name]

    def descriptions(self) -> dict[str, str]:
        """``name → one-line description`` for every entry."""
        return dict(self._descriptions)

    def help(self) -> str:
        """``"a, b or c"``: the names for a ``--help`` text."""
        names = list(self._entries)
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        return self._entries.items()
