"""Generate images by optimising the input: class and neuron visualization, feature inversion,
DeepDream (and, in ``cnnviz.adversarial``, adversarial examples), all on ONE loop.

The loop is built from small composable parts, in the spirit of Lucent:

* **objectives** (``Objective``): scores to *maximise*, computed from a ``Capture`` of one forward
  pass (the image, the logits, recorded activations). They combine with ``+``, ``-``, ``*``:
  ``class_logit(3) - 1e-3 * l2()``, ``-feature_error("layer3", target) - 0.5 * total_variation(2)``.
  Each returns one value per image of the batch, shape (N,).
* **transforms** (``jitter``, ``random_scale``, ``compose``): random, differentiable changes of the image
  before each forward pass, drawn from a ``torch.Generator`` so a seed fixes the result.
* **step rules** (``ascent``, ``normalized_ascent``, ``sign_ascent``, ``adam``): how a gradient becomes
  an update.
* **regularizers** (``blur_every``, ``clip_small_norm``, ``clip_small_contribution``, ``project_linf``):
  act on the image between steps.

One module per concept: ``objectives``, ``transforms``, ``steps`` (step rules and regularizers),
``loop`` (and ``lbfgs`` beside it, yielding the same ``Step``s) and ``methods``; every public name is importable from ``cnnviz.synthesis``.

``optimize`` is the loop: a generator yielding ``Step``s, so a page can show the image as it forms.
The image lives in [0, 1] pixel space and is normalised with the model's ``Preprocessing`` before each
forward; pixels are clamped to [0, 1] after every step. Gradients are taken with respect to the image
only (``torch.autograd.grad``), hooks live only inside one forward pass (``cnnviz.hooks.forward_until``
when the objective reads no logits, so the pass stops after the last needed layer;
``record_activations`` otherwise), so nothing is left on the shared model, also when the loop is
abandoned or raises.
"""

from .lbfgs import lbfgs_optimize
from .loop import MAX_DREAM_SIZE, MAX_OCTAVES, MAX_SIZE, MAX_STEPS, OptimizationError, Step, check_steps, evaluate, optimize, run
from .methods import (
    INITS,
    class_index,
    class_visualization,
    dream,
    image_pixels,
    initial_pixels,
    invert_features,
    invert_layers,
    neuron_visualization,
    target_features,
    visualize,
)
from .objectives import (
    Capture,
    Objective,
    channel,
    class_logit,
    cross_entropy,
    deepdream,
    feature_error,
    inversion,
    l2,
    term,
    total_variation,
    unit,
)
from .steps import (
    ImageState,
    Regularizer,
    StepRule,
    adam,
    ascent,
    blur_every,
    clip_small_contribution,
    clip_small_norm,
    gaussian_blur,
    normalized_ascent,
    project_linf,
    sign_ascent,
)
from .transforms import Transform, compose, jitter, random_scale
