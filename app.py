"""cnnviz: the Streamlit entry point. Page config, the shared sidebar, and navigation."""

import streamlit as st

import ui

st.set_page_config(page_title="cnnviz", page_icon=":material/visibility:", layout="wide")

PAGES = {
    "": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Look inside": [
        st.Page("pages/filters.py", title="Filters", icon=":material/grid_on:"),
        st.Page("pages/activations.py", title="Activations", icon=":material/thermostat:"),
        st.Page("pages/patches.py", title="Maximally activating patches", icon=":material/extension:"),
        st.Page("pages/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    ],
    "Which pixels matter": [
        st.Page("pages/saliency.py", title="Saliency", icon=":material/local_fire_department:"),
    ],
    "Generate images": [
        st.Page("pages/class_visualization.py", title="Class & neuron visualization", icon=":material/palette:"),
        st.Page("pages/adversarial.py", title="Adversarial examples", icon=":material/theater_comedy:"),
        st.Page("pages/perturbations.py", title="Smallest & universal perturbations", icon=":material/blur_on:"),
        st.Page("pages/inversion.py", title="Feature inversion", icon=":material/replay:"),
        st.Page("pages/deepdream.py", title="DeepDream", icon=":material/cyclone:"),
    ],
}

page = st.navigation(PAGES)
ui.sidebar()
page.run()
