"""Science components registered by name (recovery criteria, source light profiles, PSF models).

A component is a small class (a frozen dataclass: its parameters are its fields) that
registers itself with ``@register(kind, name)``; config names it and ``build`` makes it,
refusing an unknown name with the known ones and an unknown parameter with the nearest
valid one — a typo in a config must not silently fall back to a default.
"""
from __future__ import annotations

import dataclasses
import functools
import difflib
import inspect
from typing import Any, Callable, TypeVar

T = TypeVar("T", bound=type)

_REGISTRY: dict[str, dict[str, type]] = {}


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: make ``cls`` buildable as ``build(kind, name, ...)``."""
    def deco(cls: T) -> T:
        table = _REGISTRY.setdefault(kind, {})
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} {name!r} is registered twice ({table[name].__qualname__} and "
                             f"{cls.__qualname__}): give the new one another name")
        table[name] = cls
        return cls
    return deco


def known(kind: str) -> tuple[str, ...]:
    """The registered names of ``kind``, in registration order."""
    return tuple(_REGISTRY.get(kind, {}))


def lookup(kind: str, name: str, /) -> type:
    table = _REGISTRY.get(kind, {})
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}{_nearest(name, table)}; known: {sorted(table)}")
    return table[name]


@functools.lru_cache(maxsize=None)
def parameters(cls: type) -> tuple[str, ...]:
    """The parameters a component takes: its dataclass fields (or its constructor's arguments)."""
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls) if f.init)
    return tuple(p for p in inspect.signature(cls).parameters if p != "self")


def build(kind: str, name: str, /, **params: Any):
    """An instance of the ``kind`` registered as ``name`` with ``params`` (lists become tuples,
    so components stay hashable and compare equal to ones written in code)."""
    cls = lookup(kind, name)
    valid = parameters(cls)
    for p in params:
        if p not in valid:
            raise ValueError(f"{kind} {name!r} has no parameter {p!r}{_nearest(p, valid)}; "
                             f"valid: {sorted(valid)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})


def _nearest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
