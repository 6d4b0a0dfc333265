"""Checks of a project's settings before anything is stored or queued: its task, sizes, strategy and training
method. Each refusal is a WorkbenchError naming the setting and what would work."""
from __future__ import annotations

from app.errors import WorkbenchError
from learners.catalog import MULTI_LABEL_METHODS, SSLConfig
from learners.strategies import available_strategies, get_strategy, strategy_class

TASKS = ("single_label", "multi_label")
# The default evaluation set: large enough to read a chart (with 100 items a 95% interval of accuracy is about
# +-9 points; with the old default of 10 it was +-25 and one item moved accuracy by 10), at least 10 items per
# class, and never more than a fifth of the pool, so small pools keep most items to learn from.
EVAL_SIZE_FLOOR, EVAL_PER_CLASS, EVAL_MAX_SHARE = 100, 10, 0.2


def default_eval_size(items: int, classes: int) -> int:
    """The larger of 100 and 10 per class, capped at a fifth of the items."""
    return min(max(EVAL_SIZE_FLOOR, EVAL_PER_CLASS * classes), int(EVAL_MAX_SHARE * items))


def check_sizes(round_size: int, eval_size: int | None) -> None:
    """eval_size None: the default (`default_eval_size`)."""
    if round_size < 1 or (eval_size is not None and eval_size < 0):
        raise WorkbenchError("round size must be at least 1 and eval-set size at least 0")


def check_overlap(overlap: float, overlap_eval: bool, overlap_k: int) -> None:
    """Several annotators on the same items: `overlap` a share of each round's pool items (0 to 1), `overlap_eval`
    whether every evaluation item too, `overlap_k` how many different annotators each (2 or more)."""
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap <= 1:
        raise WorkbenchError(f"overlap is a share of each round's items from 0 to 1 (0.1: one in ten goes to "
                             f"several annotators), not {overlap!r}")
    if not isinstance(overlap_eval, bool):
        raise WorkbenchError(f"overlap_eval is true or false, not {overlap_eval!r}")
    if isinstance(overlap_k, bool) or not isinstance(overlap_k, int) or overlap_k < 2:
        raise WorkbenchError(f"overlap_k is how many different annotators answer an overlap item: a whole number "
                             f">= 2, not {overlap_k!r}")


def check_task(task: str) -> None:
    if task not in TASKS:
        raise WorkbenchError(f"unknown task {task!r}; use {' or '.join(TASKS)}")


def check_strategy(name: str, params: dict | None, task: str) -> None:
    """WorkbenchError unless `name` is a registered strategy that takes `params` (checked against its declared
    parameters) and has a rule for `task`."""
    if name not in available_strategies():
        raise WorkbenchError(f"unknown strategy {name!r}; available: {', '.join(available_strategies())}")
    try:
        strategy = get_strategy(name, **(params or {}))
    except ValueError as error:
        raise WorkbenchError(str(error)) from error
    if task == "multi_label" and not strategy.supports_multi_label:
        usable = [n for n in available_strategies() if strategy_class(n).supports_multi_label]
        raise WorkbenchError(f"strategy {name!r} has no multi-label rule; for tags use one of {', '.join(usable)}")


def check_training(training: dict | None, task: str) -> None:
    """WorkbenchError unless the semi-supervised settings are valid for the task."""
    try:
        method = SSLConfig.from_dict((training or {}).get("ssl", "none")).method
    except ValueError as error:
        raise WorkbenchError(str(error)) from error
    if task == "multi_label" and method not in MULTI_LABEL_METHODS:
        raise WorkbenchError(f"training method {method!r} has no multi-label version; use {', '.join(MULTI_LABEL_METHODS)}")
