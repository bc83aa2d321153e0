"""PyTorch's ``data.pkl`` read without running code from the file.

``torch.save`` pickles an object tree (usually a dict of tensors); each tensor is
a call to a torch rebuild function whose first argument is a persistent
reference to a storage record in the zip. Here every global the pickle may
name is looked up in an explicit allowlist that maps it to an inert stand-in:
a rebuild call becomes a ``TensorRecord`` that only says where the elements
live, a storage class or dtype becomes a ``TorchDType``, and ``OrderedDict``
becomes a plain dict. Any other global raises ``UnsafeCheckpointError`` before
anything is called, so the real ``posix.system`` or ``builtins.eval`` is never
even imported.

This module owns the pickle and its allowlist. The records it builds and the
rule that names the tensors (``name_tensors``, re-exported here) belong to
``forebear.formats.torch_names``; the zip archive and the tensor bytes to
``forebear.formats.pytorch``.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

from forebear.errors import (
    CorruptCheckpointError,
    ForebearError,
    LimitExceededError,
    UnsafeCheckpointError,
    UnsupportedFormatError,
)
from forebear.formats.dtypes import DTYPES
from forebear.formats.torch_names import Leaf as Leaf
from forebear.formats.torch_names import StorageRef, TensorRecord, TorchDType, name_tensors

__all__ = ["StorageRef", "TensorRecord", "TorchDType", "load_data_pkl", "name_tensors"]

_MAX_NDIM = 64


class _StateDict(dict[Any, Any]):
    """The stand-in for ``collections.OrderedDict``: a dict that may receive BUILD state."""


def _ordered_dict(*args: Any) -> _StateDict:
    return _StateDict(*args)


def _size(*args: Any) -> tuple[Any, ...]:
    return tuple(*args)


# torch dtype name → forebear dtype name; None where forebear has no decoder.
_DTYPES: dict[str, str | None] = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
    "complex32": None,
    "complex64": None,
    "complex128": None,
    "float8_e4m3fnuz": None,
    "float8_e5m2fnuz": None,
    "qint8": None,
    "quint8": None,
    "qint32": None,
}

# The typed storage classes torch.save names (``torch.FloatStorage`` …) and their element type.
_STORAGES: dict[str, str] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}

_UNTYPED = TorchDType("UntypedStorage", "U8", untyped=True)


def _static_allowlist() -> dict[tuple[str, str], object]:
    allowed: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): _ordered_dict,
        ("torch", "Size"): _size,
        ("torch.storage", "UntypedStorage"): _UNTYPED,
        ("torch", "UntypedStorage"): _UNTYPED,
    }
    for name, forebear in _DTYPES.items():
        allowed["torch", name] = TorchDType(name, forebear)
    for name, element in _STORAGES.items():
        allowed["torch", name] = TorchDType(element, _DTYPES[element])
    return allowed


_STATIC_ALLOWLIST = _static_allowlist()


@dataclass(frozen=True)
class _TensorClass:
    """Stands for ``torch.Tensor``/``nn.Parameter`` where ``_rebuild_from_type_v2`` names them."""


_TENSOR_CLASS = _TensorClass()
_TENSOR_CLASS_NAMES = frozenset({("torch", "Tensor"), ("torch.nn.parameter", "Parameter")})


class _RestrictedUnpickler(pickle._Unpickler):
    """An unpickler whose globals come only from the allowlist above.

    It subclasses the pure-Python unpickler on purpose: the C one allocates a
    counted BINBYTES/BINUNICODE's declared length before reading it, so a few
    bytes of pickle could ask for terabytes; this one reads from a bounded buffer.
    Opcodes that torch.save never writes and that would reach past the
    allowlist (extension registry, out-of-band buffers, class instantiation)
    are refused outright.
    """

    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(pickle._Unpickler.dispatch)
    stack: list[Any]

    def __init__(self, data: bytes, *, path: str, max_tensors: int) -> None:
        super().__init__(io.BytesIO(data))
        self._path = path
        self._max_tensors = max_tensors
        self._tensor_count = 0
        self._storages: dict[str, StorageRef] = {}
        self._rebuilders: dict[str, Callable[..., TensorRecord]] = {
            "_rebuild_tensor": self._rebuild_tensor,
            "_rebuild_tensor_v2": self._rebuild_tensor_v2,
            "_rebuild_tensor_v3": self._rebuild_tensor_v3,
            "_rebuild_parameter": self._rebuild_parameter,
            "_rebuild_parameter_with_state": self._rebuild_parameter,
        }

    def _corrupt(self, message: str) -> NoReturn:
        raise CorruptCheckpointError(
            message, path=self._path, hint="the file is damaged or hostile; download it again"
        )

    def find_class(self, module: str, name: str) -> object:
        if module == "torch._utils" and name in self._rebuilders:
            return self._rebuilders[name]
        if (module, name) == ("torch._tensor", "_rebuild_from_type_v2"):
            return self._rebuild_from_type
        if (module, name) in _TENSOR_CLASS_NAMES:
            return _TENSOR_CLASS
        allowed = _STATIC_ALLOWLIST.get((module, name))
        if allowed is None:
            raise UnsafeCheckpointError(
                f"refuses to load global '{module}.{name}': data.pkl asks for code "
                "outside the tensor-rebuilding allowlist",
                path=self._path,
                hint="the file may be malicious; if it is a trusted checkpoint, convert it "
                "to safetensors in a sandbox that has torch",
            )
        return allowed

    def persistent_load(self, pid: Any) -> StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            self._corrupt(f"data.pkl has a persistent id that is not a storage record: {pid!r:.80}")
        _, kind, key, _location, numel = pid
        if not (isinstance(kind, TorchDType) and isinstance(key, str) and _is_count(numel)):
            self._corrupt(f"data.pkl has a malformed storage record: {pid!r:.80}")
        itemsize = 1 if kind.untyped else _itemsize(kind)
        ref = StorageRef(key, kind, numel * itemsize)
        known = self._storages.setdefault(key, ref)
        if known != ref:
            self._corrupt(f"data.pkl declares storage {key!r} twice with different types or sizes")
        return known

    def _tensor(
        self, storage: Any, offset: Any, size: Any, stride: Any, dtype: TorchDType
    ) -> TensorRecord:
        if not isinstance(storage, StorageRef):
            self._corrupt("data.pkl rebuilds a tensor from something that is not a storage")
        shape, strides = _dims(size), _dims(stride)
        if not _is_count(offset) or shape is None or strides is None or len(shape) != len(strides):
            self._corrupt("data.pkl rebuilds a tensor with a malformed offset, size or stride")
        if len(shape) > _MAX_NDIM:
            self._corrupt(f"data.pkl rebuilds a tensor with {len(shape)} dimensions")
        if dtype.forebear is None:
            raise UnsupportedFormatError(
                f"data.pkl holds a tensor of dtype torch.{dtype.torch_name}, "
                "which forebear does not read",
                path=self._path,
                hint="convert the tensor to a real float or integer type before saving",
            )
        self._tensor_count += 1
        if self._tensor_count > self._max_tensors:
            raise LimitExceededError(
                f"data.pkl builds more than {self._max_tensors} tensors",
                path=self._path,
                hint="raise max_entries if this is a genuine checkpoint",
            )
        return TensorRecord(storage, dtype, offset, shape, strides)

    def _rebuild_tensor(
        self, storage: Any, offset: Any, size: Any, stride: Any, *_ignored: Any
    ) -> TensorRecord:
        kind = storage.kind if isinstance(storage, StorageRef) else _UNTYPED
        return self._tensor(storage, offset, size, stride, kind)

    # v2 appends requires_grad, backward hooks and metadata, none of which change the values.
    _rebuild_tensor_v2 = _rebuild_tensor

    def _rebuild_tensor_v3(
        self,
        storage: Any,
        offset: Any,
        size: Any,
        stride: Any,
        _requires_grad: Any,
        _hooks: Any,
        dtype: Any,
        *_ignored: Any,
    ) -> TensorRecord:
        if not isinstance(dtype, TorchDType) or dtype.untyped:
            self._corrupt("data.pkl rebuilds a tensor whose dtype is not a torch dtype")
        return self._tensor(storage, offset, size, stride, dtype)

    def _rebuild_parameter(self, data: Any, *_ignored: Any) -> TensorRecord:
        if not isinstance(data, TensorRecord):
            self._corrupt("data.pkl rebuilds a parameter from something that is not a tensor")
        return data

    def _rebuild_from_type(self, func: Any, new_type: Any, args: Any, _state: Any) -> TensorRecord:
        # Tensors carrying Python attributes are saved as (rebuild, type, args, attributes).
        if func not in self._rebuilders.values() or new_type is not _TENSOR_CLASS:
            self._corrupt("data.pkl rebuilds a tensor subclass outside the allowlist")
        if not isinstance(args, tuple):
            self._corrupt("data.pkl rebuilds a tensor with malformed arguments")
        result: TensorRecord = func(*args)
        return result

    def _load_reduce(self) -> None:
        args = self.stack.pop()
        if type(args) is not tuple:
            self._corrupt("data.pkl calls a function with arguments that are not a tuple")
        self.stack[-1] = self.stack[-1](*args)

    def _load_build(self) -> None:
        # OrderedDict carries state_dict's ``_metadata`` (module versions) as BUILD state;
        # it says nothing about the weights and is dropped. Nothing else takes state.
        self.stack.pop()
        if not isinstance(self.stack[-1], _StateDict):
            self._corrupt("data.pkl sets attributes on an object that takes none")

    def _refuse_opcode(self) -> None:
        self._corrupt("data.pkl uses a pickle opcode that torch.save never writes")


def _install_opcode_overrides() -> None:
    table = _RestrictedUnpickler.dispatch
    table[pickle.REDUCE[0]] = _RestrictedUnpickler._load_reduce
    table[pickle.BUILD[0]] = _RestrictedUnpickler._load_build
    refused: list[bytes] = [pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.INST, pickle.OBJ]
    refused += [pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.BYTEARRAY8, pickle.NEXT_BUFFER]
    refused += [pickle.READONLY_BUFFER]
    for opcode in refused:
        table[opcode[0]] = _RestrictedUnpickler._refuse_opcode


_install_opcode_overrides()


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


def _dims(value: object) -> tuple[int, ...] | None:
    if not isinstance(value, tuple | list) or not all(_is_count(v) for v in value):
        return None
    return tuple(value)


def _itemsize(kind: TorchDType) -> int:
    return DTYPES[kind.forebear].itemsize if kind.forebear is not None else 1


def load_data_pkl(data: bytes, *, path: str, max_tensors: int) -> object:
    """Unpickle ``data.pkl`` with the allowlist; tensors come back as ``TensorRecord``."""
    unpickler = _RestrictedUnpickler(data, path=path, max_tensors=max_tensors)
    try:
        return unpickler.load()
    except ForebearError:
        raise
    except Exception as error:  # each opcode fails on hostile bytes in its own way
        unpickler._corrupt(f"data.pkl is not a valid pickle ({type(error).__name__}: {error})")
