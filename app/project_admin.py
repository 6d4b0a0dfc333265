"""Project settings after creation, and deleting a project: the verbs behind `Workbench.change_settings`,
`Workbench.delete_project` and `Workbench.settings_history` (the Projects page and `python -m app project ...`).

What each change invalidates, and what is done about it (the sentences returned say the same to the user):

- backbone: the cached features, every head and every predictions file belong to the old feature space. The
  features stay on disk (switching back reuses them); heads and predictions are retired (storage.projects), so no
  job warm-starts from a head of another feature space and no page shows a guess from it. An embed job is queued,
  and with labels already given a training on them (a fresh head), so the next selection reads the new space.
- head kind, training method, warm start: the next training uses them; it warm-starts only from a head of the
  same kind and sizes (the train job's own check).
- strategy and its parameters, round size: from the next selection; a round already selected keeps its queue.
- overlap (share, evaluation items, annotators per item): from the next round queued; the round being labeled
  keeps its queue (an evaluation item added to it now gets its copies).
- eval-set size: grown by random pool items never answered and in no queue (seeded), queued at once in the round
  being labeled (later rounds queue open evaluation items themselves); shrunk only by evaluation items never
  answered and not held by an annotator: labeled evaluation items are never given back.

Every change is recorded in the project's settings history and noted on its latest round.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app import job_kinds
from app.errors import WorkbenchError
from app.project_settings import check_overlap, check_sizes, check_strategy, check_training
from app.rounds import send_to_training
from app.settings import Settings
from learners.catalog import HEAD_KINDS, REQUIRED_VIEWS, TRAINING_METHODS, SSLConfig
from learners.strategies import strategy_class
from storage import projects as stored
from storage import queue
from storage.db import Database
from storage.files import project_dir
from storage.labels import current_labels
from storage.models import Project, QueueEntry
from storage.rounds import latest_round
from storage.source_heads import backbone_key

BACKBONE_KEYS = ("name", "pretrained", "checkpoint", "image_size")
PROJECT_NAME_MAX = 200  # characters; file names (exports, zip folders) are built from it


def check_project_name(name: str) -> str:
    """The project name `name`, stripped, or a worded WorkbenchError. A name must not read as an id: the CLI
    addresses a project by name, and by id only as `#<id>`, so a name of digits only, or starting with '#', is
    refused (projects named so before keep working by name)."""
    name = (name or "").strip()
    if not name:
        raise WorkbenchError("a project needs a name")
    if len(name) > PROJECT_NAME_MAX:
        raise WorkbenchError(f"a project name is at most {PROJECT_NAME_MAX} characters (this one has {len(name)})")
    if name.isdigit() or name.startswith("#"):
        raise WorkbenchError(f"project name {name!r}: a name must not be all digits or start with '#', so it is "
                             "never mistaken for a project id (ids are written #1 on the command line)")
    if any(not c.isprintable() for c in name):
        raise WorkbenchError(f"project name {name!r}: a name must not hold control characters or line breaks")
    return name
BACKBONE_FORMS = "'pixels' or 'timm/<model name>' (for example 'timm/resnet18')"
MODEL_JOBS = ("embed", "select", "train")  # jobs that read the features or the evaluation set while they run


@dataclass(frozen=True)
class SettingsChange:
    """What to change; None keeps the setting as it is. `strategy_params` None with a new strategy: its defaults
    (with the same strategy: the current parameters)."""

    backbone: dict | None = None
    head: str | None = None
    ssl: str | None = None
    warm_start: bool | None = None
    strategy: str | None = None
    strategy_params: dict | None = None
    round_size: int | None = None
    eval_size: int | None = None
    pick_ahead: int | None = None
    overlap: float | None = None
    overlap_eval: bool | None = None
    overlap_k: int | None = None


def check_backbone(spec: dict | str) -> dict:
    """The backbone spec as stored (torch-free check: the worker loads it); WorkbenchError naming the problem."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    unknown = sorted(set(spec) - set(BACKBONE_KEYS))
    if unknown:
        raise WorkbenchError(f"unknown backbone setting(s) {unknown}; accepted: {', '.join(BACKBONE_KEYS)}")
    name = str(spec.get("name") or "").strip()
    if name != "pixels" and not (name.startswith("timm/") and len(name) > len("timm/")):
        raise WorkbenchError(f"backbone {name!r}: use {BACKBONE_FORMS}")
    spec["name"] = name
    if spec.get("checkpoint"):
        path = Path(str(spec["checkpoint"])).expanduser()
        if not path.is_file():
            raise WorkbenchError(f"{path}: no such checkpoint file")
        spec["checkpoint"] = str(path)
    if spec.get("image_size") is not None and (not isinstance(spec["image_size"], int) or spec["image_size"] < 4):
        raise WorkbenchError(f"image_size must be a whole number of pixels >= 4, got {spec['image_size']!r}")
    return spec


def _effective(spec: dict | str) -> str:
    """The feature space a spec gives (pixels read neither weights nor a checkpoint, and default to 16 px)."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    if spec.get("name") == "pixels":
        return f"pixels|size={spec.get('image_size') or 16}"
    return backbone_key({**spec, "checkpoint": spec.get("checkpoint") or None})


def _without_defaults(strategy: str, params: dict) -> dict:
    declared = {param.name: param.default for param in strategy_class(strategy).params}
    return {name: value for name, value in params.items() if name not in declared or declared[name] != value}


def _method(training: dict | None) -> str:
    return SSLConfig.from_dict((training or {}).get("ssl", "none")).method


def _warm(training: dict | None) -> bool:
    training = training or {}
    return bool(training.get("warm_start", TRAINING_METHODS[_method(training)].warm_start))


def _settings_of(project: Project) -> dict:
    return {"backbone": dict(project.backbone), "head": dict(project.head), "training": dict(project.training or {}),
            "strategy": project.strategy, "strategy_params": dict(project.strategy_params or {}),
            "round_size": project.round_size, "eval_size": project.eval_size, "pick_ahead": project.pick_ahead,
            "overlap": project.overlap, "overlap_eval": project.overlap_eval, "overlap_k": project.overlap_k}


def _checked(project: Project, change: SettingsChange) -> dict:
    """The settings after `change` (only what differs from now), checked; WorkbenchError otherwise."""
    new: dict = {}
    if change.backbone is not None:
        spec = check_backbone(change.backbone)
        if _effective(spec) != _effective(project.backbone):
            new["backbone"] = spec
    if change.head is not None and change.head != project.head.get("kind"):
        if change.head not in HEAD_KINDS:
            raise WorkbenchError(f"unknown head kind {change.head!r}; known: {', '.join(HEAD_KINDS)}")
        new["head"] = {**project.head, "kind": change.head}
    training = dict(project.training or {})
    if change.ssl is not None and change.ssl != _method(training):
        training["ssl"] = change.ssl
    if change.warm_start is not None and change.warm_start != _warm(training):
        training["warm_start"] = bool(change.warm_start)
    if training != (project.training or {}):
        check_training(training, project.task)
        new["training"] = training
    strategy = change.strategy or project.strategy
    if change.strategy_params is not None:
        params = dict(change.strategy_params)
    else:
        params = dict(project.strategy_params or {}) if strategy == project.strategy else {}
    if strategy != project.strategy or change.strategy_params is not None:
        check_strategy(strategy, params, project.task)
        if strategy != project.strategy or (_without_defaults(strategy, params)
                                            != _without_defaults(strategy, project.strategy_params or {})):
            new["strategy"], new["strategy_params"] = strategy, params
    round_size = project.round_size if change.round_size is None else int(change.round_size)
    eval_size = project.eval_size if change.eval_size is None else int(change.eval_size)
    check_sizes(round_size, eval_size)
    if round_size != project.round_size:
        new["round_size"] = round_size
    if change.eval_size is not None:
        new["eval_size"] = eval_size  # checked against the set's actual size when applied
    if change.pick_ahead is not None and int(change.pick_ahead) != project.pick_ahead:
        if int(change.pick_ahead) < 0:
            raise WorkbenchError(f"pick-ahead must be a whole number >= 0 (0 turns it off), not {change.pick_ahead}")
        new["pick_ahead"] = int(change.pick_ahead)
    overlap = (project.overlap, project.overlap_eval, project.overlap_k)
    wanted = tuple(now if given is None else given
                   for now, given in zip(overlap, (change.overlap, change.overlap_eval, change.overlap_k)))
    check_overlap(*wanted)
    for name, now, then in zip(("overlap", "overlap_eval", "overlap_k"), overlap, wanted):
        if then != now:
            new[name] = then
    return new


def _overlap_line(project: Project, new: dict) -> str:
    def words(share: float, evals: bool, k: int) -> str:
        parts = ([f"{share:.0%} of each round's pool items"] if share else []) + (["every evaluation item"] if evals else [])
        return f"{' and '.join(parts)} to {k} annotators each" if parts else "no overlap"

    before = words(project.overlap, project.overlap_eval, project.overlap_k)
    after = words(new.get("overlap", project.overlap), new.get("overlap_eval", project.overlap_eval),
                  new.get("overlap_k", project.overlap_k))
    return (f"overlap: {before} -> {after}: from the next round queued (the round being labeled keeps its queue); "
            "differing answers make an item disputed until a reviewer adjudicates it")


def _describe_params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "its defaults"


def plan(project: Project, change: SettingsChange) -> list[str]:
    """What `change` would change and what that invalidates, before anything is done (the Projects page's
    preview); [] when nothing would change. WorkbenchError when a setting is not valid."""
    new = _checked(project, change)
    lines = []
    if "backbone" in new:
        lines.append(f"backbone {project.backbone.get('name')} -> {new['backbone']['name']}: the cached features, "
                     "every head and its predictions become stale; the images are embedded again and the next "
                     "training starts from a fresh head")
    if "head" in new:
        lines.append(f"head {project.head.get('kind')} -> {new['head']['kind']}: the next training trains it "
                     "(a warm start only from a head of the same kind)")
    if "training" in new:
        lines.append(f"training {_method(project.training)}{' + warm start' if _warm(project.training) else ''} -> "
                     f"{_method(new['training'])}{' + warm start' if _warm(new['training']) else ''}: "
                     "from the next training")
    if "strategy" in new:
        lines.append(f"strategy {project.strategy} -> {new['strategy']} ({_describe_params(new['strategy_params'])}): "
                     "from the next round; a round already selected keeps its queue")
    if "round_size" in new:
        lines.append(f"round size {project.round_size} -> {new['round_size']}: from the next selection")
    if "pick_ahead" in new:
        lines.append(_pick_ahead_line(project.pick_ahead, new["pick_ahead"]))
    if {"overlap", "overlap_eval", "overlap_k"} & set(new):
        lines.append(_overlap_line(project, new))
    if "eval_size" in new and new["eval_size"] != project.eval_size:
        lines.append(f"eval-set size {project.eval_size} -> {new['eval_size']}: grown by random unlabeled pool items, or shrunk by "
                     "unlabeled evaluation items only (labeled ones are always kept)")
    return lines


def change_settings(db: Database, settings: Settings, project_id: int, change: SettingsChange) -> list[str]:
    """Apply `change` to the project in one transaction; returns one sentence per change saying what it did
    ([] when nothing changed). Refused while a worker runs a job of the project that the change would pull the
    ground from (a new backbone or eval-set size during an embed, select or train job)."""
    with db.write() as s:
        project = s.get(Project, project_id)
        if project is None:
            raise WorkbenchError(f"project {project_id} does not exist")
        before = _settings_of(project)
        new = _checked(project, change)
        if "eval_size" in new and new["eval_size"] == stored.eval_counts(s, project_id)[0]:
            del new["eval_size"]
            project.eval_size = before["eval_size"] if change.eval_size is None else int(change.eval_size)
        if not new:
            return []
        if {"backbone", "eval_size"} & set(new):
            busy = [job for job in stored.running_jobs(s, project_id, settings.stale_seconds) if job.kind in MODEL_JOBS]
            if busy:
                what = "backbone" if "backbone" in new else "eval-set size"
                raise WorkbenchError(
                    f"{busy[0].kind} job {busy[0].id} of this project is running on a worker now; the {what} can be "
                    "changed once it is done (Jobs page). Nothing was changed.")
        round_ = latest_round(s, project_id)
        lines = []
        if "backbone" in new:
            lines.append(_new_backbone(s, project, new["backbone"]))
        if "head" in new:
            project.head = new["head"]
            lines.append(f"head {before['head'].get('kind')} -> {project.head['kind']}: the next training trains a "
                         f"{project.head['kind']} head (it warm-starts only from a head of the same kind and sizes)")
            method_head = TRAINING_METHODS[_method(project.training)].head_kind
            if method_head and method_head != project.head["kind"]:
                lines[-1] += f"; note: {_method(project.training)} always trains a {method_head} head"
        if "training" in new:
            lines.append(_new_training(s, project, new["training"]))
        if "strategy" in new:
            project.strategy, project.strategy_params = new["strategy"], new["strategy_params"]
            keeps = "" if round_ is None else f"; round {round_.index} keeps its strategy ({round_.strategy}) and queue"
            lines.append(f"strategy {before['strategy']} ({_describe_params(before['strategy_params'])}) -> "
                         f"{project.strategy} ({_describe_params(project.strategy_params)}): from the next round{keeps}")
        if "round_size" in new:
            project.round_size = new["round_size"]
            lines.append(f"round size {before['round_size']} -> {project.round_size}: from the next selection"
                         + ("" if round_ is None or round_.state == "selecting"
                            else f"; round {round_.index}'s queue keeps its size"))
        if "pick_ahead" in new:
            lines.append(_pick_ahead_line(project.pick_ahead, new["pick_ahead"]))
            project.pick_ahead = new["pick_ahead"]
        if {"overlap", "overlap_eval", "overlap_k"} & set(new):
            lines.append(_overlap_line(project, new))
            for name in ("overlap", "overlap_eval", "overlap_k"):
                if name in new:
                    setattr(project, name, new[name])
        if "eval_size" in new:
            lines.append(_new_eval_size(s, project, new["eval_size"]))
        if round_ is not None and round_.state != "selecting":  # a selection writes its own note
            round_.note = (round_.note + "; " if round_.note else "") + "settings changed: " + ", ".join(
                name.replace("_", " ") for name in new if name != "strategy_params")
        stored.record_settings_change(s, project_dir(settings.home, project_id), project_id,
                                      None if round_ is None else round_.index, lines, before, _settings_of(project))
        return lines


def _new_backbone(s, project: Project, spec: dict) -> str:
    old = project.backbone.get("name")
    project.backbone = spec
    retired = stored.retire_artifacts(s, project.id, ("head", "predictions"), f"backbone changed from {old}")
    embed = job_kinds.enqueue(s, "embed", project.id)
    line = (f"backbone {old} -> {spec['name']}: embed job {embed.id} queued; the features of {old} are no longer "
            f"read (kept on disk: switching back reuses them); {retired} head and prediction file(s) of the old "
            "feature space retired, so the next training starts from a fresh head and the Label page shows no "
            "guess until then")
    labels = len(current_labels(s, project.id, split="pool"))
    if labels:
        train = job_kinds.enqueue(s, "train", project.id, None, {"on_demand": True, "reason": "new backbone"})
        line += f"; train job {train.id} queued: a fresh head on the {labels} labels so far, once the features are ready"
    return line


def _new_training(s, project: Project, training: dict) -> str:
    old = project.training or {}
    project.training = training
    line = (f"training {_method(old)}{' + warm start' if _warm(old) else ''} -> "
            f"{_method(training)}{' + warm start' if _warm(training) else ''}: from the next training "
            "(a warm start only from a head of the kind and sizes it trains)")
    if REQUIRED_VIEWS.get(_method(training)) and not REQUIRED_VIEWS.get(_method(old)):
        embed = job_kinds.enqueue(s, "embed", project.id)
        line += f"; embed job {embed.id} queued for the augmented views it reads"
    return line


def _new_eval_size(s, project: Project, size: int) -> str:
    now, answered = stored.eval_counts(s, project.id)
    labeling = queue.labeling_round(s, project.id)
    if size > now:
        added = stored.grow_eval_set(s, project.id, size - now, project.seed)
        line = f"eval-set size {now} -> {now + len(added)}: {len(added)} random unlabeled pool item(s) added"
        if len(added) < size - now:
            line += f" (asked for {size}: no more unlabeled pool items are free)"
        if labeling is not None and added:
            start = queue.next_position(s, labeling.id)
            copies = max(2, project.overlap_k) if project.overlap_eval else 1
            for position, item_id in enumerate(added, start=start):
                for copy_index in range(copies):
                    s.add(QueueEntry(round_id=labeling.id, item_id=item_id, position=position, arm="eval",
                                     copy_index=copy_index))
            line += f", queued in round {labeling.index} for labeling"
        elif added:
            line += ", queued by the next round's selection"
        project.eval_size = now + len(added)
        return line
    removed, dropped = stored.shrink_eval_set(s, project.id, now - size, project.seed)
    line = f"eval-set size {now} -> {now - len(removed)}: {len(removed)} unlabeled evaluation item(s) given back to the pool"
    if dropped:
        line += f" ({dropped} of them left round {labeling.index if labeling else '?'}'s queue)"
    if len(removed) < now - size:
        line += (f"; asked for {size}, but labeled evaluation items are never given back "
                 f"({answered} answered, others held by an annotator now)")
    project.eval_size = now - len(removed)
    if (labeling is not None and dropped and queue.open_entries(s, labeling.id) == 0
            and not getattr(labeling, "awaiting_selection", False)):  # a round opened ahead waits for its selection
        send_to_training(s, labeling)
        line += f"; round {labeling.index} had nothing left to label and went to training"
    return line


# ----- deletion -------------------------------------------------------------------------------------------------
def delete_project(db: Database, settings: Settings, project_id: int, confirm: str) -> list[str]:
    """Delete the project: every row of it in every table, then its own folder under the workbench home. Refused
    unless `confirm` is the project's name, and while a worker runs one of its jobs (nothing is deleted then).
    The imported images (its data root) and uploads stay where they are. Returns what was done, in sentences."""
    with db.write() as s:
        project = s.get(Project, project_id)
        if project is None:
            raise WorkbenchError(f"project {project_id} does not exist")
        name, data_root = project.name, project.data_root
        if confirm != name:
            raise WorkbenchError(f"to delete project {name!r}, type its name exactly; nothing was deleted")
        busy = stored.running_jobs(s, project_id, settings.stale_seconds)
        if busy:
            raise WorkbenchError(
                f"{busy[0].kind} job {busy[0].id} of project {name!r} is running on worker {busy[0].worker}; "
                "wait until it is done (Jobs page), or stop that worker, then delete. Nothing was deleted.")
        counts = stored.delete_project_rows(s, project_id)
    rows = ", ".join(f"{n} {table.replace('_', ' ')}" for table, n in counts.items() if n and table != "projects")
    lines = [f"project {name!r} deleted with its rows ({rows or 'no other rows'})"]
    folder = stored.remove_project_folder(settings.home, project_id)
    lines.append(f"its folder {folder} removed" if folder else "it had no folder of its own")
    lines.append(f"the imported images in {data_root} were not touched")
    return lines


def settings_history(db: Database, project_id: int) -> list[stored.SettingsRecord]:
    with db.read() as s:
        return stored.settings_history(s, project_id)


def _pick_ahead_line(before: int, after: int) -> str:
    return (f"pick-ahead {before} -> {after}: from the next selection, the strategy ranks {after} items beyond the "
            f"round, labeled while the round trains" + (" (0: the annotators wait for each training)" if not after else ""))
