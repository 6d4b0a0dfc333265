"""A strategy's user parameters, declared once (`Strategy.params`): the Projects form, the CLI and `get_strategy`
read them. Internals a caller passes in code (device, seed, chunk sizes) are constructor arguments, not declared."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TYPES = (int, float, str, bool, list)  # list: a list of strings


@dataclass(frozen=True)
class Param:
    """`choices`: the only values allowed (for a list, its items). `examples`: values a form offers, others are
    allowed too and checked by the strategy (TAILOR's arm "galaxy:3"). `minimum`/`maximum`: inclusive bounds.
    A parameter whose default is None may be left unset (None)."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple = ()
    examples: tuple = ()
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise TypeError(f"parameter {self.name!r}: type must be one of {[t.__name__ for t in TYPES]}")

    def check(self, value: Any) -> Any:
        """`value` as the strategy takes it (an int for a float parameter becomes a float); ValueError saying what is
        wrong otherwise."""
        if value is None and self.default is None:
            return None
        if self.type is list:
            if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
                raise ValueError(f"{self.name} must be a list of strings, got {value!r}")
            for item in value:
                self._check_choice(item)
            return list(value)
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise ValueError(f"{self.name} must be {self.type.__name__}, got {value!r}")
        self._check_choice(value)
        if self.type in (int, float):
            if self.type is float and not math.isfinite(value):
                raise ValueError(f"{self.name} must be finite, got {value}")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{self.name} must be >= {self.minimum}, got {value}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"{self.name} must be <= {self.maximum}, got {value}")
        return value

    def _check_choice(self, value: Any) -> None:
        if self.choices and value not in self.choices:
            raise ValueError(f"unknown {self.name} {value!r}: {self.name} must be one of "
                             f"{', '.join(map(str, self.choices))}")

    def parse(self, text: str) -> Any:
        """A value typed from command-line text ("0.5", "true", "margin,galaxy*", "none"), checked."""
        if text.strip().lower() == "none" and self.default is None:
            return None
        try:
            if self.type is list:
                value: Any = [item.strip() for item in text.split(",") if item.strip()]
            elif self.type is bool:
                if text.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value = text.strip().lower() in ("true", "1", "yes")
            else:
                value = self.type(text)
        except ValueError:
            raise ValueError(f"{self.name} must be {self.type.__name__}, got {text!r}") from None
        return self.check(value)

    def describe(self) -> str:
        """One line for listings: name, type, default, bounds or choices, help."""
        limits = [f"one of {', '.join(map(str, self.choices))}"] if self.choices else []
        limits += [f">= {self.minimum}"] if self.minimum is not None else []
        limits += [f"<= {self.maximum}"] if self.maximum is not None else []
        limits += [f"e.g. {', '.join(map(str, self.examples))}"] if self.examples else []
        extra = f"; {'; '.join(limits)}" if limits else ""
        return f"{self.name} ({self.type.__name__}, default {self.default!r}{extra}): {self.help}"
