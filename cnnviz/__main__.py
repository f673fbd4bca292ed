"""Command line: `python -m cnnviz fetch resnet18 vgg19 ...` and `python -m cnnviz train-small-cnn`."""

from __future__ import annotations

import argparse
import sys

from .models import MODEL_NAMES, WeightsUnavailable, fetch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnviz", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = commands.add_parser("fetch", help="download pretrained weights into torchvision's cache, before a lecture")
    fetch_cmd.add_argument("models", nargs="+", choices=MODEL_NAMES, metavar="MODEL", help=", ".join(MODEL_NAMES))
    train_cmd = commands.add_parser("train-small-cnn", help="retrain the bundled small CNN on scikit-learn's digits")
    train_cmd.add_argument("--seed", type=int, default=0)
    train_cmd.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args(argv)
    if args.command == "fetch":
        try:
            for path in fetch(args.models):
                print(f"ready: {path}")
        except WeightsUnavailable as error:
            print(error, file=sys.stderr)
            return 1
        return 0
    from .small_cnn import main as train

    train(seed=args.seed, epochs=args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
