"""Seeded script that trained the bundled small CNN: `python assets/train_small_cnn.py`.

Writes assets/small_cnn_digits.safetensors (weights + metadata: normalisation, held-out
accuracy, per-epoch history) and assets/small_cnn_digits_history.safetensors (weights before
training and after each epoch, for the Filters page).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnnviz.small_cnn import main  # noqa: E402

if __name__ == "__main__":
    main(seed=0, epochs=12)
