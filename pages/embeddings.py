"""Embeddings: a layer's features for a whole dataset in 2-D (PCA, t-SNE), and nearest neighbours."""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

import ui
import ui.datasets
from cnnviz import display
from cnnviz.defaults import typical_sample
from cnnviz.features import embed_2d, extract_features, nearest_neighbors, penultimate_layer, pixel_vectors

st.title("Embeddings")
ui.explainer(
    "Every image of the dataset becomes one **feature vector**: the activations of the chosen layer (by default "
    "the penultimate one, what the last linear layer classifies; feature maps are averaged over positions). "
    "Those vectors have hundreds of dimensions; to look at them we map them to 2-D.\n\n"
    "- **PCA** (Pearson, 1901) projects onto the two directions of largest variance: linear, faithful to large "
    "distances, often crowded.\n"
    "- **t-SNE** (van der Maaten & Hinton, 2008) places points so that near neighbours stay near: clusters show "
    "up clearly, but distances between clusters and cluster sizes mean little. Perplexity is roughly the number "
    "of neighbours each point cares about; different seeds give different (equally valid) pictures.\n\n"
    "**Nearest neighbours** (Krizhevsky et al., 2012): for the selected image, the closest images in feature space "
    "(Euclidean L2 and cosine distance) next to the closest in **pixel space**. In a trained network the first "
    "share meaning (same class, other pose or colour); the second only share colour and layout. Click a point "
    "in the plot (or type its number) to select it."
)

PENULTIMATE = "penultimate"
ctx = ui.context()
model = ctx.model
dataset, dataset_key = ui.datasets.choose_dataset(model.name, "embeddings", big_model_limit=100, prefer_digits=True)
if len(dataset) < 5:
    st.info("This dataset has fewer than 5 images; choose a bigger one to see an embedding.")
    st.stop()

try:
    penultimate = penultimate_layer(model.module)
    options = [PENULTIMATE, *ui.spatial_layers(ctx)]
except ValueError:
    penultimate, options = None, list(ui.spatial_layers(ctx))
c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
choice = c1.selectbox("Layer", options, key="embeddings_layer",
                      format_func=ui.labels({n: f"penultimate (input of {penultimate})" if n == PENULTIMATE
                                             else f"{n} (averaged over positions)" for n in options}))
layer = None if choice == PENULTIMATE else choice
method = c2.radio("Method", ["t-SNE", "PCA"], horizontal=True, key="embeddings_method")
params = {}
if method == "t-SNE":
    params["perplexity"] = float(c3.slider("Perplexity", 2, max(2, min(50, len(dataset) // 3)), min(30, max(2, len(dataset) // 4)),
                                           key="embeddings_perplexity"))
    params["max_iter"] = int(c4.select_slider("Iterations", [300, 500, 1000, 2000], 500, key="embeddings_iter"))
    params["seed"] = int(c4.number_input("Seed", 0, 10_000, 0, key="embeddings_seed"))

features = ui.cached(
    ("features", ctx.model_key, dataset_key, layer),
    lambda progress: extract_features(model, dataset, layer, batch_size=64, progress=progress),
    f"Features of {len(dataset)} images",
)
points = ui.cached(
    ("embedding", ctx.model_key, dataset_key, layer, method, tuple(sorted(params.items()))),
    lambda progress: ui.run_or_explain(embed_2d, features, "tsne" if method == "t-SNE" else "pca", **params),
    f"{method} of {len(dataset)} points",
)

labels = [dataset.label_name(i) for i in range(len(dataset))]
labels_index = np.asarray(dataset.labels)


def predictions():
    """The model's classes for the dataset, when they are the dataset's classes (else None)."""
    if penultimate is None or tuple(model.class_names) != tuple(dataset.class_names):
        return None
    logits = ui.cached(("logits", ctx.model_key, dataset_key),
                       lambda progress: extract_features(model, dataset, penultimate, batch_size=64, progress=progress),
                       f"Classifying {len(dataset)} images")
    return logits.argmax(1) if logits.shape[1] == len(dataset.class_names) else None
frame = pd.DataFrame({"x": points[:, 0], "y": points[:, 1], "label": labels, "image": np.arange(len(dataset))})
class_names = list(dataset.class_names)
styles = {name: display.class_style(i) for i, name in enumerate(class_names)}  # Okabe–Ito: colour-blind safe
fig = px.scatter(frame, x="x", y="y", color="label", symbol="label", custom_data=["image"],
                 hover_data={"image": True, "label": True, "x": False, "y": False},
                 category_orders={"label": class_names},
                 color_discrete_map={n: c for n, (c, _) in styles.items()}, symbol_map={n: m for n, (_, m) in styles.items()},
                 title=f"{method} of {features.shape[1]}-d features",
                 labels={"x": f"{method} 1", "y": f"{method} 2", "label": "class"})
fig.update_traces(marker=dict(size=8, opacity=0.85, line=dict(width=0.5, color="#333333")))
if st.toggle("Draw the images instead of dots", key="embeddings_thumbnails", disabled=len(dataset) > 1000,
             help="Each point becomes its image, framed in its class colour (up to 1,000 images)."):
    thumbs = ui.cached(("thumbnails", ctx.model_key, dataset_key),
                       lambda _: [display.data_uri(display.framed_thumbnail(model.preprocessing.view(dataset.images[i]),
                                                                             styles[labels[i]][0]))
                                  for i in range(len(dataset))],
                       f"Thumbnails of {len(dataset)} images")
    span = float(max(np.ptp(points[:, 0]), np.ptp(points[:, 1]), 1e-6))
    fig.update_layout(images=[
        dict(source=thumb, x=float(px_), y=float(py_), xref="x", yref="y", sizex=span * 0.035, sizey=span * 0.035,
             xanchor="center", yanchor="middle", layer="above")
        for thumb, (px_, py_) in zip(thumbs, points)])  # one layout update: adding them one by one is quadratic
    fig.update_traces(marker=dict(opacity=0.25))
fig.update_layout(height=560, margin=dict(l=10, r=10, t=50, b=10))

left, right = st.columns([3, 2])
with left:
    st.caption(f"{model.label} · {dataset.name} · hover a point for its number and class, click it to select it")
    event = st.plotly_chart(fig, width="stretch", on_select="rerun", selection_mode="points", key="embeddings_plot")
    ui.export.offer("embeddings", "embeddings", {"dataset": dataset_key, "layer": choice, "method": method, **params},
                    figure=fig, extra={"model_label": model.label, "points": points, "labels": labels})
picked = None
points_selected = getattr(getattr(event, "selection", None), "points", None) or []
if points_selected:
    data = points_selected[0].get("customdata")
    picked = int(data[0]) if data else None
state = st.session_state
if state.get("_embeddings_index_for") != (ctx.model_key, dataset_key, layer):
    # Start on a typical, correctly classified sample (its neighbours agree with it), not on #0.
    state["_embeddings_index_for"] = (ctx.model_key, dataset_key, layer)
    state["embeddings_index"] = ui.cached(("typical", ctx.model_key, dataset_key, layer),
                                          lambda _: typical_sample(features, labels_index, predictions(), k=5),
                                          "Finding a typical sample")
if picked is not None and state.get("_embeddings_last_click") != picked:
    state["_embeddings_last_click"] = picked
    state["embeddings_index"] = picked
state["embeddings_index"] = min(int(state["embeddings_index"]), len(dataset) - 1)

with right:  # no default value: the Session State API sets it (a default too would warn on every click)
    index = int(st.number_input("Selected image", 0, len(dataset) - 1, key="embeddings_index"))
    k = int(st.slider("Neighbours", 1, min(10, len(dataset) - 1), min(5, len(dataset) - 1), key="embeddings_k"))
    view = model.preprocessing.view(dataset.images[index]).convert("RGB")
    st.columns([1, 2])[0].image(view.resize((128, 128), 0), width="stretch", caption=f"#{index} · {labels[index]}")

pixels = ui.cached(("pixels", ctx.model_key, dataset_key), lambda progress: pixel_vectors(model, dataset),
                          "Pixels of the dataset")
rows = [
    ("Feature space, L2", features, "l2"),
    ("Feature space, cosine", features, "cosine"),
    ("Pixel space, L2", pixels, "l2"),
]
for title, bank, metric in rows:
    idx, dist = nearest_neighbors(bank, bank[index], k=k, metric=metric, exclude=[index])
    same = sum(labels[i] == labels[index] for i in idx)
    st.markdown(f"**{title}** · {same} of {k} share the label *{labels[index]}*")
    cols = st.columns(5)  # two rows of five at most: thumbnails stay legible in half a projector
    for n, (i, d) in enumerate(zip(idx, dist)):
        image = model.preprocessing.view(dataset.images[int(i)]).convert("RGB")
        cols[n % 5].image(image.resize((96, 96), 0), width="stretch", caption=f"{labels[int(i)]} · {d:.3g}")
