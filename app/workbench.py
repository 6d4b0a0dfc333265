"""The verbs of the workbench: create a project, start and close rounds, label, skip, undo, release, retry a job,
start a simulation, export.

Everything a page or the CLI does goes through here; what they show comes from app.read_models (through the
read-side methods at the end), settings checks from app.project_settings, the model work from the worker (app.jobs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from app import job_kinds, project_admin, read_models, strategy_state
from app.errors import WorkbenchError
from app.exports import FORMATS, refusal
from app.project_settings import (
    check_overlap,
    check_sizes,
    check_strategy,
    check_task,
    check_training,
    default_eval_size,
)
from app.rounds import after_answer_of, open_round, send_to_training
from app.settings import Settings
from learners.catalog import METHOD_NAMES
from learners.strategies import Panel, available_strategies
from storage import answers, importers, jobs, queue, source_heads
from storage.db import Database
from storage.demo import DEMO_CLASSES, DEMO_TAGS, write_demo, write_tag_demo
from storage.files import latest_artifact, latest_artifacts, load_matrix, project_dir, save_tensors
from storage.items import all_projects, gold_counts, key_and_split, project_id_named
from storage.labels import current_labels
from storage.models import Annotation, Job, Project, Round, utcnow
from storage.rounds import latest_round, project_rounds, unfinished_round

DEMO_PROJECT = "Demo digits"
DEFAULT_BACKBONE = {"name": "pixels", "image_size": 16}


@dataclass
class ProjectConfig:
    name: str
    backbone: dict = field(default_factory=lambda: dict(DEFAULT_BACKBONE))
    head: dict = field(default_factory=lambda: {"kind": "linear"})
    training: dict = field(default_factory=dict)
    strategy: str = "margin"
    strategy_params: dict = field(default_factory=dict)
    round_size: int = 10
    eval_size: int | None = None  # None: app.project_settings.default_eval_size of the imported pool
    auto_next_round: bool = True
    # Items each batch round ranks beyond its size: the next round starts with them while the head trains, so
    # labeling never waits at a round boundary (app.rounds); 0: the next round opens after the training.
    pick_ahead: int = 5
    # Several annotators on the same items (storage.queue.add_copies): a share of each round's pool items, and with
    # overlap_eval every evaluation item, goes to overlap_k different annotators; answers that differ make the item
    # disputed until a reviewer adjudicates it (storage.labels, the Adjudicate page).
    overlap: float = 0.0
    overlap_eval: bool = False
    overlap_k: int = 2
    seed: int = 0
    task: str = "single_label"
    source_head: str | None = None  # a head file exported from another project: it chooses round 0
    classes: list[str] | None = None  # class names in order; needed for unlabeled images (a flat folder)


@dataclass(frozen=True)
class Assignment:
    """The queue entry an annotator holds on the Label page, with what the page shows about it."""

    entry_id: int
    item_id: int
    key: str
    path: Path
    split: str
    arm: str
    round_index: int
    round_strategy: str
    done_in_round: int
    total_in_round: int
    guess: list[tuple[int, float]] | None  # the latest head's [(class, probability)]: its top class, or every tag >= 0.5


READ_SHARE = 0.85  # of an import's progress bar: reading and checking the files; the rest is storing the rows


class Workbench:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.db = Database(self.settings.db_url)

    # ----- projects -----------------------------------------------------------------------------------------------
    def create_project(self, config: ProjectConfig, source: str | Path, progress=None,
                       on_warning: Callable[[str], None] | None = None) -> int:
        """Import `source` ('demo', 'demo-tags' (the digits with multi-label tags), an image folder, or a
        .csv/.jsonl manifest) and start round 0; returns the project id.

        What the import says but does not refuse (the same image in the eval set and the pool, two spellings of
        one class folder, files that are not images) goes to `on_warning`, one sentence per call, once the
        project is stored (the CLI prints them, the Projects page shows them)."""
        project_admin.check_project_name(config.name)  # not id-like, not too long: a worded refusal
        if not isinstance(config.pick_ahead, int) or config.pick_ahead < 0:
            raise WorkbenchError(f"pick_ahead must be a whole number >= 0 (0 turns it off), not {config.pick_ahead!r}")
        check_sizes(config.round_size, config.eval_size)
        check_overlap(config.overlap, config.overlap_eval, config.overlap_k)
        check_task(config.task)
        check_strategy(config.strategy, config.strategy_params, config.task)
        check_training(config.training, config.task)
        head_file = self._read_source_head(config.source_head)
        # Reading (checking every file) is most of an import's time, storing the rows the rest.
        reading = None if progress is None else (lambda f, message: progress(READ_SHARE * f, message))
        storing = None if progress is None else (lambda f, message: progress(READ_SHARE + (1 - READ_SHARE) * f, message))
        result = self._read_source(source, reading, multi_label=config.task == "multi_label",
                                   classes=config.classes or None)
        if len(result.classes) < 2 and config.task == "single_label":
            raise WorkbenchError(
                f"{source}: found {len(result.classes)} class(es) {result.classes}; a single-label project needs at least 2"
            )
        with self.db.write() as s:
            if project_id_named(s, config.name) is not None:
                raise WorkbenchError(f"a project named {config.name!r} already exists")
            project = Project(
                name=config.name,
                task=config.task,
                classes=list(result.classes),
                data_root=str(result.data_root),
                backbone=config.backbone,
                head=config.head,
                training=config.training,
                strategy=config.strategy,
                strategy_params=config.strategy_params,
                round_size=config.round_size,
                eval_size=(default_eval_size(len(result.items), len(result.classes))
                           if config.eval_size is None else config.eval_size),
                auto_next_round=config.auto_next_round,
                pick_ahead=config.pick_ahead,
                overlap=float(config.overlap),
                overlap_eval=config.overlap_eval,
                overlap_k=config.overlap_k,
                seed=config.seed,
            )
            s.add(project)
            s.flush()
            importers.store_import(s, project.id, result, eval_size=project.eval_size, seed=config.seed,
                                   progress=storing)
            if head_file is not None:
                self._store_source_head(s, project, *head_file)
            job_kinds.enqueue(s, "embed", project.id)
            open_round(s, project)
            project_id = project.id
        if on_warning is not None:
            for warning in import_warnings(result):
                on_warning(warning)
        return project_id

    def _read_source(self, source: str | Path, progress=None, multi_label: bool = False,
                     classes: list[str] | None = None) -> importers.ImportResult:
        if str(source) == "demo":
            root = write_demo(self.settings.home / "demo_digits")
            result = importers.scan_folder(root, classes=DEMO_CLASSES, progress=progress)
            result.skipped = []  # the tag demo's manifest, in the same folder: nothing the user gave
            return result
        if str(source) == "demo-tags":
            if not multi_label:
                raise WorkbenchError("the tag demo gives each digit a set of tags: create it as a multi-label project")
            manifest = write_tag_demo(self.settings.home / "demo_digits")
            return importers.read_manifest(manifest, classes=DEMO_TAGS, progress=progress, multi_label=True)
        path = Path(source).expanduser()
        if not path.exists():
            raise WorkbenchError(f"{path}: no such file or folder")
        if path.is_dir():
            return importers.scan_folder(path, classes=classes, progress=progress)
        return importers.read_manifest(path, classes=classes, progress=progress, multi_label=multi_label)

    def _read_source_head(self, path: str | None) -> tuple[str, dict, dict] | None:
        if not path:
            return None
        path = Path(path).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WorkbenchError(f"{path}: cannot read the source head ({exc.strerror or exc})") from exc
        try:
            arrays, metadata = source_heads.read_head_file(data, str(path))
        except source_heads.SourceHeadProblem as exc:
            raise WorkbenchError(str(exc)) from exc
        return path.name, arrays, metadata

    def _store_source_head(self, s, project: Project, name: str, arrays: dict, metadata: dict) -> None:
        """The source head becomes the project's first head: it predicts round 0's picks and warm-starts training."""
        try:
            source_heads.check_source_head(metadata, name, classes=project.classes, task=project.task,
                                           backbone=project.backbone)
        except source_heads.SourceHeadProblem as exc:
            raise WorkbenchError(str(exc)) from exc
        path = project_dir(self.settings.home, project.id) / "models" / f"source-{utcnow():%Y%m%d%H%M%S%f}.safetensors"
        save_tensors(s, path, project_id=project.id, kind="head", arrays=arrays, metadata={**metadata, "source": name})

    def ensure_demo_project(self) -> int:
        with self.db.read() as s:
            pid = project_id_named(s, DEMO_PROJECT)
        return pid if pid is not None else self.create_project(ProjectConfig(name=DEMO_PROJECT), "demo")

    def projects(self) -> list[Project]:
        with self.db.read() as s:
            return all_projects(s)

    def project(self, project_id: int) -> Project:
        with self.db.read() as s:
            project = s.get(Project, project_id)
        if project is None:
            raise WorkbenchError(f"project {project_id} does not exist")
        return project

    def project_id(self, name_or_id: str | int) -> int:
        """The id of the project addressed as the CLI does: an int is an id, a string `#<id>` is an id, any
        other string is a name (so a project named "1" is never taken for project 1)."""
        text = str(name_or_id).strip()
        if isinstance(name_or_id, int) or (text.startswith("#") and text[1:].isdigit()):
            pid = int(name_or_id) if isinstance(name_or_id, int) else int(text[1:])
            with self.db.read() as s:
                if s.get(Project, pid) is None:
                    raise WorkbenchError(f"no project with id {pid} (#{pid}); a name is given without '#'")
            return pid
        with self.db.read() as s:
            pid = project_id_named(s, str(name_or_id))
        if pid is None:
            hint = f"; to address project id {text}, write #{text}" if text.isdigit() else ""
            raise WorkbenchError(f"no project named {name_or_id!r}{hint}")
        return pid

    def set_strategy(self, project_id: int, strategy: str, params: dict | None = None) -> None:
        check_strategy(strategy, params, self.project(project_id).task)
        with self.db.write() as s:
            project = s.get(Project, project_id)
            project.strategy = strategy
            project.strategy_params = params or {}

    def change_settings(self, project_id: int, change: project_admin.SettingsChange) -> list[str]:
        """Change settings after creation (app.project_admin: what each change invalidates and what is done
        about it); returns one sentence per change, [] when nothing changed."""
        return project_admin.change_settings(self.db, self.settings, project_id, change)

    def settings_plan(self, project_id: int, change: project_admin.SettingsChange) -> list[str]:
        """What `change_settings` would change and invalidate, without doing it."""
        return project_admin.plan(self.project(project_id), change)

    def settings_history(self, project_id: int) -> list:
        """The project's settings changes, newest first (storage.projects.SettingsRecord)."""
        return project_admin.settings_history(self.db, project_id)

    def delete_project(self, project_id: int, confirm: str) -> list[str]:
        """Delete the project's rows and its own folder once `confirm` is its name (app.project_admin)."""
        lines = project_admin.delete_project(self.db, self.settings, project_id, confirm)
        return lines

    # ----- rounds -------------------------------------------------------------------------------------------------
    def rounds(self, project_id: int) -> list[Round]:
        with self.db.read() as s:
            return project_rounds(s, project_id)

    def current_round(self, project_id: int) -> Round | None:
        with self.db.read() as s:
            return latest_round(s, project_id)

    def start_round(self, project_id: int, strategy: str | None = None, params: dict | None = None) -> int:
        if strategy is not None:
            check_strategy(strategy, params, self.project(project_id).task)
        with self.db.write() as s:
            project = s.get(Project, project_id)
            busy = unfinished_round(s, project_id)
            if busy is not None:
                raise WorkbenchError(f"round {busy.index} is still {busy.state}; close it before starting another")
            return open_round(s, project, strategy, params).index

    def close_round(self, project_id: int) -> int:
        """Close the labeling round now (its unlabeled items are dropped) and send it to training."""
        with self.db.write() as s:
            round_ = queue.labeling_round(s, project_id)
            if round_ is None:
                raise WorkbenchError("no round is being labeled")
            if round_.awaiting_selection:
                raise WorkbenchError(
                    f"round {round_.index} began with items picked ahead while round {round_.picked_ahead_by} "
                    "trains; it can be closed once its own selection is queued, right after that training")
            queue.drop_open_entries(s, round_.id)
            send_to_training(s, round_)
            return round_.index

    def retrain(self, project_id: int) -> int:
        """Retrain on demand on the labels so far, without closing the round."""
        with self.db.write() as s:
            return job_kinds.enqueue(s, "train", project_id, None, {"on_demand": True}).id

    # ----- labeling -----------------------------------------------------------------------------------------------
    def next_assignment(self, project_id: int, annotator: str) -> Assignment | None:
        """Claim the next queue entry for `annotator`: one an undo handed back in a closed round first
        (storage.queue.retract), else the labeling round's (the one they hold already, if any)."""
        annotator = _annotator(annotator)
        with self.db.write() as s:
            claim = queue.claim_reopened(s, project_id, annotator, self.settings.lease_seconds)
            if claim is not None:
                round_ = s.get(Round, claim.round_id)
            else:
                round_ = queue.labeling_round(s, project_id)
                if round_ is None:
                    return None
                claim = queue.claim_next(s, round_.id, annotator, self.settings.lease_seconds)
                if claim is None:
                    return None
            key, split = key_and_split(s, claim.item_id)
            counts = queue.round_counts(s, round_.id)
            predictions = next(iter(latest_artifacts(s, project_id, "predictions", limit=1)), None)
            project = s.get(Project, project_id)
        return Assignment(
            entry_id=claim.entry_id,
            item_id=claim.item_id,
            key=key,
            path=Path(project.data_root) / key,
            split=split,
            arm=claim.arm,
            round_index=round_.index,
            round_strategy=round_.strategy,
            done_in_round=counts["labeled"] + counts["skipped"],
            total_in_round=sum(counts.values()) - counts["dropped"],
            guess=read_models.guess(predictions, claim.item_id, project.task),
        )

    def submit(self, project_id: int, entry_id: int, annotator: str, value: list[int], seconds: float | None = None) -> None:
        annotator = _annotator(annotator)
        with self.db.write() as s:
            project = s.get(Project, project_id)  # read each time: ids of deleted projects are reused
            if project is None:
                raise WorkbenchError(f"project {project_id} does not exist")
            bad = [v for v in value if not 0 <= int(v) < len(project.classes)]
            if bad or (project.task == "single_label" and len(value) != 1):
                raise WorkbenchError(f"label {value} is not valid for classes {project.classes}")
            value = sorted({int(v) for v in value})  # a multi-label answer is a set of tags; [] is "none of these"
            after_answer_of(s, queue.submit_label(s, project_id, entry_id, annotator, value, seconds))

    def skip(self, project_id: int, entry_id: int, annotator: str, seconds: float | None = None) -> None:
        with self.db.write() as s:
            after_answer_of(s, queue.skip(s, project_id, entry_id, _annotator(annotator), seconds))

    def undo(self, project_id: int, annotator: str) -> Annotation | None:
        """Retract the annotator's latest answer; its item is theirs again, first, also when that answer closed
        its round (storage.queue.retract). Returns the retracted annotation, None when there is nothing to undo."""
        with self.db.write() as s:
            return queue.undo_last(s, project_id, _annotator(annotator), self.settings.lease_seconds)

    def hold(self, project_id: int, annotator: str, k: int) -> list[queue.Claim]:
        """Hold up to `k` queue entries for `annotator` (storage.answers.claim_ahead, the label surface's rule):
        every entry they hold, in the order to answer them."""
        with self.db.write() as s:
            return answers.claim_ahead(s, project_id, _annotator(annotator), k, self.settings.lease_seconds)

    def answer_batch(self, project_id: int, annotator: str, client_id: str, batch: list[dict]) -> answers.BatchResult:
        """Apply a batch of numbered answers exactly once, in one transaction (storage.answers.apply_answers, as
        the label surface sends them), the round state machine after each."""
        with self.db.write() as s:
            return answers.apply_answers(s, project_id, _annotator(annotator), client_id, batch,
                                         self.settings.lease_seconds, after_answer=after_answer_of)

    def release(self, entry_id: int, annotator: str) -> None:
        with self.db.write() as s:
            queue.release(s, entry_id, _annotator(annotator))

    def labels(self, project_id: int, split: str | None = None) -> dict[int, list[int]]:
        with self.db.read() as s:
            return {k: v.value for k, v in current_labels(s, project_id, split).items()}

    # ----- model outputs ------------------------------------------------------------------------------------------
    def predictions(self, project_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(probs, item_ids) of the latest trained head, or None before the first training."""
        with self.db.read() as s:
            artifact = latest_artifact(s, project_id, "predictions")
        return None if artifact is None else load_matrix(artifact)

    # ----- read models for pages and the CLI (app.read_models) --------------------------------------------------
    def status(self, project_id: int) -> read_models.ProjectStatus:
        return read_models.project_status(self.db, project_id)

    def statuses(self, project_ids: list[int] | None = None) -> dict[int, read_models.ProjectStatus]:
        """project id -> status of the given projects (all when None), in a few queries for all of them."""
        return read_models.project_statuses(self.db, project_ids)

    def active_jobs(self, project_id: int) -> list[read_models.JobView]:
        """The project's queued and running jobs (`status(...).jobs`) without the rest of its status."""
        return read_models.active_jobs(self.db, project_id)

    def labels_per_class(self, project_id: int) -> dict[tuple[int, str], int]:
        """(class index, split) -> items with a current label holding that class, counted in SQL."""
        return read_models.labels_per_class(self.db, project_id)

    def chart_data(self, project_id: int) -> list[read_models.ChartPoint]:
        return read_models.chart_points(self.db, project_id)

    def round_table(self, project_id: int) -> list[read_models.RoundRow]:
        return read_models.round_table(self.db, project_id)

    def jobs(self, project_id: int, limit: int = 20) -> list[read_models.JobView]:
        return read_models.recent_jobs(self.db, project_id, limit)

    def failed_jobs(self, project_id: int) -> list[read_models.JobView]:
        return read_models.failed_jobs(self.db, project_id)

    def has_predictions(self, project_id: int) -> bool:
        return read_models.has_predictions(self.db, project_id)

    def simulations(self, project_id: int) -> list[read_models.SimulationResult]:
        return read_models.simulations(self.db, project_id)

    def strategy_panels(self, project_id: int) -> list[Panel]:
        """The dashboard panels of the project's stateful strategies (app.strategy_state.panels)."""
        with self.db.read() as s:
            return strategy_state.panels(s, s.get(Project, project_id))

    # ----- export -------------------------------------------------------------------------------------------------
    def export(self, project_id: int, fmt: str) -> tuple[str, bytes]:
        """(file name, bytes) of an export in format `fmt`, a name in app.exports.FORMATS (labels as csv, jsonl,
        parquet or an ImageFolder zip, predictions (CSV), or the latest trained head as a .safetensors file)."""
        if fmt not in FORMATS:
            raise WorkbenchError(f"unknown export format {fmt!r} ({', '.join(FORMATS)})")
        export_format = FORMATS[fmt]
        project = self.project(project_id)
        refused = refusal(export_format, project.task)
        if refused:
            raise WorkbenchError(refused)
        slug = "".join(c if c.isalnum() else "_" for c in project.name).strip("_")
        slug = slug[:50] or f"project{project_id}"  # at most 200 bytes: a file name stays under 255
        with self.db.read() as s:
            return f"{slug}{export_format.file_suffix}", export_format.write(s, project)

    # ----- strategies and jobs ----------------------------------------------------------------------------------
    def strategy_names(self) -> list[str]:
        """Names of the registered selection strategies (listing them loads numpy only, not torch)."""
        return list(available_strategies())

    def retry_job(self, job_id: int) -> int:
        """Queue a failed job again (same kind, project, round and parameters); returns the new job's id."""
        with self.db.write() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise WorkbenchError(f"job {job_id} does not exist")
            if job.state != "failed":
                raise WorkbenchError(f"job {job_id} is {job.state}; only a failed job can be retried")
            later = jobs.later_run(s, job)
            if later is not None:
                raise WorkbenchError(f"job {job_id} was already run again as job {later}")
            return job_kinds.enqueue(s, job.kind, job.project_id, job.round_id, dict(job.params or {})).id

    # ----- simulation -------------------------------------------------------------------------------------------
    def start_simulation(self, project_id: int, strategies: list[str], seeds: list[int], round_size: int, rounds: int,
                         holdout: int | None = None) -> int:
        """Queue a simulation job (the loop with an oracle answering from gold labels); returns the job id.
        A strategy may name the training method its runs use: 'margin+pseudo_label' (default: the project's).
        `holdout`: the held-out gold items the runs are measured on (None: app.simulation.holdout_size's default)."""
        names = self.strategy_names()
        unknown = [entry for entry in strategies
                   if entry.partition("+")[0] not in names or entry.partition("+")[2] not in ("", *METHOD_NAMES)]
        if unknown or not strategies:
            raise WorkbenchError(
                f"unknown strategies {unknown}; available: {', '.join(names)}, optionally +method "
                f"({', '.join(METHOD_NAMES)})" if unknown else "choose at least one strategy")
        if not seeds or round_size < 1 or rounds < 1:
            raise WorkbenchError("a simulation needs at least one seed, a round size >= 1 and at least one round")
        if holdout is not None and holdout < 1:
            raise WorkbenchError("a held-out split needs at least one item")
        task = self.project(project_id).task
        for entry in strategies:
            name, _, method = entry.partition("+")
            check_strategy(name, None, task)
            if method:
                check_training({"ssl": method}, task)
        with self.db.read() as s:
            items, with_gold = gold_counts(s, project_id)
        if with_gold < items:
            raise WorkbenchError(f"simulation needs gold labels on every item; {items - with_gold} of {items} have none")
        params = {"strategies": list(strategies), "seeds": [int(x) for x in seeds], "round_size": int(round_size), "rounds": int(rounds)}
        if holdout is not None:
            params["holdout"] = int(holdout)
        with self.db.write() as s:
            return job_kinds.enqueue(s, "simulate", project_id, None, params).id


def import_warnings(result: importers.ImportResult) -> list[str]:
    """What an import says without refusing: its warnings, then the files a folder scan ignored."""
    found = list(result.warnings)
    if result.skipped:
        shown = ", ".join(repr(name) for name in result.skipped[:5])
        more = f" and {len(result.skipped) - 5} more" if len(result.skipped) > 5 else ""
        found.append(f"{len(result.skipped)} file{'s' if len(result.skipped) != 1 else ''} without an image "
                     f"extension {'were' if len(result.skipped) != 1 else 'was'} not imported: {shown}{more}")
    return found


def _annotator(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise WorkbenchError("an annotator name is needed")
    return name[:100]
