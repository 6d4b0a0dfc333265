"""Round queries: a project's rounds in order, and its latest round."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Round


def project_rounds(session: Session, project_id: int) -> list[Round]:
    """The project's rounds, oldest (index 0) first."""
    return list(session.scalars(select(Round).where(Round.project_id == project_id).order_by(Round.index)))


def latest_round(session: Session, project_id: int) -> Round | None:
    """The round with the highest index (the one being selected, labeled or trained, or the last done), or None."""
    return session.scalars(select(Round).where(Round.project_id == project_id).order_by(Round.index.desc())).first()
