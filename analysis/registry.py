"""One registry style for every extensible set of names: importance criteria, runtimes, schedule methods
and metrics (and any other name -> class mapping).

A `Registry` maps a name to a class or a factory, in registration order (the order of tables, plots and
`--help`). Registering is one line next to the class (`@CRITERIA_REGISTRY.register` over a class that has
a `name`, or `REGISTRY.register("name", factory, description=...)`); looking up an unknown name is one
`WorkbenchError` line that lists the known ones. Every registry has a one-line description per name (the
entry's docstring's first paragraph unless given), which the CLI help and the reference docs show.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from analysis.errors import WorkbenchError

T = TypeVar("T")


def _summary(text: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    paragraph = (text or "").strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


class Registry(Generic[T]):
    """Names -> classes or factories of one kind (`what`: "criterion", "runtime", ...), in registration order.
    Names are compared stripped and lower-case."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}
        self._descriptions: dict[str, str] = {}

    @overload
    def register(
        self, name: str, entry: None = None, *, description: str | None = None
    ) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, entry: T, *, description: str | None = None) -> T: ...

    @overload
    def register(self, name: T, entry: None = None, *, description: str | None = None) -> T: ...

    def register(self, name: Any, entry: Any = None, *, description: str | None = None) -> Any:
        """Register `entry` under `name` and return it. Forms: `register("x", factory)`; the decorator
        `@register("x")`; and the bare decorator `@register` over a class with a `name` attribute."""
        if not isinstance(name, str):  # the bare decorator: the entry names itself
            return self.register(str(name.name), name, description=description)
        if entry is None:
            return lambda e: self.register(name, e, description=description)
        key = name.strip().lower()
        if not key:
            raise WorkbenchError(f"a {self.what} needs a name")
        if key in self._entries and self._entries[key] is not entry:
            raise WorkbenchError(f"{self.what} {key!r} is already registered")
        self._entries[key] = entry
        self._descriptions[key] = _summary(description or getattr(entry, "__doc__", None))
        return entry

    def unregister(self, name: str) -> None:
        """Remove `name` (tests that register a toy entry clean up with this)."""
        key = name.strip().lower()
        self._entries.pop(key, None)
        self._descriptions.pop(key, None)

    def key(self, name: str) -> str:
        """The canonical name of `name`, or a one-line WorkbenchError listing the known names."""
        key = str(name).strip().lower()
        if key not in self._entries:
            raise WorkbenchError(f"unknown {self.what} {name!r}: choose one of {', '.join(self._entries)}")
        return key

    def get(self, name: str) -> T:
        """The class or factory registered as `name` (see `key` for unknown names)."""
        return self._entries[self.key(name)]

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._entries)

    def describe(self, name: str) -> str:
        """The one-line description of `name`."""
        return self._descriptions[self.key(name)]

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self._entries)})"


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable, Callable]:
    """`__all__`, `__getattr__` and `__dir__` (PEP 562) for a package whose public names are imported on
    first use, each from the module `exports` names for it, then kept as a plain attribute. A package's
    submodules import each other; importing them all in its `__init__` would make every import of one
    submodule load the whole package (and, at the top, plotly and pandas)."""
    import importlib
    import sys

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted([*vars(sys.modules[package]), *exports])

    return sorted(exports), __getattr__, __dir__


__all__ = ["Registry", "lazy_exports"]
