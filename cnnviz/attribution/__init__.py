"""Which pixels matter: gradient saliency, guided backprop, Grad-CAM, occlusion, SmoothGrad,
integrated gradients, and the Adebayo et al. (2018) randomisation sanity check.

One module per method, as Captum does: ``gradient`` (vanilla gradient), ``guided`` (guided backprop),
``gradcam``, ``sensitivity`` (occlusion) with its two engines ``batched_occlusion`` and
``incremental_occlusion`` (on the graph that ``op_graph`` records),
``averaged_gradients`` (SmoothGrad, integrated gradients), ``sanity`` (randomisation check) and
``dispatch`` (``attribute``: any method by name). Every public name is importable from here.

Every method works on a shared model without leaving anything on it:

* gradients are taken with ``torch.autograd.grad`` with respect to the input (or one recorded
  activation) only, so no weight gradient is ever computed and no ``.grad`` lands on a parameter;
* guided backprop changes no module: a thread-local ``TorchFunctionMode`` wraps the output of every
  ReLU call made in this thread during the forward pass (``nn.ReLU`` modules, in-place ReLUs,
  a ReLU module applied several times, and functional ``F.relu`` / ``torch.relu`` / ``Tensor.relu``
  calls, as in torchvision's GoogLeNet and DenseNet) in an autograd function whose backward lets
  only positive gradients through;
* activations are recorded through ``cnnviz.hooks.record_activations`` (hooks removed in
  ``finally``, firing only in the calling thread).

``target`` is a class index or a tensor of N class indices; ``x`` a preprocessed batch (N, C, H, W).
"""

from .averaged_gradients import completeness_gap, integrated_gradients, smoothgrad
from .batched_occlusion import batched_outputs, bf16_inference_copy, bf16_supported, occlusion_positions
from .dispatch import Attribution, attribute, to_heat
from .gradcam import cam_from_gradient, default_cam_layer, grad_cam
from .gradient import vanilla_gradient
from .guided import (
    GuidedReLUMode,
    count_relus,
    guided_backprop,
    guided_backprop_channel,
    guided_backprop_units,
)
from .incremental_occlusion import cut_points, incremental_scores, plan_regions, tail_gradients
from .op_graph import UnsupportedGraph, capture_graph
from .sanity import SanityStage, _randomize, _weighted_layers, randomization_sanity_check
from .sensitivity import (
    DEFAULT_FIELD,
    DEFAULT_TOLERANCE,
    FAST_PREVIEW,
    MIN_SAVING,
    OCCLUSION_MODES,
    OcclusionMap,
    occlusion,
    occlusion_map,
)
from .targets import (
    METHODS,
    Progress,
    Target,
    _check_input,
    logit_objective,
    module_check,
    private_copy,
    target_indices,
    top_class,
)

__all__ = [
    "DEFAULT_FIELD", "DEFAULT_TOLERANCE", "FAST_PREVIEW", "METHODS", "MIN_SAVING", "OCCLUSION_MODES", "Attribution", "OcclusionMap", "UnsupportedGraph",
    "batched_outputs", "capture_graph", "cut_points", "incremental_scores", "occlusion_map", "plan_regions",
    "tail_gradients", "GuidedReLUMode", "Progress", "SanityStage", "Target", "attribute", "bf16_inference_copy",
    "bf16_supported", "cam_from_gradient", "completeness_gap", "count_relus", "default_cam_layer", "grad_cam", "guided_backprop",
    "guided_backprop_channel", "guided_backprop_units", "integrated_gradients", "logit_objective", "module_check",
    "occlusion", "occlusion_positions", "private_copy", "randomization_sanity_check", "smoothgrad", "target_indices",
    "to_heat", "top_class", "vanilla_gradient",
]
