"""Strategy state that survives rounds, for any strategy: loaded before a selection, saved after it, folded with a
closed round's labels, and read back as dashboard panels. The job handlers and the Dashboard call only these four
functions; which strategy keeps what is the strategy's own business (learners.strategies, base-class hooks).

(Transitional: still delegates to app.tailor_state; the strategy-hooks work replaces the bodies, not the signatures.)
"""
from __future__ import annotations

from sqlalchemy.orm import Session

from app import tailor_state
from learners.strategies import Strategy
from storage.models import Project, Round


def load_into(s: Session, project_id: int, strategy: Strategy) -> None:
    """Hand `strategy` the state stored for it in this project (before `select`)."""
    if strategy.name == tailor_state.STRATEGY:
        strategy.posterior = tailor_state.load_posterior(s, project_id)


def save_from(s: Session, project_id: int, strategy: Strategy) -> None:
    """Store what `strategy` keeps after a selection (in the transaction that queues its picks)."""
    if strategy.name == tailor_state.STRATEGY and strategy.posterior is not None:
        tailor_state.save_posterior(s, project_id, strategy.posterior)


def fold_round(s: Session, project: Project, round_: Round) -> bool:
    """Fold a closed round's labels into the state of the strategy that chose it; True when the state changed.
    Never applies the same round twice."""
    return tailor_state.fold_round(s, project, round_)


def panels(s: Session, project: Project) -> list:
    """The dashboard panels of the project's stateful strategies (empty when none has anything to show)."""
    panel = tailor_state.panel(s, project)
    return [] if panel is None else [panel]
