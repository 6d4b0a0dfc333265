"""Projects: every project with its status; the selected project's settings (changed after creation, with what each
change invalidates, and their history) and its deletion; and a form to create one from the demo, an image folder or
a manifest."""
from pathlib import Path

import pandas as pd
import streamlit as st

from app import ui
from app.project_admin import SettingsChange
from app.workbench import ProjectConfig, WorkbenchError
from learners.catalog import HEAD_KINDS, METHOD_NAMES, TRAINING_METHODS, WARM_START_METHODS, SSLConfig, help_text
from learners.strategies import Param, strategy_class
from storage.demo import MNIST_CLASSES, MNIST_DEMO, MNIST_TITLE, mnist_demo_folder
from storage.errors import StorageError

SOURCES = {
    "demo": "Demo: handwritten digits",
    "demo-tags": "Demo: digit tags (multi-label)",
    MNIST_DEMO: MNIST_TITLE,
    "folder": "Image folder",
    "manifest": "Manifest (CSV / JSONL)",
}


_DECLARED = object()


def param_input(strategy: str, param: Param, prefix: str = "new", value=_DECLARED):
    """The input for one declared strategy parameter, starting at `value` (its declared default unless given),
    and the value it holds (None: left unset)."""
    key = f"{prefix}_param_{strategy}_{param.name}"
    start = param.default if value is _DECLARED else value
    if param.type is list:
        options = list(dict.fromkeys([*(param.choices or param.examples), *(start or [])]))
        return st.multiselect(param.name, options, default=list(start or []), key=key, help=param.help,
                              accept_new_options=not param.choices) or param.default
    if param.type is bool:
        return st.checkbox(param.name, value=start, key=key, help=param.help)
    if param.choices:
        return st.selectbox(param.name, list(param.choices), index=list(param.choices).index(start), key=key,
                            help=param.help)
    if param.type is str:
        return st.text_input(param.name, value=start, key=key, help=param.help)
    number = {"min_value": param.minimum, "max_value": param.maximum}
    if param.type is float:
        number = {name: None if bound is None else float(bound) for name, bound in number.items()}
        return st.number_input(param.name, value=None if start is None else float(start), step=0.01, format="%.3f",
                               key=key, help=param.help, **number)
    return st.number_input(param.name, value=start, step=1, key=key, help=param.help, **number)


def strategy_param_inputs(strategy: str, prefix: str = "new", current: dict | None = None) -> dict:
    """An input per declared parameter of `strategy` (starting at `current`'s values); only what differs from
    the declared default is returned, as it is stored with the project."""
    current = current or {}
    return {param.name: value for param in strategy_class(strategy).params
            if (value := param_input(strategy, param, prefix, current.get(param.name, param.default))) != param.default}


def backbone_inputs(prefix: str, current: dict | None = None) -> dict:
    """The backbone's inputs (pixels or a timm model, starting at `current`) and the spec they give."""
    current = current or {}
    is_timm = str(current.get("name", "pixels")).startswith("timm/")
    col_backbone, col_model = st.columns(2)
    with col_backbone:
        kind = st.radio(
            "Backbone", ["pixels", "timm"], index=1 if is_timm else 0, key=f"{prefix}_backbone", horizontal=True,
            help="pixels: resized, standardized pixels (tiny images, offline). timm: a frozen timm model.",
        )
    with col_model:
        if kind == "pixels":
            side = st.number_input("Image side (pixels)", min_value=4, max_value=128, step=1,
                                   value=int(current.get("image_size") or 16) if not is_timm else 16,
                                   key=f"{prefix}_image_size")
            return {"name": "pixels", "image_size": int(side)}
        model = st.text_input("timm model", value=str(current.get("name", "timm/resnet18")).removeprefix("timm/")
                              if is_timm else "resnet18", key=f"{prefix}_timm_model", help="Any timm model name.")
        pretrained = st.checkbox(
            "pretrained weights", value=bool(current.get("pretrained", True)), key=f"{prefix}_pretrained",
            help="From the local timm / Hugging Face cache; the worker reports an error if they cannot be had.",
        )
        checkpoint = st.text_input(
            "checkpoint file (optional)", value=str(current.get("checkpoint") or ""), key=f"{prefix}_checkpoint",
            help="A local .safetensors or torch state dict; used instead of the pretrained weights.",
        )
    spec = {"image_size": current["image_size"]} if is_timm and current.get("image_size") else {}
    spec.update({"name": f"timm/{model.strip().removeprefix('timm/')}", "pretrained": bool(pretrained)})
    if checkpoint.strip():
        spec["checkpoint"] = checkpoint.strip()
    return spec


wb, _, _ = ui.open_page("projects", needs_project=False)
PICK_AHEAD_HELP = ("Items the strategy ranks beyond each round: labeling goes on with them while the round trains, "
                   "so nobody waits at a round boundary (they were chosen by the previous round's model). "
                   "0: wait for each training.")
OVERLAP_HELP = ("The share of each round's pool items that several annotators answer (0.1: one in ten), each "
                "by a different person; differing answers make the item disputed: it does not train until a "
                "reviewer adjudicates it (Adjudicate page). 0: every item is answered once.")


def overlap_inputs(prefix: str, overlap: float = 0.0, overlap_eval: bool = False, k: int = 2) -> tuple[float, bool, int]:
    """The overlap settings' inputs: (share of pool items, every evaluation item too, annotators per item)."""
    share = st.number_input("Overlap (share of pool items)", min_value=0.0, max_value=1.0, value=float(overlap),
                            step=0.05, format="%.2f", key=f"{prefix}_overlap", help=OVERLAP_HELP)
    evals = st.checkbox("Every eval item to several annotators", value=bool(overlap_eval), key=f"{prefix}_overlap_eval",
                        help="Each evaluation item is answered by that many different annotators; the metrics count "
                             "it once they agree or it is adjudicated.")
    count = st.number_input("Annotators per overlap item", min_value=2, value=int(k), step=1, key=f"{prefix}_overlap_k")
    return float(share), bool(evals), int(count)


ui.show_flash()

# ----- the list ---------------------------------------------------------------------------------------------------
rows = []
statuses = wb.statuses()  # one set of aggregate queries for every project, not a status per project
for project in wb.projects():
    status = statuses[project.id]
    rows.append(
        {
            "id": project.id,
            "name": project.name,
            "classes": len(project.classes),
            "pool items": status.items.get("pool", 0),
            "eval items": status.items.get("eval", 0),
            "labeled (pool)": status.labeled_pool,
            "labeled (eval)": status.labeled_eval,
            "round": None if status.round is None else status.round.index,
            "round state": "–" if status.round is None else status.round.state,
            "strategy": project.strategy,
            "backbone": project.backbone.get("name"),
            "active jobs": len(status.jobs),
        }
    )
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption("Pick the project to work on in the sidebar.")
else:
    st.info("No project yet. Create the first one below: the demo needs nothing but a click.")

ui.require_access("admin", "Creating a project")  # the rest of the page (change, delete, create) is for admins only


# ----- the selected project's settings, and its deletion ----------------------------------------------------------
def _forget_settings_inputs(project_id: int) -> None:
    """Drop the settings inputs' state, so they start again from the project as stored."""
    for key in [k for k in st.session_state if str(k).startswith(f"set_{project_id}_")]:
        del st.session_state[key]


def settings_section(project_id: int) -> None:
    """The inputs for every setting that may change after creation, a preview of what a change invalidates, and
    the Apply button; then the project's settings history."""
    project = wb.project(project_id)
    status = statuses[project_id] if project_id in statuses else wb.status(project_id)  # the list's, drawn above
    prefix = f"set_{project_id}"
    st.caption("Each change says what it invalidates: a new backbone embeds the images again and retires every "
               "head; a new strategy or round size applies from the next round; the eval set grows by random "
               "unlabeled pool items and shrinks only by unlabeled ones.")
    backbone = backbone_inputs(prefix, project.backbone)
    training = project.training or {}
    method = SSLConfig.from_dict(training.get("ssl", "none")).method
    strategies = ui.strategy_names(wb)
    col1, col2, col3 = st.columns(3)
    with col1:
        head = st.selectbox("Head", list(HEAD_KINDS), index=list(HEAD_KINDS).index(project.head.get("kind", "linear")),
                            key=f"{prefix}_head", help=help_text(HEAD_KINDS))
        ssl = st.selectbox("Semi-supervised training", list(METHOD_NAMES), index=list(METHOD_NAMES).index(method),
                           key=f"{prefix}_ssl", help=help_text(TRAINING_METHODS))
        warm_now = bool(training.get("warm_start", TRAINING_METHODS[method].warm_start))
        warm = st.checkbox("Warm start", key=f"{prefix}_warm_start", value=warm_now,
                           help="Training starts from the latest head of the same kind and sizes.")
    with col2:
        strategy = st.selectbox("Strategy", strategies, key=f"{prefix}_strategy",
                                index=strategies.index(project.strategy) if project.strategy in strategies else 0)
        params = strategy_param_inputs(strategy, prefix,
                                       project.strategy_params if strategy == project.strategy else None)
        round_size = st.number_input("Round size", min_value=1, value=int(project.round_size), step=1,
                                     key=f"{prefix}_round_size")
        pick_ahead = st.number_input("Pick ahead", min_value=0, value=int(project.pick_ahead), step=1,
                                     key=f"{prefix}_pick_ahead", help=PICK_AHEAD_HELP)
    with col3:
        eval_now = status.items.get("eval", 0)
        eval_size = st.number_input(
            "Eval-set size", min_value=0, value=int(eval_now), step=1, key=f"{prefix}_eval_size",
            help=f"Now {eval_now} items, {status.labeled_eval} of them labeled: labeled ones are never given back.")
        overlap, overlap_eval, overlap_k = overlap_inputs(prefix, project.overlap, project.overlap_eval,
                                                          project.overlap_k)
    change = SettingsChange(backbone=backbone, head=head, ssl=ssl, warm_start=None if warm == warm_now else warm,
                            strategy=strategy,
                            strategy_params=params, round_size=int(round_size),
                            eval_size=None if int(eval_size) == eval_now else int(eval_size),
                            pick_ahead=int(pick_ahead), overlap=overlap, overlap_eval=overlap_eval,
                            overlap_k=overlap_k)
    try:
        planned = wb.settings_plan(project_id, change)
    except WorkbenchError as error:
        st.warning(ui.text(f"Not a valid setting: {error}"))
        planned = None
    if planned:
        st.info(ui.lines_text("Applying will change:\n" + "\n".join(f"- {line}" for line in planned)))
    elif planned is not None:
        st.caption("These are the project's settings now; change one to see what it does.")
    if st.button("Apply settings", key="apply_settings", type="primary", disabled=not planned):
        try:
            done = wb.change_settings(project_id, change)
        except WorkbenchError as error:
            st.error(ui.text(f"Nothing was changed: {error}"))
        else:
            _forget_settings_inputs(project_id)
            ui.flash("success", f"Settings of {project.name!r} changed:\n" + "\n".join(f"- {line}" for line in done))
            st.rerun()
    history = wb.settings_history(project_id)
    if history:
        st.markdown("**Settings history**")
        st.dataframe(pd.DataFrame([{"when": record.at.strftime("%Y-%m-%d %H:%M"), "round": record.round_index,
                                    "change": line} for record in history for line in record.changes]),
                     hide_index=True, width="stretch",
                     column_config={"change": st.column_config.TextColumn(width="large")})


def delete_section(project_id: int) -> None:
    project = wb.project(project_id)
    st.warning(ui.text(
        f"Deleting {project.name!r} removes its items, labels, rounds, queues, jobs, strategy state and its folder "
        f"under the workbench home (features, heads, predictions). The imported images in {project.data_root} "
        "stay where they are. This cannot be undone: export the labels first (Export page)."))
    typed = st.text_input("Type the project's name to confirm", key=f"delete_confirm_{project_id}")
    if st.button("Delete project", key="delete_project", disabled=typed != project.name):
        try:
            done = wb.delete_project(project_id, typed)
        except WorkbenchError as error:
            st.error(ui.text(f"Nothing was deleted: {error}"))
        else:
            st.session_state.pop("project_id", None)  # the sidebar picks another project
            ui.flash("success", "\n".join(f"- {line}" for line in done))
            st.rerun()


selected = st.session_state.get("project_id")
if selected is not None and selected in {row["id"] for row in rows}:
    selected_name = next(row["name"] for row in rows if row["id"] == selected)
    with st.expander(f"Settings of {ui.text(selected_name)}", icon=":material/tune:"):
        with ui.worded_errors():
            settings_section(selected)
    with st.expander(f"Delete {ui.text(selected_name)}", icon=":material/delete:"):
        with ui.worded_errors():
            delete_section(selected)

# ----- the creation form ------------------------------------------------------------------------------------------
# Plain widgets, not st.form, so the fields can follow the choices (a path only for folder/manifest sources, ...).
st.header("New project")
name = st.text_input("Name", key="new_name", placeholder="e.g. Cats and dogs")
source_kind = st.radio("Source", list(SOURCES), format_func=SOURCES.get, key="new_source", horizontal=True)
source_path = ""
task = "multi_label" if source_kind == "demo-tags" else "single_label"
if source_kind == "manifest":
    task = st.radio(
        "Task", ["single_label", "multi_label"], key="new_task", horizontal=True,
        format_func={"single_label": "one class per item", "multi_label": "any set of tags per item"}.get,
        help="Multi-label manifests give tags as a JSON list (JSONL) or ';'-separated names (CSV).",
    )
class_names = ""
if source_kind in ("folder", "manifest"):
    class_names = st.text_input(
        "Class names (optional, comma-separated, in order)", key="new_classes",
        help="Needed for a flat folder of unlabeled images; otherwise the class sub-folders or the manifest's "
             "labels give the classes (sorted by name).",
    )
if source_kind == "folder":
    source_path = st.text_input(
        "Image folder path", key="new_folder",
        help="A flat folder of images, or one sub-folder per class (the sub-folder names become gold labels).",
    )
elif source_kind == "manifest":
    source_path = st.text_input(
        "Manifest path (.csv or .jsonl)", key="new_manifest",
        help="One row per image: path (relative to the manifest), optional label, optional split (pool / eval).",
    )

backbone = backbone_inputs("new")

strategies = ui.strategy_names(wb)
col1, col2, col3 = st.columns(3)
with col1:
    head = st.selectbox("Head", list(HEAD_KINDS), key="new_head", help=help_text(HEAD_KINDS))
    ssl = st.selectbox("Semi-supervised training", list(METHOD_NAMES), key="new_ssl",
                       help=help_text(TRAINING_METHODS))
    view_flip = st.checkbox(
        "Horizontal flips in augmented views", value=True, key="new_view_flip",
        help="Used by flexmatch's weak and strong views. Turn off for digits, text and handwriting.",
    )
    seed = st.number_input("Seed", min_value=0, value=0, step=1, key="new_seed")
with col2:
    default_strategy = ProjectConfig(name="").strategy
    strategy = st.selectbox(
        "Strategy", strategies, key="new_strategy",
        index=strategies.index(default_strategy) if default_strategy in strategies else 0,
        help="How rounds after round 0 choose items (round 0 is random).",
    )
    strategy_params = strategy_param_inputs(strategy)  # only what differs from the declared default is stored
    round_size = st.number_input("Round size", min_value=1, value=10, step=1, key="new_round_size")
    pick_ahead = st.number_input("Pick ahead", min_value=0, value=5, step=1, key="new_pick_ahead",
                                 help=PICK_AHEAD_HELP)
with col3:
    eval_size = st.number_input("Eval-set size", min_value=0, value=None, step=1, key="new_eval_size",
                                placeholder="automatic",
                                help="A random slice labeled first, never trained on; every chart is measured on it. "
                                     "Automatic: the larger of 100 and 10 per class, at most a fifth of the pool "
                                     "(100 items give a 95% interval of about +-9 points on accuracy).")
    auto_next = st.checkbox("Start the next round after training", value=True, key="new_auto_next")
    warm_start = st.checkbox("Warm start", value=False, key="new_warm_start",
                             help="Each training starts from the latest head instead of a fresh one "
                                  f"({', '.join(WARM_START_METHODS)} always does).")
    overlap, overlap_eval, overlap_k = overlap_inputs("new")
source_head = st.file_uploader(
    "Start from a source head (optional)", type=["safetensors"], key="new_source_head",
    help="A head exported from another project (Export page) with the same backbone and classes: it chooses the "
         "first round with this project's strategy (the source-free setting), and warm-started training "
         "starts from it.",
)


def form_problem() -> str | None:
    """What is missing from the form before anything is read, or None."""
    if not name.strip():
        return "Give the project a name."
    if not source_kind.startswith("demo") and not source_path.strip():
        return f"Give the path of the {SOURCES[source_kind].lower()}."
    if backbone["name"] == "timm/":
        return "Give the timm model name (e.g. resnet18)."
    checkpoint_path = backbone.get("checkpoint")
    if checkpoint_path and not Path(checkpoint_path).expanduser().is_file():
        return f"{checkpoint_path}: no such checkpoint file."
    return None


if st.button("Create project", type="primary", key="create_project"):
    problem = form_problem()
    if problem:
        st.error(ui.text(problem))
    else:
        config = ProjectConfig(
            name=name.strip(),
            backbone=backbone,
            head={"kind": head},
            training={"ssl": ssl, "view_flip": bool(view_flip), **({"warm_start": True} if warm_start else {})},
            strategy=strategy,
            strategy_params=strategy_params,
            source_head=ui.save_upload(wb, source_head) if source_head is not None else None,
            round_size=int(round_size),
            eval_size=None if eval_size is None else int(eval_size),
            pick_ahead=int(pick_ahead),
            overlap=overlap,
            overlap_eval=overlap_eval,
            overlap_k=overlap_k,
            auto_next_round=bool(auto_next),
            seed=int(seed),
            task=task,
            classes=[c.strip() for c in class_names.split(",") if c.strip()] or None,
        )
        bar = st.progress(0.0, text="reading the source")

        def report(fraction: float, message: str) -> None:
            bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

        source = source_kind if source_kind.startswith("demo") else source_path.strip()
        import_warnings: list[str] = []
        try:
            if source_kind == MNIST_DEMO:  # written out as an image folder, one sub-folder (gold label) per digit
                bar.progress(0.0, text="writing the MNIST scans as PNG files")
                source, config.classes = mnist_demo_folder(wb.settings.home), list(MNIST_CLASSES)
            new_id = wb.create_project(config, source, progress=report, on_warning=import_warnings.append)
        except (WorkbenchError, StorageError) as error:  # an ImportProblem is a StorageError
            bar.empty()
            st.error(ui.text(f"Could not create the project (nothing was stored): {error}"))
        else:
            st.session_state["project_id"] = new_id
            ui.flash(
                "success",
                f"Created project {config.name!r}. The worker embeds the images and selects round 0; "
                "then it is ready on the Label page.",
            )
            if import_warnings:  # drawn as text by ui.show_flash: they quote file and class names
                ui.flash("warning", "The import says:\n" + "\n".join(f"- {w}" for w in import_warnings))
            st.rerun()
