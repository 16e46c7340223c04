"""A pickle reader that calls nothing outside an allow-list and trusts no size written in the file.

It is the pure-Python `pickle._Unpickler`, because the C one cannot be changed opcode by opcode:

- `find_class` (in `official_pkl`) hands out only allow-listed names, sealed against the BUILD
  opcode (`_Frozen`, `_Sealed`); BUILD itself is accepted only on numpy arrays, plain numpy
  dtypes and EasyDicts, the only objects the official format sets state on.
- EXT1/EXT2/EXT4 are refused: they name globals through copyreg's extension registry, and the
  stock unpicklers take a name found in that registry's cache without calling `find_class`.
- No length, shape or element count from the file is allocated before it is checked against the
  file's size: reads are capped at what the file has left (a length that lies reads short and is
  reported as truncation), array shapes and tensor sizes are checked (`size_checked_globals`), and
  embedded tensor storages are parsed here (`load_storage_from_bytes`), not by torch.load.
- What the pickle builds from those sizes is metered too (`_metered`): every opcode is charged the
  bytes of the objects it makes or grows, and a pickle that builds more than a few times its own
  size is refused. Without it, a file of empty sets (one byte each, 216 bytes in memory) took 245
  times its size, and calls on one memoized object (bytearray of the same bytes, again and again)
  took memory quadratic in the file's size. Constructors that make one object per element (set,
  OrderedDict, EasyDict, torch.Size) take only lists from the file (`check_listed`): the meter sees
  a call's result only once it is built, and OrderedDict of a tensor made 900 times the file's size.
- numpy dtypes are plain numbers only: numpy's own dtype.__setstate__ crashes the process on
  some malformed datetime states.
"""
import collections
import io
import math
import pickle
import struct
import sys

import numpy as np
import torch

from ..loader import LoadError

_NOTHING_RAN = "Nothing from the file was executed."


class UnsafePickleError(LoadError):
    """The pickle asks for a callable outside the allow-list; nothing from it was run."""


class _Sealed(type):
    """Metaclass of classes the unpickler hands out by name: their attributes cannot be set.

    The BUILD opcode does `setattr(obj, name, value)` on whatever object is on the stack, the
    allowed globals included; an unsealed class would be changed for the whole process, even by
    a pickle that is refused a few opcodes later.
    """

    def __setattr__(cls, name, value):
        raise UnsafePickleError(f"refused to load: the pickle tries to set {cls.__name__}.{name}. {_NOTHING_RAN}")

    def __delattr__(cls, name):
        raise UnsafePickleError(f"refused to load: the pickle tries to delete {cls.__name__}.{name}. {_NOTHING_RAN}")


class _Frozen:
    """An allowed function as the unpickler hands it out: calling it calls the function, but a
    BUILD opcode cannot change it (handed out bare, e.g. torch's own `_rebuild_tensor_v2` would
    get new `__defaults__` for every later torch.load in the process)."""
    __slots__ = ("_fn",)

    def __init__(self, fn):
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __setstate__(self, state):
        raise UnsafePickleError(f"refused to load: the pickle tries to change {self._fn.__qualname__}. {_NOTHING_RAN}")

    def __setattr__(self, name, value):
        self.__setstate__(None)

    def __delattr__(self, name):
        self.__setstate__(None)


def file_size(f):
    """Bytes from the current position of a seekable binary file to its end."""
    here = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(here)
    return end - here


class _CappedReader:
    """The file as the unpickler reads it: a read asks for no more than the file has left, so a
    length field that lies gives a short read (reported as truncation), not a huge allocation."""

    def __init__(self, f):
        self._f, self._end = f, f.tell() + file_size(f)

    def read(self, n):
        return self._f.read(max(0, min(n, self._end - self._f.tell())))

    def readline(self):
        return self._f.readline()


def _too_big(what, nbytes, limit):
    return LoadError(f"{what} declares {nbytes:,} bytes, more than the {limit:,} bytes the file holds: "
                     "the file is corrupt or crafted")


_PLAIN_DTYPE_KINDS = "biufc"  # bool, signed, unsigned, float, complex
_PLAIN_DTYPE_STATE_TAILS = ((None, None, None, -1, -1, 0), (None, None, None, -1, -1, 0, None))


def plain_dtype(spec, align=False, copy=True):
    """numpy.dtype for the allow-list: numbers only (no datetimes, objects, records, strings)."""
    dtype = np.dtype(spec, align, copy)
    if dtype.kind not in _PLAIN_DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise LoadError(f"a numpy array of dtype {dtype!s}; StyleGAN snapshots hold numbers only")
    return dtype


def _plain_dtype_state(state):
    """The state numpy pickles for a plain number dtype: (version, byte order, then fixed fields)."""
    return (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
            and state[1] in ("<", ">", "|", "=") and state[2:] in _PLAIN_DTYPE_STATE_TAILS)


def check_listed(name, args, kinds=(list, tuple)):
    """LoadError unless `args` is empty or one list/tuple written in the file: given an array or a
    tensor, set, dict and the like make one Python object per element (per row), all of it before
    the memory meter sees the result (OrderedDict of a [N, 2] tensor: 900 times the file's size)."""
    if args and (len(args) > 1 or not isinstance(args[0], kinds)):
        raise LoadError(f"{name} of a {type(args[0]).__name__}; pickles build it from a list")


# Keys other than text (whose hash is salted per process) that one dict or set may take: ints, floats
# and tuples hash predictably, and n keys of one hash cost n**2 / 2 comparisons to insert (50,000
# in a 500 kB file: 25 s). Official snapshots key their dicts by name.
MAX_HASHED_KEYS = 1000


def check_hashed_keys(keys, already=0):
    """already + the keys in `keys` that are not text; LoadError past MAX_HASHED_KEYS."""
    n = already + sum(type(k) is not str for k in keys)
    if n > MAX_HASHED_KEYS:
        raise LoadError(f"a dict or set with more than {MAX_HASHED_KEYS} keys that are not text, which no StyleGAN "
                        "snapshot has: the file is corrupt or crafted")
    return n


def _only_listed(fn):
    """`fn` for the allow-list, called only on a list or tuple written in the file (set, frozenset,
    torch.Size, OrderedDict; see check_listed)."""
    def checked(*args):
        check_listed(fn.__name__, args)
        if args and fn in (set, frozenset):
            check_hashed_keys(args[0])
        elif args and fn is collections.OrderedDict:
            check_hashed_keys(p[0] for p in args[0] if isinstance(p, (tuple, list)) and p)
        return fn(*args)
    checked.__qualname__ = fn.__qualname__
    return checked


def _bytearray_of_data(*args):
    """bytearray for the allow-list: from bytes (protocol 3+) or (str, 'latin-1') (protocol 2),
    never `bytearray(n)`, which would allocate and zero n bytes that the file does not hold."""
    from_bytes = len(args) == 1 and isinstance(args[0], bytes)
    from_text = len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin-1", "latin1")
    if args and not (from_bytes or from_text):
        raise LoadError(f"bytearray of a {type(args[0]).__name__}; pickles build it from bytes")
    return bytearray(*args)


def _empty_bytes(*args):
    """bytes for the allow-list: protocols 0-2 write b'' as `bytes()`; `bytes(n)` would allocate n zeros."""
    if args:
        raise LoadError(f"bytes of a {type(args[0]).__name__}; pickles write bytes as data")
    return b""


def _latin1_encode(text, encoding):
    """_codecs.encode as protocol 2 writes bytes: `encode(str, 'latin1')`, nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise LoadError(f"_codecs.encode({type(text).__name__}, {encoding!r}); pickles use (str, 'latin1')")
    return text.encode("latin-1")


class _NdarrayToken:
    """What find_class gives for numpy.ndarray: only `_reconstruct` accepts it, so a pickle cannot
    call or NEWOBJ the class with a shape the file does not hold."""
    __slots__ = ()

    def __reduce__(self):
        raise TypeError("not picklable")


NDARRAY = _NdarrayToken()


def _count(shape, what):
    if not isinstance(shape, (tuple, list)) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise LoadError(f"{what} with shape {shape!r}; expected a tuple of sizes")
    return math.prod(shape)


def _check_within(storage, offset, size, stride):
    """A tensor's elements must lie in its storage: torch's set_ grows a storage (from bytes, resizable)
    to reach an offset or stride past its end, which would fill the weights with memory the file never
    held, gigabytes of it for a few bytes of offset."""
    if not (isinstance(offset, int) and offset >= 0 and isinstance(stride, (tuple, list))
            and len(stride) == len(size) and all(isinstance(n, int) and n >= 0 for n in stride)):
        raise LoadError(f"a tensor with offset {offset!r} and strides {stride!r} for shape {tuple(size)}; "
                        "expected sizes of its storage: the file is corrupt or crafted")
    elements = storage._untyped_storage.nbytes() // storage.dtype.itemsize  # (storage.size() warns: deprecated)
    if math.prod(size) and offset + sum((n - 1) * st for n, st in zip(size, stride)) >= elements:
        raise LoadError(f"a tensor of shape {tuple(size)} (offset {offset}, strides {tuple(stride)}) reaches past "
                        f"the end of its storage of {elements} elements: the file is corrupt or crafted")


def _numpy_core():
    return getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core


def size_checked_globals(limit):
    """The allowed functions that allocate by a size written in the file, each checking that the
    size fits in `limit` bytes (the file's size) before anything is allocated."""
    core = _numpy_core()

    def ndarray_reconstruct(subtype, shape, dtype):
        if subtype is not NDARRAY:
            raise LoadError(f"numpy _reconstruct of {type(subtype).__name__}; expected numpy.ndarray")
        dtype = plain_dtype(dtype)
        nbytes = _count(shape, "a numpy array") * dtype.itemsize
        if nbytes > limit:
            raise _too_big("a numpy array", nbytes, limit)
        return core.multiarray._reconstruct(np.ndarray, shape, dtype)

    def tensor_checked(rebuild):
        def rebuild_checked(storage, storage_offset, size, stride, *rest):
            if not isinstance(storage, torch.storage.TypedStorage):
                raise LoadError(f"a tensor on a {type(storage).__name__}, not on a tensor storage")
            nbytes = _count(size, "a tensor") * storage.dtype.itemsize
            if nbytes > limit:  # a zero stride could make a tiny storage look huge
                raise _too_big("a tensor", nbytes, limit)
            _check_within(storage, storage_offset, size, stride)
            return rebuild(storage, storage_offset, size, stride, *rest)
        rebuild_checked.__qualname__ = rebuild.__qualname__
        return rebuild_checked

    allowed = {("torch._utils", "_rebuild_tensor"): tensor_checked(torch._utils._rebuild_tensor),
               ("torch._utils", "_rebuild_tensor_v2"): tensor_checked(torch._utils._rebuild_tensor_v2)}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ndarray_reconstruct
    return allowed


def plain_globals():
    """Allowed names that need no size check: builtins and torch/numpy helpers, checked as above."""
    core = _numpy_core()
    allowed = {
        ("builtins", "set"): _only_listed(set),
        ("builtins", "frozenset"): _only_listed(frozenset),
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): _bytearray_of_data,
        ("builtins", "bytes"): _empty_bytes,
        ("_codecs", "encode"): _latin1_encode,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): load_storage_from_bytes,
        ("torch", "Size"): _only_listed(torch.Size),
        ("torch", "device"): torch.device,
        ("numpy", "ndarray"): NDARRAY,
        ("numpy", "dtype"): plain_dtype,
    }
    if hasattr(torch._utils, "_rebuild_parameter_with_state"):
        allowed[("torch._utils", "_rebuild_parameter_with_state")] = torch._utils._rebuild_parameter_with_state
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = core.multiarray.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):  # arrays under pickle protocol 5
        allowed[(mod, "_frombuffer")] = core.numeric._frombuffer
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed[("torch", name)] = getattr(torch, name)
    return allowed


# ---------------------------------------------------------------------------------------------
# Memory: what the opcodes build, charged against a budget of a few times the file's size

# An official snapshot builds about 2.2 times its size (its storage blobs as bytes, then as
# storages), up to ~5 for a network of tiny layers (tuples and tensors outweigh the weights).
MEMORY_FACTOR = 8
MEMORY_SLACK = 64 << 20  # for small files, whose dicts and tuples outweigh their bytes
_SLOT = 8  # a reference on the stack or in a container
_TENSOR_IMPL = 512  # a tensor's C++ part, which sys.getsizeof does not see
_MEMO_KEY = 32  # the int key of a memo entry
# Tuples and frozensets nested deeper than this are refused: hashing one (a dict key, a set
# member) recurses in C without a guard, and 300,000 levels (a 300 kB file) crash the process.
# Official snapshots nest a few levels.
MAX_NESTING = 100


def _footprint(obj):
    """Bytes `obj` holds itself, not counting what it refers to: sys.getsizeof counts a container's
    table, the data of bytes, str, an array that owns it and a storage; plus an instance's __dict__."""
    if isinstance(obj, torch.Tensor):  # a view of a storage charged when it was made
        return object.__sizeof__(obj) + _TENSOR_IMPL
    if isinstance(obj, torch.storage.TypedStorage):  # (its own getsizeof warns that it is deprecated)
        return object.__sizeof__(obj) + obj._untyped_storage.nbytes()
    size = sys.getsizeof(obj, 64)
    if type(obj).__dictoffset__:
        size += sys.getsizeof(obj.__dict__, 64)
    return size


def _pushes(load):
    """An opcode that pushes a new object (a number, text, a container, a call's result)."""
    def run(self):
        load(self)
        obj = self.stack[-1]
        self.charge(_SLOT + _footprint(obj))
        if isinstance(obj, (tuple, frozenset)):
            self.check_nesting(obj)
    return run


def _grows(load, target):
    """An opcode that adds to an object on the stack (APPENDS, SETITEMS, BUILD...): its growth."""
    def run(self):
        try:
            obj = target(self)
        except IndexError:  # a malformed stack: the opcode itself says so
            obj = None
        before = _footprint(obj)
        load(self)
        self.charge(max(0, _footprint(obj) - before))
    return run


def _keyed(load, container_and_keys):
    """An opcode that hashes keys into a dict or set: they are counted before they go in."""
    def run(self):
        try:
            container, keys = container_and_keys(self)
        except IndexError:  # a malformed stack: the opcode itself says so
            container, keys = None, ()
        self.count_keys(container, keys)
        load(self)
    return run


def _memoizes(load):
    def run(self):
        before = sys.getsizeof(self.memo)
        load(self)
        self.charge(_MEMO_KEY + sys.getsizeof(self.memo) - before)
    return run


def _refers(load, nbytes=_SLOT):
    """Any other opcode: a reference to an existing object (BINGET, DUP, GLOBAL...) at most."""
    def run(self):
        load(self)
        self.charge(nbytes)
    return run


_PUSHES = ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING",
           "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE",
           "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "FLOAT", "BINFLOAT", "EMPTY_LIST", "EMPTY_DICT",
           "EMPTY_SET", "LIST", "DICT", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "FROZENSET", "REDUCE", "NEWOBJ",
           "NEWOBJ_EX", "OBJ", "INST", "READONLY_BUFFER")
_GROWS = {"APPEND": lambda u: u.stack[-2], "SETITEM": lambda u: u.stack[-3], "BUILD": lambda u: u.stack[-2],
          "APPENDS": lambda u: u.metastack[-1][-1], "SETITEMS": lambda u: u.metastack[-1][-1],
          "ADDITEMS": lambda u: u.metastack[-1][-1]}
_MEMOIZES = ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE")
_KEYED = {"SETITEM": lambda u: (u.stack[-3], u.stack[-2:-1]), "SETITEMS": lambda u: (u.metastack[-1][-1], u.stack[::2]),
          "ADDITEMS": lambda u: (u.metastack[-1][-1], u.stack), "DICT": lambda u: (None, u.stack[::2]),
          "FROZENSET": lambda u: (None, u.stack)}  # DICT, FROZENSET: a new container, of the items after MARK


def _metered(dispatch):
    """`dispatch` with every opcode but STOP charging what it builds (RestrictedUnpickler.charge)."""
    meter = {getattr(pickle, name)[0]: _pushes for name in _PUSHES}
    meter.update({getattr(pickle, name)[0]: _memoizes for name in _MEMOIZES})
    meter.update({getattr(pickle, name)[0]: lambda load, target=target: _grows(load, target)
                  for name, target in _GROWS.items()})
    meter[pickle.MARK[0]] = lambda load: _refers(load, _SLOT + sys.getsizeof([]))  # a new list for the stack
    return {key: load if key == pickle.STOP[0] else meter.get(key, _refers)(load) for key, load in dispatch.items()}


class RestrictedUnpickler(pickle._Unpickler):
    """pickle._Unpickler with the checks above; subclasses give `find_class` and `build_targets`."""
    dispatch = dict(pickle._Unpickler.dispatch)
    build_targets = (np.ndarray, np.dtype)  # the types BUILD may set state on

    def __init__(self, file, source):
        self.size_limit = file_size(file)
        self.memory_limit, self.charged = MEMORY_FACTOR * self.size_limit + MEMORY_SLACK, 0
        self._nesting, self._keys = {}, {}
        super().__init__(_CappedReader(file))
        self.source = source

    def check_nesting(self, obj):
        """Record how deeply the new tuple or frozenset `obj` nests; LoadError past MAX_NESTING."""
        depth = 1
        for v in obj:
            seen = self._nesting.get(id(v))
            if seen is not None and seen[0] is v:
                depth = max(depth, seen[1] + 1)
        if depth > MAX_NESTING:
            raise LoadError(f"{self.source}: the pickle nests tuples more than {MAX_NESTING} levels deep, "
                            "which no StyleGAN snapshot does: the file is corrupt or crafted")
        if depth > 1 or obj:
            self._nesting[id(obj)] = (obj, depth)  # (obj kept: its id is not reused while loading)

    def count_keys(self, container, keys):
        """Count the keys going into `container` (None: a new one) that are not text (MAX_HASHED_KEYS)."""
        seen = self._keys.get(id(container))
        n = check_hashed_keys(keys, seen[1] if seen is not None and seen[0] is container else 0)
        if container is not None and n:
            self._keys[id(container)] = (container, n)  # (kept: its id is not reused while loading)

    def charge(self, nbytes):
        """Count `nbytes` more built from the file; LoadError past memory_limit."""
        self.charged += nbytes
        if self.charged > self.memory_limit:
            raise LoadError(f"{self.source}: the pickle builds more than {self.memory_limit:,} bytes of objects "
                            f"from a file of {self.size_limit:,} bytes ({MEMORY_FACTOR} times its size, plus "
                            f"{MEMORY_SLACK >> 20} MiB; StyleGAN snapshots need 2 to 5 times): the file is "
                            "corrupt or crafted")

    def _refuse_extension(self):
        raise UnsafePickleError(f"{self.source}: refused to load: the pickle names a global through pickle's "
                                "extension registry (an EXT opcode), which sg3lib does not read and official "
                                f"StyleGAN snapshots never use. {_NOTHING_RAN}")

    def _load_bytearray8(self):
        n, = struct.unpack("<Q", self.read(8))
        if n > self.size_limit:  # the stock reader allocates the bytearray before reading it
            raise _too_big("a bytearray", n, self.size_limit)
        self.append(bytearray(self.read(n)))
        if len(self.stack[-1]) != n:
            raise pickle.UnpicklingError("pickle data was truncated")

    def _load_build(self):
        state, target = self.stack[-1], self.stack[-2]
        if not isinstance(target, self.build_targets) or isinstance(target, np.dtype) and not _plain_dtype_state(state):
            raise UnsafePickleError(f"{self.source}: refused to load: the pickle tries to set the state of a "
                                    f"{type(target).__name__}, which official StyleGAN snapshots never do. "
                                    f"{_NOTHING_RAN}")
        pickle._Unpickler.dispatch[pickle.BUILD[0]](self)

    for _op in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = _refuse_extension
    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8
    dispatch[pickle.BUILD[0]] = _load_build
    for _name, _what in _KEYED.items():
        dispatch[getattr(pickle, _name)[0]] = _keyed(dispatch[getattr(pickle, _name)[0]], _what)
    del _op, _name, _what
    dispatch = _metered(dispatch)

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.source}: refused to load: unexpected persistent id in the pickle "
                                f"(official StyleGAN snapshots have none). {_NOTHING_RAN}")


# ---------------------------------------------------------------------------------------------
# Tensor storages: torch's legacy format, parsed here so that no declared size is trusted

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES = {  # the storage type names torch's legacy format writes, and their element types
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}


class _StorageRef:
    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel


class _StorageBlobUnpickler(RestrictedUnpickler):
    """The pickles inside a storage blob: plain data, storage type names, storage persistent ids."""
    build_targets = ()

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise UnsafePickleError(f"refused to load: an embedded tensor storage asks for '{module}.{name}', "
                                f"which a storage never holds. {_NOTHING_RAN}")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, element count, view), as torch's legacy save writes it
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)
                and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[4] >= 0 and pid[5] is None):
            raise LoadError(f"an embedded tensor storage has an unexpected persistent id {str(pid)[:80]}")
        return _StorageRef(pid[2], pid[1], pid[4])


def load_storage_from_bytes(blob):
    """Safe stand-in for `torch.storage._load_from_bytes`: one storage saved by torch's legacy
    format (pickles of magic number, protocol, system info, the storage's persistent id and the
    storage keys; then the element count as int64 and the little-endian bytes)."""
    if not isinstance(blob, bytes):
        raise LoadError(f"an embedded tensor storage is a {type(blob).__name__}, not bytes")
    f = io.BytesIO(blob)
    try:
        magic, protocol, _, ref, keys = (_StorageBlobUnpickler(f, "<storage>").load() for _ in range(5))
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, struct.error) as e:
        if isinstance(e, LoadError):
            raise
        raise LoadError(f"an embedded tensor storage could not be read ({type(e).__name__}: {e}); "
                        "the file is corrupt") from None
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
        raise LoadError("an embedded tensor storage is not in torch's storage format; the file is corrupt")
    if not isinstance(ref, _StorageRef) or keys != [ref.key]:
        raise LoadError("an embedded tensor storage blob holds something other than one storage")
    return _storage_data(blob, f.tell(), ref)


def _storage_data(blob, start, ref):
    header = blob[start:start + 8]
    numel = struct.unpack("<q", header)[0] if len(header) == 8 else None
    if numel != ref.numel:
        raise LoadError(f"an embedded tensor storage declares {ref.numel} elements but its data says "
                        f"{numel}; the file is corrupt")
    nbytes = numel * ref.dtype.itemsize
    if nbytes > len(blob) - start - 8:
        raise _too_big("an embedded tensor storage", nbytes, len(blob))
    data = memoryview(blob)[start + 8:start + 8 + nbytes]  # no copy before the storage's own
    untyped = torch.UntypedStorage.from_buffer(data, byte_order="little", dtype=ref.dtype) if nbytes \
        else torch.UntypedStorage(0)
    return torch.storage.TypedStorage(wrap_storage=untyped, dtype=ref.dtype, _internal=True)
