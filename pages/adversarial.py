"""Adversarial examples: FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018), untargeted or targeted."""

import streamlit as st

import ui
from ui import optimization
from cnnviz import adversarial
from cnnviz.synthesis import MAX_STEPS

st.title("Adversarial examples")
ui.explainer(
    "A tiny change to every pixel, chosen with the gradient, can change the network's answer while a person "
    "sees the same image (Szegedy et al., 2014, *Intriguing properties of neural networks*).\n\n"
    "- **FGSM**, the fast gradient sign method (Goodfellow, Shlens & Szegedy, 2015, *Explaining and Harnessing "
    "Adversarial Examples*): one step x + ε·sign(∇ₓ loss).\n"
    "- **PGD**, projected gradient descent (Madry et al., 2018, *Towards Deep Learning Models Resistant to "
    "Adversarial Attacks*): many smaller sign steps, each followed by a projection back into the box of "
    "radius ε around the original.\n\n"
    "**Untargeted** attacks push the image away from the current prediction (raise its cross-entropy); "
    "**targeted** attacks pull it toward a class you choose. ε is in pixel levels: ε = 8 means no pixel moves "
    "by more than 8 of 255 levels. The middle image shows the perturbation amplified so that ±ε spans black "
    "to white (its scale factor is stated). The adversarial image is rounded to whole 8-bit levels, so the PNG "
    "you download fools the network too. The small CNN on MNIST digits needs a much larger ε (about 48/255; "
    "MNIST papers use ε = 0.1 to 0.3) than ImageNet networks, where 1 to 4 levels are often enough."
)

ctx = ui.context()
ui.require_classes(ctx, "class scores to attack")
model = ctx.model
small = model.input_size[0] == 1

c1, c2, c3, c4 = st.columns(4)
seed = c4.number_input("Seed", 0, 10_000, 0, key="adv_seed")
method = c1.radio("Attack", adversarial.METHODS, index=1, horizontal=True, key="adv_method")
epsilon = c2.slider("ε (pixel levels of 255)", 1, adversarial.MAX_EPSILON_LEVELS, 48 if small else 4, key="adv_epsilon")
targeted = c3.checkbox("Targeted", key="adv_targeted")
target = None
if targeted:
    target = c3.selectbox("Target class", model.class_names, index=min(1, len(model.class_names) - 1), key=f"adv_target_{model.name}")
steps, step_levels, random_start = 1, float(epsilon), False
if method == "PGD":
    c1, c2, c3 = st.columns(3)
    steps = c1.slider("PGD steps", 1, min(100, MAX_STEPS), 20, key="adv_steps")
    fraction = c2.select_slider("Step size (fraction of ε)", [0.1, 0.25, 0.5, 1.0], value=0.25, key="adv_step")
    step_levels = float(epsilon) * fraction
    random_start = c3.checkbox("Random start in the ε-box", key="adv_random")

params = {
    "model": model.name, "weights": model.weights, "method": method, "epsilon_levels": epsilon,
    "target": target or "untargeted", "steps": steps, "step_levels": step_levels, "random_start": random_start,
    "seed": int(seed), "image": ctx.image_name,
}


def make_steps():
    st.session_state["adv_x"] = ctx.x  # the input this result belongs to
    return adversarial.attack_steps(
        model, ctx.x, epsilon, method=method, target=target, steps=steps, step_levels=step_levels,
        random_start=random_start, seed=int(seed), every=max(1, steps // 20),
    )


def show(step, live):
    if live:
        st.columns(3)[0].image(optimization.visible(step.pixels), caption=f"adversarial image so far · step {step.step} · {model.label}", width="stretch")
        return
    kept = st.session_state["adv_result"]["params"]
    x = st.session_state.get("adv_x", ctx.x)
    eps, tgt = kept["epsilon_levels"], None if kept["target"] == "untargeted" else kept["target"]
    result = adversarial.finish_attack(model, x, step, eps, tgt)
    amplified, scale = result.amplified_perturbation()
    c1, c2, c3 = st.columns(3)
    c1.image(optimization.visible(result.original), caption=f"original · {model.label}", width="stretch")
    c2.image(optimization.visible(amplified), caption=f"perturbation × {scale:.1f} (gray = 0, ±{eps}/255 = black/white)", width="stretch")
    c3.image(optimization.visible(result.adversarial), caption=f"adversarial (ε = {eps}/255, {kept['method']}) · {model.label}", width="stretch")
    ok = result.success[0]
    goal = f"reach '{tgt}'" if tgt is not None else "change the prediction"
    (st.success if ok else st.warning)(
        f"The attack {'did' if ok else 'did not'} {goal}: "
        f"'{result.before[0][0][0]}' ({result.before[0][0][1]:.1%}) → '{result.after[0][0][0]}' ({result.after[0][0][1]:.1%})."
        + ("" if ok else " Try a larger ε or more PGD steps.")
    )
    if not model.pretrained:
        st.caption("Random weights: the predictions are not meaningful, but the attack works the same way.")
    c1, c2, c3 = st.columns(3)
    with c1:
        optimization.top5_chart(result.before[0], "Original: top-5", "adv_before")
    with c2:
        optimization.top5_chart(result.after[0], "Adversarial: top-5", "adv_after")
    with c3:
        fig = optimization.loss_figure(step.history, {"cross-entropy to the label": "cross-entropy"}, "Loss curve")
        st.plotly_chart(fig, width="stretch", key="adv_curve")
    optimization.downloads("adv", "adversarial", kept, result.adversarial, {
        "model": model.label, "success": ok, "before": result.before[0], "after": result.after[0],
        "perturbation_scale": scale, "stopped_at_step": step.step})


run, _ = optimization.buttons("adv", "Attack")
optimization.stream("adv_result", params, make_steps, run, show, first_view=True)
