"""sg3lib.load: official-format pickles (built here), refusal of unsafe pickles, bad files, URLs, `sg3 info`."""
import http.server
import io
import json
import os
import pickle
import pickletools
import re
import subprocess
import sys
import threading
import time
import warnings
import collections
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import sg3lib
from sg3lib.cli import main as sg3_main
from sg3lib import loader
from sg3lib.compat import official_pkl as op
from sg3lib.loader import LoadError, load
from sg3lib.networks import build_network

# Names the official networks register as buffers (the rest are parameters).
BUFFERS = {"w_avg", "magnitude_ema", "up_filter", "down_filter", "freqs", "phases", "transform",
           "resample_filter", "noise_const"}


def fixture(fixtures_dir, name):
    meta = json.loads((fixtures_dir / f"{name}.json").read_text())
    npz = np.load(fixtures_dir / f"{name}.npz")
    state = {k[len("state/"):]: torch.from_numpy(npz[k]) for k in npz.files if k.startswith("state/")}
    return meta, state, npz


def persistent(fixtures_dir, name, module_src=None):
    meta, state, _ = fixture(fixtures_dir, name)
    obj = op.persistent_from_state_dict(meta["official_class"], meta["init_kwargs"], state, BUFFERS, module_src)
    # Plain attributes of the kinds official module states carry (numpy sizes/rates, hook dicts).
    obj.state.update(sampling_rate=np.float64(16.0), size=np.asarray([36, 36]), _forward_hooks=OrderedDict(),
                     layer_names=["L0_36_64"], _non_persistent_buffers_set=set())
    return obj


def official_pkl(tmp_path, fixtures_dir, g=None, d=None, filename="network-snapshot-000120.pkl", module_src=None):
    nets = {"G": persistent(fixtures_dir, g, module_src) if g else None,
            "G_ema": persistent(fixtures_dir, g, module_src) if g else None,
            "D": persistent(fixtures_dir, d, module_src) if d else None}
    tsk = {"class_name": "training.dataset.ImageFolderDataset", "path": "/data/ffhq.zip", "use_labels": False,
           "max_size": 70000, "xflip": True, "resolution": 64, "random_seed": 0}
    return op.write_official_pkl(tmp_path / filename, nets, training_set_kwargs=tsk)


def globals_in(path):
    """(module, name) pairs a pickle refers to, read with pickletools (nothing executed)."""
    out, strings = set(), []
    for opcode, arg, _ in pickletools.genops(Path(path).read_bytes()):
        if opcode.name == "GLOBAL":
            out.add(tuple(arg.split(" ", 1)))
        elif opcode.name == "STACK_GLOBAL":
            out.add((strings[-2], strings[-1]))
        if isinstance(arg, str):
            strings.append(arg)
    return out


def test_official_pkl_sg3t_outputs_match_fixture(tmp_path, fixtures_dir):
    marker = tmp_path / "module_src_ran"
    src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nclass SynthesisInput: pass\n"
    path = official_pkl(tmp_path, fixtures_dir, g="sg3t_64", d="d_64", module_src=src)
    # The bytes use the official names, and the embedded source is present but never run.
    names = globals_in(path)
    assert ("torch_utils.persistence", "_reconstruct_persistent_obj") in names
    assert ("dnnlib.util", "EasyDict") in names
    assert not any(m.startswith("sg3lib") for m, _ in names)
    nets = sg3lib.load(path)
    assert not marker.exists()
    assert set(nets) == {"G", "D", "G_ema", "meta"}
    meta = nets["meta"]
    assert meta["arch"] == "stylegan3-t" and meta["format"] == "official-pkl" and meta["kimg"] == 120.0
    assert meta["ignored"] == ["augment_pipe"]
    assert meta["training_set_kwargs"]["path"] == "/data/ffhq.zip"
    json.dumps(meta)  # JSON-able
    G = nets["G_ema"]
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    _, _, npz = fixture(fixtures_dir, "sg3t_64")
    with torch.no_grad():
        ws = G.mapping(torch.from_numpy(npz["in_z"]), None, truncation_psi=1)
        img = G.synthesis(torch.from_numpy(npz["out_ws"][:1]), noise_mode="const")  # one sample: CPU time
    np.testing.assert_allclose(ws.numpy(), npz["out_ws"], atol=1e-4)
    np.testing.assert_allclose(img.numpy(), npz["out_img_const"][:1], atol=1e-4)
    _, _, dnpz = fixture(fixtures_dir, "d_64")
    with torch.no_grad():
        logits = nets["D"](torch.from_numpy(dnpz["in_img"]), None)
    np.testing.assert_allclose(logits.numpy(), dnpz["out_logits"], atol=1e-4)


@pytest.mark.parametrize("name,arch", [("sg3r_64", "stylegan3-r"), ("sg2_64", "stylegan2"),
                                       ("sg3t_256_cond", "stylegan3-t")])
def test_official_pkl_arch_and_mapping(tmp_path, fixtures_dir, name, arch):
    path = official_pkl(tmp_path, fixtures_dir, g=name)  # default module_src: a comment only
    nets = load(path)
    assert nets["meta"]["arch"] == arch and "D" not in nets
    meta, state, npz = fixture(fixtures_dir, name)
    G = nets["G_ema"]
    assert G.num_ws == meta["num_ws"] and nets["meta"]["init_kwargs"]["z_dim"] == meta["init_kwargs"]["z_dim"]
    for k, v in G.state_dict().items():
        assert torch.equal(v, state[k]), k
    c = torch.from_numpy(npz["in_c"]) if "in_c" in npz.files else None
    with torch.no_grad():
        ws = G.mapping(torch.from_numpy(npz["in_z"]), c, truncation_psi=0.5)
    np.testing.assert_allclose(ws.numpy(), npz["out_ws_psi0.5"], atol=1e-4)


def test_official_pkl_sg2_image(tmp_path, fixtures_dir):
    nets = load(official_pkl(tmp_path, fixtures_dir, g="sg2_64"))
    _, _, npz = fixture(fixtures_dir, "sg2_64")
    with torch.no_grad():
        img = nets["G_ema"].synthesis(torch.from_numpy(npz["out_ws"][1:2]), noise_mode="const")
    np.testing.assert_allclose(img.numpy(), npz["out_img_const"][1:2], atol=1e-4)


def test_export_from_modules_protocol2_and_positional_args(tmp_path, fixtures_dir):
    meta, state, _ = fixture(fixtures_dir, "d_64_cond")
    D = build_network(meta["official_class"], meta["init_kwargs"])
    D.load_state_dict(state)
    obj = op.persistent_from_module(D)
    kw = dict(obj.state["_init_kwargs"])
    # Official pickles may carry the leading constructor arguments positionally.
    obj.state["_init_args"] = (kw.pop("c_dim"), kw.pop("img_resolution"), kw.pop("img_channels"))
    obj.state["_init_kwargs"] = op.EasyDict(kw)
    path = op.write_official_pkl(tmp_path / "d.pkl", {"D": obj}, protocol=2)
    assert Path(path).read_bytes()[:2] == b"\x80\x02"
    nets = load(path)
    assert nets["meta"]["networks"]["D"]["init_kwargs"]["c_dim"] == meta["init_kwargs"]["c_dim"]
    for k, v in D.state_dict().items():
        assert torch.equal(nets["D"].state_dict()[k], v), k


def test_protocol2_empty_numpy_array(tmp_path):
    # Protocols 0-2 write the empty bytes of an empty array as a call to builtins.bytes().
    d = op.persistent_from_state_dict(op.D_CLASS, {"c_dim": 0}, {"w": torch.zeros(2)})
    d.state["empty"] = np.zeros((0,), np.float32)
    path = op.write_official_pkl(tmp_path / "d.pkl", {"D": d}, protocol=2)
    assert ("builtins", "bytes") in globals_in(path) or ("__builtin__", "bytes") in globals_in(path)
    assert op.read_official_pkl(path)["networks"]["D"]["state_dict"]["w"].shape == (2,)


def test_protocol5_numpy_arrays(tmp_path, fixtures_dir):
    # Pickle's default protocol from Python 3.14: contiguous numpy arrays (here the state's `size`)
    # are written as numpy._core.numeric._frombuffer(buffer, dtype, shape, order).
    path = op.write_official_pkl(tmp_path / "d.pkl", {"D": persistent(fixtures_dir, "d_64")}, protocol=5)
    assert {name for _, name in globals_in(path)} >= {"_frombuffer"}
    nets = load(path)
    for k, v in fixture(fixtures_dir, "d_64")[1].items():
        assert torch.equal(nets["D"].state_dict()[k], v), k


STOCK_WRITER = """
import json, pickle, sys
import numpy as np, torch
from torch_utils.persistence import Persistent
from dnnlib.util import EasyDict
from sg3lib.networks import build_network

def net(name):
    meta = json.load(open(f"{sys.argv[1]}/{name}.json"))
    npz = np.load(f"{sys.argv[1]}/{name}.npz")
    m = build_network(meta["official_class"], meta["init_kwargs"])
    m.load_state_dict({k[6:]: torch.from_numpy(npz[k]) for k in npz.files if k.startswith("state/")})
    for sub in m.modules():  # every module pickles through the persistence hook, as officially
        sub.__class__ = type(type(sub).__name__, (Persistent, type(sub)), {})
    m._init_args, m._init_kwargs = (), EasyDict(meta["init_kwargs"])
    return m

data = dict(G=net("sg2_64"), D=net("d_64"), G_ema=net("sg2_64"), augment_pipe=None,
            training_set_kwargs=EasyDict(path="a.zip", use_labels=False))
with open(sys.argv[2], "wb") as f:
    pickle.dump(data, f)  # the stock C pickler
"""


def test_stock_pickler_with_official_module_names(tmp_path, fixtures_dir):
    # Stand-ins named like the official modules; they exist only in the writing process.
    (tmp_path / "torch_utils").mkdir()
    (tmp_path / "dnnlib").mkdir()
    (tmp_path / "torch_utils" / "__init__.py").write_text("")
    (tmp_path / "torch_utils" / "persistence.py").write_text(
        "def _reconstruct_persistent_obj(meta):\n    raise RuntimeError('not here')\n"
        "class Persistent:\n    def __reduce__(self):\n"
        "        meta = dict(type='class', version=6, module_src='class SynthesisBlock: pass',\n"
        "                    class_name=type(self).__name__, state=dict(self.__dict__))\n"
        "        return _reconstruct_persistent_obj, (meta,)\n")
    (tmp_path / "dnnlib" / "__init__.py").write_text("")
    (tmp_path / "dnnlib" / "util.py").write_text("class EasyDict(dict):\n    pass\n")
    out = tmp_path / "network-snapshot-000008.pkl"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(Path(sg3lib.__file__).parents[1])]),
               OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-c", STOCK_WRITER, str(fixtures_dir), str(out)], check=True, env=env)
    nets = load(out)
    assert nets["meta"]["arch"] == "stylegan2" and nets["meta"]["kimg"] == 8.0
    assert nets["meta"]["training_set_kwargs"] == {"path": "a.zip", "use_labels": False}
    _, state, _ = fixture(fixtures_dir, "sg2_64")
    for k, v in nets["G_ema"].state_dict().items():
        assert torch.equal(v, state[k]), k
    assert set(nets["D"].state_dict()) == set(fixture(fixtures_dir, "d_64")[1])


def _write(path, obj):
    path.write_bytes(pickle.dumps(obj))
    return path


class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


class _Eval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return eval, (self.code,)


def test_malicious_pickles_are_refused(tmp_path, fixtures_dir):
    marker = tmp_path / "pwned"
    cases = {
        "top.pkl": {"G": _System(f"touch {marker}")},
        "eval.pkl": [_Eval(f"open({str(marker)!r}, 'w')")],
    }
    # Hidden inside an otherwise valid network: in _init_kwargs of the D.
    d = persistent(fixtures_dir, "d_64")
    d.state["_init_kwargs"]["architecture"] = _System(f"touch {marker}")
    cases["nested.pkl"] = d
    for name, obj in cases.items():
        path = tmp_path / name
        if isinstance(obj, op.PersistentObject):
            op.write_official_pkl(path, {"D": obj})
        else:
            _write(path, obj)
        with pytest.raises(op.UnsafePickleError) as e:
            load(path)
        assert isinstance(e.value, LoadError) and isinstance(e.value, ValueError)
        assert str(path) in str(e.value) and "allow-list" in str(e.value)
        assert ("system" in str(e.value)) or ("eval" in str(e.value))
        assert not marker.exists()


def test_malicious_storage_blob_is_refused(tmp_path):
    # A tensor storage blob is itself a (legacy) torch pickle; it is read with weights_only.
    marker = tmp_path / "pwned"
    blob = io.BytesIO()
    torch.save(_System(f"touch {marker}"), blob, _use_new_zipfile_serialization=False)

    class Blob:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (blob.getvalue(),)

    path = _write(tmp_path / "blob.pkl", {"G_ema": Blob()})
    with pytest.raises(op.UnsafePickleError, match="refused"):
        load(path)
    assert not marker.exists()


def test_build_opcode_cannot_change_allowed_globals(tmp_path):
    # BUILD with a (None, {attr: value}) state does setattr on whatever is on the stack, the allowed
    # globals too: a pickle refused later on must not have changed torch or sg3lib for the process.
    unpickler = op._RestrictedUnpickler(io.BytesIO(b""), "<test>")
    for module, name in unpickler._allowed:
        with pytest.raises((TypeError, AttributeError, op.UnsafePickleError)):
            setattr(unpickler.find_class(module, name), "sg3lib_probe", 1)

    def set_on(module, name, attr, value):  # GLOBAL; (None, {attr: value}); BUILD; POP
        return f"c{module}\n{name}\nN}}V{attr}\n{value}s\x86b0".encode("latin-1")

    defaults = torch._utils._rebuild_tensor_v2.__defaults__
    class_name = vars(op.PersistentObject)["class_name"]
    try:
        for i, body in enumerate([set_on("torch._utils", "_rebuild_tensor_v2", "__defaults__", "I1\n\x85"),
                                  set_on("torch_utils.persistence", "_reconstruct_persistent_obj", "class_name",
                                         "VEvil\n"),
                                  set_on("dnnlib.util", "EasyDict", "get", "I1\n")]):
            path = tmp_path / f"build{i}.pkl"
            path.write_bytes(b"\x80\x04" + body + b"cos\nsystem\nVtrue\n\x85R.")
            with pytest.raises(op.UnsafePickleError, match="refused"):
                load(path)
        assert torch._utils._rebuild_tensor_v2.__defaults__ == defaults
        assert vars(op.PersistentObject)["class_name"] is class_name and op.EasyDict.get is dict.get
    finally:  # leave the process usable for the other tests if this one fails
        torch._utils._rebuild_tensor_v2.__defaults__ = defaults
        type.__setattr__(op.PersistentObject, "class_name", class_name)
        if "get" in vars(op.EasyDict):
            type.__delattr__(op.EasyDict, "get")



@pytest.mark.parametrize("opcode", [b"\x82\xf1", b"\x83\xf1\x00", b"\x84\xf1\x00\x00\x00"])  # EXT1, EXT2, EXT4
def test_ext_opcodes_are_refused_even_when_registered(tmp_path, opcode):
    # Some library in the process registered an extension code, and a stock unpickler used it once:
    # the cached name would then reach the pickle without going through find_class.
    import copyreg
    marker = tmp_path / "pwned"
    copyreg.add_extension("os", "makedirs", 241)  # 240-255: codes for private use
    try:
        pickle.loads(b"\x80\x02\x82\xf1.")  # fills copyreg's extension cache
        path = tmp_path / "ext.pkl"
        path.write_bytes(b"\x80\x02" + opcode + b"X" + len(str(marker)).to_bytes(4, "little") + str(marker).encode()
                         + b"\x85R.")
        with pytest.raises(op.UnsafePickleError, match="extension registry") as e:
            load(path)
        assert str(path) in str(e.value)
        assert not marker.exists()
    finally:
        copyreg.remove_extension("os", "makedirs", 241)


def _legacy_storage_blob(numel):
    """torch's legacy save of a 6-float storage, with the element count (both copies) changed."""
    blob = io.BytesIO()
    with warnings.catch_warnings():  # TypedStorage is deprecated, but it is what tensors pickle
        warnings.simplefilter("ignore")
        torch.save(torch.zeros(6).storage(), blob, _use_new_zipfile_serialization=False)
    count = numel.to_bytes(8, "little")
    blob = blob.getvalue().replace(b"K\x06N", b"\x8a\x08" + count + b"N", 1)  # in the persistent id
    return blob.replace(b"a." + (6).to_bytes(8, "little"), b"a." + count, 1)  # before the data


class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


_NUMPY_RECONSTRUCT = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"


@pytest.mark.parametrize("body,expect", [
    # a bytes object of 2**62 bytes: only 13 bytes follow
    (b"\x8e" + (2 ** 62).to_bytes(8, "little") + b"ab.", "truncated"),
    # a protocol-5 bytearray of 2**62 bytes (the stock unpickler allocates it before reading)
    (b"\x96" + (2 ** 62).to_bytes(8, "little") + b"ab.", "more than"),
    # bytearray(2**40): a terabyte of zeros from a call on the allow-list
    (b"cbuiltins\nbytearray\n\x8a\x06" + (2 ** 40).to_bytes(6, "little") + b"\x85R.", "bytearray of a int"),
    # an empty numpy array of 2**40 elements, to be filled by a later BUILD
    (_NUMPY_RECONSTRUCT + b"(\x8a\x06" + (2 ** 40).to_bytes(6, "little") + b"tC\x01b\x87R.", "more than"),
], ids=["binbytes8", "bytearray8", "bytearray-call", "numpy-shape"])
def test_sizes_in_the_file_are_checked_before_allocating(tmp_path, body, expect):
    path = tmp_path / "tiny.pkl"
    path.write_bytes(b"\x80\x05" + body)
    with pytest.raises(LoadError, match=expect) as e:
        load(path)
    assert str(path) in str(e.value) and "MemoryError" not in str(e.value)


@pytest.mark.parametrize("case", ["storage", "tensor"])
def test_tensor_sizes_are_checked_against_the_file(tmp_path, case):
    if case == "storage":  # a storage of 2**40 floats in a 300-byte blob
        obj = _Reduce(torch.storage._load_from_bytes, _legacy_storage_blob(2 ** 40))
    else:  # 2**40 elements on a one-float storage (stride 0)
        obj = torch.zeros(1).expand(2 ** 40)
    path = _write(tmp_path / f"{case}.pkl", {"G_ema": obj})
    with pytest.raises(LoadError, match=r"declares [\d,]+ bytes, more than the [\d,]+ bytes the file holds") as e:
        load(path)
    assert str(path) in str(e.value) and "MemoryError" not in str(e.value)


def test_numpy_dtypes_are_plain_numbers(tmp_path):
    # numpy's own dtype.__setstate__ crashes the process (segfault) on this timedelta state.
    path = tmp_path / "m8.pkl"
    path.write_bytes(b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00m8\x89\x88\x87R"
                     b"(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb.")
    with pytest.raises(LoadError, match="timedelta64") as e:
        load(path)
    assert str(path) in str(e.value)


def _storage_blob(tensor):
    """A storage as official pickles embed it: torch's legacy save, little-endian data."""
    blob = io.BytesIO()
    with warnings.catch_warnings():  # TypedStorage is deprecated, but it is what tensors pickle
        warnings.simplefilter("ignore")
        torch.save(tensor.storage(), blob, _use_new_zipfile_serialization=False)
    return blob.getvalue()


def test_storages_are_decoded_as_little_endian_on_any_host(monkeypatch):
    """The storage parser names the byte order (official storages are little-endian) instead of
    taking the host's: here a big-endian host is simulated by making 'native' mean big-endian."""
    from sg3lib.compat import restricted
    values = {dtype: torch.tensor([1.5, -2.0, 300.25, 0.0]).to(dtype) for dtype in restricted._STORAGE_DTYPES.values()}
    real = torch.UntypedStorage.from_buffer
    orders = []

    def on_big_endian_host(buffer, byte_order="native", dtype=None):
        orders.append(byte_order)
        return real(buffer, byte_order="big" if byte_order == "native" else byte_order, dtype=dtype)
    monkeypatch.setattr(torch.UntypedStorage, "from_buffer", on_big_endian_host)
    for dtype, t in values.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = restricted.load_storage_from_bytes(_storage_blob(t))
            got = torch.tensor([], dtype=dtype).set_(storage)
        assert storage.dtype == dtype and torch.equal(got, t), dtype
    assert set(orders) == {"little"}


def _memo_reuse(call, arg, times):
    """Protocol 4: `call` memoized as 0, `arg` (raw opcodes) as 1, then [call(arg), call(arg), ...]."""
    module, name = call
    return (b"\x80\x04\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(name)]) + name.encode()
            + b"\x93\x94" + arg + b"\x94](" + b"h\x00h\x01\x85R" * times + b"e.")


def _crafted_memory_hogs():
    n = 1_000_000  # empty sets: 1 byte each in the file, 216 bytes in memory
    # a list of 200,000 names, 1.6 MB (text: ints past MAX_HASHED_KEYS in one set are refused first)
    names = b"(" + b"".join(b"\x8c\x06" + f"{i:06d}".encode() for i in range(200_000)) + b"l"
    return {"empty-sets": b"\x80\x04](" + b"\x8f" * n + b"e.",
            "bytearray-of-one-memo": _memo_reuse(("builtins", "bytearray"), b"B" + (1 << 20).to_bytes(4, "little")
                                                 + bytes(1 << 20), 100),
            "set-of-one-memo": _memo_reuse(("builtins", "set"), names, 20)}


@pytest.mark.parametrize("case", ["empty-sets", "bytearray-of-one-memo", "set-of-one-memo"])
def test_pickles_that_build_far_more_than_their_size_are_refused(tmp_path, case):
    """Every size in these files is small; what they build is not: 245 times the file in empty
    sets, and copies of one memoized object (quadratic in the file's size: 100 MB from 1 MB)."""
    path = tmp_path / f"{case}.pkl"
    path.write_bytes(_crafted_memory_hogs()[case])
    with pytest.raises(LoadError, match=r"builds more than [\d,]+ bytes of objects from a file of") as e:
        load(path)
    assert str(path) in str(e.value)


def test_a_deeply_nested_dict_key_is_refused_not_a_crash(tmp_path):
    """A 300 kB pickle of a tuple nested 300,000 levels used as a dict key: hashing it recursed in C
    without a guard and the process died (SIGSEGV; a notebook's kernel crashed)."""
    path = tmp_path / "nested.pkl"
    path.write_bytes(b"\x80\x04}" + b")" + b"\x85" * 300_000 + b"K\x01s.")  # {((((),),)...): 1}
    with pytest.raises(LoadError, match=r"nested\.pkl: the pickle nests tuples more than 100 levels deep"):
        load(path)
    shallow = {((((1,),),), frozenset([(2, (3,))])): 4}  # a few levels, as snapshots have: read
    assert op.unpickle_restricted(io.BytesIO(pickle.dumps(shallow, protocol=4))) == shallow


def _module(modules=None, params=None, class_name="Module"):
    state = op._module_state({})
    state["_modules"].update(modules or {})
    state["_parameters"].update(params or {})
    return op.PersistentObject({"type": "class", "version": 6, "module_src": "", "class_name": class_name,
                                "state": state})


@pytest.mark.parametrize("shared", ["sub-modules", "kwargs"])
def test_a_network_that_refers_to_one_object_on_many_paths_is_refused(tmp_path, shared):
    """The memo lets a 4 kB file name one object twice at each of 20 levels: the state dict walk
    (sub-modules a and b the same module) or the copy of the kwargs ([x, x]) went through 2**20
    paths (70 s, 830 MB); 30 levels would be a day and hundreds of GB."""
    if shared == "sub-modules":
        node = _module(params={"weight": torch.nn.Parameter(torch.zeros(1), requires_grad=False)})
        for _ in range(12):
            node = _module({"a": node, "b": node})
        data = {"D": _module({"b0": node}, class_name="Discriminator")}
        message = r"sub-module b0\.a\.[ab.]* appears twice in the network"
    else:
        x = [0]
        for _ in range(18):
            x = [x, x]
        data = {"D": op.persistent_from_state_dict("training.networks_stylegan2.Discriminator", {}, {}),
                "training_set_kwargs": op.EasyDict(path=x)}
        message = r"training_set_kwargs hold more than 100,000 values"
    path = tmp_path / "shared.pkl"
    with open(path, "wb") as f:
        op.dump_official(data, f)
    with pytest.raises(LoadError, match=rf"shared\.pkl: {message}, which no StyleGAN snapshot does"):
        op.read_official_pkl(path)


def test_official_pickles_build_far_less_than_the_memory_limit(tmp_path, fixtures_dir):
    from sg3lib.compat import restricted
    for protocol in (2, 4):
        path = op.write_official_pkl(tmp_path / f"p{protocol}.pkl", {"G_ema": persistent(fixtures_dir, "sg3t_64"),
                                                                     "D": persistent(fixtures_dir, "d_64")},
                                     protocol=protocol)
        with open(path, "rb") as f:
            unpickler = op._RestrictedUnpickler(f, path)
            unpickler.load()
        assert unpickler.charged < restricted.MEMORY_FACTOR / 2 * unpickler.size_limit, protocol


def test_exported_pkl_survives_a_crash_after_the_rename(tmp_path, monkeypatch):
    """The folder is fsynced after the rename (as for snapshots): else a crash can lose the new entry."""
    real_fsync, synced = os.fsync, []

    def fsync(fd):
        synced.append((os.path.realpath(f"/proc/self/fd/{fd}"), (tmp_path / "d.pkl").exists()))
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    op.write_official_pkl(tmp_path / "d.pkl", {"D": _tiny_d()})
    assert (os.path.realpath(tmp_path), True) in synced


def _tiny_d(**state):
    obj = op.persistent_from_state_dict(op.D_CLASS, {"c_dim": 0, "img_resolution": 4, "img_channels": 3},
                                        {"w": torch.zeros(2)})
    obj.state.update(state)
    return obj


@pytest.mark.parametrize("state,expect", [
    ({"_modules": [1]}, "_modules is a list, not a dict"),
    ({"_parameters": (1, 2)}, "_parameters is a tuple, not a dict"),
    ({"_init_args": 5}, "_init_args is a int, not a tuple"),
    ({"_init_kwargs": [1]}, "_init_kwargs is a list, not a dict"),
    ({"_non_persistent_buffers_set": 3}, "_non_persistent_buffers_set is a int"),
], ids=["modules", "parameters", "init_args", "init_kwargs", "non_persistent"])
def test_malformed_module_state_gives_load_error(tmp_path, state, expect):
    path = op.write_official_pkl(tmp_path / "odd.pkl", {"D": _tiny_d(**state)})
    with pytest.raises(LoadError, match=expect) as e:
        load(path)
    assert str(path) in str(e.value)


def test_generator_with_odd_module_src_gives_load_error(tmp_path):
    g = _tiny_d()
    g.meta.update(class_name="Generator", module_src=5)  # the source is only searched as text
    path = op.write_official_pkl(tmp_path / "odd.pkl", {"G_ema": g})
    with pytest.raises(LoadError, match="class 'Generator' that sg3lib does not know") as e:
        load(path)
    assert str(path) in str(e.value)


def test_damaged_pickles_give_load_errors(tmp_path):
    # Cut and mutated copies of a small official-format pickle: every failure is a LoadError naming the file.
    import random
    good = op.write_official_pkl(tmp_path / "good.pkl", {"D": _tiny_d(size=np.asarray([4, 4]),
                                                                       rate=np.float64(2.0))}, protocol=2)
    data, rng = good.read_bytes(), random.Random(0)
    variants = [data[:n] for n in range(0, len(data), 4)]
    for _ in range(200):
        b = bytearray(data)
        for _ in range(rng.choice([1, 2, 4])):
            b[rng.randrange(len(b))] = rng.randrange(256)
        variants.append(bytes(b))
    path = tmp_path / "damaged.pkl"
    for variant in variants:
        path.write_bytes(variant)
        try:
            load(path)
        except LoadError as e:
            assert str(path) in str(e), e



def test_memory_error_is_not_reported_as_a_corrupt_file(tmp_path, monkeypatch):
    # Every size in the file is checked against the file: a MemoryError left is this machine's, not the file's.
    path = op.write_official_pkl(tmp_path / "d.pkl", {"D": _tiny_d()})

    def short_of_memory(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(op, "unpickle_restricted", short_of_memory)
    with pytest.raises(MemoryError):
        load(path)

    def torch_short_of_memory(*args, **kwargs):  # how torch says it (was "the file is corrupt")
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1073741824 bytes.")
    monkeypatch.setattr(op, "unpickle_restricted", torch_short_of_memory)
    with pytest.raises(MemoryError, match="d.pkl: not enough memory to load it"):
        load(path)


def test_bad_files_give_clear_errors(tmp_path, fixtures_dir):
    good = official_pkl(tmp_path, fixtures_dir, d="d_64")
    data = good.read_bytes()
    files = {
        "empty.pkl": (b"", "the file is empty"),
        "photo.pkl": (b"\xff\xd8\xff\xe0" + b"\0" * 64, "is an image"),
        "head.pkl": (b"<head><title>Sign in</title></head>", "is an HTML web page"),
        "body.pkl": (b"\n<BODY>Quota exceeded</BODY>", "is an HTML web page"),
        "cut.pkl": (data[: len(data) // 2], "truncated"),
        "page.pkl": (b"<!DOCTYPE html><html><body>Google Drive - Virus scan warning</body></html>", "HTML"),
        "image.pkl": (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image"),
        "noise.bin": (b"GIF89a" + bytes(range(200)), "not a network file"),
    }
    for name, (content, expect) in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(LoadError, match=expect) as e:
            load(path)
        assert str(path) in str(e.value)
    # cut in its first bytes (inside an opcode's argument: struct.error, IndexError): truncated too,
    # not "corrupt or not written by StyleGAN"
    for cut in range(3, 200):
        path = tmp_path / "early.pkl"
        path.write_bytes(data[:cut])
        with pytest.raises(LoadError) as e:
            load(path)
        assert "truncated" in str(e.value), (cut, str(e.value))
        assert not re.search(r"\(\)|unpack requires|out of range", str(e.value)), (cut, str(e.value))  # no bare detail
    tf = tmp_path / "stylegan2-ffhq-config-f.pkl"  # (G, D, Gs) of TensorFlow networks, each with its state
    tf.write_bytes(b"\x80\x03" + b"cdnnlib.tflib.network\nNetwork\n)\x81}b" * 3 + b"\x87.")
    with pytest.raises(LoadError, match="TensorFlow StyleGAN.*legacy.py") as e:
        load(tf)
    assert str(tf) in str(e.value)
    plain = _write(tmp_path / "list.pkl", [1, 2, 3])
    with pytest.raises(LoadError, match="not a StyleGAN snapshot"):
        load(plain)
    with pytest.raises(LoadError, match="no such file"):
        load(tmp_path / "missing.pkl")


def test_wrong_kind_torch_files(tmp_path):
    state = tmp_path / "state.pt"
    torch.save({"weight": torch.zeros(3)}, state)
    with pytest.raises(LoadError, match="not an sg3lib snapshot") as e:
        load(state)
    assert str(state) in str(e.value)
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)  # a pickled class: weights_only refuses
    with pytest.raises(LoadError, match="pickled Python objects"):
        load(module)
    import zipfile
    ds = tmp_path / "dataset.zip"
    with zipfile.ZipFile(ds, "w") as z:
        z.writestr("00000/img00000000.png", b"\x89PNG")
    with pytest.raises(LoadError, match="not a PyTorch file"):
        load(ds)


# ---------------------------------------------------------------------------------------------
# URLs against a local server

class _Server:
    def __init__(self, routes):
        self.routes, self.hits = routes, {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path not in server.routes:
                    self.send_error(404)
                    return
                body, ctype, length = server.routes[self.path]
                if isinstance(ctype, int):  # an HTTP error status
                    self.send_error(ctype)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                if length == "chunked-cut":  # chunked transfer encoding; the connection drops halfway
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(body) // 2, 4096):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(body[i:i + 4096]), body[i:i + 4096]))
                    return
                self.send_header("Content-Length", str(length if length is not None else len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A server for the routes a test gives ({path: (body, content type, length)}), the cache in tmp_path."""
    monkeypatch.setenv("SG3LIB_CACHE", str(tmp_path / "cache"))
    servers = []

    def serve(routes):
        servers.append(_Server(routes))
        return servers[-1]
    yield serve
    for s in servers:
        s.close()


@pytest.fixture
def server(tmp_path, fixtures_dir, served):
    body = official_pkl(tmp_path, fixtures_dir, d="d_64", filename="network-snapshot-000040.pkl").read_bytes()
    return served({
        "/network-snapshot-000040.pkl": (body, "application/octet-stream", None),
        "/network-snapshot-000040.pkl?dl=1": (body, "application/octet-stream", None),  # as Dropbox links
        "/page.pkl": (b"<html><body>Sign in</body></html>", "text/html; charset=utf-8", None),
        "/sneaky.pkl": (b"\n<!DOCTYPE html><html>quota exceeded</html>", "application/octet-stream", None),
        "/cut.pkl": (body[:1000], "application/octet-stream", len(body)),
        "/cut-chunked.pkl": (body, "application/octet-stream", "chunked-cut"),
        # sent with HTTP 200, but no network file: they were cached, and every later load failed on them
        "/lfs.pkl": (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 363971\n", "text/plain", None),
        "/quota.pkl": (b'{"error": "download quota exceeded"}', "application/json", None),
        "/commented.pkl": (b"<!-- cdn --><html><body>Sign in</body></html>", "application/octet-stream", None),
        "/private.pkl": (b"", 403, None),
        "/gone.pkl": (b"", 410, None),
        "/broken.pkl": (b"", 500, None),
        "/empty.pkl": (b"", "application/octet-stream", None),
        "/upper-html.pkl": (b"\x80 not really", "TEXT/HTML", None),
        "/two-lengths.pkl": (body, "application/octet-stream", f"{len(body)}, {len(body)}"),  # (some proxies)
    })


def test_url_download_and_cache(server, tmp_path, fixtures_dir):
    url = server.url + "/network-snapshot-000040.pkl"
    a = load(url, progress=False)
    assert a["meta"]["kimg"] == 40.0 and a["meta"]["source"] == url
    cached = Path(a["meta"]["local_path"])
    assert cached.parent == tmp_path / "cache" / "downloads" and cached.is_file()
    b = load(url, progress=False)
    assert server.hits["/network-snapshot-000040.pkl"] == 1  # the second load used the cache
    for k, v in a["D"].state_dict().items():
        assert torch.equal(b["D"].state_dict()[k], v)
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temporaries left


def test_downloads_and_kernel_builds_share_one_cache_folder(tmp_path, monkeypatch):
    """XDG_CACHE_HOME moved the kernel builds but not the downloads (hundreds of MB left in
    ~/.cache); SG3LIB_CACHE moves both, and wins."""
    from sg3lib.ops import _cuda
    monkeypatch.delenv("SG3LIB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert loader.cache_dir() == tmp_path / "xdg" / "sg3lib" / "downloads"
    assert _cuda.cache_root() == tmp_path / "xdg" / "sg3lib" / "kernels"
    monkeypatch.setenv("SG3LIB_CACHE", str(tmp_path / "mine"))
    assert (loader.cache_dir(), _cuda.cache_root()) == (tmp_path / "mine" / "downloads", tmp_path / "mine" / "kernels")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("SG3LIB_CACHE")
    assert loader.cache_dir().parent == _cuda.cache_root().parent == Path.home() / ".cache" / "sg3lib"


def test_a_killed_download_leaves_nothing_behind_for_long(server, tmp_path):
    """A download killed mid-way (a Colab disconnect) leaves its temporary file; the next download
    of that URL removes it once stale, and leaves a younger one (a download in progress) alone."""
    from sg3lib.files import temp_file_beside
    url = server.url + "/network-snapshot-000040.pkl"
    dest = loader.download(url, progress=False)
    dest.unlink()
    stale, fresh = (temp_file_beside(dest) for _ in range(2))
    for fd, _ in (stale, fresh):
        os.close(fd)
    stale, fresh = Path(stale[1]), Path(fresh[1])
    old = time.time() - loader.STALE_DOWNLOAD_S - 60
    os.utime(stale, (old, old))
    with pytest.warns(UserWarning, match="1 leftover file"):
        assert loader.download(url, progress=False) == dest
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted([dest.name, fresh.name])


def test_a_malformed_length_or_an_unwritable_cache_is_a_load_error(server, tmp_path, monkeypatch):
    """A doubled Content-Length (some proxies) was a bare ValueError from int(); a cache folder that
    cannot be made (a file in the way, a read-only home) a raw NotADirectoryError traceback."""
    url = server.url + "/two-lengths.pkl"
    assert load(url, progress=False)["D"].img_resolution == 64  # read to the end, as http.client does
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("SG3LIB_CACHE", str(tmp_path / "afile" / "cache"))
    with pytest.raises(LoadError, match=r"cannot write to the download cache .*afile.*set SG3LIB_CACHE"):
        load(server.url + "/network-snapshot-000040.pkl", progress=False)


def test_url_with_a_query_keeps_the_kimg_of_its_file_name(server):
    nets = load(server.url + "/network-snapshot-000040.pkl?dl=1", progress=False)
    assert nets["meta"]["kimg"] == 40.0
    assert Path(nets["meta"]["local_path"]).name.endswith("-network-snapshot-000040.pkl")


@pytest.mark.parametrize("route,expect", [("/page.pkl", "HTML"), ("/sneaky.pkl", "HTML"),
                                          ("/cut.pkl", "cut off"), ("/cut-chunked.pkl", "cut off"),
                                          ("/nothing.pkl", "HTTP 404 .*; check the address"),
                                          ("/lfs.pkl", "a Git LFS pointer, not the file"),
                                          ("/quota.pkl", "not a network file \\(it starts with '\\{\"error\": \"download quota"),
                                          ("/empty.pkl", "the server sent an empty file"),
                                          ("/upper-html.pkl", "got an HTML page \\(Content-Type TEXT/HTML\\)"),
                                          ("/gone.pkl", "HTTP 410 .*; check the address"),
                                          ("/broken.pkl", "HTTP 500 .*; try again later"),
                                          ("/commented.pkl", "HTML page"),
                                          ("/private.pkl", "HTTP 403 .*the file is not public")])
def test_url_errors(server, tmp_path, route, expect):
    url = server.url + route
    with pytest.raises(LoadError, match=expect) as e:
        load(url, progress=False)
    assert url in str(e.value)
    cache = tmp_path / "cache" / "downloads"
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing half-written is kept


# ---------------------------------------------------------------------------------------------
# sg3 info

def test_sg3_info(tmp_path, fixtures_dir, capsys):
    path = official_pkl(tmp_path, fixtures_dir, g="sg3t_64", d="d_64")
    assert sg3_main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    meta, _, _ = fixture(fixtures_dir, "sg3t_64")
    G = build_network(meta["official_class"], meta["init_kwargs"])
    n_params = sum(p.numel() for p in G.parameters())
    assert "stylegan3-t" in out and "64x64, 3 channels" in out and "kimg          120\n" in out
    assert f"num_ws {meta['num_ws']}" in out and f"{n_params:,} parameters" in out
    assert sg3_main(["info", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["networks"]["G_ema"]["parameters"] == n_params and info["z_dim"] == 64
    assert set(info["networks"]) == {"G", "D", "G_ema"}
    bad = tmp_path / "empty.pkl"
    bad.write_bytes(b"")
    assert sg3_main(["info", str(bad)]) == 1
    assert "empty" in capsys.readouterr().err


def test_sg3_info_takes_a_run_folder(tmp_path, capsys):
    """As --network in sg3 generate/rank: a run folder stands for its newest snapshot; a folder
    without one is an 'error:' line (it used to point a command-line user at a Python function)."""
    from sg3lib import checkpoint as ck
    from sg3lib.explore.generate import tiny_generator
    run = tmp_path / "run"
    run.mkdir()
    for n in (4, 12):
        ck.save_snapshot(run / ck.snapshot_name(n), ck.snapshot_from_networks({"G_ema": tiny_generator()}))
    assert sg3_main(["info", str(run)]) == 0
    assert f"file          {run / ck.snapshot_name(12)}" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert sg3_main(["info", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no snapshot-*.pt in this folder" in err and "find_latest" not in err


def test_sg3_info_shows_kimg_whole(tmp_path, capsys):
    """format(kimg, 'g') kept 6 digits: 25,000,032 images showed as kimg 25000, 1,234,567,000 as 1.23457e+06."""
    from sg3lib import checkpoint as ck
    from sg3lib.explore.generate import tiny_generator
    G = tiny_generator()
    for nimg, shown in ((25000032, "25000.032"), (1234567000, "1234567"), (4000, "4"), (16, "0.016")):
        path = ck.save_snapshot(tmp_path / ck.snapshot_name(nimg), ck.snapshot_from_networks({"G_ema": G}))
        assert sg3_main(["info", str(path)]) == 0
        assert f"kimg          {shown}\n" in capsys.readouterr().out


def test_a_pickle_protocol_that_loaders_would_not_know_is_refused(tmp_path):
    """Protocols 0 and 1 do not start with the pickle marker byte: the file written was refused by
    sg3lib.load ('not a network file sg3lib knows')."""
    G = build_network(op.SG3_CLASS, dict(z_dim=4, c_dim=0, w_dim=4, img_resolution=16, img_channels=1,
                                         channel_base=64, channel_max=4, num_layers=2, num_critical=1,
                                         mapping_kwargs={"num_layers": 1}))
    for bad in (0, 1, 99, "4", True):
        with pytest.raises(ValueError, match="protocol"):
            op.write_official_pkl(tmp_path / "g.pkl", {"G_ema": G}, protocol=bad)
        assert not (tmp_path / "g.pkl").exists()
    for good in range(2, pickle.HIGHEST_PROTOCOL + 1):
        path = op.write_official_pkl(tmp_path / "g.pkl", {"G_ema": G}, protocol=good)
        assert load(path)["G_ema"].img_resolution == 16


def test_load_takes_a_run_folder(tmp_path):
    """sg3lib.load(run folder) is its newest snapshot, as the command line and notebooks take it (it
    was refused: 'not a file'); a folder without one is a LoadError naming it."""
    from sg3lib import checkpoint as ck
    from sg3lib.explore.generate import tiny_generator
    run = tmp_path / "run"
    run.mkdir()
    for n in (4000, 12000):
        ck.save_snapshot(run / ck.snapshot_name(n), ck.snapshot_from_networks({"G_ema": tiny_generator(seed=n)}))
    nets = load(run)
    assert nets["meta"]["kimg"] == 12 and nets["meta"]["source"] == str(run / ck.snapshot_name(12000))
    want = load(run / ck.snapshot_name(12000))["G_ema"].state_dict()
    assert all(torch.equal(v, want[k]) for k, v in nets["G_ema"].state_dict().items())
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadError, match="empty: no snapshot"):
        load(tmp_path / "empty")


def test_written_files_get_the_usual_modes(server, tmp_path, fixtures_dir):
    """Snapshots, exported .pkl files and downloads are readable by others as open() would make
    them (a rename keeps mkstemp's private 0600)."""
    from sg3lib import checkpoint as ck
    old = os.umask(0o022)
    try:
        pkl = official_pkl(tmp_path, fixtures_dir, g="sg3t_64", d="d_64")
        D = load(pkl)["D"]
        snap = ck.save_snapshot(tmp_path / "snapshot-000004000.pt", ck.snapshot_from_networks({"D": D}))
        cached = Path(load(server.url + "/network-snapshot-000040.pkl", progress=False)["meta"]["local_path"])
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in (pkl, snap, cached)} == {
        pkl.name: 0o644, snap.name: 0o644, cached.name: 0o644}


def test_old_torch_gets_one_warning_about_weights_only(tmp_path, fixtures_dir, monkeypatch):
    """Before torch 2.6 weights_only=True had a code-execution bypass: load() says so, once."""
    import warnings
    pkl = official_pkl(tmp_path, fixtures_dir, d="d_64")
    monkeypatch.setattr(loader, "_WARNED_OLD_TORCH", [])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        load(pkl)
    assert not [w for w in seen if "CVE-2025-32434" in str(w.message)]  # this torch is new enough
    monkeypatch.setattr(torch, "__version__", "2.5.1+cu124")
    with pytest.warns(UserWarning, match=r"torch 2\.5\.1\+cu124: .*CVE-2025-32434.*torch>=2\.6"):
        load(pkl)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        load(pkl)
    assert not [w for w in seen if "CVE-2025-32434" in str(w.message)]  # once per process


def test_stylegan2_ada_pkl_loads_and_sg3_info_reads_its_nested_kwargs(tmp_path, fixtures_dir, capsys):
    """A StyleGAN2-ADA (PyTorch) snapshot: module training.networks, channel_base & co. nested in
    G's synthesis_kwargs, a persistent AugmentPipe and a `progress` dict beside the networks."""
    meta, state, npz = fixture(fixtures_dir, "sg2_64")
    kwargs = {k: v for k, v in meta["init_kwargs"].items() if k != "fused_modconv_default"}
    kwargs["synthesis_kwargs"] = {k: kwargs.pop(k) for k in ("channel_base", "channel_max", "num_fp16_res",
                                                             "conv_clamp")}
    src = "# training/networks.py of StyleGAN2-ADA\nclass SynthesisBlock: pass\n"
    G = op.persistent_from_state_dict("training.networks.Generator", kwargs, state, BUFFERS, src)
    dmeta, dstate, _ = fixture(fixtures_dir, "d_64")
    D = op.persistent_from_state_dict("training.networks.Discriminator", dmeta["init_kwargs"], dstate, BUFFERS, src)
    augment = op.PersistentObject({"type": "class", "version": 6, "module_src": "# training/augment.py",
                                   "class_name": "AugmentPipe", "state": {
                                       "_parameters": OrderedDict(), "_modules": OrderedDict(),
                                       "_buffers": OrderedDict(p=torch.tensor(0.25)), "_init_args": (),
                                       "_init_kwargs": op.EasyDict(xflip=1, rotate90=1), "xflip": 1.0}})
    path = tmp_path / "network-snapshot-000200.pkl"
    with open(path, "wb") as f:
        op.dump_official({"G": G, "D": D, "G_ema": G, "augment_pipe": augment,
                          "training_set_kwargs": op.EasyDict(path="/data/cats.zip", resolution=np.int64(64)),
                          "progress": {"cur_nimg": torch.tensor(200000), "best_fid": np.float64(3.5)}}, f)
    nets = load(path)
    assert nets["meta"]["arch"] == "stylegan2" and nets["meta"]["ignored"] == ["augment_pipe", "progress"]
    assert nets["meta"]["training_set_kwargs"] == {"path": "/data/cats.zip", "resolution": 64}
    with torch.no_grad():
        img = nets["G_ema"].synthesis(torch.from_numpy(npz["out_ws"][1:2]), noise_mode="const")
    np.testing.assert_allclose(img.numpy(), npz["out_img_const"][1:2], atol=1e-4)
    assert sg3_main(["info", str(path)]) == 0
    assert "channels      base 2048, max 64\n" in capsys.readouterr().out


@pytest.mark.parametrize("cfg", ["stylegan3-r", "stylegan2"])
def test_snapshot_exported_as_official_pkl_reads_back_bit_for_bit(tmp_path, cfg):
    """The README's export: sg3lib snapshot -> write_official_pkl -> sg3lib.load gives the same
    tensors (dtypes included) and constructor kwargs for G, D and G_ema."""
    from sg3lib import checkpoint as ck
    from sg3lib.train.config import make_config, network_kwargs
    (gc, gk), (dc, dk) = network_kwargs(make_config(16, 3, 4, cfg=cfg, cbase=256, cmax=16, map=2, z_dim=8, w_dim=8))
    torch.manual_seed(0)
    nets = {"G": build_network(gc, gk), "D": build_network(dc, dk), "G_ema": build_network(gc, gk)}
    snap = ck.save_snapshot(tmp_path / "snapshot-000000016.pt", ck.snapshot_from_networks(nets))
    back = load(op.write_official_pkl(tmp_path / "out.pkl", load(snap)))
    stored = torch.load(snap, weights_only=True)["networks"]
    for k in ("G", "D", "G_ema"):
        a, b = stored[k]["state_dict"], back[k].state_dict()
        assert list(a) == list(b) and all(torch.equal(a[n], b[n]) and a[n].dtype == b[n].dtype for n in a), k
        assert back["meta"]["networks"][k] == {"official_class": stored[k]["official_class"],
                                               "init_kwargs": stored[k]["init_kwargs"]}


@pytest.mark.parametrize("call,of", [(("collections", "OrderedDict"), "tensor"),
                                     (("dnnlib.util", "EasyDict"), "tensor"),
                                     (("collections", "OrderedDict"), "array")],
                         ids=["odict-tensor", "easydict", "odict-array"])
def test_dicts_are_not_built_from_tensors_or_arrays(tmp_path, call, of):
    """OrderedDict(t) of a [N, 2] tensor makes two tensors per row (a 2 MB file took 1.8 GB before the
    memory meter saw the dict): the dict constructors, like set, take only lists written in the file."""
    rows = torch.arange(20_000, dtype=torch.int8).reshape(-1, 2) if of == "tensor" else np.zeros((10_000, 2))
    data = pickle.dumps(_Reduce(collections.OrderedDict, rows), protocol=4)
    module, name = call
    named = b"\x8c" + bytes([len(module)]) + module.encode() + b"\x94\x8c" + bytes([len(name)]) + name.encode()
    data = data.replace(b"\x8c\x0bcollections\x94\x8c\x0bOrderedDict", named)  # protocol 4's STACK_GLOBAL
    path = tmp_path / "rows.pkl"
    path.write_bytes(data)
    assert call in globals_in(path)
    with pytest.raises(LoadError, match=f"{name} of a (Tensor|ndarray); pickles build it from a list") as e:
        load(path)
    assert str(path) in str(e.value)


def test_a_pickled_state_dict_gets_a_short_error(tmp_path):
    """pickle.dump(G.state_dict()): hundreds of keys; the error names a few, the count and what to pass."""
    state = OrderedDict((f"synthesis.L{i}_36_64.{k}", torch.zeros(1)) for i in range(300) for k in ("weight", "bias"))
    path = _write(tmp_path / "weights.pkl", state)
    with pytest.raises(LoadError, match="not a StyleGAN snapshot") as e:
        load(path)
    msg = str(e.value)
    assert str(path) in msg and "synthesis.L0_36_64.bias" in msg and "600 keys" in msg
    assert len(msg) < 600, len(msg)


D_SIGNATURE = ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max", "num_fp16_res",
               "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs")


@pytest.mark.parametrize("name,signature", [
    ("sg3t_64", ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")),
    ("d_64_cond", D_SIGNATURE)], ids=["G", "D"])
def test_every_positional_argument_of_the_official_constructors(tmp_path, fixtures_dir, name, signature):
    """Networks made as Generator(512, 0, 512, 256, 3, {'num_layers': 2}): the persistence hook keeps
    the arguments as given, in _init_args; each official positional parameter maps to its name."""
    meta, state, _ = fixture(fixtures_dir, name)
    obj = persistent(fixtures_dir, name)
    kwargs = {**{k: None for k in D_SIGNATURE[3:] if name.startswith("d")}, **meta["init_kwargs"]}
    obj.state["_init_args"] = tuple(kwargs.pop(k) for k in signature)
    obj.state["_init_kwargs"] = op.EasyDict(kwargs)
    key = "D" if name.startswith("d") else "G_ema"
    nets = load(op.write_official_pkl(tmp_path / "positional.pkl", {key: obj}))
    assert nets["meta"]["networks"][key]["init_kwargs"] == {**kwargs, **dict(zip(signature, obj.state["_init_args"]))}
    assert all(torch.equal(v, state[k]) for k, v in nets[key].state_dict().items())


def test_exported_stylegan3_layers_keep_their_numpy_sizes(tmp_path):
    """write_official_pkl kept only JSON-able attributes, so an exported StyleGAN3 generator's layers
    lost in_size / out_size (numpy arrays, as the official SynthesisLayer keeps and checks them)."""
    G = build_network(op.SG3_CLASS, dict(z_dim=4, c_dim=0, w_dim=4, img_resolution=16, img_channels=1,
                                         channel_base=64, channel_max=4, num_layers=2, num_critical=1,
                                         mapping_kwargs={"num_layers": 1}))
    path = op.write_official_pkl(tmp_path / "g.pkl", {"G_ema": G})
    with open(path, "rb") as f:
        synthesis = op.unpickle_restricted(f)["G_ema"].state["_modules"]["synthesis"]
    for name in G.synthesis.layer_names:
        layer, state = getattr(G.synthesis, name), synthesis.state["_modules"][name].state
        for attr in ("in_size", "out_size"):
            np.testing.assert_array_equal(state[attr], getattr(layer, attr), err_msg=f"{name}.{attr}")
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in load(path)["G_ema"].state_dict().items())


def test_exported_modules_have_the_state_the_official_loader_rebuilds_a_module_from(tmp_path):
    """The official format pickles each module's whole __dict__, and the official loader rebuilds it
    with Module.__setstate__, which fills in some missing hook tables but not _forward_hooks or
    _backward_hooks: an exported network could not be called there, even with module_src."""
    G = build_network(op.SG3_CLASS, dict(z_dim=4, c_dim=0, w_dim=4, img_resolution=16, img_channels=1,
                                         channel_base=64, channel_max=4, num_layers=2, num_critical=1,
                                         mapping_kwargs={"num_layers": 1}))
    path = op.write_official_pkl(tmp_path / "g.pkl", {"G_ema": G})
    with open(path, "rb") as f:
        root = op.unpickle_restricted(f)["G_ema"]
    module_keys = set(vars(torch.nn.Module()))
    todo = [("G_ema", root)]
    while todo:
        name, obj = todo.pop()
        rebuilt = torch.nn.Module.__new__(torch.nn.Module)
        rebuilt.__setstate__(dict(obj.state))
        assert module_keys <= set(vars(rebuilt)), (name, sorted(module_keys - set(vars(rebuilt))))
        todo += [(f"{name}.{k}", v) for k, v in obj.state["_modules"].items() if v is not None]
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in load(path)["G_ema"].state_dict().items())


def test_export_refuses_what_it_cannot_write_as_networks(tmp_path, fixtures_dir):
    """write_official_pkl(path, D) failed on `D.get`; {'generator': G} (a key the format does not
    have) or a module that is no sg3lib network wrote a file without a network that loads, silently."""
    meta = fixture(fixtures_dir, "d_64")[0]
    D = build_network(meta["official_class"], meta["init_kwargs"])
    path = tmp_path / "out.pkl"
    for networks, match in [(D, "a dict"), ({"generator": D}, "'generator'.*G, D, G_ema"),
                            ({"G_ema": torch.nn.Linear(2, 2)}, "G_ema.*Linear.*official_class"), ({}, "no network")]:
        with pytest.raises((TypeError, ValueError), match=match):
            op.write_official_pkl(path, networks)
    assert not path.exists()


def test_export_into_a_new_folder_and_keeps_the_training_set_kwargs(tmp_path, fixtures_dir):
    """A missing folder failed with FileNotFoundError naming a hidden temporary ('.out.pkl.tmp-...'),
    where save_snapshot makes the folder; and an official .pkl loaded and exported again lost its
    training_set_kwargs, which sg3lib.load puts in meta."""
    nets = load(official_pkl(tmp_path, fixtures_dir, g="sg3t_64"))
    out = op.write_official_pkl(tmp_path / "exports" / "new" / "out.pkl", nets)
    back = load(out)
    assert back["meta"]["training_set_kwargs"] == nets["meta"]["training_set_kwargs"]
    assert back["meta"]["training_set_kwargs"]["path"] == "/data/ffhq.zip"
    assert all(torch.equal(v, nets["G_ema"].state_dict()[k]) for k, v in back["G_ema"].state_dict().items())


@pytest.mark.parametrize("arch", ["sg2", "sg3", "sg3r"])
def test_sizes_a_file_states_are_checked_before_anything_is_allocated(monkeypatch, arch):
    """A 2 kB pickle stating img_resolution=16384 beside small weights made sg3lib build the whole
    network it describes (3 GB, 11 s) before finding that the weights do not fit. The network is
    first built on the meta device (no memory), and built for real only once the weights fit it."""
    import sg3lib.networks as nets
    G = build_network(*{"sg2": ("training.networks_stylegan2.Generator", dict(
                            z_dim=8, w_dim=8, c_dim=0, img_resolution=16, img_channels=3, channel_base=256,
                            channel_max=8, mapping_kwargs={"num_layers": 1})),
                        "sg3": ("training.networks_stylegan3.Generator", dict(
                            z_dim=8, w_dim=8, c_dim=0, img_resolution=16, img_channels=3, channel_base=256,
                            channel_max=8, mapping_kwargs={"num_layers": 1})),
                        "sg3r": ("training.networks_stylegan3.Generator", dict(
                            z_dim=8, w_dim=8, c_dim=0, img_resolution=16, img_channels=3, channel_base=256,
                            channel_max=8, conv_kernel=1, use_radial_filters=True,
                            mapping_kwargs={"num_layers": 1}))}[arch])
    devices, real = [], nets.build_network
    monkeypatch.setattr(nets, "build_network", lambda *a, **k: devices.append(torch.empty(0).device.type)
                        or real(*a, **k))
    spec = {"official_class": G.official_class, "init_kwargs": G.init_kwargs, "state_dict": G.state_dict()}
    assert torch.equal(loader.build(spec)(torch.zeros([1, 8]), None, noise_mode="const"),
                       G.eval()(torch.zeros([1, 8]), None, noise_mode="const"))
    assert devices == ["meta", "cpu"]
    devices.clear()
    crafted = dict(spec, init_kwargs=dict(G.init_kwargs, img_resolution=16384, channel_base=65536, channel_max=512))
    with pytest.raises(LoadError, match="the weights do not fit"):
        loader.build(crafted)
    assert devices == ["meta"]
    # Weights that fit by shape but not by bytes: views of one storage, or zero strides (torch.load
    # takes expand()ed tensors), state a network of any size in a few kB (64 MiB allowed: 0 here).
    monkeypatch.setattr(loader, "_UNBACKED_SLACK", 0)
    one, storage = torch.zeros(()), torch.zeros(max(v.numel() for v in spec["state_dict"].values()))
    for state in ({k: one.expand(v.shape) for k, v in spec["state_dict"].items()},
                  {k: storage[:v.numel()].view(v.shape) for k, v in spec["state_dict"].items()}):
        devices.clear()
        with pytest.raises(LoadError, match=r"the weights state [\d,]+ bytes but the file holds [\d,]+ bytes"):
            loader.build(dict(spec, state_dict=state))
        assert devices == ["meta"]


class _TensorView:
    """Pickles as an official .pkl's tensor: a view (size, stride, offset) of a 4-element storage."""
    def __init__(self, size, stride, offset):
        self.view = size, stride, offset

    def __reduce__(self):
        size, stride, offset = self.view
        storage = torch.storage.TypedStorage(wrap_storage=torch.arange(4.0).untyped_storage(), dtype=torch.float32,
                                             _internal=True)
        return torch._utils._rebuild_tensor_v2, (storage, offset, size, stride, False, OrderedDict())


def test_a_tensor_reaching_past_its_storage_is_refused():
    """torch's set_ grows a storage read from bytes to reach an offset or stride past its end: a tensor
    of a 4-element storage with stride 1000 loaded memory the file never held, one with offset 2**33 in
    a fixture .pkl was 'not enough memory (...); the file itself may well be whole', and one such view
    let 1 MB of weights pass _check_backed as a 1 GB network."""
    unpickle_restricted = op.unpickle_restricted
    ok = unpickle_restricted(io.BytesIO(pickle.dumps(_TensorView((2, 2), (1, 2), 0), protocol=4)))
    assert torch.equal(ok, torch.tensor([[0.0, 2.0], [1.0, 3.0]]))  # a transposed view inside it loads
    assert unpickle_restricted(io.BytesIO(pickle.dumps(_TensorView((0,), (1,), 4), protocol=4))).numel() == 0
    for view, match in [(((4,), (1000,), 0), "reaches past the end of its storage of 4 elements"),
                        (((2,), (1,), 3), r"shape \(2,\) \(offset 3, strides \(1,\)\) reaches past"),
                        (((2,), (1 << 28,), 0), "reaches past the end"),
                        (((1,), (1,), 1 << 33), "reaches past the end"),
                        (((3,), (1,), -2), "offset -2 and strides"),
                        (((2,), (1, 1), 0), "offset 0 and strides")]:
        with pytest.raises(LoadError, match=match):
            unpickle_restricted(io.BytesIO(pickle.dumps(_TensorView(*view), protocol=4)))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_keys_of_one_hash_are_refused_before_they_cost_quadratic_time(protocol):
    """Ints that are multiples of 2**61 - 1 all hash to 0: a 500 kB pickle of one dict of 50,000 of
    them took 25 s to insert. Keys other than text are refused past MAX_HASHED_KEYS per dict or set
    (counted over pickle's batches of 1000 and one SETITEM at a time); text keys are not limited."""
    from sg3lib.compat.restricted import MAX_HASHED_KEYS
    colliding = [i * ((1 << 61) - 1) for i in range(1, MAX_HASHED_KEYS + 2)]
    for container in (dict.fromkeys, set, frozenset, lambda keys: OrderedDict((k, 0) for k in keys)):
        ok = container(colliding[:-1])
        assert op.unpickle_restricted(io.BytesIO(pickle.dumps(ok, protocol=protocol))) == ok
        with pytest.raises(LoadError, match=f"more than {MAX_HASHED_KEYS} keys that are not text"):
            op.unpickle_restricted(io.BytesIO(pickle.dumps(container(colliding), protocol=protocol)))
    names = {f"layer{i}": i for i in range(3 * MAX_HASHED_KEYS)}
    assert op.unpickle_restricted(io.BytesIO(pickle.dumps(names, protocol=protocol))) == names


def test_a_layer_count_above_the_weights_is_refused_before_the_network_is_built(monkeypatch):
    """A 925-byte G stating mapping num_layers=100000 took 107 s and 600 MB in the meta build (one
    module per layer) before 'the weights do not fit'."""
    import sg3lib.networks as nets
    built = []
    monkeypatch.setattr(nets, "build_network", lambda *a, **k: built.append(a))
    kwargs = dict(z_dim=8, w_dim=8, c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=8)
    for claim in ({"mapping_kwargs": {"num_layers": 100000}}, {"num_layers": 3000}):
        spec = {"official_class": "training.networks_stylegan3.Generator", "init_kwargs": dict(kwargs, **claim),
                "state_dict": {"mapping.fc0.weight": torch.zeros(8, 8)}}
        with pytest.raises(LoadError, match=r"states num_layers=\d+, but the file holds only 1 weights"):
            loader.build(spec)
    assert built == []


def test_exported_stylegan2_and_d_blocks_have_the_attributes_their_official_forward_reads(tmp_path):
    """The official SynthesisBlock and DiscriminatorBlock forward read self.channels_last, which
    sg3lib's blocks did not store: an exported SG2 G or any D failed with AttributeError there."""
    G = build_network("training.networks_stylegan2.Generator", dict(
        z_dim=8, w_dim=8, c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=8,
        num_fp16_res=1, mapping_kwargs={"num_layers": 1}))
    D = build_network("training.networks_stylegan2.Discriminator", dict(
        c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=8, num_fp16_res=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        op.write_official_pkl(tmp_path / "x.pkl", {"G": G, "D": D, "G_ema": G})
    with open(tmp_path / "x.pkl", "rb") as f:
        root = op.unpickle_restricted(f)
    blocks = [(root["G_ema"].state["_modules"]["synthesis"].state["_modules"][f"b{r}"], r) for r in (4, 8, 16)]
    blocks += [(root["D"].state["_modules"][f"b{r}"], r) for r in (16, 8)]
    for block, res in blocks:
        assert block.state["channels_last"] is False, (block.class_name, res)  # fp16 only, as official
        assert block.state["use_fp16"] == (res == 16)


def test_an_export_without_all_three_networks_warns_that_the_official_loader_needs_them(tmp_path):
    """The official code's load_network_pkl asserts that G, D and G_ema are all modules: a file with
    G_ema alone (what sg3lib.load of a generator gives) loads in sg3lib but not there, which the
    export now says. With all three it is silent."""
    from test_explore_helpers import make_G
    G = make_G()
    with pytest.warns(UserWarning, match=r"without D, G: the official code's load_network_pkl needs G, D and G_ema"):
        op.write_official_pkl(tmp_path / "g.pkl", {"G_ema": G})
    assert torch.equal(load(tmp_path / "g.pkl")["G_ema"].mapping.fc0.weight, G.mapping.fc0.weight)
    D = build_network("training.networks_stylegan2.Discriminator", dict(c_dim=0, img_resolution=16, img_channels=3,
                                                                          channel_base=128, channel_max=8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op.write_official_pkl(tmp_path / "all.pkl", {"G": G, "D": D, "G_ema": G})


def test_loading_an_official_pkl_warns_nothing(tmp_path, fixtures_dir):
    """The storage bounds check called TypedStorage.size(), whose deprecation warning every .pkl load
    then printed (sg3 info showed it as its own warning)."""
    path = official_pkl(tmp_path, fixtures_dir, g="sg3t_64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(path)


def test_a_device_torch_cannot_use_is_a_load_error_before_the_file_is_read(tmp_path, monkeypatch):
    """sg3lib.load(..., device='cuda') without a GPU was torch's 'Torch not compiled with CUDA enabled'
    (an AssertionError naming no file) after the whole file was read and built; 'gpu' a RuntimeError."""
    from sg3lib.explore import tiny_generator
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    read = []
    monkeypatch.setattr(loader, "_load_file", lambda *a: read.append(a))
    for device, why in (("cuda", "torch sees no CUDA GPU here; use cpu"), ("gpu", "'gpu' is not a torch device")):
        with pytest.raises(LoadError, match=f"cannot load {re.escape(str(tmp_path))}: device .*{why}"):
            load(tmp_path, device=device)
        with pytest.raises(ValueError, match=why):
            tiny_generator(device=device)
    assert read == []


def test_a_stylegan3_is_r_when_it_has_radial_filters_or_1x1_convolutions():
    from sg3lib.loader import arch_of
    g3 = "training.networks_stylegan3.Generator"
    assert [arch_of(g3, kw) for kw in ({}, {"use_radial_filters": True}, {"conv_kernel": 1}, {"conv_kernel": 3})] == [
        "stylegan3-t", "stylegan3-r", "stylegan3-r", "stylegan3-t"]
    assert arch_of("training.networks_stylegan2.Generator", {"conv_kernel": 1}) == "stylegan2"
    assert arch_of("training.networks_stylegan3.Discriminator", {}) == "discriminator"


def test_the_file_must_hold_a_weight_per_layer_and_the_bytes_it_states(monkeypatch):
    """The limits of the two checks of a file's sizes: one layer more than the file has weights for,
    and one weight more than its bytes hold (with no slack), are refused; the network as saved is not."""
    G = build_network("training.networks_stylegan2.Generator", dict(
        z_dim=8, w_dim=8, c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=8,
        mapping_kwargs={"num_layers": 1}))
    state = G.state_dict()
    spec = {"official_class": G.official_class, "init_kwargs": G.init_kwargs, "state_dict": state}
    too_deep = dict(spec, init_kwargs=dict(G.init_kwargs, mapping_kwargs={"num_layers": len(state) + 1}))
    with pytest.raises(LoadError, match=rf"states num_layers={len(state) + 1}, but the file holds only {len(state)}"):
        loader.build(too_deep)
    monkeypatch.setattr(loader, "_UNBACKED_SLACK", 0)
    loader.build(spec)  # every weight its own bytes
    a, b = next((a, b) for a in state for b in state if a < b and state[a].shape == state[b].shape
                and state[a].numel() > 1)
    shared = dict(state, **{b: state[a]})  # one weight the bytes of another: the file holds one fewer
    with pytest.raises(LoadError, match="the weights state"):
        loader.build(dict(spec, state_dict=shared))


def test_an_empty_zip_is_named_a_zip_that_is_no_network(tmp_path):
    import zipfile
    zipfile.ZipFile(tmp_path / "empty.pt", "w").close()  # only the end-of-directory record: PK\5\6
    with pytest.raises(LoadError, match="a ZIP archive, but not a PyTorch file"):
        sg3lib.load(tmp_path / "empty.pt")


def test_the_kind_of_generator_comes_from_its_state_and_else_from_its_source_text():
    """A StyleGAN3 synthesis network has an `input` layer and StyleGAN2's a `b4` block; only where the
    state shows neither does the embedded source (searched as text, never run) decide."""
    def generator(synthesis_modules, src=""):
        G = _module({"synthesis": _module(synthesis_modules)}, class_name="Generator")
        G.meta["module_src"] = src
        return G
    assert op.official_class_of(generator({"input": _module()})) == op.SG3_CLASS
    assert op.official_class_of(generator({"b4": _module()}, "class SynthesisInput:")) == op.SG2_CLASS
    assert op.official_class_of(generator({}, "class SynthesisInput(torch.nn.Module):")) == op.SG3_CLASS
    assert op.official_class_of(generator({}, "class SynthesisBlock(torch.nn.Module):")) == op.SG2_CLASS
    with pytest.raises(LoadError, match="class 'Generator' that sg3lib does not know"):
        op.official_class_of(generator({}))


class _WithScratch(torch.nn.Module):
    """A module with what torch's state_dict() leaves out: a non-persistent buffer, empty slots."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2, bias=False)
        self.register_buffer("kept", torch.ones(1))
        self.register_buffer("scratch", torch.zeros(3), persistent=False)
        self.register_buffer("gone", None)
        self.register_module("unused", None)
        self.in_size = np.array([36, 36])  # numbers are kept as attributes; objects are not
        self.objects = np.array([None], dtype=object)


def test_an_exported_module_reads_back_as_its_state_dict_and_keeps_its_training_flags():
    m = _WithScratch().train()
    m.layer.eval()
    exported = op.persistent_from_module(m)
    assert exported.state["_non_persistent_buffers_set"] == {"scratch"}
    flat = op.flatten_state(exported)
    assert list(flat) == list(m.state_dict()) == ["kept", "layer.weight"]
    assert all(torch.equal(flat[k], v) for k, v in m.state_dict().items())
    assert exported.state["training"] is True and exported.state["_modules"]["layer"].state["training"] is False
    assert np.array_equal(exported.state["in_size"], [36, 36]) and "objects" not in exported.state


def test_a_state_dict_export_puts_the_named_buffers_in_buffers():
    """The official loader trains what is in _parameters: w_avg there would be learned."""
    obj = op.persistent_from_state_dict(op.SG2_CLASS, {}, {"mapping.w_avg": torch.zeros(4),
                                                           "mapping.fc0.weight": torch.ones(4, 4)}, {"w_avg"})
    mapping = obj.state["_modules"]["mapping"].state
    assert list(mapping["_buffers"]) == ["w_avg"] and not mapping["_parameters"]
    weight = mapping["_modules"]["fc0"].state["_parameters"]["weight"]
    assert isinstance(weight, torch.nn.Parameter) and torch.equal(weight, torch.ones(4, 4))


def test_more_positional_arguments_than_the_official_constructor_takes_is_a_load_error(tmp_path):
    path = op.write_official_pkl(tmp_path / "d.pkl", {"D": _tiny_d(_init_args=tuple(range(13)))})
    with pytest.raises(LoadError, match=r"d\.pkl: Discriminator has 13 positional constructor arguments"):
        load(path)


def test_a_bare_pickled_network_is_read_as_g_ema_or_d(tmp_path, fixtures_dir):
    """pickle.dump(G) instead of the snapshot dict: a Generator is G_ema, a Discriminator D."""
    for name, key in (("sg3t_64", "G_ema"), ("d_64", "D")):
        path = tmp_path / f"{name}.pkl"
        with open(path, "wb") as f:
            op.dump_official(persistent(fixtures_dir, name), f)
        assert list(op.read_official_pkl(path)["networks"]) == [key]


def test_an_unknown_persistence_version_is_read_with_a_warning(tmp_path):
    d = _tiny_d()
    d.meta["version"] = 5
    path = op.write_official_pkl(tmp_path / "v5.pkl", {"D": d})
    with pytest.warns(UserWarning, match=r"v5\.pkl: D uses persistence format version 5 \(sg3lib knows 6\)"):
        assert op.read_official_pkl(path)["networks"]["D"]["persistence_version"] == 5


def test_an_empty_dict_is_not_taken_for_a_state_dict(tmp_path):
    with pytest.raises(LoadError, match=r"\(found \[\]; expected a dict with G, D and/or G_ema networks\)$"):
        op.read_official_pkl(_write(tmp_path / "empty.pkl", {}))


def test_a_protocol_2_export_uses_only_protocol_2_opcodes(tmp_path, fixtures_dir):
    """Protocol 2 is for loaders of its age, which know no STACK_GLOBAL (protocol 4)."""
    path = op.write_official_pkl(tmp_path / "p2.pkl", {"D": persistent(fixtures_dir, "d_64")}, protocol=2)
    assert {code.name for code, _, _ in pickletools.genops(path.read_bytes()) if code.proto > 2} == set()
    assert set(load(path)["D"].state_dict()) == set(fixture(fixtures_dir, "d_64")[1])


@pytest.mark.parametrize("name,kimg", [("network-snapshot-001000.pkl", 1000.0),
                                       ("runs/00003/network-snapshot-000120.pkl", 120.0),
                                       ("stylegan3-t-ffhq-1024.pkl", None), ("network-snapshot-final.pkl", None)])
def test_the_kimg_is_read_only_from_snapshot_names(name, kimg):
    """A released model's name ends in its resolution, not a training counter."""
    assert op.kimg_from_name(name) == kimg


class _Reduced:
    """Pickles as `fn(*args)`, with `state` set on the result by BUILD when it is given."""
    def __init__(self, fn, args, *state):
        self.reduced = (fn, args, *state)

    def __reduce__(self):
        return self.reduced


def _restricted_roundtrip(obj):
    return op.unpickle_restricted(io.BytesIO(pickle.dumps(obj, protocol=4)))


@pytest.mark.parametrize("spec, shown", [("M8[s]", "datetime64[s]"), ("m8[ms]", "timedelta64[ms]"), ("O", "object"),
                                         ("U4", "<U4"), ("S2", "|S2"), ("V8", "|V8"),
                                         ([("a", "<f4"), ("b", "<i4")], "[('a', '<f4'), ('b', '<i4')]"), (("<f4", (2,)), "('<f4', (2,))"),
                                         (("<i4", {"re": ("<i2", 0), "im": ("<i2", 2)}), "(numpy.int32, [('re', '<i2')")])
def test_numpy_dtypes_other_than_plain_numbers_are_refused(spec, shown):
    """Official snapshots hold number arrays only; datetimes are where numpy's own setstate crashes the
    process, and records or sub-arrays hide other kinds inside a number-looking dtype (an int32 with
    fields is of kind "i", like a plain one)."""
    with pytest.raises(LoadError, match=re.escape(f"a numpy array of dtype {shown}") + ".*StyleGAN snapshots hold numbers only"):
        _restricted_roundtrip(_Reduced(np.dtype, (spec, False, True)))


@pytest.mark.parametrize("spec", ["<f4", ">f8", "|b1", "<i8", "|u1", "<f2", "<c8"])
def test_plain_number_dtypes_read_back_as_pickle_itself_reads_them(spec):
    dtype, array = np.dtype(spec), np.arange(3).astype(spec)
    assert _restricted_roundtrip(dtype) == pickle.loads(pickle.dumps(dtype, protocol=4))
    read = _restricted_roundtrip(array)
    assert read.dtype == pickle.loads(pickle.dumps(array, protocol=4)).dtype and read.tolist() == array.tolist()


@pytest.mark.parametrize("state", [(5, "<", None, None, None, -1, -1, 0), (2, "<", None, None, None, -1, -1, 0),
                                   (3, "x", None, None, None, -1, -1, 0), (3, "<", None, None, None, -1, -1, 1),
                                   (3, "<", ("a",), {"a": (np.dtype("<f4"), 0)}, None, 4, 1, 16),
                                   (3, "<", None, None, None, -1, -1), [3, "<", None, None, None, -1, -1, 0]])
def test_a_dtype_state_other_than_a_plain_numbers_is_refused_before_numpy_sees_it(state):
    target = type(np.dtype("<f4")).__name__
    with pytest.raises(op.UnsafePickleError, match=f"tries to set the state of a {target}"):
        _restricted_roundtrip(_Reduced(np.dtype, ("f4", False, True), state))


@pytest.mark.parametrize("state", [(3, "<", None, None, None, -1, -1, 0), (4, ">", None, None, None, -1, -1, 0, None),
                                   (3, "=", None, None, None, -1, -1, 0), (3, "|", None, None, None, -1, -1, 0)])
def test_the_states_numpy_writes_for_plain_numbers_are_set(state):
    dtype = _restricted_roundtrip(_Reduced(np.dtype, ("f4", False, True), state))
    assert dtype.kind == "f" and dtype.itemsize == 4
    assert (dtype.byteorder == ">") == (state[1] == ">" and sys.byteorder == "little")


def _text_op(t):
    """Pickle's BINUNICODE opcode for the string `t`."""
    b = t.encode()
    return b"X" + len(b).to_bytes(4, "little") + b


def test_a_persistent_object_whose_state_the_pickle_changes_later_is_refused_naming_the_file(tmp_path):
    """The memo lets a pickle make a network from a well-formed meta, then set meta['state'] to 1: that is
    caught where the state is used, and the error names the file like every other."""
    path = tmp_path / "late.pkl"
    path.write_bytes(b"\x80\x02}q\x00" + _text_op("D") + b"ctorch_utils.persistence\n_reconstruct_persistent_obj\n"
                     + b"}q\x01(" + _text_op("type") + _text_op("class") + _text_op("version") + b"K\x06"
                     + _text_op("state") + b"}" + _text_op("class_name") + _text_op("Discriminator") + b"u\x85R"
                     + b"s" + b"h\x01" + _text_op("state") + b"K\x01s0.")  # {'D': net}; then meta['state'] = 1
    with pytest.raises(LoadError, match=r"late\.pkl: a torch_utils\.persistence object without the expected"):
        load(path)


def test_a_persistent_object_of_another_type_than_class_is_refused(tmp_path):
    d = _tiny_d()
    d.meta["type"] = "object"
    path = op.write_official_pkl(tmp_path / "odd.pkl", {"D": d})
    with pytest.raises(LoadError, match=r"odd\.pkl: a torch_utils\.persistence object without the expected"):
        load(path)


@pytest.mark.parametrize("state", [
    {"_buffers": None, "_non_persistent_buffers_set": None, "_init_args": None},
    {"_non_persistent_buffers_set": frozenset()}, {"_non_persistent_buffers_set": []}, {"_init_args": []}],
    ids=["none", "frozenset", "list", "args-list"])
def test_empty_module_fields_may_be_none_and_sets_and_args_other_sequences(tmp_path, state):
    """What other writers (and older versions of the format) put there: read as the empty field."""
    path = op.write_official_pkl(tmp_path / "d.pkl", {"D": _tiny_d(**state)})
    assert list(op.read_official_pkl(path)["networks"]["D"]["state_dict"]) == ["w"]


def test_a_malformed_field_of_a_sub_module_is_named_by_its_path(tmp_path):
    d = op.persistent_from_state_dict(op.D_CLASS, {"c_dim": 0, "img_resolution": 4, "img_channels": 3},
                                      {"b4.conv.weight": torch.zeros(2)})
    d.state["_modules"]["b4"].state["_modules"]["conv"].state["_parameters"] = (1, 2)
    path = op.write_official_pkl(tmp_path / "odd.pkl", {"D": d})
    with pytest.raises(LoadError, match=r"odd\.pkl: b4\.conv's _parameters is a tuple, not a dict"):
        load(path)


def test_weights_read_from_a_pickle_are_plain_tensors_in_the_networks_own_order(tmp_path):
    """Official G (not G_ema) parameters are pickled requiring gradients: what read_official_pkl gives is
    detached, and named in the order state_dict() names them (layer 10 after layer 2, not before)."""
    from test_explore_helpers import make_G
    G = make_G()
    obj = op.persistent_from_module(G)
    for m in (obj, obj.state["_modules"]["mapping"]):
        m.state["_parameters"] = {k: torch.nn.Parameter(v.detach().clone()) for k, v in m.state["_parameters"].items()}
    path = op.write_official_pkl(tmp_path / "g.pkl", {"G": obj})
    state = op.read_official_pkl(path)["networks"]["G"]["state_dict"]
    assert list(state) == list(G.state_dict()) and sorted(state) != list(state)
    assert not any(v.requires_grad or isinstance(v, torch.nn.Parameter) for v in state.values())


def test_kwargs_nested_too_deep_to_copy_are_a_load_error(tmp_path):
    """Constructor arguments nested 20,000 lists deep (21 kB): copying them recursed past Python's limit."""
    d = op.persistent_from_state_dict(op.D_CLASS, {"c_dim": 0, "img_resolution": 4, "img_channels": 3,
                                                   "deep": "PLACEHOLDER"}, {"w": torch.zeros(2)})
    path = op.write_official_pkl(tmp_path / "deep.pkl", {"D": d}, protocol=2)
    placeholder = _text_op("PLACEHOLDER")
    assert path.read_bytes().count(placeholder) == 1
    path.write_bytes(path.read_bytes().replace(placeholder, b"(" * 20_000 + b"]" + b"l" * 20_000))  # [[[...]]]
    with pytest.raises(LoadError, match=r"deep\.pkl: not a well-formed StyleGAN snapshot \(RecursionError"):
        load(path)


def test_a_refused_global_names_the_file_once(tmp_path):
    path = _write(tmp_path / "evil.pkl", _System("echo no"))
    with pytest.raises(op.UnsafePickleError) as e:
        load(path)
    assert str(e.value).count(str(path)) == 1


def test_both_spellings_of_easydict_are_read(tmp_path, monkeypatch):
    monkeypatch.setattr(op, "_EASYDICT", op._Global("dnnlib", "EasyDict", op.EasyDict))
    path = op.write_official_pkl(tmp_path / "d.pkl", {"D": _tiny_d()})
    assert ("dnnlib", "EasyDict") in globals_in(path) and ("dnnlib.util", "EasyDict") not in globals_in(path)
    assert op.read_official_pkl(path)["networks"]["D"]["init_kwargs"]["img_resolution"] == 4


def test_an_export_names_each_global_once_as_pickle_does(tmp_path):
    """Later uses refer back to the memo, as the stock pickler (and so the official code) writes them."""
    from test_explore_helpers import make_G
    path = op.write_official_pkl(tmp_path / "g.pkl", {"G": make_G()})
    lookups = sum(opcode.name == "STACK_GLOBAL" for opcode, _, _ in pickletools.genops(path.read_bytes()))
    assert lookups == len(globals_in(path)) and ("dnnlib.util", "EasyDict") in globals_in(path)


def test_the_augment_pipe_given_is_written(tmp_path):
    pipe = _module(class_name="AugmentPipe")
    path = op.write_official_pkl(tmp_path / "d.pkl", {"D": _tiny_d()}, augment_pipe=pipe)
    with open(path, "rb") as f:
        assert op.unpickle_restricted(f)["augment_pipe"].class_name == "AugmentPipe"


def test_an_sg3lib_snapshot_downloads_too_under_a_cache_name_of_plain_characters(tmp_path, served):
    """A torch zip (PK...) is a network file as much as a pickle; the cached copy's name keeps only letters,
    digits and ._- of the URL's file name, or is 'download' where the URL names no file."""
    from sg3lib import checkpoint as ck
    from test_explore_helpers import make_G
    snap = tmp_path / "snapshot-000004.pt"
    ck.save_snapshot(snap, ck.snapshot_from_networks({"G_ema": make_G()}))
    body = snap.read_bytes()
    s = served({"/runs/my%20run%20(1).pt": (body, "application/octet-stream", None),
                "/": (body, "application/octet-stream", None)})
    nets = load(s.url + "/runs/my%20run%20(1).pt", progress=False)
    assert nets["meta"]["format"] == "sg3lib-snapshot"
    assert re.fullmatch(r"[0-9a-f]{16}-my_20run_20_1_\.pt", Path(nets["meta"]["local_path"]).name)
    assert Path(load(s.url + "/", progress=False)["meta"]["local_path"]).name.endswith("-download")


def test_an_empty_file_in_the_cache_is_downloaded_again(tmp_path, server):
    url = server.url + "/network-snapshot-000040.pkl"
    cached = loader.download(url, progress=False)
    cached.write_bytes(b"")  # (a disk that filled up as an older sg3lib wrote it)
    assert load(url, progress=False)["D"].img_resolution == 64 and cached.stat().st_size > 0
    assert server.hits["/network-snapshot-000040.pkl"] == 2


def test_a_download_larger_than_the_free_space_is_refused_before_it_starts(tmp_path, server, monkeypatch):
    monkeypatch.setattr(loader.shutil, "disk_usage", lambda folder: collections.namedtuple("u", "total used free")(
        10 ** 6, 10 ** 6 - 100, 100))
    with pytest.raises(LoadError, match=r"does not fit in .*cache.downloads \(100 bytes free\); free space there "
                                        r"or set SG3LIB_CACHE"):
        load(server.url + "/network-snapshot-000040.pkl", progress=False)


def test_a_disk_that_fills_up_during_a_download_is_named_so(tmp_path, server, monkeypatch):
    import errno

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(loader.os, "fsync", no_space)
    with pytest.raises(LoadError, match=r"not enough space in .*downloads for the download; free space there"):
        load(server.url + "/network-snapshot-000040.pkl", progress=False)
    assert list((tmp_path / "cache" / "downloads").iterdir()) == []


@pytest.mark.parametrize("resolution, expect", [(4, "cannot build"), (8, "the weights do not fit")])
def test_a_downloaded_file_that_does_not_build_is_not_worth_downloading_again(tmp_path, served, resolution, expect):
    """A network that cannot be built, or weights that do not fit it, are the file's (as published), not a
    bad download."""
    d = op.persistent_from_state_dict(op.D_CLASS, {"c_dim": 0, "img_resolution": resolution, "img_channels": 3},
                                      {"w": torch.zeros(2)})
    path = op.write_official_pkl(tmp_path / "d.pkl", {"D": d})
    s = served({"/d.pkl": (path.read_bytes(), "application/octet-stream", None)})
    with pytest.raises(LoadError, match=expect) as e:
        load(s.url + "/d.pkl", progress=False)
    assert f"downloaded from {s.url}/d.pkl to " in str(e.value) and "delete it" not in str(e.value)


def test_a_scheme_in_capitals_is_still_a_url(server):
    url = server.url.replace("http://", "HTTP://") + "/network-snapshot-000040.pkl"
    assert load(url, progress=False)["meta"]["source"] == url


def test_only_torchs_allocation_failures_are_taken_for_a_lack_of_memory():
    short = loader.short_of_memory("f.pkl", RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried "
                                                         "to allocate 4 bytes.\n" + "frame\n" * 50))
    assert isinstance(short, MemoryError) and "(DefaultCPUAllocator: can't allocate memory: you tried to allocate 4 " \
        "bytes.); the file itself may well be whole" in str(short)
    assert "(MemoryError); the file" in str(loader.short_of_memory("f.pkl", MemoryError()))
    assert len(str(loader.short_of_memory("f.pkl", MemoryError("x" * 1000)))) < 600
    assert loader.short_of_memory("f.pkl", ValueError("not enough memory in the header")) is None


def test_weights_may_share_bytes_up_to_64_mib_more_than_the_file_holds():
    four_bytes = torch.zeros(1)
    loader._check_backed({"w": four_bytes.expand(15 << 20)}, "f.pkl")  # 60 MiB stated
    with pytest.raises(LoadError, match=r"f\.pkl: the weights state 71,303,168 bytes but the file holds 4 bytes"):
        loader._check_backed({"w": four_bytes.expand(17 << 20)}, "f.pkl")


def test_weights_that_do_not_fit_are_listed_missing_unexpected_and_five_at_most():
    G = build_network("training.networks_stylegan2.Generator", dict(
        z_dim=8, w_dim=8, c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=8))
    state = G.state_dict()
    spec = {"official_class": G.official_class, "init_kwargs": G.init_kwargs}
    names = list(state)
    with pytest.raises(LoadError, match=rf"missing \['{re.escape(names[0])}'\], unexpected \['extra.weight'\], "
                                        r"shape mismatch \[\]"):
        loader.build(dict(spec, state_dict={**{k: state[k] for k in names[1:]}, "extra.weight": torch.zeros(1)}))
    with pytest.raises(LoadError, match=re.escape(f"missing {names[:5]}..., unexpected []")):
        loader.build(dict(spec, state_dict={k: state[k] for k in names[6:]}))


def test_sg3_info_of_a_renamed_snapshot_of_one_channel(tmp_path, capsys):
    """Only sg3lib's own name 'snapshot-<images>.pt' gives the kimg (a copy renamed by hand may hold anything);
    one channel is singular."""
    from sg3lib import checkpoint as ck
    from sg3lib.explore.generate import tiny_generator
    path = ck.save_snapshot(tmp_path / "snapshot-000040-before-edit.pt",
                            ck.snapshot_from_networks({"G_ema": tiny_generator(img_channels=1)}))
    assert load(path)["meta"]["kimg"] is None
    assert sg3_main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "kimg          unknown\n" in out and "resolution    16x16, 1 channel\n" in out


def test_a_snapshot_says_whether_it_can_resume_and_keeps_its_runs_config(tmp_path):
    from sg3lib import checkpoint as ck
    from sg3lib.explore.generate import tiny_generator
    G = tiny_generator()
    bare = ck.save_snapshot(tmp_path / "a.pt", ck.snapshot_from_networks({"G_ema": G}))
    meta = load(bare)["meta"]
    assert meta["has_training_state"] is False and meta["config"] == meta["init_kwargs"]
    run = ck.save_snapshot(tmp_path / "b.pt", ck.snapshot_from_networks(
        {"G_ema": G}, meta={"config": {"batch": 4, "gamma": 2.0}}, training_state={"step": 3}))
    meta = load(run)["meta"]
    assert meta["has_training_state"] is True and meta["config"] == {"batch": 4, "gamma": 2.0}


def test_g_ema_is_the_generator_a_file_is_described_by(tmp_path):
    """Where G and G_ema differ (a crafted or mixed-up file), the one used for images is described."""
    from sg3lib import checkpoint as ck
    from sg3lib.explore.generate import tiny_generator
    path = ck.save_snapshot(tmp_path / "a.pt", ck.snapshot_from_networks(
        {"G": tiny_generator(resolution=16), "G_ema": tiny_generator(resolution=32)}))
    nets = load(path)
    assert nets["meta"]["init_kwargs"]["img_resolution"] == 32 and loader.describe(nets)["img_resolution"] == 32


def test_an_ordereddict_of_more_int_keys_than_a_snapshot_has_is_refused():
    """OrderedDict([(0, 0), (1, 0), ...]) called with its list: its keys are counted before it is built."""
    pairs = b"".join(b"M" + i.to_bytes(2, "little") + b"K\x00\x86" for i in range(1001))
    data = b"\x80\x02ccollections\nOrderedDict\n](" + pairs + b"e\x85R."
    with pytest.raises(LoadError, match="more than 1000 keys that are not text"):
        op.unpickle_restricted(io.BytesIO(data))


@pytest.mark.parametrize("data, expect", [
    (b"\x80\x02c__builtin__\nbytes\nK\x05\x85R.", "bytes of a int; pickles write bytes as data"),
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x06\x00\x00\x00utf-16\x86R.",
     r"_codecs.encode\(str, 'utf-16'\); pickles use \(str, 'latin1'\)")], ids=["bytes-of-n", "codecs-utf16"])
def test_bytes_are_made_only_as_pickle_writes_them(data, expect):
    with pytest.raises(LoadError, match=expect):
        op.unpickle_restricted(io.BytesIO(data))


def test_array_and_tensor_rebuilds_take_only_what_pickles_give_them():
    from sg3lib.compat import restricted
    allowed = restricted.size_checked_globals(1 << 20)
    reconstruct = allowed[("numpy._core.multiarray", "_reconstruct")]
    for shape in ((-5,), (2, "3")):
        with pytest.raises(LoadError, match=re.escape(f"a numpy array with shape {shape!r}; expected a tuple of sizes")):
            reconstruct(restricted.NDARRAY, shape, "f4")
    with pytest.raises(LoadError, match="numpy _reconstruct of type; expected numpy.ndarray"):
        reconstruct(np.ndarray, (1,), "f4")
    with pytest.raises(LoadError, match="a tensor on a bytes, not on a tensor storage"):
        allowed[("torch._utils", "_rebuild_tensor_v2")](b"1234", 0, (1,), (1,), False, OrderedDict())


@pytest.mark.parametrize("data", [b"\x80\x04N" + b"\x94" * 2_000_000 + b".", b"\x80\x04" + b"(" * 2_000_000 + b"N."],
                         ids=["memo-entries", "marks"])
def test_memo_entries_and_marks_count_as_what_they_build(tmp_path, data):
    """One byte each in the file: a memo entry (a dict slot and its key) or a mark (a new list for the stack)."""
    with pytest.raises(LoadError, match=r"builds more than [\d,]+ bytes of objects from a file of 2,000,00\d bytes"):
        op.unpickle_restricted(io.BytesIO(data))


def test_a_storage_is_exactly_the_elements_it_declares_and_holds():
    """One float more than the data holds, or an element count in the id unlike the one before the data:
    a storage of other sizes than the file states (read short, or past what the tensor expects)."""
    from sg3lib.compat import restricted
    assert restricted.load_storage_from_bytes(_legacy_storage_blob(6)).size() == 6
    with pytest.raises(LoadError, match="an embedded tensor storage declares 28 bytes, more than"):
        restricted.load_storage_from_bytes(_legacy_storage_blob(7))
    blob = _legacy_storage_blob(6).replace(b"\x8a\x08" + (6).to_bytes(8, "little") + b"N",
                                           b"\x8a\x08" + (5).to_bytes(8, "little") + b"N", 1)
    with pytest.raises(LoadError, match="declares 5 elements but its data says 6"):
        restricted.load_storage_from_bytes(blob)
