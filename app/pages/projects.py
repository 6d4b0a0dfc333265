"""Projects: every project with its status, and a form to create one from the demo, an image folder or a manifest."""
from pathlib import Path

import pandas as pd
import streamlit as st

from app import ui
from app.workbench import ProjectConfig, WorkbenchError
from learners.catalog import HEAD_KINDS, METHOD_NAMES, TRAINING_METHODS, WARM_START_METHODS, help_text
from learners.strategies import Param, strategy_class
from storage.importers import ImportProblem

SOURCES = {
    "demo": "Demo: handwritten digits",
    "demo-tags": "Demo: digit tags (multi-label)",
    "folder": "Image folder",
    "manifest": "Manifest (CSV / JSONL)",
}


def param_input(strategy: str, param: Param):
    """The input for one declared strategy parameter, and the value it holds (None: left unset)."""
    key = f"new_param_{strategy}_{param.name}"
    if param.type is list:
        options = list(param.choices or param.examples)
        return st.multiselect(param.name, options, default=list(param.default or []), key=key, help=param.help,
                              accept_new_options=not param.choices) or param.default
    if param.type is bool:
        return st.checkbox(param.name, value=param.default, key=key, help=param.help)
    if param.choices:
        return st.selectbox(param.name, list(param.choices), index=list(param.choices).index(param.default), key=key,
                            help=param.help)
    if param.type is str:
        return st.text_input(param.name, value=param.default, key=key, help=param.help)
    number = {"min_value": param.minimum, "max_value": param.maximum}
    if param.type is float:
        number = {name: None if bound is None else float(bound) for name, bound in number.items()}
        return st.number_input(param.name, value=param.default, step=0.01, format="%.3f", key=key, help=param.help,
                               **number)
    return st.number_input(param.name, value=param.default, step=1, key=key, help=param.help, **number)


wb, _, _ = ui.open_page("projects", needs_project=False)
ui.show_flash()

# ----- the list ---------------------------------------------------------------------------------------------------
rows = []
for project in wb.projects():
    status = wb.status(project.id)
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

# ----- the creation form ------------------------------------------------------------------------------------------
# Plain widgets, not st.form, so the fields can follow the choices (a path only for folder/manifest sources, ...).
st.header("New project")
ui.require_access("admin", "Creating a project")  # the form is for admins only
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

col_backbone, col_model = st.columns(2)
with col_backbone:
    backbone_kind = st.radio(
        "Backbone", ["pixels", "timm"], key="new_backbone", horizontal=True,
        help="pixels: resized, standardized pixels (tiny images, offline). timm: a frozen timm model.",
    )
with col_model:
    if backbone_kind == "pixels":
        image_size = st.number_input("Image side (pixels)", min_value=4, max_value=128, value=16, key="new_image_size")
        backbone = {"name": "pixels", "image_size": int(image_size)}
    else:
        model = st.text_input("timm model", value="resnet18", key="new_timm_model", help="Any timm model name.")
        pretrained = st.checkbox(
            "pretrained weights", value=True, key="new_pretrained",
            help="From the local timm / Hugging Face cache; the worker reports an error if they cannot be had.",
        )
        checkpoint = st.text_input(
            "checkpoint file (optional)", key="new_checkpoint",
            help="A local .safetensors or torch state dict; used instead of the pretrained weights.",
        )
        model = model.strip().removeprefix("timm/")
        backbone = {"name": f"timm/{model}", "pretrained": bool(pretrained)}
        if checkpoint.strip():
            backbone["checkpoint"] = checkpoint.strip()

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
    # only what differs from the declared default is stored with the project
    strategy_params = {param.name: value for param in strategy_class(strategy).params
                       if (value := param_input(strategy, param)) != param.default}
    round_size = st.number_input("Round size", min_value=1, value=10, step=1, key="new_round_size")
with col3:
    eval_size = st.number_input("Eval-set size", min_value=0, value=10, step=1, key="new_eval_size",
                                help="A random slice labeled first, never trained on; every chart is measured on it.")
    auto_next = st.checkbox("Start the next round after training", value=True, key="new_auto_next")
    warm_start = st.checkbox("Warm start", value=False, key="new_warm_start",
                             help="Each training starts from the latest head instead of a fresh one "
                                  f"({', '.join(WARM_START_METHODS)} always does).")
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
        st.error(problem)
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
            eval_size=int(eval_size),
            auto_next_round=bool(auto_next),
            seed=int(seed),
            task=task,
            classes=[c.strip() for c in class_names.split(",") if c.strip()] or None,
        )
        bar = st.progress(0.0, text="reading the source")

        def report(fraction: float, message: str) -> None:
            bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

        source = source_kind if source_kind.startswith("demo") else source_path.strip()
        try:
            new_id = wb.create_project(config, source, progress=report)
        except (WorkbenchError, ImportProblem) as error:
            bar.empty()
            st.error(f"Could not create the project (nothing was stored): {error}")
        else:
            st.session_state["project_id"] = new_id
            ui.flash(
                "success",
                f"Created project {config.name!r}. The worker embeds the images and selects round 0; "
                "then it is ready on the Label page.",
            )
            st.rerun()
