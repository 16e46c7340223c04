"""Interoperability with files written by the official StyleGAN2-ADA / StyleGAN3 code.

`official_pkl` reads official snapshot pickles without executing the source they embed
(a restricted unpickler with an explicit allow-list) and writes pickles in the same
format. Most users never import this: `sg3lib.load(path)` calls it.
"""
from .official_pkl import (  # noqa: F401
    EasyDict,
    PersistentObject,
    UnsafePickleError,
    official_class_of,
    persistent_from_module,
    persistent_from_state_dict,
    read_official_pkl,
    write_official_pkl,
)
