"""Dashboard: accuracy per label spent (one point per trained round), when to stop (the forecast accuracy some
labels ahead, and whether the predictions have stabilised), and how the labels spread over the classes."""
from collections import Counter
from itertools import groupby

import altair as alt
import pandas as pd
import streamlit as st

from app import read_models, ui
from learners.catalog import METRIC_NAMES, TASK_METRICS
from learners.forecast import MIN_POINTS, STABLE_ROUNDS, STABLE_SHARE, TOO_WIDE, forecast, predictions_stable
from learners.metrics import changes_within_noise
from learners.strategies.panel import Bars, Pivot, StackedBars

try:  # the hand-pick pages (grid, nearest neighbours, map) may be absent from an installation
    from storage.hand_picks import hand_picked_count
except ImportError:
    hand_picked_count = None

wb, project_id, _ = ui.open_page("dashboard")


def interval_methods(task: str) -> str:
    return ("Wilson for accuracy, a bootstrap for balanced accuracy and macro F1" if task == "single_label"
            else "a bootstrap over the items")


def format_interval(interval: list[float] | None) -> str:
    return "–" if interval is None else f"{interval[0]:.1%} – {interval[1]:.1%}"


def noise_warning(points, name: str, title: str) -> str | None:
    """A plain sentence when the headline metric's intervals are wider than the changes between rounds."""
    unmeasured = [p.round for p in points if not p.eval_n]
    if unmeasured:
        return (f"Round(s) {', '.join(map(str, unmeasured))} had no labeled evaluation items, so they have no point: "
                f"label the evaluation set first (it is queued at the start of each round until it is labeled).")
    measured = [p for p in points if p.metric(name) is not None]
    noisy = changes_within_noise([p.metric(name) for p in measured], [p.interval(name) for p in measured])
    if noisy is None:
        return None
    widest, change = noisy
    n = min(p.eval_n for p in measured)
    return (f"The 95% intervals of {title} are up to {widest:.0%} wide, more than the largest change between "
            f"rounds ({change:.0%}): these changes are not significant. With {n} evaluation items one item moves "
            f"{title} by about {1 / n:.0%}; a larger evaluation set (project settings) makes the chart readable.")


def forecast_section(points, status) -> None:
    """The accuracy forecast +100 / +500 / +1000 labels ahead (learners.forecast), or why there is none."""
    if project.task != "single_label":
        st.info("The forecast models accuracy, which single-label projects measure; this project is multi-label.")
        return
    curve = {p.labels: (p.accuracy, p.eval_n) for p in points if p.labels and p.accuracy is not None and p.eval_n}
    labels = sorted(curve)
    if len(labels) < MIN_POINTS:
        st.info(f"Too few rounds to forecast: {len(labels)} trained round(s) with an accuracy, and a learning curve "
                f"needs at least {MIN_POINTS} to be fit (it has three parameters). The forecast appears after round "
                f"{MIN_POINTS - 1}.")
        return
    result = forecast(labels, [curve[n][0] for n in labels], [curve[n][1] for n in labels])
    unlabeled = status.items.get("pool", 0) - status.labeled_pool
    wide = []
    for column, f in zip(st.columns(len(result.forecasts)), result.forecasts):
        if f.ahead > unlabeled:
            column.metric(f"+{f.ahead} labels", "–")
            column.caption(f"the pool has {unlabeled} unlabeled items left")
            continue
        column.metric(f"+{f.ahead} labels (at {f.labels})", ui.pct(f.value))
        column.caption(f"{result.level:.0%} interval {f.low:.1%} – {f.high:.1%}")
        if f.too_wide:
            wide.append(f"+{f.ahead} ({f.width:.0%} wide)")
    if wide:
        st.warning(f"The {'intervals' if len(wide) > 1 else 'interval'} at {', '.join(wide)} "
                   f"{'are' if len(wide) > 1 else 'is'} wider than {TOO_WIDE:.0%}: too wide to mean anything yet. "
                   f"Each trained round narrows it.")
    st.caption(
        f"Forecast accuracy on the evaluation set: acc(n) = a − b·n^(−c) fit to the {result.points} points by least "
        f"squares weighted by each point's binomial standard error (a = {result.law.a:.1%} is the accuracy this "
        f"curve approaches with unlimited labels). The {result.level:.0%} intervals say where this evaluation set's "
        f"accuracy will be measured then: a parametric bootstrap at the points' scatter around the curve, plus one "
        f"measurement's noise. Accuracy on new data has the evaluation set's own error on top (the bars above). The "
        f"forecast assumes the strategy and settings stay as they are.")


def stopping_hint() -> None:
    """Stabilising predictions: the share of the pool whose prediction changed between consecutive rounds."""
    changes = read_models.prediction_changes(wb.db, project_id)
    rule = (f"Rule: stop when the predictions changed for less than {STABLE_SHARE:.0%} of the pool between each of "
            f"the last {STABLE_ROUNDS} pairs of rounds (stabilising predictions, Bloodgood & Vijay-Shanker 2009: "
            f"once consecutive models agree on nearly all unlabeled items, more labels change little).")
    if not changes:
        st.info("Predictions are compared between consecutive rounds once two rounds are trained.")
        st.caption("Stopping hint: stabilising predictions.", help=rule)
        return
    last = changes[-1]
    said = (f"Predictions changed for {last.changed:.1%} of the pool ({last.pool_n} items) since round "
            f"{last.previous_round}")
    if predictions_stable([c.changed for c in changes]):
        st.success(f"{said} (below {STABLE_SHARE:.0%} for {STABLE_ROUNDS} rounds): more labels are unlikely to "
                   f"change the model much.")
    else:
        st.info(f"{said}: the model is still changing.")
    st.caption("Changed share by round: " + ", ".join(f"round {c.round} {c.changed:.1%}" for c in changes), help=rule)


project = wb.project(project_id)
metrics = TASK_METRICS[project.task]
status = wb.status(project_id)
points = wb.chart_data(project_id)

# ----- headline numbers -----------------------------------------------------------------------------------------------
c1, c2, c3, c4 = st.columns(4)
c1.metric("pool labels", status.labeled_pool)
c2.metric("eval labels", f"{status.labeled_eval} of {status.items.get('eval', 0)}")
c3.metric("trained rounds", len(points))
headline = next(iter(metrics))
c4.metric(f"eval {metrics[headline]}", ui.pct(points[-1].metric(headline) if points else None))

# ----- label efficiency ---------------------------------------------------------------------------------------------
st.subheader(f"{metrics[headline][0].upper() + metrics[headline][1:]} per label spent")
if not points:
    st.info("No round has been trained yet: the first point appears when round 0 closes and the model is trained.")
else:
    frame = pd.DataFrame(points).drop(columns=["labels_per_class", "intervals"])
    long = pd.DataFrame([
        {"round": p.round, "strategy": p.strategy, "labels": p.labels, "eval n": p.eval_n,
         "metric": metrics[name], "value": p.metric(name),
         "low": (p.interval(name) or [None, None])[0], "high": (p.interval(name) or [None, None])[1]}
        for p in points for name in metrics
    ]).dropna(subset=["value"])
    base = alt.Chart(long).encode(
        x=alt.X("labels:Q", title="pool labels spent", axis=alt.Axis(format="d", tickMinStep=1)),
        color=alt.Color("metric:N", title=None),
        tooltip=["round", "strategy", "labels", "metric", alt.Tooltip("value:Q", format=".1%"),
                 alt.Tooltip("low:Q", title="95% low", format=".1%"),
                 alt.Tooltip("high:Q", title="95% high", format=".1%"), "eval n"],
    )
    line = base.mark_line(point=True).encode(
        y=alt.Y("value:Q", title="on the eval set (bars: 95% interval)", scale=alt.Scale(domain=[0, 1])))
    bars = base.mark_rule(strokeWidth=2, opacity=0.45).encode(y="low:Q", y2="high:Q")
    st.altair_chart(bars + line, width="stretch")
    st.caption(f"Bars: 95% intervals over the evaluation items ({interval_methods(project.task)}); "
               f"n is the number of labeled eval items each point was measured on.")
    if hand_picked_count is not None:
        with wb.db.read() as s:
            picked = hand_picked_count(s, project_id)
        st.caption(f"{picked} of the {status.labeled_pool} pool labels were hand-picked (grid, nearest neighbours or "
                   f"map), not an active-learning sample" + (": the curve mixes both." if picked else "."))
    if warning := noise_warning(points, headline, metrics[headline]):
        st.warning(warning)
    table = frame.dropna(axis=1, how="all").rename(columns={**METRIC_NAMES, "eval_n": "eval n"})
    for name in metrics:
        if METRIC_NAMES[name] in table:
            table[f"{METRIC_NAMES[name]} 95%"] = [format_interval(p.interval(name)) for p in points]
    st.dataframe(table, hide_index=True, width="stretch")

# ----- when to stop ------------------------------------------------------------------------------------------------
if points:
    st.subheader("When to stop")
    forecast_section(points, status)
    stopping_hint()

# ----- labels per class ---------------------------------------------------------------------------------------------
st.subheader("Labels per class")
counts: Counter = Counter()
for (k, split), n in wb.labels_per_class(project_id).items():  # counted in SQL: quick at 1M items
    counts[(project.classes[k], split)] += n
per_class = pd.DataFrame(
    [
        {"class": name, "split": split, "labels": counts[(name, split)]}
        for name in project.classes
        for split in ("pool", "eval")
    ]
)
if per_class["labels"].sum() == 0:
    st.info("No labels yet.")
else:
    bars = (
        alt.Chart(per_class)
        .mark_bar()
        .encode(
            x=alt.X("class:N", sort=list(project.classes)),
            y=alt.Y("labels:Q", title="labels", stack=True),
            color=alt.Color("split:N", title=None),
            tooltip=["class", "split", "labels"],
        )
    )
    st.altair_chart(bars, width="stretch")

# ----- the panels of the project's stateful strategies ----------------------------------------------------------------
def draw_bars(block: Bars) -> None:
    rows = pd.DataFrame(block.rows).sort_values(block.value, ascending=False, kind="stable")
    rows = rows.head(block.limit) if block.limit else rows
    tooltip = [alt.Tooltip(f"{c}:Q", format=block.value_format) if c == block.value and block.value_format else c
               for c in rows.columns]
    st.altair_chart(
        alt.Chart(rows).mark_bar().encode(
            x=alt.X(f"{block.value}:Q", title=block.value_title or block.value),
            y=alt.Y(f"{block.label}:N", sort="-x", title=None),
            tooltip=tooltip,
        ),
        width="stretch",
    )


def draw_stacked_bars(block: StackedBars, key: str) -> None:
    rows = pd.DataFrame(block.rows)
    if block.groups and st.toggle(block.group_label, value=True, key=key):
        rows[block.color] = rows[block.color].map(lambda value: block.groups.get(value, value))
        rows = rows.groupby([block.x, block.color], as_index=False)[block.y].sum()
    st.altair_chart(
        alt.Chart(rows).mark_bar().encode(
            x=alt.X(f"{block.x}:O", title=block.x, axis=alt.Axis(labelAngle=0)),
            y=alt.Y(f"{block.y}:Q", stack=True),
            color=alt.Color(f"{block.color}:N", title=block.color),
            tooltip=[block.x, block.color, block.y],
        ),
        width="stretch",
    )


def draw_block(block, key: str) -> None:
    if not block.rows:
        return
    if block.title:
        st.markdown(f"**{block.title}** {getattr(block, 'note', '')}".strip())
    if isinstance(block, Bars):
        draw_bars(block)
    elif isinstance(block, StackedBars):
        draw_stacked_bars(block, key)
    elif isinstance(block, Pivot):
        st.dataframe(pd.DataFrame(block.rows).pivot_table(index=block.index, columns=block.columns,
                                                          values=block.values, fill_value=0, aggfunc="sum"),
                     width="stretch")
    else:
        st.dataframe(pd.DataFrame(block.rows), hide_index=True, width="stretch")


for n, panel in enumerate(wb.strategy_panels(project_id)):
    st.subheader(panel.title)
    st.caption(panel.caption)
    # consecutive tables that name the same expander share it
    for expander, blocks in groupby(enumerate(panel.blocks), key=lambda item: getattr(item[1], "expander", "")):
        with st.expander(expander) if expander else st.container():
            for i, block in blocks:
                draw_block(block, key=f"panel_{n}_{i}")
