"""Agreement: how far the annotators agree on the items two or more of them answered (Krippendorff's alpha,
Cohen's kappa per pair, the class confusion between them) and each annotator's pace (app.agreement)."""
import altair as alt
import pandas as pd
import streamlit as st

from app import ui
from app.agreement import agreement
from learners.agreement import CAP_SECONDS

wb, project_id, _ = ui.open_page("agreement")


def number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


view = agreement(wb.db, project_id)
multi = view.task == "multi_label"
st.caption(ui.text(f"{view.project}: {len(view.annotators)} annotator(s) answered; {view.overlap_items} item(s) "
                   "were answered by two or more of them. Each annotator's current label of each item counts "
                   "(undone answers do not)."))

if not view.has_overlap:
    st.info("No overlap yet: agreement is measured on items that two or more annotators answered, and no item "
            "has answers from more than one person so far.")
else:
    # ----- Krippendorff's alpha ---------------------------------------------------------------------------------------
    c1, c2, c3 = st.columns(3)
    c1.metric("Krippendorff's alpha (nominal)", number(view.alpha.alpha))
    c2.metric("items with two or more answers", view.alpha.n_items)
    c3.metric("answers on them", view.alpha.n_values)
    st.caption("Alpha is 1 for perfect agreement and 0 for agreement no better than chance"
               + (" (multi-label: each tag's presence is one decision)." if multi else ".")
               + " It is undefined (–) when every answer is the same.")
    if multi:
        st.subheader("Alpha per tag")
        st.dataframe(pd.DataFrame([{"tag": view.classes[t.tag], "alpha": t.alpha, "items": t.n_items,
                                    "answers marking it": t.n_present} for t in view.tag_alphas]),
                     hide_index=True, width="stretch")

    # ----- Cohen's kappa per pair -------------------------------------------------------------------------------------
    st.subheader("Cohen's kappa per pair of annotators")
    st.dataframe(pd.DataFrame([{"annotator": p.first, "other annotator": p.second, "kappa": p.kappa,
                                "items both answered": p.n} for p in view.pairs]),
                 hide_index=True, width="stretch")
    if multi:
        st.caption("Multi-label: the mean over tags of the kappa of each tag's presence.")

    # ----- confusion between annotators -------------------------------------------------------------------------------
    st.subheader("Confusion between annotators")
    st.caption(f"Each cell counts ordered pairs of two annotators' answers on the same item: one gave the row's "
               f"class, the other the column's ({view.confusion.n_pairs} pairs on {view.confusion.n_items} items; "
               "n: pairs whose first answer holds the row's class).")
    cells = pd.DataFrame([{"answer": view.classes[c], "other answer": view.classes[k], "pairs": count}
                          for c, row in enumerate(view.confusion.matrix) for k, count in enumerate(row)])
    heat = alt.Chart(cells).encode(
        x=alt.X("other answer:N", sort=list(view.classes)),
        y=alt.Y("answer:N", sort=list(view.classes)),
        tooltip=["answer", "other answer", "pairs"],
    )
    st.altair_chart(heat.mark_rect().encode(color=alt.Color("pairs:Q", scale=alt.Scale(scheme="blues")))
                    + heat.mark_text().encode(text="pairs:Q"), width="stretch")
    table = pd.DataFrame(view.confusion.matrix, index=view.classes, columns=view.classes)
    table["n"] = view.confusion.n_per_class
    st.dataframe(table, width="stretch")

# ----- per annotator --------------------------------------------------------------------------------------------------
st.subheader("Per annotator")
if not view.per_annotator:
    st.info("No labels yet.")
else:
    st.dataframe(pd.DataFrame([
        {"annotator": a.annotator, "labels": a.labels, "labels per hour": a.labels_per_hour,
         "median s per label": a.median_seconds, "mean s per label": a.mean_seconds, "timed labels": a.timed,
         "agrees with others": a.agreement, "pairs compared": a.agreement_n,
         "agrees with final label": a.adjudicated, "items with a final label": a.adjudicated_n}
        for a in view.per_annotator
    ]), hide_index=True, width="stretch",
        column_config={"agrees with others": st.column_config.NumberColumn(format="percent"),
                       "agrees with final label": st.column_config.NumberColumn(format="percent"),
                       "labels per hour": st.column_config.NumberColumn(format="%.0f"),
                       "median s per label": st.column_config.NumberColumn(format="%.1f"),
                       "mean s per label": st.column_config.NumberColumn(format="%.1f")})
    st.caption(f"Labels per hour: over active time only (the gaps between an annotator's answers, each counted "
               f"at most {CAP_SECONDS / 60:g} minutes, so breaks do not count). Time per label: how long the item "
               "was shown. Agreement: the fraction of pairs (their answer, another annotator's on the same item) "
               "that are equal.")
