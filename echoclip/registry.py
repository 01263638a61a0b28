"""Named registries of things users extend (towers, heads, masks, readers, scorers, ...).

timm registers models and MONAI readers by name; echoclip keeps every such table in a
:class:`Registry`, so that adding one's own is always ``@REGISTRY.register("name")``
and an unknown name is always the same clear error::

    VIDEO_TOWERS: Registry[TowerBuilder] = Registry("video tower")

    @VIDEO_TOWERS.register("videomae")
    class VideoMAETower(nn.Module): ...

    VIDEO_TOWERS.get("vidoemae")  # ConfigError: unknown video tower 'vidoemae'; known: [...]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from echoclip.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table with a decorator to fill it and one error for unknown names."""

    def __init__(self, what: str, error: type[Exception] = ConfigError) -> None:
        self.what = what
        self.error = error
        self._items: dict[str, T] = {}

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name``."""

        def decorator(obj: T) -> T:
            self.add(name, obj, overwrite=overwrite)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, overwrite: bool = False) -> T:
        """Register ``obj`` under ``name``; a second object under a taken name needs ``overwrite``."""
        if not overwrite and name in self._items and self._items[name] is not obj:
            raise self.error(f"a {self.what} named {name!r} is registered already")
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; an error listing the known names otherwise."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise self.error(f"unknown {self.what} {name!r}; known: {self.names()}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def values(self) -> list[T]:
        return list(self._items.values())

    def pop(self, name: str) -> T:
        """Remove and return the object registered as ``name``."""
        obj = self.get(name)
        del self._items[name]
        return obj

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, obj: T) -> None:
        """``REGISTRY["mine"] = MyThing``: register, replacing what the name held."""
        self.add(name, obj, overwrite=True)

    def __delitem__(self, name: str) -> None:
        self.pop(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self.names())})"
