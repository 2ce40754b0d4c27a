"""A name -> lazily imported implementation registry.

Used for frame sources (``sensors.SOURCES``), encoders and depth models. Entries
name their implementation as ``"package.module:Attribute"`` so that heavy optional
libraries are imported only when an entry is used. External plugins register
through the Python entry-point group given to the registry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Iterator


@dataclass(frozen=True)
class RegistryEntry:
    """One registered implementation.

    Attributes:
        name: the prefix users type ("7scenes", "clip", ...).
        target: "module.path:Attribute" imported on first use.
        description: one line for ``--help`` and error messages.
    """

    name: str
    target: str
    description: str = ""

    def load(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)


class Registry:
    """Ordered mapping of names to lazily imported implementations."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, RegistryEntry] = {}
        self._plugins_loaded = False

    def register(self, name: str, target: str, description: str = "") -> None:
        """Add (or replace) an entry."""
        self._entries[name] = RegistryEntry(name, target, description)

    def _load_plugins(self) -> None:
        if self._plugins_loaded or not self.entry_point_group:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:
                self._entries[ep.name] = RegistryEntry(ep.name, ep.value, f"plugin {ep.value}")

    def names(self) -> list[str]:
        self._load_plugins()
        return list(self._entries)

    def __iter__(self) -> Iterator[RegistryEntry]:
        self._load_plugins()
        return iter(list(self._entries.values()))

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries

    def get(self, name: str) -> Any:
        """The implementation registered as ``name``; KeyError lists the known names."""
        self._load_plugins()
        if name not in self._entries:
            known = ", ".join(self._entries) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._entries[name].load()

    def describe(self) -> str:
        """One line per entry: name and description."""
        return "\n".join(f"  {e.name:<12} {e.description}" for e in self)
