"""The `sg3` command line: one sub-command per stage of the data flow.

Each sub-command lives beside the code it drives; this file only dispatches, importing
the module of the chosen command alone (so `sg3 info` does not pay for moviepy).
A module for command NAME defines `add_NAME_arguments(parser)` and `run_NAME(args) -> int`.
"""
import argparse
import importlib
import sys

COMMANDS = {
    "curate": ("sg3lib.data.curate", "clean a folder or zip of images into a training dataset"),
    "rank": ("sg3lib.data.rank", "score a dataset's images with a trained discriminator"),
    "train": ("sg3lib.train.cli", "train StyleGAN3-T/-R or StyleGAN2 with exact resume"),
    "generate": ("sg3lib.explore.cli", "images, psi grids and style-mixing grids from a network"),
    "video": ("sg3lib.explore.cli", "interpolation videos (mp4) from a network"),
    "info": ("sg3lib.loader", "print what a network file holds"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sg3", description="sg3lib: StyleGAN3 toolkit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        parser.print_help() if not argv or argv[0] in ("-h", "--help") else parser.error(
            f"unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    cmd_parser = argparse.ArgumentParser(prog=f"sg3 {name}", description=COMMANDS[name][1])
    getattr(module, f"add_{name}_arguments")(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    return int(getattr(module, f"run_{name}")(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
