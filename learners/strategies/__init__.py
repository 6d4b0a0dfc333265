"""Selection strategies. Importing this package registers every strategy module in it (found with pkgutil:
a new strategy is one new module with a `@register`ed class).

    from learners.strategies import get_strategy, StrategyInputs
    picks = get_strategy("margin").select(StrategyInputs(candidates, probs=P), budget, np.random.default_rng(0))
"""
import importlib
import pkgutil

from learners.strategies.base import RoundOutcome, Selection, Strategy, StrategyInputs
from learners.strategies.panel import Panel, PanelView, Pick
from learners.strategies.params import Param
from learners.strategies.registry import available_strategies, check_params, get_strategy, register, strategy_class

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Panel", "PanelView", "Param", "Pick", "RoundOutcome", "Selection", "Strategy", "StrategyInputs",
           "available_strategies", "check_params", "get_strategy", "register", "strategy_class"]
