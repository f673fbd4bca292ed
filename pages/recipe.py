"""The lecture's training recipe as buttons, and gradient checking."""

from dataclasses import replace

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
import ui.training as tr
from cnnviz.training import NetConfig, TrainConfig, build_network, ensemble_report, gradient_check, initial_loss, tta_report
from cnnviz.training.gradcheck import THRESHOLDS
from cnnviz.training.plots import lr_finder_figure, search_figure, training_figure
from cnnviz.training.recipe import LRFinderResult, curve_hints, lr_range_test, overfit_small_sample, search, train_ensemble

st.title("Training recipe")
ui.explainer(
    "The lecture's recipe for training a network, one button per step (Karpathy, *A recipe for training neural "
    "networks*, 2019; CS231n lectures 6–7). Every step uses the data and the settings chosen on the **Train a "
    "CNN** page.\n\n"
    "1. **Initial loss**: an untrained network should spread its bets evenly: cross-entropy ≈ log(C).\n"
    "2. **Overfit a small sample**: a correct network and loss memorise a few mini-batches to 100 % training "
    "accuracy; if not, there is a bug.\n"
    "3. **Learning-rate finder**: raise the rate exponentially during one short run and plot the loss (Smith, "
    "2017); a good rate is where the loss falls fastest.\n"
    "4. **Coarse-to-fine search** of learning rate × weight decay on short runs, random rather than grid "
    "(Bergstra & Bengio, 2012): random trials try more distinct values of the parameter that matters.\n"
    "5. **Read the curves**.\n"
    "6. **Ensembles**: average the softmax of several independently trained networks: usually a point or two "
    "better than the members.\n"
    "7. **Test-time augmentation**: average the predictions over flips and shifted crops of each test image.\n\n"
    "**Gradient checking** compares backpropagation with centred finite differences, once, when writing a "
    "new layer."
)

data, data_key = tr.choose_data()
config: TrainConfig = st.session_state.get("train_config", TrainConfig())
with st.expander("Settings used (change them on the Train a CNN page)"):
    st.json(config.to_json(), expanded=False)
tr.other_job_notice("recipe")

# 1. initial loss --------------------------------------------------------------------------------------
st.subheader("1. Check the initial loss")
if st.button("Check the initial loss", key="recipe_initial"):
    st.session_state["recipe_initial_result"] = ui.run_or_explain(initial_loss, config, data)
check = st.session_state.get("recipe_initial_result")
if check is not None:
    (st.success if check.ok else st.warning)(check.message)


# background steps 2, 3, 4, 6 share one job slot ---------------------------------------------------------
def start(step: str, make_items) -> None:
    if tr.start_job("recipe", make_items, step=step):
        st.rerun()


def job_step() -> str | None:
    job = tr.current_job()
    return job.extra.get("step") if job is not None and job.name == "recipe" else None


running = tr.current_job() is not None and tr.current_job().running


def draw(snap, job) -> None:
    step = job.extra["step"]
    if snap.status == "error":
        st.error(snap.error)
    if step == "overfit":
        its, eps = tr.items_of(snap, "iteration"), tr.items_of(snap, "epoch")
        if eps:
            st.markdown(f"Training accuracy on the small sample after epoch {eps[-1].epoch}: **{eps[-1].train_accuracy:.0%}**"
                        + (" — memorised: the network and the loss can learn." if eps[-1].train_accuracy == 1.0 else ""))
        st.plotly_chart(training_figure(its + eps), width="stretch", key="recipe_overfit_fig")
    elif step == "lr":
        points = [p for p in snap.items if getattr(p, "kind", "") == "lr point"]
        final = [p for p in snap.items if isinstance(p, LRFinderResult)]
        if final:
            f = final[0]
            st.markdown(f"Suggested learning rate: **{f.suggestion:.2g}** (the steepest fall of the smoothed loss).")
            st.plotly_chart(lr_finder_figure(f.lrs, f.losses, f.smoothed, f.suggestion), width="stretch", key="recipe_lr_fig")
        elif points:
            st.progress(points[-1].iteration / points[-1].steps, text=f"learning rate {points[-1].lr:.2g}")
            st.plotly_chart(lr_finder_figure([p.lr for p in points], [p.loss for p in points],
                                             [p.smoothed for p in points], points[-1].lr), width="stretch", key="recipe_lr_fig")
    elif step == "search":
        trials = list(snap.items)
        if trials:
            best = max(trials, key=lambda t: t.val_accuracy)
            st.markdown(f"{len(trials)} of {job.extra['trials']} trials · best so far: learning rate **{best.lr:.2g}**, "
                        f"weight decay **{best.weight_decay:.2g}**, validation accuracy **{best.val_accuracy:.1%}**")
            left, right = st.columns([3, 2])
            left.plotly_chart(search_figure(trials), width="stretch", key="recipe_search_fig")
            right.dataframe(pd.DataFrame([{"stage": t.stage, "learning rate": t.lr, "weight decay": t.weight_decay,
                                           "val. accuracy": t.val_accuracy, "train accuracy": t.train_accuracy,
                                           "seconds": t.seconds} for t in trials]).sort_values("val. accuracy", ascending=False),
                            hide_index=True, width="stretch", height=360,
                            column_config={"learning rate": st.column_config.NumberColumn(format="%.2e"),
                                           "weight decay": st.column_config.NumberColumn(format="%.2e"),
                                           "val. accuracy": st.column_config.NumberColumn(format="percent"),
                                           "train accuracy": st.column_config.NumberColumn(format="percent"),
                                           "seconds": st.column_config.NumberColumn(format="%.1f")})
        elif snap.status == "running":
            st.progress(0.0, text="First trial…")
    elif step == "ensemble":
        done = [r.result for _, r in snap.items if r.kind == "done"]
        members = job.extra["members"]
        if snap.status == "running":
            its = [r for _, r in snap.items if r.kind == "iteration"]
            fraction = (len(done) + (its[-1].iteration / its[-1].total_iterations if its else 0) - (1 if done and its and
                        its[-1].iteration == its[-1].total_iterations else 0)) / members
            st.progress(min(1.0, max(0.0, fraction)), text=f"Training member {min(len(done) + 1, members)} of {members}")
        if len(done) >= 2 and snap.status != "running":
            report = ensemble_report([r.model for r in done], job.extra["data"])
            c = st.columns(len(done) + 1)
            for i, acc in enumerate(report.member_accuracies):
                c[i].metric(f"Member {i + 1}", f"{acc:.2%}")
            c[-1].metric("Ensemble (softmax average)", f"{report.ensemble_accuracy:.2%}", f"{report.gain:+.2%} vs mean member")



# 2. overfit ------------------------------------------------------------------------------------------
st.subheader("2. Overfit a small sample")
c1, c2 = st.columns([1, 3])
batches = c1.slider("Mini-batches", 1, 10, 5, key="recipe_batches")
if c1.button("Overfit", key="recipe_overfit", wrap=True, disabled=running):
    cfg, d = config, data
    start("overfit", lambda stop: overfit_small_sample(cfg, d, batches=batches, stop=stop))
with c2:
    if job_step() == "overfit":
        tr.poll("recipe", draw)

# 3. LR finder ----------------------------------------------------------------------------------------
st.subheader("3. Find a learning rate")
c1, c2 = st.columns([1, 3])
lo, hi = c1.select_slider("Range", [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0], (1e-5, 1.0), key="recipe_lr_range",
                          format_func="{:g}".format)
steps = c1.slider("Iterations", 30, 200, 100, 10, key="recipe_lr_steps")
if c1.button("Run the LR finder", key="recipe_lr", wrap=True, disabled=running):
    cfg, d = config, data
    start("lr", lambda stop: lr_range_test(cfg, d, lo, hi, steps, stop=stop))
with c2:
    if job_step() == "lr":
        tr.poll("recipe", draw)

# 4. search -------------------------------------------------------------------------------------------
st.subheader("4. Search learning rate × weight decay, coarse then fine")
c1, c2 = st.columns([1, 3])
mode = c1.radio("Sampling", ["random", "grid"], horizontal=True, key="recipe_mode")
coarse = c1.slider("Coarse trials", 2, 14, 8, key="recipe_coarse")
fine = c1.slider("Fine trials", 0, 20 - coarse, min(6, 20 - coarse), key="recipe_fine")
images = c1.select_slider("Training images per trial", [250, 500, 1000, 2000], 1000, key="recipe_images")
if c1.button("Search", key="recipe_search", wrap=True, disabled=running):
    cfg, d = config, data
    if tr.start_job("recipe", lambda stop: search(cfg, d, coarse=coarse, fine=fine, mode=mode, train_images=images,
                                                  val_images=500, stop=stop), step="search", trials=coarse + fine):
        st.rerun()
with c2:
    if job_step() == "search":
        tr.poll("recipe", draw)

# 5. curves -------------------------------------------------------------------------------------------
st.subheader("5. Read the curves")
latest = tr.latest_network()
if latest is None:
    st.info("Train a network on the Train a CNN page first; its curves are read here.")
else:
    records = latest["records"]
    its = [r for r in records if r.kind == "iteration"]
    eps = [r for r in records if r.kind == "epoch"] or latest["result"].history
    st.caption(f"Reading the curves of “{latest['title']}”.")
    for hint in curve_hints(its, eps):
        st.markdown(f"- {hint}")

# 6. ensemble -----------------------------------------------------------------------------------------
st.subheader("6. Ensemble")
c1, c2 = st.columns([1, 3])
members = c1.slider("Members", 3, 5, 3, key="recipe_members")
epochs = c1.slider("Epochs per member", 1, config.epochs, min(2, config.epochs), key="recipe_member_epochs")
if c1.button("Train the ensemble", key="recipe_ensemble", wrap=True, disabled=running):
    cfg, d = replace(config, epochs=epochs), data
    if tr.start_job("recipe", lambda stop: train_ensemble(cfg, d, members, stop=stop), step="ensemble",
                    members=members, data=d):
        st.rerun()
with c2:
    if job_step() == "ensemble":
        tr.poll("recipe", draw)

# 7. TTA ----------------------------------------------------------------------------------------------
st.subheader("7. Test-time augmentation")
c1, c2 = st.columns([1, 3])
flips = c1.checkbox("Left-right flip", key="recipe_tta_flip", help="Mirrored digits are no digits: expect a loss.")
shift = c1.slider("Shifted crops (px)", 0, 4, 2, key="recipe_tta_shift")
if latest is None:
    c2.info("Train a network on the Train a CNN page first.")
elif latest["result"].size != data.size or latest["result"].channels != data.channels or \
        tuple(latest["result"].class_names) != data.class_names:
    c2.info("The latest trained network was trained on other data; train one on this data first.")
elif c1.button("Evaluate with TTA", key="recipe_tta", wrap=True):
    report = tta_report(latest["result"].model, data, flips=flips, shift=shift)
    a, b = c2.columns(2)
    a.metric("Validation accuracy, one view", f"{report.plain_accuracy:.2%}")
    b.metric(f"Averaged over {report.views} views", f"{report.tta_accuracy:.2%}", f"{report.gain:+.2%}")

# gradient check --------------------------------------------------------------------------------------
st.subheader("Gradient checking")
c1, c2 = st.columns([1, 3])
variant = c1.radio("Network", ["smooth (tanh, average pooling)", "as configured"], key="recipe_gc_variant",
                   help="ReLU and max pooling have kinks where finite differences disagree with the derivative.")
per_layer = c1.slider("Weights sampled per parameter tensor", 1, 20, 5, key="recipe_gc_samples")
if c1.button("Check the gradients", key="recipe_gc", wrap=True):
    net_config = replace(config.net, activation="tanh", pool="avg", dropout=0.0, dropconnect=0.0,
                         stochastic_depth=0.0) if variant.startswith("smooth") else config.net
    import torch

    model = ui.run_or_explain(build_network, net_config, data.channels, data.num_classes, data.size,
                              torch.Generator().manual_seed(config.seed))
    with st.spinner("Two forward passes per sampled weight, in float64…"):
        report = gradient_check(model.eval(), data.normalize(data.x_val[:8]), data.y_val[:8], per_layer=per_layer)
    st.session_state["recipe_gc_report"] = report
report = st.session_state.get("recipe_gc_report")
if report is not None:
    with c2:
        rows = pd.DataFrame([{"parameter": r.parameter, "samples": r.samples, "max relative error": r.max_relative_error,
                              "median": r.median_relative_error, "crossed a kink": r.kink_crossings, "verdict": r.verdict}
                             for r in report.rows])
        fig = go.Figure(go.Bar(x=rows["parameter"], y=rows["max relative error"].clip(lower=1e-16),
                               marker_color=["#2ca02c" if v == "excellent" else "#ff7f0e" if "kinks" in v else "#d62728"
                                             for v in rows["verdict"]]))
        for bound, _ in THRESHOLDS[:-1]:
            fig.add_hline(y=bound, line_dash="dot", annotation_text=f"{bound:g}", annotation_position="right")
        fig.update_layout(yaxis_type="log", yaxis_title="max relative error", height=320, margin=dict(l=10, r=40, t=20, b=10),
                          yaxis_exponentformat="power")
        st.plotly_chart(fig, width="stretch")
        st.dataframe(rows, hide_index=True, width="stretch",
                     column_config={"max relative error": st.column_config.NumberColumn(format="%.1e"),
                                    "median": st.column_config.NumberColumn(format="%.1e")})
        st.caption(report.explanation + " Thresholds (CS231n): > 1e-2 probably wrong; 1e-2 to 1e-4 uncomfortable; "
                   "1e-4 to 1e-7 fine with kinks, too high without; < 1e-7 excellent.")
