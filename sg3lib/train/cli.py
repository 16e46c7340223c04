"""`sg3 train`: the command line of sg3lib.train.train.

    sg3 train --data ds.zip --outdir runs/cats --cfg stylegan3-t --gamma 2 --kimg 5000
    sg3 train --data ds.zip --outdir runs/cats --resume latest          # continue exactly
    torchrun --nproc_per_node=2 -m sg3lib.cli train --data ds.zip --outdir runs/cats ...

Options left out take the preset's defaults (sg3lib.train.config), or, when continuing a run,
the values stored in its snapshot.
"""
import argparse
import sys

from ..files import user_path
from .config import AUG_MODES, COMPILE_MODES


def _bool(s):
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def add_train_arguments(p):
    a = p.add_argument
    a("--data", required=True, type=user_path, help="dataset zip or folder (official format, e.g. from sg3 curate)")
    a("--outdir", required=True, type=user_path, help="run folder: snapshots, fakes grids, stats.jsonl (a Drive folder on Colab)")
    a("--cfg", choices=["stylegan3-t", "stylegan3-r", "stylegan2"], default=None,
      help="base configuration (default stylegan3-t)")
    a("--batch", type=int, help="total batch size over all processes (default 32)")
    a("--batch-gpu", type=int, help="images per process per round (default batch / processes); smaller -> "
                                     "gradient accumulation")
    a("--gamma", type=float, help="R1 weight (default 0.0002 * res^2 / batch, the ADA heuristic)")
    a("--kimg", type=float, help="total training length in thousands of real images (default 25000)")
    a("--tick", type=float, help="kimg per tick: stats line and progress (default 4)")
    a("--snap", type=int, help="ticks per snapshot (default 50)")
    a("--mirror", type=_bool, help="add x-flipped copies of the dataset (true/false)")
    a("--cond", type=_bool, help="train a class-conditional model from dataset.json labels (default false; "
                                 "starting from another network's weights: as that network)")
    a("--aug", choices=AUG_MODES, help="augmentation: ada (default; adapts p towards --target), fixed "
                                       "(always at --p), noaug (none)")
    a("--target", type=float, help="ADA target for r_t = E[sign(D(real))] (default 0.6)")
    a("--p", type=float, help="augmentation probability: ada's starting value (default 0; continuing a run, where its "
                           "adapted p goes on from), fixed's constant one")
    a("--ada-kimg", type=float, help="ADA speed: kimg for p to go from 0 to 1 (default 500; 100 when "
                                     "starting from another network's weights, as the official --resume)")
    a("--resume", type=user_path, help="'latest' (newest snapshot in --outdir), a snapshot path, a run folder (its newest "
                     "snapshot), an official .pkl or a URL")
    a("--freezed", type=int, help="freeze the first N layers of D (transfer learning)")
    a("--cbase", type=int, help="capacity multiplier: G's channel_base (default 32768; stylegan3-r 65536, whose "
                                "D takes half of it, as the official config R doubles G's feature maps only: "
                                "the official --cfg stylegan3-r --cbase N is --cbase 2N here)")
    a("--cmax", type=int, help="maximum channels per layer: G's channel_max (default 512; stylegan3-r 1024, "
                               "whose D takes half of it, as of --cbase)")
    a("--map", type=int, help="mapping network layers")
    a("--z-dim", type=int, help="latent size (default 512)")
    a("--w-dim", type=int, help="intermediate latent size (default 512)")
    a("--glr", type=float, help="G learning rate")
    a("--dlr", type=float, help="D learning rate")
    a("--mbstd-group", type=int, help="minibatch-stddev group size (default 4, or --batch-gpu when smaller, which changes D's "
                                       "statistic; must divide --batch-gpu)")
    a("--seed", type=int, help="random seed (weights, latents, data order)")
    a("--precision", choices=["fp32", "fp16", "bf16"],
      help="fp16 (default, as the official training): the 4 highest resolutions in float16 on CUDA "
           "(float32 on the CPU), activations clamped at 256; bf16: in bfloat16; fp32: everything in "
           "float32, no clamping")
    a("--workers", type=int, help="data loader processes (default 2)")
    a("--compile", choices=COMPILE_MODES,
      help="run G and D of the main phases under torch.compile in this mode (default none; "
           "the first steps compile, for minutes)")
    a("--keep-snapshots", type=int, help="keep the last N snapshots (default 5; 0 keeps all)")
    a("--keep-every-kimg", type=float,
      help="also keep one snapshot per this many kimg: the first in each interval, so the run's first "
           "snapshot too (milestones; 0 = none)")
    a("--deterministic", action=argparse.BooleanOptionalAction, default=None, help="bit-reproducible (slower) kernels")
    a("--tf32", action=argparse.BooleanOptionalAction, default=None,
      help="let the float32 layers' convolutions and matmuls use TF32 tensor cores (faster on Ampere "
           "and newer GPUs; the official training, and the default here, keep full float32)")
    a("--tensorboard", action=argparse.BooleanOptionalAction, default=None, help="also write TensorBoard events")
    a("--device", default=None, help="torch device (default: cuda:LOCAL_RANK if available, else cpu)")
    a("--no-progress", action="store_true", help="no progress bar: one line per tick instead (a log file)")


def run_train(args):
    from .loop import TrainError, train
    opts = {k: v for k, v in vars(args).items()
            if k not in ("data", "outdir", "cfg", "resume", "device", "no_progress")}
    try:
        out = train(args.data, args.outdir, cfg=args.cfg, resume=args.resume, device=args.device,
                    progress=not args.no_progress, **opts)
    except TrainError as e:
        if not e.quiet:  # under torchrun: one message, from the lowest rank that failed
            print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        from .distributed import cleanup
        cleanup()
    if out.get("snapshot"):
        print(f"done: {out['cur_nimg']} images, last snapshot {out['snapshot']}")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="sg3 train", description="train StyleGAN3-T/-R or StyleGAN2")
    add_train_arguments(p)
    return run_train(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
