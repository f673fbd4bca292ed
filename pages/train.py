"""Train a CNN: configure the small CNN, train it live in the background, read its curves, and use it
on every page of this session."""

import streamlit as st

import ui
import ui.training as tr
from cnnviz.training import apply, augmentation, curve_hints, save_trained
from cnnviz.training.loop import train
from cnnviz.training.plots import training_figure

st.title("Train a CNN")
ui.explainer(
    "A small CNN (TinyVGG: blocks of 3×3 convolutions and pooling, then one linear layer) trains **live** on "
    "real handwritten digits while you watch its curves (CS231n lectures 6–7; Karpathy, *A recipe for training "
    "neural networks*, 2019).\n\n"
    "- **Loss per iteration**: one dot per mini-batch, the line is a moving average. Noisy but falling is good; "
    "flat means a too low learning rate; exploding means a too high one.\n"
    "- **Accuracy per epoch**: training (on un-augmented training images) against validation (held out). A "
    "growing gap is overfitting: add data, augmentation or regularisation (weight decay, dropout; "
    "Srivastava et al., 2014), or stop early.\n"
    "- **Learning rate** as the schedule sets it (step, cosine; warm-up: Goyal et al., 2017).\n"
    "- **Dead ReLUs**: channels never positive on any validation image; they no longer learn.\n\n"
    "Regularisers of the lecture: L2 / L1 / elastic-net penalties, dropout, DropConnect (Wan et al., 2013), "
    "fractional max pooling (Graham, 2014), stochastic depth (Huang et al., 2016). Augmentation: flips, crops "
    "and scales, colour jitter, cutout (DeVries & Taylor, 2017), mixup (Zhang et al., 2018). Optimizers: SGD with "
    "momentum, Adam (Kingma & Ba, 2015), AdamW (Loshchilov & Hutter, 2019). Early stopping keeps the best "
    "validation epoch. When training ends the network appears in the sidebar's model list for this session, "
    "so the Filters page (which replays its epochs), Activations, Saliency and Embeddings look inside it."
)

tr.collect()  # the sidebar does this first in every run; again here so the page stands on its own
data, data_key = tr.choose_data()
st.caption(f"{data.name.split(' (')[0]}: {len(data.y_train):,} training and {len(data.y_val):,} validation images, "
           f"{data.channels}×{data.size}×{data.size}, {data.num_classes} classes ({', '.join(data.class_names[:12])}"
           f"{'…' if data.num_classes > 12 else ''}).")
config = tr.settings_widgets()
st.session_state["train_config"], st.session_state["train_data_key"] = config, data_key

transform = augmentation(config.augment)
if transform is not None:
    with st.expander(f"Preview of the augmentation ({', '.join(config.augment.active)})", expanded=False):
        seed = st.session_state.setdefault("tr_preview_seed", 0)
        if st.button("New samples", key="train_preview_new"):
            st.session_state["tr_preview_seed"] = seed = seed + 1
        x, y = data.x_train[:8].repeat(2, 1, 1, 1), data.y_train[:8].repeat(2)
        augmented, _ = apply(transform, x, y, data.num_classes, seed=seed)
        st.image(tr.image_grid(augmented, columns=8, px=72), caption="Top row: 8 training images, augmented; "
                 "bottom row: the same 8 images augmented again (each pass draws new random parameters).")

job = tr.current_job()
running = job is not None and job.running
tr.other_job_notice("training")


def register(snap, job) -> None:
    """Once the training ended: make the network selectable in the sidebar (this session only)."""
    done = [r for r in snap.items if getattr(r, "kind", "") == "done"]
    if done and done[-1].result.history:
        st.session_state["train_last_key"] = tr.register(done[-1].result, job.extra.get("title", ""), snap.items)


if st.button("Train", type="primary", icon=":material/play_arrow:", key="train_start", disabled=running):
    ui.run_or_explain(config.check)
    params = (config, data)
    if tr.start_job("training", lambda stop: train(*params, stop=stop), finish=register,
                    title=data.name.split(" (")[0]):
        st.rerun()


def draw(snap, job) -> None:
    iterations, epochs = tr.items_of(snap, "iteration"), tr.items_of(snap, "epoch")
    if iterations:
        last = iterations[-1]
        val = f", validation accuracy {epochs[-1].val_accuracy:.1%}" if epochs else ""
        text = f"Epoch {last.epoch}, iteration {last.iteration} of {last.total_iterations}{val} · {snap.seconds:.0f} s"
        if snap.status == "running":
            st.progress(last.iteration / last.total_iterations, text=text)
        else:
            st.caption(text)
    elif snap.status == "running":
        st.progress(0.0, text="Starting…")
    if snap.status == "error":
        st.error(snap.error)
    st.plotly_chart(training_figure(snap.items), width="stretch", key="train_curves")
    if snap.status != "running" and (iterations or epochs):
        for hint in curve_hints(iterations, epochs):
            st.markdown(f"- {hint}")
        ui.export.offer("train_curves", "learning_curves", {"config": st.session_state.get("train_config"),
                                                            "data": st.session_state.get("train_data_key")},
                        figure=training_figure(snap.items), extra={"status": snap.status, "seconds": snap.seconds})


tr.poll("training", draw)

key = st.session_state.get("train_last_key")
networks = tr.trained_networks()
if key in networks and not (tr.current_job() and tr.current_job().running):
    result = networks[key]["result"]
    status = {"done": "Finished", "early stopped": "Stopped early", "stopped": "Stopped"}[result.status]
    epochs = len(result.history)
    st.success(f"{status} after {epochs} epoch{'s' if epochs != 1 else ''} in {result.seconds:.0f} s. The network keeps the weights "
               f"of epoch {result.best_epoch} (best validation accuracy, **{result.val_accuracy:.1%}**). It is in the "
               f"sidebar as “{networks[key]['title']}”, for this session.")
    c1, c2, _ = st.columns([2, 2, 3])
    c1.button("Use it on every page", key="train_use", on_click=tr.use_network, args=(key,), icon=":material/check:",
              disabled=st.session_state.get("model_name") == networks[key]["title"])
    c2.download_button("Download (safetensors)", save_trained(result), file_name="cnnviz_trained_cnn.safetensors",
                       mime="application/octet-stream", key="train_download", icon=":material/download:")
