"""One registry primitive for every named thing: models, suites, tasks, datasets.
More: docs/core.md, "llrnet.core.registry"."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from llrnet.core.errors import UsageError

T = TypeVar("T")
# What ``register`` decorates: a callable (function or class), never a name.
F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Names -> objects of one kind, failing loudly on duplicates and unknown names.

    Args:
        kind: what is registered, for messages ("model", "suite", "task", ...).
        keyword_only: require every parameter of a registered callable to be
            keyword-only (builders configured by name from YAML or the CLI).
    """

    def __init__(self, kind: str, *, keyword_only: bool = False) -> None:
        self.kind = kind
        self.keyword_only = keyword_only
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name_or_obj: str | None = None) -> Callable[[F], F]: ...

    @overload
    def register(self, name_or_obj: F) -> F: ...

    def register(self, name_or_obj: Any = None) -> Any:
        """Decorator: ``@reg.register`` (name from ``__name__``) or ``@reg.register("name")``."""
        if name_or_obj is None or isinstance(name_or_obj, str):
            name = name_or_obj

            def decorate(obj: F) -> F:
                self.add(obj, name=name)  # type: ignore[arg-type]
                return obj

            return decorate
        self.add(name_or_obj)
        return name_or_obj

    def add(self, obj: T, *, name: str | None = None) -> None:
        """Register ``obj`` under ``name`` (default: ``obj.__name__``)."""
        key = name if name is not None else getattr(obj, "__name__", None)
        if not isinstance(key, str) or not key:
            raise UsageError(f"a {self.kind} needs a name; {obj!r} has no __name__")
        if key in self._entries:
            first = self._entries[key]
            where = f"{getattr(first, '__module__', '?')}.{getattr(first, '__qualname__', '?')}"
            raise UsageError(f"{self.kind} {key!r} is registered twice (first by {where}); "
                             f"registered names: {', '.join(self.names())}")
        if self.keyword_only:
            params = inspect.signature(obj).parameters.values()  # type: ignore[arg-type]
            positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
            if positional:
                raise UsageError(f"{self.kind} {key!r} must take keyword-only arguments; "
                                 f"positional: {', '.join(positional)}")
        self._entries[key] = obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name lists the valid ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(f"unknown {self.kind} {name!r}; valid names: "
                             f"{', '.join(self.names()) or '(none)'}") from None

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def arguments(self, name: str) -> dict[str, Any]:
        """The public parameters of the callable ``name`` with their defaults (None if required).

        Parameters whose names start with ``_`` are private and left out.
        """
        return {
            p.name: (None if p.default is inspect.Parameter.empty else p.default)
            for p in inspect.signature(self.get(name)).parameters.values()  # type: ignore[arg-type]
            if not p.name.startswith("_")
        }

    def check_arguments(self, name: str, kwargs: dict[str, Any]) -> None:
        """Raise UsageError naming any key of ``kwargs`` that ``name`` does not take.

        Private parameters (``_name``) count as not taken.
        """
        valid = list(self.arguments(name))
        unknown = sorted(set(kwargs) - set(valid))
        if unknown:
            raise UsageError(f"{self.kind} {name!r} takes no argument(s) "
                             f"{', '.join(unknown)}; valid: {', '.join(sorted(valid)) or '(none)'}")

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the registered callable ``name`` with ``kwargs``, checked by name first."""
        self.check_arguments(name, kwargs)
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
