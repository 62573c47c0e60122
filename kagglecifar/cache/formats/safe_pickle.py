"""Loading the CIFAR "python" pickles without the standard unpickler: only what those files need may load.

A pickle is a program: every global it names is imported and may be called (os.system, builtins.exec, ...).
The CIFAR files were written by Python 2 cPickle with numpy; all they name is numpy's array reconstruction
(numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype); dicts, lists, strings and ints are plain
opcodes. find_class hands out only those, wrapped so that they build plain numeric arrays and nothing else,
plus a few harmless constructors that Python 3 re-packagings of the files use. Any other global is refused
before anything of the pickle runs beyond plain data, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable

import numpy as np

from kagglecifar.errors import KaggleCifarError

_numpy_core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
_NUMERIC_KINDS = "biuf"  # bool, int, unsigned, float: never object arrays


class _Global:
    """What find_class hands out: callable, and immutable, so a BUILD opcode cannot change what it does."""

    __slots__ = ("_call",)
    _call: Callable

    def __init__(self, call):
        object.__setattr__(self, "_call", call)

    def __call__(self, *args):
        return self._call(*args)

    def __setattr__(self, name, value):
        raise pickle.UnpicklingError("setting attributes of an allowed global")


def _refuse_call(*args):
    raise pickle.UnpicklingError("numpy.ndarray called directly")


_NDARRAY = _Global(_refuse_call)  # stands for numpy.ndarray: _reconstruct needs the type, nothing may call it


def _dtype(spec, align=False, copy=True) -> np.dtype:
    if isinstance(spec, bytes):  # Python 2 str, loaded with encoding="bytes"
        spec = spec.decode("ascii")
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"dtype from {type(spec).__name__}")
    dtype = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"dtype {dtype} is not a plain number type")
    return dtype


def _reconstruct(subtype, shape, typecode) -> np.ndarray:
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError("_reconstruct of something other than numpy.ndarray")
    return _numpy_core.multiarray._reconstruct(np.ndarray, shape, typecode)


def _frombuffer(buffer, dtype, shape, order) -> np.ndarray:
    """numpy 2's protocol-5 array reduction."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
        raise pickle.UnpicklingError("_frombuffer with a dtype that is not a plain number type")
    return _numpy_core.numeric._frombuffer(buffer, dtype, shape, order)


def _latin1_encode(text, encoding="latin1") -> bytes:
    """How Python 3 pickles bytes at protocol 2: _codecs.encode(str, "latin1")."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode other than str to latin1")
    return text.encode("latin1")


# Containers only (no bytearray: bytearray(10**10) would be a 10 GB allocation from a 30-byte file).
_CONTAINERS = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset}
ALLOWED = {
    **{
        (module, "_reconstruct"): _Global(_reconstruct)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{(module, "_frombuffer"): _Global(_frombuffer) for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Global(_dtype),
    ("_codecs", "encode"): _Global(_latin1_encode),
    **{(module, name): _Global(kind) for module in ("builtins", "__builtin__") for name, kind in _CONTAINERS.items()},
}


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.global_name = f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose find_class knows ALLOWED only (the C implementation calls this override too)."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids")


def load_pickle(data: bytes, source: str):
    """Unpickle CIFAR data (Python 2 strings come back as bytes); `source` names the file in errors."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except RefusedGlobal as exc:
        raise KaggleCifarError(
            f"{source}: refusing to unpickle it: it asks for {exc.global_name}, which CIFAR "
            "data never needs (a crafted or foreign pickle)"
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        MemoryError,
        OverflowError,
        UnicodeDecodeError,
    ) as exc:
        raise KaggleCifarError(
            f"{source}: not a readable CIFAR pickle ({type(exc).__name__}: "
            f"{str(exc)[:200]}); damaged or truncated download?"
        ) from None
