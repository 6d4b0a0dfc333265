"""Name -> strategy class. Strategies register themselves with `@register` when their module is imported."""
from __future__ import annotations

import inspect
from typing import Any, TypeVar

from learners.strategies.base import INPUT_FIELDS, Strategy

_STRATEGIES: dict[str, type[Strategy]] = {}

S = TypeVar("S", bound=type[Strategy])


def register(cls: S) -> S:
    """Class decorator: make `cls` available as `get_strategy(cls.name)`."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    if name in _STRATEGIES and _STRATEGIES[name] is not cls:
        raise ValueError(f"strategy name {name!r} is already registered by {_STRATEGIES[name].__name__}")
    if not cls.needs <= INPUT_FIELDS:
        raise TypeError(f"{cls.__name__}.needs has unknown inputs {sorted(cls.needs - INPUT_FIELDS)}")
    _STRATEGIES[name] = cls
    return cls


def available_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def get_strategy(name: str, **params: Any) -> Strategy:
    """A new instance of the strategy called `name`, built with `params` (for example device="cuda")."""
    if name not in _STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(available_strategies())}")
    cls = _STRATEGIES[name]
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as error:
        raise ValueError(f"bad parameters for strategy {name!r} {params}: {error}; "
                         f"accepted: {inspect.signature(cls)}") from error
    return cls(**params)
