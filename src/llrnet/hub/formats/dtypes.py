"""TensorFlow ``DataType`` enum values and their numpy layouts on disk."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llrnet.core.errors import InputError


@dataclass(frozen=True)
class TFDType:
    """One TF dtype: enum value, TF name, on-disk numpy dtype (little-endian).

    ``numpy`` is the dtype the reader returns; bfloat16, which numpy lacks, is
    stored as ``<u2`` (the top half of a float32) and returned widened to
    float32, which is exact.
    """

    enum: int
    name: str
    disk: str | None  # None: variable-length (string)

    @property
    def itemsize(self) -> int:
        return 0 if self.disk is None else np.dtype(self.disk).itemsize


_ALL = (
    TFDType(1, "float32", "<f4"),
    TFDType(2, "float64", "<f8"),
    TFDType(3, "int32", "<i4"),
    TFDType(4, "uint8", "|u1"),
    TFDType(5, "int16", "<i2"),
    TFDType(6, "int8", "|i1"),
    TFDType(7, "string", None),
    TFDType(8, "complex64", "<c8"),
    TFDType(9, "int64", "<i8"),
    TFDType(10, "bool", "|b1"),
    TFDType(14, "bfloat16", "<u2"),
    TFDType(17, "uint16", "<u2"),
    TFDType(18, "complex128", "<c16"),
    TFDType(19, "float16", "<f2"),
    TFDType(22, "uint32", "<u4"),
    TFDType(23, "uint64", "<u8"),
)

BY_ENUM: dict[int, TFDType] = {d.enum: d for d in _ALL}
BY_NAME: dict[str, TFDType] = {d.name: d for d in _ALL}
# TF's GraphDef attributes name reference dtypes enum + 100 (DT_FLOAT_REF = 101).
REF_OFFSET = 100


def dtype_name(enum: int) -> str:
    """TF name of a ``DataType`` value (``"dtype_<n>"`` for ones we do not read)."""
    if enum > REF_OFFSET:
        enum -= REF_OFFSET
    known = BY_ENUM.get(enum)
    return known.name if known else f"dtype_{enum}"


def numpy_to_tf(array: np.ndarray) -> TFDType:
    """The TF dtype of a numpy array (object/bytes arrays are strings)."""
    if array.dtype.kind in "OSU":
        return BY_NAME["string"]
    name = "bool" if array.dtype == np.bool_ else array.dtype.name
    if name not in BY_NAME:
        raise InputError(f"numpy dtype {array.dtype} has no TF checkpoint equivalent")
    return BY_NAME[name]
