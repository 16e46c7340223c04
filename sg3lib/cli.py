"""The `sg3` command line: one sub-command per stage of the data flow.

Each sub-command lives beside the code it drives; this file only dispatches, importing
the module of the chosen command alone (so `sg3 info` does not pay for moviepy).
A module for command NAME defines `add_NAME_arguments(parser)` and `run_NAME(args) -> int`.
"""
import argparse
import functools
import importlib
import os
import re
import stat
import sys
import warnings

COMMANDS = {
    "curate": ("sg3lib.data.curate", "clean a folder or zip of images into a training dataset"),
    "rank": ("sg3lib.data.rank", "score a dataset's images with a trained discriminator"),
    "train": ("sg3lib.train.cli", "train StyleGAN3-T/-R or StyleGAN2 with exact resume"),
    "generate": ("sg3lib.explore.cli", "images, psi grids and style-mixing grids from a network"),
    "video": ("sg3lib.explore.cli", "interpolation videos (mp4) from a network"),
    "info": ("sg3lib.loader", "print what a network file holds"),
}


# A number, or numbers separated by commas, starting with a minus sign: '-0.1,0', '-1,0,1', '-1e-3'.
_NUM = r"(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_NEGATIVE_VALUE = re.compile(rf"-{_NUM}(\s*,\s*[-+]?{_NUM})*")


def finite_number(text):
    """An argparse type: a finite number, negative too (float() takes 'nan' and 'inf', which
    would draw grey images or never end)."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not abs(v) < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def torch_device(device):
    """The torch.device that `device` (a --device value) names, if torch can use it here; else a
    ValueError saying why ('mps' or 'cuda:5' parse as devices, then fail on first use deep inside)."""
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; use cpu, cuda or cuda:N (--device)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}, but torch sees no CUDA GPU here; use cpu (--device cpu)")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}, but torch sees {torch.cuda.device_count()} GPU(s) here: "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1} (--device)")
    if dev.type in ("cpu", "cuda"):  # (a probe on CUDA would start a context on GPU 0 in every process)
        return dev
    if dev.type == "meta":
        raise ValueError(f"device {device!r} holds no data (shapes only); use cpu or cuda (--device)")
    try:
        torch.zeros(1).to(dev)
    except (RuntimeError, AssertionError, ImportError) as e:  # (hpu: ModuleNotFoundError 'torch.hpu')
        why = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:200]
        raise ValueError(f"device {device!r}: torch cannot use it here ({why}); use cpu or cuda (--device)") from None
    return dev


def join_negative_values(parser, args):
    """argparse takes a token that starts with '-' for an option unless it is a plain negative number,
    so `--translate -0.1,0` fails ('expected one argument') where `--translate=-0.1,0` works.
    Write such a token, when it follows an option that takes a value, as `--option=value`.
    A plain negative number ('--psi -0.5') argparse reads by itself; '-1e-3' it does not, and is
    joined too. An option that takes several values keeps its plain numbers as they are; nothing
    after '--' is touched."""
    takes = {s: a.nargs for a in parser._actions if a.nargs != 0 for s in a.option_strings}
    longs = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    out, i = [], 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            return out + list(args[i:])
        name = tok
        if tok not in takes and tok.startswith("--") and parser.allow_abbrev:  # --trans -> --translate
            matches = [s for s in longs if s.startswith(tok)]
            name = matches[0] if len(matches) == 1 else tok
        if name in takes and i + 1 < len(args) and _NEGATIVE_VALUE.fullmatch(args[i + 1]) and \
                ("," in args[i + 1] or takes[name] is None):
            out.append(f"{tok}={args[i + 1]}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _show_warning(command, show, message, category, filename, *rest, **kw):
    """sg3lib's own warnings (they say what to do) as one line of the command; others (torch's,
    a library's) as Python shows them, with their source line."""
    if os.path.abspath(filename).startswith(_PACKAGE):
        print(f"sg3 {command}: warning: {message}", file=sys.stderr, flush=True)
    else:
        show(message, category, filename, *rest, **kw)


def _stdout_is_a_pipe():
    try:
        return stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # replaced (a notebook, a test's capture) or closed
        return False


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sg3", description="sg3lib: StyleGAN3 toolkit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] not in COMMANDS:
        if argv and argv[0] in ("-h", "--help"):
            parser.print_help()
            return 0
        # (no command is a usage error too: a script's `sg3 "$CMD"` with an empty $CMD must not succeed)
        parser.print_help(sys.stderr)
        print("sg3: error: " + (f"unknown command {argv[0]!r}; " if argv else "no command given; ")
              + f"choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    name = argv[0]
    try:  # importing the command's module loads torch (seconds): a Ctrl-C then is one line too
        module = importlib.import_module(COMMANDS[name][0])
        cmd_parser = argparse.ArgumentParser(prog=f"sg3 {name}", description=COMMANDS[name][1])
        getattr(module, f"add_{name}_arguments")(cmd_parser)
        args = cmd_parser.parse_args(join_negative_values(cmd_parser, argv[1:]))
        with warnings.catch_warnings():  # (restores Python's own on the way out)
            warnings.showwarning = functools.partial(_show_warning, name, warnings.showwarning)
            code = int(getattr(module, f"run_{name}")(args) or 0)
            sys.stdout.flush()  # here, so that a reader gone (below) is not Python's error at exit
            return code
    except KeyboardInterrupt as e:  # Ctrl-C: one line (train's says how to continue), not a traceback
        if not getattr(e, "quiet", False):  # (every process of a torchrun run is interrupted)
            print(f"sg3 {name}: {str(e) or 'interrupted'}", file=sys.stderr)
        return 130  # as a shell reports a command ended by SIGINT
    except BrokenPipeError:  # `sg3 info net.pt | head -1`: the reader has gone; the rest goes nowhere
        if not _stdout_is_a_pipe():  # another pipe broke (a helper process's): not the reader's leaving
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (Python flushes stdout at exit)
        return 141  # as a shell reports a command ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
