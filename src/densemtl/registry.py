"""One registry type for everything that is added by registering one object.

Tasks, models, datasets, loss weightings and training objectives each keep a
:class:`Registry`; registration order is kept (it is the canonical task order and the order
of listings), a second registration under the same name is an error, and an unknown name
raises the same error everywhere, listing the known names::

    MODELS = Registry("model")

    @MODELS.register("mtl")
    def mtl(tasks, ...): ...

    MODELS.get("mtl")        # the builder
    MODELS.get("mlt")        # UnknownNameError: unknown model 'mlt'; known models: stl, mtl, ...

This module imports nothing from the package: every layer may use it.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown registry name. A ``KeyError`` whose message (``args[0]``) lists the known names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """An ordered ``name -> object`` mapping with one error for unknown names.

    Args:
        kind: what is registered, singular (``"task"``, ``"model"``): used in error messages.
        plural: plural of ``kind`` for messages (default ``kind + "s"``).
    """

    def __init__(self, kind: str, plural: str | None = None):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._items: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name`` (a non-empty string, not yet taken); returns ``obj``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._items[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@REGISTRY.register("name")``."""

        def deco(obj: T) -> T:
            return self.add(name, obj)

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            known = ", ".join(self._items) or "none"
            raise UnknownNameError(f"unknown {self.kind} '{name}'; known {self.plural}: {known}") from None

    def remove(self, name: str) -> T:
        """Unregister ``name`` (for tests that register temporary objects)."""
        self.get(name)
        return self._items.pop(name)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._items)

    def values(self) -> list[T]:
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self._items)})"
