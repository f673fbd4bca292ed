"""Style: Gram matrices, texture synthesis, Gatys style transfer, the trained 26-style network and
fast style networks you train yourself (one module per concept)."""

from .gatys import gatys_seconds, resize_longer, style_transfer, texture_row, texture_synthesis
from .gram import gram_matrix, relative_gram_error, style_grams, style_loss
from .multistyle import NUM_STYLES, MultiStyleNet, blend_weights, multistyle_network, stylize
from .training import TrainingJob, TrainSettings, TrainStep, train_style_network
from .transformer import TransformerNet, load_checkpoint, save_checkpoint, stylize_with
from .vgg import CONTENT_LAYER, STYLE_LAYERS, VGG_LAYERS, loss_network, module_name
