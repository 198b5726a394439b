"""Plug-ins found through entry points: methods (`plmkit.methods`), tasks (`plmkit.tasks`), model types
(`plmkit.models`) and commands (`plmkit.commands`). Installing a package adds its entries; the core never imports
a paper package by name.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from plmkit.core.errors import PlmkitError

__all__ = ["Registry"]


class Registry:
    """Named objects from one entry-point group, plus objects registered in code (tests, notebooks)."""

    def __init__(self, group: str, kind: str, error: type[PlmkitError]) -> None:
        self.group, self.kind, self.error = group, kind, error
        self._local: dict[str, Any] = {}

    def register(self, name: str, obj: Any) -> Any:
        """Add `obj` under `name` for this process (an installed entry point of the same name is shadowed)."""
        self._local[name] = obj
        return obj

    def unregister(self, name: str) -> None:
        self._local.pop(name, None)

    def entries(self) -> dict[str, EntryPoint | Any]:
        """Every name, with its entry point (not yet imported) or its registered object."""
        return {**{ep.name: ep for ep in entry_points(group=self.group)}, **self._local}

    def names(self) -> list[str]:
        return sorted(self.entries())

    def get(self, name: str) -> Any:
        found = self.entries()
        if name not in found:
            raise self.error(f"unknown {self.kind} {name!r}; installed {self.kind}s: {sorted(found)}")
        obj = found[name]
        return obj.load() if isinstance(obj, EntryPoint) else obj
