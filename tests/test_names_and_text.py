"""Names, ids and user text (issue 13): a project name is never taken for an id, names are checked at creation,
the web server listens on loopback by default, user text is drawn as text (not Markdown), each simulation has
its own scratch folder, a late undo reopens its entry, and zip exports survive long and differently normalised
names."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import cli, launcher
from app.project_admin import PROJECT_NAME_MAX, check_project_name
from app.settings import Settings
from app.workbench import ProjectConfig, Workbench, WorkbenchError
from storage.models import Round
from tests.conftest import make_round


@pytest.fixture
def wb(settings: Settings) -> Workbench:
    workbench = Workbench(settings)
    yield workbench
    workbench.db.dispose()


# ----- 7: names and ids are not confusable ------------------------------------------------------------------------
def _status(capsys: pytest.CaptureFixture[str], project: str) -> dict:
    capsys.readouterr()
    assert cli.main(["status", project, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_project_named_1_is_not_shadowed_by_the_project_with_id_1(
        wb: Workbench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alpha, _ = make_round(wb.db, 4, name="alpha")  # id 1
    named_1, _ = make_round(wb.db, 5, name="1")  # made before the name check: it keeps working by name
    assert alpha == 1 and named_1 != 1

    assert _status(capsys, "1")["project"] == "1"
    assert _status(capsys, "#1")["project"] == "alpha"
    assert _status(capsys, f"#{named_1}")["project"] == "1"
    assert wb.project_id("1") == named_1 and wb.project_id("#1") == alpha and wb.project_id(1) == alpha

    assert cli.main(["export", "1", "--format", "csv", "--out", str(tmp_path / "one.csv")]) == 0
    assert cli.main(["export", "#1", "--format", "csv", "--out", str(tmp_path / "alpha.csv")]) == 0
    capsys.readouterr()
    assert cli.main(["project", "show", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"1 (project {named_1})")
    assert cli.main(["project", "show", "#1"]) == 0
    assert capsys.readouterr().out.startswith("alpha (project 1)")

    assert cli.main(["round", "close", "1"]) == 0
    with wb.db.read() as s:
        states = {r.project_id: r.state for r in s.query(Round).all()}
    assert states[named_1] != "labeling" and states[alpha] == "labeling"  # the one meant, not project 1

    capsys.readouterr()
    assert cli.main(["status", "#99"]) == 2
    assert "no project with id 99" in capsys.readouterr().err
    assert cli.main(["status", "7"]) == 2
    assert "to address project id 7, write #7" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["1", "0042", "#1", "#pets", " 12 ", "x" * (PROJECT_NAME_MAX + 1), "a\nb", ""])
def test_id_like_too_long_or_control_character_names_are_refused_at_creation(wb: Workbench, name: str) -> None:
    with pytest.raises(WorkbenchError) as refused:
        wb.create_project(ProjectConfig(name=name), "demo")
    message = str(refused.value)
    assert any(word in message for word in ("digits", "'#'", "at most 200 characters", "control", "needs a name"))
    assert wb.projects() == []


def test_ordinary_names_pass_the_check() -> None:
    for name in ("birds", "1 birds", "birds #2", "x" * PROJECT_NAME_MAX):
        assert check_project_name(name) == name


def test_the_cli_help_says_how_a_project_is_addressed(capsys: pytest.CaptureFixture[str]) -> None:
    for verb in (["status"], ["export"], ["round"], ["project"], ["simulate"]):
        with pytest.raises(SystemExit):
            cli.main([*verb, "--help"])
        assert "#<id>" in capsys.readouterr().out


# ----- 11: the web server listens on loopback unless told otherwise -----------------------------------------------
def test_the_server_listens_on_loopback_by_default() -> None:
    command = launcher.server_command(8501)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    command = launcher.server_command(8600, "0.0.0.0")
    assert command[command.index("--server.address") + 1] == "0.0.0.0"
    assert command[command.index("--server.port") + 1] == "8600"


def test_start_passes_host_through(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    monkeypatch.setattr(cli, "start", lambda **kwargs: seen.update(kwargs) or 0)
    assert cli.main(["start", "--no-demo"]) == 0 and seen["host"] == "127.0.0.1"
    assert cli.main(["start", "--host", "192.168.1.5", "--no-demo"]) == 0 and seen["host"] == "192.168.1.5"
    assert "127.0.0.1" in cli.build_parser()._subparsers._group_actions[0].choices["start"].format_help()


# ----- 10: user text is drawn as text, never as Markdown -------------------------------------------------------------
HOSTILE = "![t](http://127.0.0.1:9/x.png) **bold** <b>x</b> $x$"


def test_ui_text_escapes_every_markdown_construct() -> None:
    from app import ui

    shown = ui.text(HOSTILE)
    assert "![t](" not in shown and "**" not in shown and "<b>" not in shown and "$x$" not in shown
    assert shown.replace("\\", "") == HOSTILE  # nothing but the escapes is added
    assert ui.lines_text("done\n- **a**") == "done\n- \\*\\*a\\*\\*" and ui.text("# x") == "\\# x"
    # a file name that opens like a numbered list: the backslash goes before the dot (Markdown shows one before a
    # digit as typed)
    assert ui.text("0217.png") == "0217\\.png" and ui.text("3) x") == "3\\) x"


def _all_markdown(at) -> list[str]:
    """The Markdown bodies of the rendered elements (markdown, captions, messages, expander labels)."""
    bodies = [e.proto.body for kind in ("markdown", "caption", "error", "warning", "info", "success")
              for e in getattr(at, kind)]
    bodies += [e.proto.label for e in at.expander]
    return bodies


def test_pages_draw_names_notes_and_job_errors_as_text(wb: Workbench) -> None:
    from streamlit.testing.v1 import AppTest

    from app.page_table import page
    from storage.models import Job, Project

    pid, rid = make_round(wb.db, 4, name=HOSTILE)
    with wb.db.write() as s:
        s.get(Round, rid).note = HOSTILE
        s.get(Project, pid).classes = [HOSTILE, "**bold**", "<b>x</b>"]
        s.add(Job(kind="train", project_id=pid, round_id=rid, state="failed", error=f"ValueError: {HOSTILE}"))
    for url in ("rounds", "projects", "jobs"):
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "streamlit_app.py"), default_timeout=30)
        at.session_state["project_id"] = pid
        at.run()
        at.switch_page(page(url).file).run()
        assert not at.exception, [e.value for e in at.exception]
        bodies = _all_markdown(at)
        escaped = [b for b in bodies if "!\\[t\\](http" in b]
        assert escaped, (url, bodies)
        for body in bodies:  # no raw image, HTML, bold or maths from user text
            assert "![t](" not in body and "<b>" not in body and "$x$" not in body, (url, body)


# ----- 4: each simulation run has its own scratch folder ------------------------------------------------------------
SIMULATE_ONE = """
import json, sys, time
from pathlib import Path
from app.settings import Settings
from app.simulation import SimulationConfig, run_simulation
from app.worker import job_runner
home, pid, marks = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
settings = Settings(home=home, db_url=f"sqlite:///{home / 'wb.sqlite'}")

def runner(sim_settings, name):  # both runs hold their scratch copy before either trains
    (marks / sys.argv[4]).touch()
    deadline = time.time() + 120
    while len(list(marks.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.05)
    return job_runner("cpu")(sim_settings, name)

config = SimulationConfig(strategies=["margin"], seeds=[0], round_size=10, rounds=1)
print(json.dumps(run_simulation(settings, pid, config, runner)["points"], default=str))
"""


def test_two_simulations_of_the_same_strategy_and_seed_run_side_by_side(tmp_path: Path) -> None:
    """Two worker processes run the same strategy and seed on one project at once: both succeed."""
    import subprocess
    import sys

    from app.worker import Worker

    home, marks = tmp_path / "home", tmp_path / "marks"
    home.mkdir()
    marks.mkdir()
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'wb.sqlite'}")
    wb = Workbench(settings)
    pid = wb.create_project(ProjectConfig(name="Demo digits", eval_size=50), "demo")
    worker = Worker(settings, device="cpu", quiet=True)
    while worker.run_once():
        pass
    root = Path(__file__).resolve().parent.parent
    procs = [subprocess.Popen([sys.executable, "-c", SIMULATE_ONE, str(home), str(pid), str(marks), name], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert first == second and len(first) == 2
    assert list((home / "projects" / str(pid) / "simulation-runs").iterdir()) == []  # scratch removed
    wb.db.dispose()
