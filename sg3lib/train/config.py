"""Training configurations: the papers' recommended presets and how options override them.

A config is a plain JSON-able dict (it is stored in every snapshot). `make_config` fills it
from a preset (stylegan3-t, stylegan3-r, stylegan2) and the user's options; `network_kwargs`
turns it into the constructor arguments of G and D (official names, so snapshots and
official .pkl files speak the same language).

Numbers follow the papers' recommended configurations (Karras et al. 2021 table/appendix,
StyleGAN2 2020, ADA 2020): Adam betas (0, 0.99), eps 1e-8; G lr 0.0025 (StyleGAN2: 0.002),
D lr 0.002; lazy R1 every 16 D steps; StyleGAN2 path length every 4 G steps with weight 2,
style mixing 0.9; StyleGAN3 no path length, no style mixing, 2 mapping layers; StyleGAN3-R
(only R, not T) blurs D's images with sigma 10 fading over batch*200/32 kimg and doubles G's
feature maps (cbase 65536, cmax 1024) but not D's (32768, 512, as in the other configs); EMA
half-life batch*10/32 kimg with ramp-up 0.05; ADA target 0.6, adjusted every 4 steps at a
speed of 500 kimg for p to go from 0 to 1. Mixed precision as the official training's default:
the 4 highest resolutions of G and D in float16 on CUDA (float32 on the CPU, where float16
convolutions would be slow), activations clamped at 256; --precision fp32 turns both off (no
float16 layers, no clamping), as the official --fp32 does.
"""
import numbers

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")  # torch.compile's modes
AUG_MODES = ("ada", "fixed", "noaug")  # the official training's --aug choices

PRESETS = {
    "stylegan3-t": dict(cbase=32768, cmax=512, map=2, glr=0.0025, dlr=0.002, style_mixing=0.0,
                        pl_weight=0.0, blur_sigma=0.0, conv_kernel=3, radial=False),
    "stylegan3-r": dict(cbase=65536, cmax=1024, map=2, glr=0.0025, dlr=0.002, style_mixing=0.0,
                        pl_weight=0.0, blur_sigma=10.0, conv_kernel=1, radial=True),
    "stylegan2": dict(cbase=32768, cmax=512, map=8, glr=0.002, dlr=0.002, style_mixing=0.9,
                      pl_weight=2.0, blur_sigma=0.0, conv_kernel=3, radial=False),
}

# A new run from trained weights (--resume with an official .pkl, or a snapshot of a run on another
# dataset), as the official training treats --resume: ADA adapts 5x faster, G_ema follows G without
# the ramp-up meant for random initial weights, and the images are not blurred at the start.
TRANSFER = dict(ada_kimg=100, ema_rampup=0.0, blur_sigma=0.0)
# Architecture keys that set numerics, not the shapes of the weights: a continued run may change
# them (an fp16 run that diverged goes on in fp32), and a transfer does not take them from its
# source; nor does it take the freezing, which is the new run's own choice.
NUMERICS = ("precision", "conv_clamp")
NOT_TRANSFERRED = ("freezed",) + NUMERICS

DEFAULTS = dict(
    cfg="stylegan3-t", batch=32, batch_gpu=None, gamma=None, kimg=25000, tick=4, snap=50,
    mirror=False, aug="ada", target=0.6, ada_interval=4, ada_kimg=500, p=0.0, freezed=0,
    seed=0, precision="fp16", workers=2, mbstd_group=4, betas=(0.0, 0.99), eps=1e-8,
    D_reg_interval=16, G_reg_interval=4, pl_batch_shrink=2, pl_decay=0.01, ema_kimg=None,
    ema_rampup=0.05, blur_fade_kimg=None, keep_snapshots=5, keep_every_kimg=None, deterministic=False,
    tensorboard=False, stats_batch=4, compile="none", tf32=False, z_dim=512, w_dim=512, conv_clamp=None,
    cond=False, dcbase=None, dcmax=None, darch="resnet",
)
# D's architectures (StyleGAN2 fig. 7). Every preset trains resnet; a transfer takes its source's
# (StyleGAN2-ADA's cifar config trains 'orig'), so `darch` has no command-line flag.
D_ARCHITECTURES = ("orig", "skip", "resnet")

ARCH_KEYS = ("cfg", "resolution", "img_channels", "c_dim", "cbase", "cmax", "dcbase", "dcmax", "darch", "map",
             "z_dim", "w_dim", "mbstd_group", "conv_clamp", "precision", "conv_kernel", "radial", "freezed")


def default_gamma(resolution, batch):
    """R1 weight heuristic of the ADA paper (its 'auto' config): gamma = 0.0002 * res^2 / batch."""
    return 0.0002 * resolution ** 2 / batch


def default_conv_clamp(precision):
    """Activations clamped at 256 with reduced precision, a float16 range guard; fp32 does not clamp."""
    return None if precision == "fp32" else 256


def batch_derived(resolution, batch):
    """The options whose defaults follow the batch: the R1 weight, G_ema's half-life (batch*10/32
    kimg) and the length of config R's blur fade (batch*200/32 kimg)."""
    return dict(gamma=default_gamma(resolution, batch), ema_kimg=batch * 10 / 32, blur_fade_kimg=batch * 200 / 32)


# Numeric options and what they take (the official training's ranges): a nan, a negative or a zero
# size failed deep inside (ZeroDivisionError, torch's 'Invalid learning rate'; torch's DataLoader
# refuses --workers only after the run folder is made) or trained silently on garbage (a nan
# --gamma, a --target of 2, a negative --freezed freezing nothing).
_WHOLE_AT_LEAST = dict(batch=1, batch_gpu=1, mbstd_group=1, cbase=1, cmax=1, dcbase=1, dcmax=1, map=1, z_dim=1,
                       w_dim=1, snap=0, workers=0, freezed=0, ada_interval=1, D_reg_interval=1, G_reg_interval=1,
                       pl_batch_shrink=1, stats_batch=1)
_WHOLE_NOTES = dict(workers=" (data loader processes; 0 loads in the training process)",
                    freezed=" (the number of D's first layers to freeze)")
_NUMBER_RANGES = dict(gamma=(0, "a number >= 0 (0: no R1)"), glr=(0, "a learning rate >= 0"),
                      dlr=(0, "a learning rate >= 0"), kimg=(None, "a finite number of kimg above 0"),
                      tick=(None, "a finite number of kimg above 0"),
                      ada_kimg=(None, "a number above 0 (kimg for p to go from 0 to 1)"),  # p's step divides by it
                      pl_weight=(0, "a number >= 0 (0: no path length regularisation)"),
                      ema_kimg=(0, "a number of kimg >= 0 (G_ema's half-life; 0: G_ema follows G)"),
                      ema_rampup=(0, "a number >= 0 (0: no ramp-up)"),
                      blur_sigma=(0, "a number of pixels >= 0 (0: no blur)"),
                      blur_fade_kimg=(0, "a number of kimg >= 0"), eps=(0, "a number >= 0 (Adam's epsilon)"))
# train() options that `sg3 train` has no flag for: named as train() takes them.
_API_ONLY = ("ada_interval", "D_reg_interval", "G_reg_interval", "pl_batch_shrink", "stats_batch", "pl_weight",
             "pl_decay", "dcbase", "dcmax", "ema_kimg", "ema_rampup", "blur_sigma", "blur_fade_kimg", "style_mixing",
             "betas", "eps")


def _name(key, v):
    return f"{key}={v!r}" if key in _API_ONLY else f"--{key.replace('_', '-')} {v!r}"


def _real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_numbers(c):
    for key, lo in _WHOLE_AT_LEAST.items():
        v = c[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo):
            raise ValueError(f"{_name(key, v)} must be a whole number >= {lo}{_WHOLE_NOTES.get(key, '')}")
    for key, (lo, what) in _NUMBER_RANGES.items():
        v = c[key]
        if v is None:  # gamma: the heuristic, filled in below
            continue
        ok = _real(v) and abs(v * 1000) < float("inf") and \
            (v >= lo if lo is not None else v > 0)  # (kimg and tick count images: kimg * 1000)
        if not ok:
            raise ValueError(f"{_name(key, v)} must be {what}")
    _check_switches(c)
    seed = c["seed"]  # every random stream takes it as 32 bits: 2**32 would repeat --seed 0
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"--seed {seed!r} must be a whole number from 0 to {2 ** 32 - 1}")
    if not 0 <= c["target"] <= 1:  # r_t is a mean of signs; the official range is [0, 1] (nan fails too)
        raise ValueError(f"--target {c['target']!r} must be a number in [0, 1] (the ADA target for r_t)")
    if not 0 <= c["pl_decay"] <= 1:  # the path length mean's EMA step
        raise ValueError(f"{_name('pl_decay', c['pl_decay'])} must be a number in [0, 1]")
    if not 0 <= c["style_mixing"] <= 1:  # (nan mixed nothing, silently)
        raise ValueError(f"{_name('style_mixing', c['style_mixing'])} must be a probability in [0, 1]")
    b = c["betas"]  # Adam's; torch refused them only after the run folder was made
    if not (isinstance(b, (list, tuple)) and len(b) == 2 and all(_real(v) and 0 <= v < 1 for v in b)):
        raise ValueError(f"{_name('betas', b)} must be two numbers in [0, 1) (Adam's betas)")
    k = c["keep_snapshots"]  # (a negative count: its own message, in make_config)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):  # nan ended the run at its first prune
        raise ValueError(f"--keep-snapshots {k!r} must be a whole number >= 0 (0 keeps all)")
    k = c["keep_every_kimg"]
    if k is not None and not abs(k) < float("inf"):
        raise ValueError(f"--keep-every-kimg {k!r} must be a finite number of kimg (0: no milestones)")


# The option names make_config (and train()) take.
OPTIONS = frozenset(DEFAULTS) | {k for preset in PRESETS.values() for k in preset}


_SWITCHES = ("mirror", "cond", "deterministic", "tf32", "tensorboard")


def _check_switches(opts):
    for key in _SWITCHES:  # train(mirror="false"), a setting typed as text, was on
        if opts.get(key) is not None and not isinstance(opts[key], bool):
            raise ValueError(f"{_name(key, opts[key])} must be True or False")


def check_option_names(opts):
    """ValueError for a name no option has (keep_snapshot for keep_snapshots): it would be stored in
    the run's config and change nothing, silently."""
    import difflib
    unknown = sorted(set(opts) - OPTIONS)
    if unknown:
        hints = [f"{k!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, OPTIONS, 1))
                             else "") for k in unknown]
        raise ValueError(f"unknown training option(s) {', '.join(hints)}; the options are "
                         f"{', '.join(sorted(OPTIONS))}")
    _check_switches(opts)  # before the dataset is opened (cond decides its labels)


def make_config(resolution, img_channels=3, c_dim=0, world=1, **opts):
    """Return the full config dict: preset of `opts['cfg']`, then user options (None = default).
    `world`: number of processes; batch_gpu defaults to an equal share of the batch."""
    cfg_name = opts.get("cfg") or DEFAULTS["cfg"]
    if cfg_name not in PRESETS:
        raise ValueError(f"unknown --cfg {cfg_name!r}; choose one of {', '.join(PRESETS)}")
    c = dict(DEFAULTS)
    c.update(PRESETS[cfg_name])
    c.update({k: v for k, v in opts.items() if v is not None})
    c.update(cfg=cfg_name, resolution=int(resolution), img_channels=int(img_channels), c_dim=int(c_dim))
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"image resolution {resolution} is not a power of two >= 4; "
                         "curate the dataset to 16, 32, ..., 1024 px (sg3 curate --resolution)")
    _check_numbers(c)
    c["batch_gpu"] = c["batch_gpu"] or max(c["batch"] // world, 1)  # as the official batch // gpus
    # D's capacity: config R doubles G's feature maps only (the official configs keep D at
    # cbase 32768 / cmax 512 in every config), so D defaults to half of R's G.
    half = 2 if cfg_name == "stylegan3-r" else 1
    given_d = [k for k in ("dcbase", "dcmax") if c[k]]  # D's own capacity, given: its message names it
    c["dcbase"] = c["dcbase"] or c["cbase"] // half
    c["dcmax"] = c["dcmax"] or c["cmax"] // half
    for key, net in (("cbase", "G"), ("dcbase", "D")):  # channels at the top resolution: base // res
        if net == "D" and given_d and (c["dcbase"] < resolution or c["dcmax"] < 1):
            raise ValueError(f"dcbase={c['dcbase']} and dcmax={c['dcmax']} leave D's {resolution} px layers "
                             f"without channels; give dcbase={resolution} or more and dcmax=1 or more "
                             f"(or leave them out: D then follows --cbase and --cmax)")
        if c[key] < resolution or (net == "D" and c["dcmax"] < 1):
            raise ValueError(f"--cbase {c['cbase']} and --cmax {c['cmax']} leave {net}'s {resolution} px layers "
                             f"without channels; give --cbase {resolution * half} or more and --cmax {half} "
                             "or more" + (" (stylegan3-r's D takes half of each)" if half > 1 else ""))
    if c["conv_clamp"] is None:
        c["conv_clamp"] = default_conv_clamp(c["precision"])
    c["mbstd_group"] = min(c["mbstd_group"], c["batch_gpu"])
    for key, v in batch_derived(resolution, c["batch"]).items():
        if c[key] is None:
            c[key] = v
    if c["aug"] not in AUG_MODES:
        raise ValueError(f"unknown --aug {c['aug']!r}; choose one of {', '.join(AUG_MODES)}")
    if not 0 <= c["p"] <= 1:
        raise ValueError(f"--p {c['p']} is not a probability in [0, 1]")
    # The official modes: noaug never augments, fixed keeps p, ada adapts it from p.
    if c["aug"] == "noaug" and c["p"] > 0:
        raise ValueError(f"--aug noaug never augments, but --p is {c['p']}; "
                         "for a fixed augmentation probability use --aug fixed --p P")
    if c["aug"] == "fixed" and c["p"] == 0:
        raise ValueError("--aug fixed needs --p P > 0 (the fixed augmentation probability)")
    if c["keep_snapshots"] < 0:  # prune would keep none, not even the snapshot just written
        raise ValueError(f"--keep-snapshots {c['keep_snapshots']} is negative; give N >= 1 to keep "
                         "the last N snapshots, or 0 to keep all")
    if c["keep_every_kimg"] == 0:  # 0 = off, as --keep-snapshots 0 and curate's limits
        c["keep_every_kimg"] = None
    if c["keep_every_kimg"] is not None and c["keep_every_kimg"] * 1000 < 1:
        raise ValueError(f"--keep-every-kimg {c['keep_every_kimg']} is less than one image (0.001 kimg); "
                         "give the milestone interval in kimg, e.g. 1000")
    if c["precision"] not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"unknown --precision {c['precision']!r}; choose fp32, fp16 or bf16")
    if c["darch"] not in D_ARCHITECTURES:
        raise ValueError(f"unknown D architecture darch={c['darch']!r}; choose one of "
                         f"{', '.join(D_ARCHITECTURES)}")
    if c["compile"] not in COMPILE_MODES:
        raise ValueError(f"unknown --compile {c['compile']!r}; choose one of {', '.join(COMPILE_MODES)}")
    c["betas"] = list(c["betas"])
    return c


def check_batch(c, world_size, group_fixed=False):
    """Validate the batch split: global batch = world_size * batch_gpu * rounds. `group_fixed`: the
    minibatch-std group is a continued run's (its D's), not the user's to set."""
    b, bg = c["batch"], c["batch_gpu"]
    if b % world_size:  # no --batch-gpu can split it evenly
        raise ValueError(f"--batch {b} cannot be split evenly over {world_size} processes; give a "
                         f"multiple of {world_size} (the batch is the total over all processes)")
    if b % (bg * world_size):
        raise ValueError(f"--batch {b} must be a multiple of --batch-gpu {bg} x {world_size} process(es)")
    g = c["mbstd_group"]
    if bg % g and group_fixed:
        raise ValueError(f"--batch-gpu {bg} must be a multiple of this run's minibatch-std group {g} (its D "
                         f"groups {g} images): give a --batch-gpu and a --batch that are multiples of {g}")
    if bg % g:
        raise ValueError(f"--batch-gpu {bg} must be a multiple of the minibatch-stddev group {g} (set --mbstd-group)")
    return b // (bg * world_size)


def network_kwargs(c):
    """Constructor arguments (official names) of G and D for config `c`."""
    res = c["resolution"]
    fp16_res = 0 if c["precision"] == "fp32" else 4
    mapping = dict(num_layers=c["map"])
    common = dict(c_dim=c["c_dim"], img_resolution=res, img_channels=c["img_channels"],
                  channel_base=c["cbase"], channel_max=c["cmax"], num_fp16_res=fp16_res,
                  conv_clamp=c["conv_clamp"])
    G = dict(z_dim=c["z_dim"], w_dim=c["w_dim"], **common, mapping_kwargs=mapping)
    if c["cfg"].startswith("stylegan3"):
        G_class = "training.networks_stylegan3.Generator"
        G["magnitude_ema_beta"] = 0.5 ** (c["batch"] / (20 * 1e3))
        if c["cfg"] == "stylegan3-r":
            G.update(conv_kernel=1, use_radial_filters=True)
    else:
        G_class = "training.networks_stylegan2.Generator"
    common.update(channel_base=c["dcbase"], channel_max=c["dcmax"])  # D's own capacity (config R)
    D = dict(architecture=c["darch"], **common, block_kwargs=dict(freeze_layers=0),
             mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=c["mbstd_group"]))
    return (G_class, G), ("training.networks_stylegan2.Discriminator", D)


def arch_diff(old, new, allowed=()):
    """List 'key: old -> new' for the architecture keys not `allowed` to differ that do (total kimg etc. may)."""
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}{_DIFF_NOTES.get(k, '').format(old=old.get(k))}"
            for k in ARCH_KEYS if k not in allowed and old.get(k) != new.get(k)]


# A key that follows from other options, said with what the run takes.
_DIFF_NOTES = dict(mbstd_group=" (D's minibatch-std group, min(--mbstd-group, --batch-gpu): this run takes a "
                               "--batch-gpu, and a --batch, that is a multiple of {old})")


def lazy_ratio(interval):
    """Lazy regularisation (StyleGAN2 sec. 3.1): lr and betas scaled by interval/(interval+1)."""
    return 1.0 if not interval else interval / (interval + 1)


def scaled_adam(lr, betas, interval):
    r = lazy_ratio(interval)
    return lr * r, tuple(b ** r for b in betas)


__all__ = ["PRESETS", "DEFAULTS", "make_config", "network_kwargs", "arch_diff", "check_batch",
           "default_gamma", "default_conv_clamp", "batch_derived", "scaled_adam"]
