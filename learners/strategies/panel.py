"""The dashboard panel a stateful strategy may offer (`Strategy.panel`): a plain read model the Dashboard draws
without knowing the strategy. Rows are plain dicts; each block names the row fields it encodes."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Bars:
    """Horizontal bars, largest `value` first, one per `label`; at most `limit` rows drawn (all when None).
    The tooltip shows every field of the row, `value` with `value_format`."""

    rows: list[dict]
    value: str
    label: str
    value_title: str = ""
    value_format: str = ""
    limit: int | None = None
    title: str = ""


@dataclass(frozen=True)
class StackedBars:
    """One bar per `x` value (e.g. per round), stacked by `color`. With `groups` (a `color` value -> its group),
    the Dashboard offers a toggle, worded `group_label`, that sums the rows per group."""

    rows: list[dict]
    x: str
    y: str
    color: str
    title: str = ""
    groups: dict[str, str] = field(default_factory=dict)
    group_label: str = ""


@dataclass(frozen=True)
class Pivot:
    """A table of `values` summed per `index` (rows) and `columns`; `note` follows the bold title."""

    rows: list[dict]
    index: str
    columns: str
    values: str
    title: str = ""
    note: str = ""


@dataclass(frozen=True)
class Table:
    """Rows as they are. Consecutive tables with the same non-empty `expander` share one collapsed section."""

    rows: list[dict]
    title: str = ""
    expander: str = ""


Block = Bars | StackedBars | Pivot | Table


@dataclass(frozen=True)
class Panel:
    title: str
    caption: str
    blocks: list[Block]


@dataclass(frozen=True)
class Pick:
    """One pick of the strategy's rounds (eval-set entries left out): the round's index, the arm recorded with it,
    and the item's current label value (class indices) if the pick was labeled and still is, else None."""

    round_index: int
    arm: str
    label: list[int] | None


@dataclass(frozen=True)
class PanelView:
    """What a panel may read besides the strategy's stored state."""

    classes: list[str]
    multi_label: bool
    picks: list[Pick]
    pool_labels: list[list[int]]  # the current label value of every labeled pool item
