"""Official StyleGAN2-ADA / StyleGAN3 snapshot pickles, read and written without their code.

An official snapshot (`network-snapshot-001000.pkl`) is a pickled dict with keys `G`, `D`,
`G_ema`, `augment_pipe` and `training_set_kwargs`. Each network is pickled as a call to
`torch_utils.persistence._reconstruct_persistent_obj(meta)` with
`meta = {type: 'class', version: 6, module_src: <python source>, class_name: <str>, state: <the module's __dict__>}`;
`state` holds `_parameters`, `_buffers`, `_modules` (sub-modules pickled the same way) and the
constructor arguments `_init_args` / `_init_kwargs` (a `dnnlib.util.EasyDict`).

Reading: `_RestrictedUnpickler.find_class` resolves only the names in `_allowed_globals()`
(tensor/storage rebuilding, OrderedDict, numpy arrays and scalars, EasyDict, and the persistence
hook mapped to `PersistentObject`, which only stores `meta`). Anything else, e.g. a reduce to
`os.system`, raises `UnsafePickleError` before it can be called. The functions and classes it
hands out are sealed (`_Frozen`, `_Sealed`): the BUILD opcode, which sets attributes on whatever
is on the stack, cannot change them for the process. `sg3lib.compat.restricted` has the rest:
EXT opcodes refused, and no size written in the file (bytes, arrays, tensors, storages)
allocated before it is checked against the file's size. `module_src` is kept as text and never
executed; the caller rebuilds sg3lib modules from `state`, checking each field's type, so a
malformed file gives a LoadError naming it.

Writing: `write_official_pkl` produces the same byte format from sg3lib modules (or from plain
state dicts), for tests and for users exporting back. The official code *executes* `module_src`
when it loads such a file, so a pickle meant for it must embed the official source
(`module_src=` a dict `{'training.networks_stylegan3': text, 'training.networks_stylegan2': text}`
read from an official checkout); by default a short comment stands in and only sg3lib can load it.
"""
import _compat_pickle
import collections
import pickle
import re
import struct
import types
import warnings
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write
from ..loader import LoadError, short_of_memory
from ..networks.layers import jsonable
from .restricted import (  # noqa: F401  (UnsafePickleError is part of this module's API)
    RestrictedUnpickler, UnsafePickleError, _Frozen, _Sealed, _only_listed, check_listed, plain_globals,
    size_checked_globals)

SG3_CLASS = "training.networks_stylegan3.Generator"
SG2_CLASS = "training.networks_stylegan2.Generator"
D_CLASS = "training.networks_stylegan2.Discriminator"
NETWORK_KEYS = ("G", "D", "G_ema")
PERSISTENCE_VERSION = 6  # the `version` field official snapshots carry

# Positional order of the official constructors, used only if a pickle has `_init_args` (the
# persistence hook keeps arguments as they were passed). StyleGAN2-ADA's Generator takes
# synthesis_kwargs as a seventh; StyleGAN3's and networks_stylegan2's take them as **kwargs.
_POSITIONAL = {
    "Generator": ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"),
    "Discriminator": ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
                      "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs"),
}


class EasyDict(dict, metaclass=_Sealed):
    """Stands in for `dnnlib.util.EasyDict`: a dict whose keys are also attributes."""

    def __init__(self, *args, **kwargs):
        # pickles make EasyDicts with NEWOBJ (no call); a call on a tensor would make objects per row
        check_listed("EasyDict", args, (dict, list, tuple))
        super().__init__(*args, **kwargs)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]


class PersistentObject:
    """What an official `persistent_class` object becomes: its pickled `meta`, inert.

    `class_name`, `module_src` (text, never executed) and `state` (the module's `__dict__`:
    `_parameters`, `_buffers`, `_modules`, `_init_args`, `_init_kwargs`, plain attributes).
    """

    def __init__(self, meta):
        if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
            raise LoadError(_NOT_PERSISTENT)
        self.meta = meta

    # `meta` can still be changed after this object was made (the pickle's memo refers to it): check on use
    class_name = property(lambda self: _text(self.meta.get("class_name")))
    module_src = property(lambda self: _text(self.meta.get("module_src")) or "")

    @property
    def state(self):
        if not isinstance(self.meta.get("state"), dict):
            raise LoadError(_NOT_PERSISTENT)
        return self.meta["state"]

    def __repr__(self):
        return f"PersistentObject({self.class_name!r})"


_NOT_PERSISTENT = ("a torch_utils.persistence object without the expected "
                   "{type: 'class', class_name, module_src, state} fields")


def _text(value):
    return value if isinstance(value, str) else None


def _allowed_globals():
    """The names an official snapshot refers to, except the size-checked ones (see `restricted`)."""
    allowed = dict(plain_globals())
    allowed.update({
        ("collections", "OrderedDict"): _only_listed(collections.OrderedDict),
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("dnnlib", "EasyDict"): EasyDict,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentObject,
    })
    return allowed


def _sealed(allowed):
    """Python functions and classes can be changed: hand out sealed stand-ins."""
    return {key: _Frozen(obj) if isinstance(obj, types.FunctionType) or obj is PersistentObject else obj
            for key, obj in allowed.items()}


class _RestrictedUnpickler(RestrictedUnpickler):
    _plain = None
    build_targets = RestrictedUnpickler.build_targets + (EasyDict,)

    def __init__(self, file, source):
        super().__init__(file, source)
        if _RestrictedUnpickler._plain is None:
            _RestrictedUnpickler._plain = _sealed(_allowed_globals())
        self._allowed = {**self._plain, **_sealed(size_checked_globals(self.size_limit))}

    def find_class(self, module, name):
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol <= 2 spells builtins '__builtin__'
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        obj = self._allowed.get((module, name))
        if obj is None and module.startswith("dnnlib.tflib"):
            raise LoadError(f"{self.source}: a TensorFlow StyleGAN / StyleGAN2 pickle (it holds '{module}.{name}'); "
                            "sg3lib reads the PyTorch snapshots of StyleGAN2-ADA and StyleGAN3. Convert it first "
                            "with the official PyTorch code's `python legacy.py --source=OLD.pkl --dest=NEW.pkl`. "
                            "Nothing from the file was executed.")
        if obj is None:
            raise UnsafePickleError(
                f"{self.source}: refused to load: the pickle asks for '{module}.{name}', which is not "
                "on sg3lib's allow-list (tensors, plain data and the StyleGAN persistence format). "
                "Nothing from the file was executed. If you trust it and it is not an official "
                "StyleGAN snapshot, convert it to a state dict with its own code first.")
        return obj


def unpickle_restricted(file, source="<pickle>"):
    """pickle.load with the allow-list and size checks; `source` names the file in errors."""
    return _RestrictedUnpickler(file, source).load()


# ---------------------------------------------------------------------------------------------
# Reading

# What the official format puts in a module's state, by field (None means empty).
_FIELD_TYPES = {"_parameters": dict, "_buffers": dict, "_modules": dict, "_init_kwargs": dict,
                "_init_args": (tuple, list), "_non_persistent_buffers_set": (set, frozenset, list, tuple)}


def _field(obj, name, source="<pickle>", prefix=""):
    """obj.state[name], checked against the type the official format gives that field."""
    kinds = _FIELD_TYPES[name]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    value = obj.state.get(name)
    if value is None:
        return kinds[0]()
    if not isinstance(value, kinds):
        raise LoadError(f"{source}: {prefix.rstrip('.') or obj.class_name or 'a network'}'s {name} is a "
                        f"{type(value).__name__}, not a {kinds[0].__name__}: the file is corrupt or "
                        "was not written by StyleGAN")
    return value


def official_class_of(obj, source="<pickle>"):
    """'training.networks_stylegan3.Generator' etc. for a PersistentObject, from its state.

    The state is the reliable signal (an SG3 synthesis network has an `input` sub-module, SG2's
    has `b4`...); the embedded source is only searched as text when the state is ambiguous.
    """
    if obj.class_name == "Discriminator":
        return D_CLASS
    if obj.class_name == "Generator":
        synthesis = _field(obj, "_modules", source).get("synthesis")
        if isinstance(synthesis, PersistentObject):
            sub = _field(synthesis, "_modules", source, "synthesis")
            if "input" in sub:
                return SG3_CLASS
            if "b4" in sub:
                return SG2_CLASS
        if "class SynthesisInput" in obj.module_src:
            return SG3_CLASS
        if "class SynthesisBlock" in obj.module_src:
            return SG2_CLASS
    raise LoadError(f"{source}: holds a network of class {obj.class_name!r} that sg3lib does not know; "
                    "supported: StyleGAN3 / StyleGAN2(-ADA) Generator and Discriminator")


def flatten_state(obj, prefix="", source="<pickle>", seen=None):
    """Walk _parameters, _buffers and _modules into a flat state dict (names as in state_dict()).
    Each sub-module is pickled once in a real snapshot: one met twice (a crafted file's 20 levels
    of two children that are the same object would be walked 2**20 times) is refused."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        raise LoadError(f"{source}: sub-module {prefix.rstrip('.') or 'the network'} appears twice in the "
                        "network, which no StyleGAN snapshot does: the file is corrupt or crafted")
    seen.add(id(obj))
    out = collections.OrderedDict()
    skip = set(_field(obj, "_non_persistent_buffers_set", source, prefix))
    for group in ("_parameters", "_buffers"):
        for name, value in _field(obj, group, source, prefix).items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(name, str) or not isinstance(value, torch.Tensor):
                raise LoadError(f"{source}: {prefix}{name} in {group} is a {type(value).__name__}, not a tensor")
            out[prefix + name] = value.detach()
    for name, child in _field(obj, "_modules", source, prefix).items():
        if child is None:
            continue
        if not isinstance(name, str) or not isinstance(child, PersistentObject):
            raise LoadError(f"{source}: sub-module {prefix}{name} is a {type(child).__name__}, "
                            "not a StyleGAN persistent module")
        out.update(flatten_state(child, f"{prefix}{name}.", source, seen))
    return out


# Constructor arguments and training_set_kwargs hold tens to hundreds of values.
MAX_PLAIN_NODES = 100_000


def plain(obj, what, source):
    """jsonable(obj) for data from a file: LoadError past MAX_PLAIN_NODES (shared references)."""
    try:
        return jsonable(obj, max_nodes=MAX_PLAIN_NODES)
    except ValueError:
        raise LoadError(f"{source}: {what} hold more than {MAX_PLAIN_NODES:,} values, which no StyleGAN "
                        "snapshot does: the file is corrupt or crafted") from None


def init_kwargs_of(obj, source="<pickle>"):
    """The constructor kwargs from `_init_args` + `_init_kwargs`, as a plain dict."""
    kwargs = plain(_field(obj, "_init_kwargs", source), f"the constructor arguments of {obj.class_name}", source)
    args = list(_field(obj, "_init_args", source))
    if args:
        names = _POSITIONAL.get(obj.class_name, ())
        if len(args) > len(names):
            raise LoadError(f"{source}: {obj.class_name} has {len(args)} positional constructor "
                            "arguments; sg3lib cannot map them to names")
        kwargs.update(zip(names, plain(args, f"the constructor arguments of {obj.class_name}", source)))
    return kwargs


def read_official_pkl(path):
    """Read an official snapshot into plain data; nothing embedded is executed.

    Returns {'networks': {name: {'official_class', 'init_kwargs', 'state_dict', 'class_name',
    'persistence_version'}}, 'training_set_kwargs': dict or None, 'ignored': [keys]}.
    Raises LoadError (UnsafePickleError for a refused global) naming the file.
    """
    path = Path(path)
    data = _unpickle_file(path)
    try:
        return _snapshot_contents(data, path)
    except LoadError as e:  # (a check on use, e.g. PersistentObject.state, does not know the file)
        raise _naming(path, e) from None
    except (TypeError, AttributeError, KeyError, IndexError, ValueError, RecursionError) as e:
        # a case the checks above do not name; still the file's fault, not sg3lib's
        raise LoadError(f"{path}: not a well-formed StyleGAN snapshot ({type(e).__name__}: {str(e)[:200]}): the "
                        "file is corrupt or was not written by StyleGAN's training code") from None


def _naming(path, e):
    """The LoadError `e` if its message names the file `path`, else one of its kind that does."""
    return e if str(path) in str(e) else type(e)(f"{path}: {e}")


def _unpickle_file(path):
    try:
        with open(path, "rb") as f:
            return unpickle_restricted(f, source=path)
    except LoadError as e:
        raise _naming(path, e) from None
    except (EOFError, pickle.UnpicklingError, struct.error, IndexError) as e:
        # (struct.error, IndexError: a file cut inside an opcode's argument, in its first bytes)
        detail = f" ({e})" if str(e) and isinstance(e, (EOFError, pickle.UnpicklingError)) else ""
        raise LoadError(f"{path}: the pickle ends early or is corrupt{detail}: the file is truncated "
                        "(an interrupted download or copy?). Download or copy it again.") from None
    except Exception as e:  # e.g. a tensor that torch refuses to rebuild
        shortage = short_of_memory(path, e)  # every size in the file was checked against the file
        if shortage is not None:
            raise shortage from e
        raise LoadError(f"{path}: could not be read as an official StyleGAN pickle ({type(e).__name__}: "
                        f"{str(e)[:200]}): the file is corrupt or was not written by StyleGAN") from None


def _snapshot_contents(data, path):
    if isinstance(data, PersistentObject):  # someone pickled a bare network
        data = {"G_ema" if data.class_name == "Generator" else "D": data}
    if not isinstance(data, dict) or not any(isinstance(data.get(k), PersistentObject) for k in NETWORK_KEYS):
        found, hint = _what(data)
        raise LoadError(f"{path}: a Python pickle, but not a StyleGAN snapshot (found {found}; "
                        f"expected a dict with G, D and/or G_ema networks){hint}")
    networks = {}
    for key in NETWORK_KEYS:
        obj = data.get(key)
        if obj is None:
            continue
        if not isinstance(obj, PersistentObject):
            raise LoadError(f"{path}: entry {key!r} is a {type(obj).__name__}, not a StyleGAN network")
        version = obj.meta.get("version")
        if version != PERSISTENCE_VERSION:
            warnings.warn(f"{path}: {key} uses persistence format version {version!r} "
                          f"(sg3lib knows {PERSISTENCE_VERSION}); reading it anyway")
        networks[key] = {
            "official_class": official_class_of(obj, path),
            "init_kwargs": init_kwargs_of(obj, path),
            "state_dict": flatten_state(obj, source=path),
            "class_name": obj.class_name,
            "persistence_version": version,
        }
    tsk = data.get("training_set_kwargs")
    ignored = sorted(str(k) for k in data if k not in NETWORK_KEYS + ("training_set_kwargs",))
    return {"networks": networks,
            "training_set_kwargs": plain(tsk, "training_set_kwargs", path) if isinstance(tsk, dict) else None,
            "ignored": ignored}


def _what(data):
    """(what a pickle holds, advice) for an error, kept short: a state dict has hundreds of keys."""
    if not isinstance(data, dict):
        return type(data).__name__, ""
    keys = sorted(map(str, data))
    found = str(keys) if len(keys) <= 8 else f"a dict of {len(keys)} keys: {keys[:5]}..."
    if data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return found, (". It looks like a state dict, which lacks the constructor arguments: pass an official "
                       "snapshot or an sg3lib .pt, or build the network and call load_state_dict on it")
    return found, ""


# ---------------------------------------------------------------------------------------------
# Writing

class _Global:
    """A global name written into the pickle; its module need not be importable here."""

    def __init__(self, module, name, local):
        self.module, self.name, self.local = module, name, local

    def __reduce__(self):
        return self.name  # routes pickling to save_global below

    def __call__(self, *args, **kwargs):  # what the name means to sg3lib (pickle wants a callable)
        return self.local(*args, **kwargs)


_PERSISTENCE = _Global("torch_utils.persistence", "_reconstruct_persistent_obj", PersistentObject)
_EASYDICT = _Global("dnnlib.util", "EasyDict", EasyDict)


class _OfficialPickler(pickle._Pickler):
    """Pure-Python pickler that writes PersistentObject/EasyDict under the official names."""

    def reducer_override(self, obj):
        if isinstance(obj, PersistentObject):
            return _PERSISTENCE, (obj.meta,)
        if isinstance(obj, EasyDict):
            return _EASYDICT, (), None, None, iter(obj.items())
        return NotImplemented

    def save_global(self, obj, name=None):
        if not isinstance(obj, _Global):
            return super().save_global(obj, name)
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
        self.memoize(obj)


def dump_official(obj, file, protocol=4):
    """Pickle `obj` (a dict holding PersistentObjects, EasyDicts, tensors) into a binary file."""
    _OfficialPickler(file, protocol=protocol).dump(obj)


def _default_src(official_class):
    module = official_class.rsplit(".", 1)[0]
    return (f"# {module.replace('.', '/')}.py\n# Written by sg3lib: the official source is not included. "
            "Pass module_src= to embed it so that the official code can load this file.\n")


# A module's hook tables, empty, as in the __dict__ the official format pickles: torch's
# Module.__setstate__ (what the official loader rebuilds a module with) fills in some missing
# ones, but not _forward_hooks or _backward_hooks, without which the module cannot be called.
_HOOK_TABLES = ("_backward_hooks", "_backward_pre_hooks", "_forward_hooks", "_forward_hooks_with_kwargs",
                "_forward_hooks_always_called", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
                "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                "_load_state_dict_post_hooks")


def _module_state(init_kwargs):
    return {"training": False, "_parameters": collections.OrderedDict(), "_buffers": collections.OrderedDict(),
            "_non_persistent_buffers_set": set(), "_modules": collections.OrderedDict(),
            **{k: collections.OrderedDict() for k in _HOOK_TABLES}, "_is_full_backward_hook": None,
            "_init_args": (), "_init_kwargs": EasyDict(_to_easy(init_kwargs or {}))}


def _to_easy(x):
    if isinstance(x, dict):
        return EasyDict({k: _to_easy(v) for k, v in x.items()})
    if isinstance(x, (list, tuple)):
        return type(x)(_to_easy(v) for v in x)
    return x


def _param(t):
    return torch.nn.Parameter(t.detach().cpu().clone(), requires_grad=False)


_PLAIN = (int, float, bool, str, type(None))


def _is_plain_attr(v):
    """Attributes an exported module's state keeps: numbers, strings, lists of them, and numpy
    numbers and arrays (the official StyleGAN3 layers keep their in_size / out_size as arrays)."""
    if isinstance(v, (list, tuple)):
        return all(_is_plain_attr(x) for x in v)
    if isinstance(v, (np.ndarray, np.generic)):
        return v.dtype.kind in "biuf"
    return isinstance(v, _PLAIN)


def persistent_from_module(module, module_src=None, official_class=None):
    """Wrap an sg3lib module tree as official persistent objects (state copied to CPU); parts under
    torch.compile are written as the modules they wrap."""
    from ..networks import unwrapped
    module = unwrapped(module)
    official_class = official_class or getattr(module, "official_class", None)
    if module_src is None or isinstance(module_src, dict):
        key = official_class.rsplit(".", 1)[0] if official_class else None
        module_src = (module_src or {}).get(key) or _default_src(official_class or "training.networks.Module")

    def wrap(m, top):
        state = _module_state(getattr(m, "init_kwargs", {}) if top else {})
        state["training"] = bool(m.training)
        for k, v in vars(m).items():  # plain attributes (z_dim, num_ws, ...) as the official state has
            if not k.startswith("_") and k not in ("training", "init_kwargs", "official_class") and _is_plain_attr(v):
                state[k] = v
        for name, p in m._parameters.items():
            state["_parameters"][name] = None if p is None else _param(p)
        for name, b in m._buffers.items():
            state["_buffers"][name] = None if b is None else b.detach().cpu().clone()
        state["_non_persistent_buffers_set"] = set(m._non_persistent_buffers_set)
        for name, child in m._modules.items():
            state["_modules"][name] = None if child is None else wrap(unwrapped(child), False)
        return PersistentObject({"type": "class", "version": PERSISTENCE_VERSION, "module_src": module_src,
                                 "class_name": type(m).__name__, "state": state})

    return wrap(module, True)


def persistent_from_state_dict(official_class, init_kwargs, state_dict, buffer_names=(), module_src=None):
    """Official persistent objects from a flat state dict, without any sg3lib module.

    Dotted names become nested sub-modules; names whose last part is in `buffer_names` go to
    `_buffers`, the rest to `_parameters`. Sub-module class names are not known here and are
    written as 'Module' (official loaders look them up in module_src; sg3lib ignores them).
    """
    module_src = module_src or _default_src(official_class)

    def node(class_name, kwargs):
        return PersistentObject({"type": "class", "version": PERSISTENCE_VERSION, "module_src": module_src,
                                 "class_name": class_name, "state": _module_state(kwargs)})

    root = node(official_class.rsplit(".", 1)[1], init_kwargs)
    for full, value in state_dict.items():
        *path, leaf = full.split(".")
        obj = root
        for part in path:
            mods = obj.state["_modules"]
            if part not in mods:
                mods[part] = node("Module", {})
            obj = mods[part]
        value = torch.as_tensor(np.asarray(value)) if not isinstance(value, torch.Tensor) else value
        if leaf in buffer_names:
            obj.state["_buffers"][leaf] = value.detach().cpu().clone()
        else:
            obj.state["_parameters"][leaf] = _param(value)
    return root


def write_official_pkl(path, networks, training_set_kwargs=None, augment_pipe=None, module_src=None,
                       protocol=4):
    """Write an official-format snapshot pickle atomically (temporary name, fsync, rename, folder fsync).

    networks: {'G': module or PersistentObject, 'D': ..., 'G_ema': ...} (missing ones are None), or
    what sg3lib.load returns (whose meta gives training_set_kwargs when the argument is None).
    module_src: None, or {'training.networks_stylegan3': text, 'training.networks_stylegan2': text}
    with the official source, needed only if the official code is to load the file.
    The folder is made if need be. protocol: 2 to 5 (pickles of protocol 0 and 1 do not start with
    the byte that marks a pickle, so no loader, sg3lib's included, would know the file for one).
    """
    if isinstance(protocol, bool) or not isinstance(protocol, int) or not 2 <= protocol <= pickle.HIGHEST_PROTOCOL:
        raise ValueError(f"protocol={protocol!r}: use a pickle protocol from 2 to {pickle.HIGHEST_PROTOCOL} "
                         "(the official files are 4, the default)")
    _check_networks(networks)
    data = {}
    for key in NETWORK_KEYS:
        net = networks.get(key)
        data[key] = net if net is None or isinstance(net, PersistentObject) else persistent_from_module(net, module_src)
    if training_set_kwargs is None:  # an official .pkl loaded and exported again keeps them
        training_set_kwargs = (networks.get("meta") or {}).get("training_set_kwargs")
    data["augment_pipe"] = augment_pipe
    data["training_set_kwargs"] = None if training_set_kwargs is None else _to_easy(dict(training_set_kwargs))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        dump_official(data, f, protocol=protocol)
    return path


def _check_networks(networks):
    """TypeError / ValueError before writing, where the file would hold no network that loads."""
    if not isinstance(networks, dict):
        raise TypeError(f"networks must be a dict such as {{'G_ema': G}} (or what sg3lib.load returns), "
                        f"not a {type(networks).__name__}")
    unknown = [k for k in networks if k not in NETWORK_KEYS + ("meta",)]
    if unknown:
        raise ValueError(f"networks has {unknown}; the official format holds G, D, G_ema")
    for key in NETWORK_KEYS:
        net = networks.get(key)
        if net is not None and not isinstance(net, PersistentObject) and not hasattr(net, "official_class"):
            raise ValueError(f"networks[{key!r}] is a {type(net).__name__} without .official_class; pass "
                             "sg3lib networks (sg3lib.load, sg3lib.networks.build_network)")
    if all(networks.get(k) is None for k in NETWORK_KEYS):
        raise ValueError("networks holds no network: give G, D and/or G_ema")
    absent = sorted(k for k in NETWORK_KEYS if networks.get(k) is None)
    if absent:  # sg3lib.load reads it; the official loader asserts that all three are modules
        warnings.warn(f"writing an official .pkl without {', '.join(absent)}: the official code's load_network_pkl "
                      "needs G, D and G_ema (sg3lib.load reads the file as it is)", stacklevel=3)


_KIMG_RE = re.compile(r"(\d+)\.pkl$")


def kimg_from_name(path):
    """Official names end in the kimg counter: network-snapshot-001000.pkl -> 1000.0 (else None)."""
    m = _KIMG_RE.search(Path(str(path)).name)
    return float(m.group(1)) if m and "snapshot" in Path(str(path)).name else None
