"""`random`: budget items uniformly from the candidates."""
from __future__ import annotations

import numpy as np

from learners.strategies.base import Selection, Strategy, StrategyInputs, random_selection
from learners.strategies.registry import register


@register
class RandomStrategy(Strategy):
    name = "random"
    needs = frozenset()
    supports_multi_label = True

    def _select(self, inputs: StrategyInputs, budget: int, rng: np.random.Generator) -> Selection:
        return random_selection(inputs.candidates, budget, rng)
