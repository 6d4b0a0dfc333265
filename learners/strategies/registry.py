"""Name -> strategy class. Strategies register themselves with `@register` when their module is imported."""
from __future__ import annotations

import inspect
from typing import Any, TypeVar

from learners.strategies.base import INPUT_FIELDS, Strategy

_STRATEGIES: dict[str, type[Strategy]] = {}

S = TypeVar("S", bound=type[Strategy])


def register(cls: S) -> S:
    """Class decorator: make `cls` available as `get_strategy(cls.name)`. Its declared parameters must be
    keywords of its constructor, with the same defaults."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    if name in _STRATEGIES and _STRATEGIES[name] is not cls:
        raise ValueError(f"strategy name {name!r} is already registered by {_STRATEGIES[name].__name__}")
    if not cls.needs <= INPUT_FIELDS:
        raise TypeError(f"{cls.__name__}.needs has unknown inputs {sorted(cls.needs - INPUT_FIELDS)}")
    accepted = inspect.signature(cls).parameters
    for param in cls.params:
        if param.name not in accepted or accepted[param.name].default != param.default:
            raise TypeError(f"{cls.__name__} declares parameter {param.name!r} (default {param.default!r}), which "
                            f"its constructor does not take with that default")
    _STRATEGIES[name] = cls
    return cls


def available_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as `name` (its declarations, without building one); ValueError naming the known ones."""
    if name not in _STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(available_strategies())}")
    return _STRATEGIES[name]


def check_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` with each declared parameter checked against its declaration (ValueError naming the strategy and
    what is wrong); undeclared constructor keywords (device, seed) pass as they are."""
    declared = {param.name: param for param in strategy_class(name).params}
    checked = dict(params)
    for key, value in params.items():
        if key in declared:
            try:
                checked[key] = declared[key].check(value)
            except ValueError as error:
                raise ValueError(f"strategy {name!r}: {error}") from None
    return checked


def get_strategy(name: str, **params: Any) -> Strategy:
    """A new instance of the strategy called `name`, built with `params` (declared ones, or internals such as
    device="cuda")."""
    cls = strategy_class(name)
    params = check_params(name, params)
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as error:
        declared = ", ".join(param.name for param in cls.params) or "none"
        raise ValueError(f"bad parameters for strategy {name!r} {params}: {error}; "
                         f"its parameters: {declared}") from error
    return cls(**params)
