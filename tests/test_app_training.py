"""The "Training" pages in AppTest: the lecture's figures on the initialisation page, a training run in
the background that ends up in the sidebar and on the Filters page, and the recipe's quick steps.

AppTest does not run fragments on a timer, so the test waits for the background job itself and
reruns; the live polling is covered by the library tests (BackgroundRun) and the browser test.
"""

from __future__ import annotations

import pytest
import torch

from test_app import new_app

DIGITS = "digits (scikit-learn, 1,797)"


@pytest.fixture(autouse=True)
def one_thread():
    """The networks trained here are tiny: one intra-op thread is faster on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _page(path: str, **state):
    at = new_app(**state).run()
    at.switch_page(path).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_initialisation_page_shows_collapse_with_small_sigma_and_health_with_kaiming():
    at = _page("pages/initialization.py", init_activation="tanh", init_scheme="normal", init_sigma=0.01)
    assert any("collapse" in w.value for w in at.warning)
    at = _page("pages/initialization.py", init_activation="relu", init_scheme="kaiming")
    assert any("Healthy" in s.value for s in at.success)
    at = _page("pages/initialization.py", init_activation="tanh", init_scheme="normal", init_sigma=1.0)
    assert any("saturates" in w.value for w in at.warning)


def test_a_network_trained_on_the_train_page_is_used_by_the_other_pages():
    at = _page("pages/train.py", tr_train_data=DIGITS, tr_epochs=2, tr_width=8)
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    job = at.session_state["_training_job"]
    job.join(300)
    assert job.snapshot().status == "done", job.snapshot().error
    at.run()  # the first run after the end collects the network
    networks = at.session_state["_trained_networks"]
    assert len(networks) == 1
    key = next(iter(networks))
    assert key.startswith("trained|") and at.session_state["_session_uid"] in key
    assert any("best validation accuracy" in s.value for s in at.success)
    # a later run of the session: the sidebar offers it, the Filters page replays its two epochs
    at = new_app(model_name=networks[key]["title"], _trained_networks=networks, _session_uid=at.session_state["_session_uid"]).run()
    assert not at.exception, at.exception
    assert at.session_state["context"].model_key == key
    assert at.session_state["context"].model.name == "trained_cnn"
    at.switch_page("pages/filters.py").run()
    assert not at.exception, at.exception
    slider = at.slider(key="filters_epoch")
    assert slider.max == 2 and slider.value == 2
    for page in ("pages/activations.py", "pages/saliency.py", "pages/embeddings.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, [e.value for e in at.error])


def test_recipe_checks_the_initial_loss_and_the_gradients():
    at = _page("pages/recipe.py", tr_train_data=DIGITS)
    at.button(key="recipe_initial").click().run()
    assert any("log(10)" in s.value for s in at.success), [s.value for s in at.warning]
    at.button(key="recipe_gc").click().run()
    assert not at.exception, at.exception
    report = at.session_state["recipe_gc_report"]
    assert report.max_relative_error < 1e-6  # the smooth variant by default


def test_sessions_never_see_each_others_networks():
    first = _page("pages/train.py", tr_train_data=DIGITS)
    second = _page("pages/train.py", tr_train_data=DIGITS)
    assert first.session_state["_session_uid"] != second.session_state["_session_uid"]
