"""Selection strategies. Importing this package registers every built-in strategy.

    from learners.strategies import get_strategy, StrategyInputs
    picks = get_strategy("margin").select(StrategyInputs(candidates, probs=P), budget, np.random.default_rng(0))
"""
from learners.strategies import badge, bait, coreset, direct, galaxy, lftl, qbc, random, ranked_batch, tailor, uncertainty  # noqa: F401  (fill the registry)
from learners.strategies.base import Selection, Strategy, StrategyInputs
from learners.strategies.registry import available_strategies, get_strategy, register

__all__ = ["Selection", "Strategy", "StrategyInputs", "available_strategies", "get_strategy", "register"]
