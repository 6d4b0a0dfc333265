"""Settings dataclasses built from a project's JSON, with unknown keys named rather than silently ignored."""
from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def from_settings(cls: type[T], d: dict[str, Any] | None, what: str) -> T:
    """`cls(**d)`, or ValueError naming the unknown `what` setting(s) and the accepted ones."""
    d = dict(d or {})
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {sorted(unknown)}; accepted: {', '.join(sorted(known))}")
    return cls(**d)
