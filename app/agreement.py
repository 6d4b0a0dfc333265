"""The Agreement verb: how far a project's annotators agree and how fast each labels, for the Agreement page and
`python -m app agreement`. Reads each annotator's current answers (storage.agreement_data) and measures them with
learners.agreement; the figures are only defined where two or more people answered the same item."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Mapping

from sqlalchemy.orm import Session

from app.errors import WorkbenchError
from learners import agreement as measures
from storage.agreement_data import current_answers
from storage.db import Database
from storage.labels import current_labels
from storage.models import Project


@dataclass(frozen=True)
class AgreementView:
    project_id: int
    project: str
    task: str
    classes: list[str]
    annotators: list[str]
    overlap_items: int  # items answered by two or more annotators
    alpha: measures.Alpha
    pairs: list[measures.PairKappa]
    tag_alphas: list[measures.TagAlpha]  # multi-label only
    confusion: measures.Confusion
    per_annotator: list[measures.AnnotatorStats]

    @property
    def has_overlap(self) -> bool:
        return self.overlap_items > 0

    def as_dict(self) -> dict:
        return asdict(self)


def agreement(db: Database, project_id: int, adjudicated: Mapping[int, object] | None = None,
              split: str | None = None) -> AgreementView:
    """The project's agreement figures; `adjudicated`: item id -> its final label, where one was decided (by
    default the adjudications stored)."""
    with db.read() as s:
        project = s.get(Project, project_id)
        if project is None:
            raise WorkbenchError(f"project {project_id} does not exist")
        return agreement_in(s, project, adjudicated, split)


def agreement_in(s: Session, project: Project, adjudicated: Mapping[int, object] | None = None,
                 split: str | None = None) -> AgreementView:
    """`agreement` inside an open session (the export of the summary reads it so)."""
    rows = current_answers(s, project.id, split)
    if adjudicated is None:  # the reviewers' final labels of disputed items (storage.labels)
        adjudicated = {item_id: label.value for item_id, label in current_labels(s, project.id, split).items()
                       if label.adjudicated}
    classes = list(project.classes)
    report = measures.agreement(rows, len(classes), project.task == "multi_label", adjudicated)
    return AgreementView(
        project_id=project.id, project=project.name, task=project.task, classes=classes,
        annotators=report.annotators, overlap_items=report.overlap_items, alpha=report.alpha, pairs=report.pairs,
        tag_alphas=report.tag_alphas, confusion=report.confusion, per_annotator=report.per_annotator,
    )


def summary_json(s: Session, project: Project) -> bytes:
    """The agreement summary as a JSON file (the `agreement` export format)."""
    return json.dumps(agreement_in(s, project).as_dict(), indent=2, default=str).encode("utf-8")


def summary_lines(view: AgreementView) -> list[str]:
    """The figures as lines for a terminal."""
    lines = [f"{view.project} (project {view.project_id}): {len(view.annotators)} annotator(s), "
             f"{view.overlap_items} item(s) answered by two or more"]
    if not view.has_overlap:
        lines.append("  no overlap yet: agreement needs two or more annotators answering the same item")
    else:
        a = view.alpha
        how = "nominal, tags present/absent" if view.task == "multi_label" else "nominal"
        lines.append(f"  Krippendorff's alpha ({how}): {_number(a.alpha)} on {a.n_items} items, {a.n_values} answers")
        for tag in view.tag_alphas:
            lines.append(f"    tag {view.classes[tag.tag]}: alpha {_number(tag.alpha)} "
                         f"({tag.n_present} of the answers mark it)")
        for pair in view.pairs:
            lines.append(f"  Cohen's kappa {pair.first} / {pair.second}: {_number(pair.kappa)} (n={pair.n})")
        lines.append("  confusion between annotators (ordered pairs of answers on the same item):")
        width = max(len(c) for c in view.classes)
        lines.append("    " + " " * width + " " + " ".join(f"{c:>{max(len(c), 5)}}" for c in view.classes) + "      n")
        for c, row in enumerate(view.confusion.matrix):
            cells = " ".join(f"{v:>{max(len(name), 5)}}" for v, name in zip(row, view.classes))
            lines.append(f"    {view.classes[c]:<{width}} {cells} {view.confusion.n_per_class[c]:>6}")
    for person in view.per_annotator:
        pace = "–" if person.labels_per_hour is None else f"{person.labels_per_hour:.0f}"
        agrees = ("–" if person.agreement is None else f"{person.agreement:.0%}") + f" (n={person.agreement_n})"
        line = (f"  {person.annotator}: {person.labels} labels, {pace} per hour, median "
                f"{_seconds(person.median_seconds)}, mean {_seconds(person.mean_seconds)} per label "
                f"(n={person.timed}), agrees with others {agrees}")
        if person.adjudicated_n:
            line += f", with the final label {person.adjudicated:.0%} (n={person.adjudicated_n})"
        lines.append(line)
    return lines


def _number(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s"
