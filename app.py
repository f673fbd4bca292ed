"""cnnviz: the Streamlit entry point. Page config, the shared sidebar, and navigation."""

import sys

import streamlit as st

from cnnviz.admission import align_thread
from cnnviz.memory import freeze_long_lived_objects, tune_allocator

import ui
from ui import links
from ui.errors import guarded

# torch lets go of the GIL inside every operation and must take it back after each one. While another
# thread runs Python (WebRTC's packets, other sessions' scripts), that waits up to the switch interval:
# at Python's default 5 ms, one Live frame of SqueezeNet (about 100 operations) took 0.36-0.53 s instead
# of 0.03 s beside one busy thread; at 0.2 ms, 0.07 s. Process-wide, set once (the same value every run).
SWITCH_INTERVAL_S = 0.0002
if sys.getswitchinterval() != SWITCH_INTERVAL_S:
    sys.setswitchinterval(SWITCH_INTERVAL_S)

ui.admission.gate()  # sizes the heavy-job gate to the cores and sets torch's threads, once per process
align_thread()  # and gives this run's thread that count (OpenMP counts per thread; cnnviz.admission)
tune_allocator()  # glibc hands freed tensor memory back (cnnviz.memory); the same values every run

# What the pages import, loaded before the freeze below, which hides every object alive at start-up from
# the garbage collector: Streamlit collects garbage after every run of every session, and scanning these
# libraries' half a million objects took half a second each time (cnnviz.memory.freeze_long_lived_objects).
import pandas, plotly.express, plotly.subplots, skimage.data, sklearn.decomposition, sklearn.manifold  # noqa: E401,E402,F401
import ui.live  # noqa: E402,F401 (streamlit-webrtc, aiortc, av)

freeze_long_lived_objects()  # once per process

links.before_run()  # a link's values into session state (first run), before any widget
st.set_page_config(page_title="cnnviz", page_icon=":material/visibility:", layout="wide",
                   initial_sidebar_state=links.sidebar_state())

PAGES = {
    "": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Training": [
        st.Page("pages/activation_functions.py", title="Activation functions", icon=":material/show_chart:"),
        st.Page("pages/preprocessing.py", title="Preprocessing", icon=":material/tune:"),
        st.Page("pages/initialization.py", title="Weight initialisation", icon=":material/casino:"),
        st.Page("pages/train.py", title="Train a CNN", icon=":material/model_training:"),
        st.Page("pages/recipe.py", title="Training recipe", icon=":material/checklist:"),
        st.Page("pages/transfer.py", title="Transfer learning", icon=":material/move_up:"),
    ],
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
    "Style": [
        st.Page("pages/style_gram.py", title="Gram matrices", icon=":material/grid_4x4:"),
        st.Page("pages/style_texture.py", title="Texture synthesis", icon=":material/texture:"),
        st.Page("pages/style_gatys.py", title="Style transfer (Gatys)", icon=":material/brush:"),
        st.Page("pages/style_fast.py", title="Fast style", icon=":material/bolt:"),
        st.Page("pages/style_train.py", title="Train a style network", icon=":material/model_training:"),
    ],
    "Live": [st.Page("pages/live.py", title="Live camera", icon=":material/videocam:")],
}

page = ui.navigation(PAGES)  # st.navigation, and Home lists PAGES; an unknown link says so
if guarded(ui.sidebar, "sidebar"):  # an unexpected error: a message, never a traceback (ui/errors.py)
    link_slot = links.sidebar_panel()  # presenter mode, and the link to this view once the page ran
    try:
        guarded(page.run)
    finally:
        links.after_run(link_slot)  # the view's values into the URL and the link
