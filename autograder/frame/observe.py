"""Observations: the plain data that passes from a check's probe half to its judge half.

Every step check is written once, as a body that asks for observations of the learner's object
(:func:`exchange`, reached through :func:`~autograder.frame.calls.call`,
:func:`~autograder.frame.calls.observe` and the helpers built on them) and judges them. The
same body runs in one of two modes:

- **record** (the probe half): each observation is made for real on the learner's object, in the
  learner's process, and written down as plain data. The body gets the *decoded copy* of what it
  recorded (never the learner's own tensors), so what it judges is exactly what a judge in
  another process will see.
- **replay** (the judge half): nothing of the learner's runs. Each observation the body asks for
  is read back from the record, in order, after checking that the body asked for the same thing
  (same label, same kinds, shapes and values of the arguments it chose). Objects that are not
  plain data (the learner's modules, caches, ...) come back as :class:`Opaque` stand-ins, which
  can only be passed on to further observations.

A notebook's check records and judges in one go. Class grading records in the sandboxed kernel,
saves the record (:meth:`Observations.save`: JSON plus NumPy arrays, never pickle) and judges it
in the grader's own process.

The session of the check that is running is found through a context variable, set for the
extent of one check and reset afterwards; nothing about a check outlives it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .errors import LearnerError

FORMAT = "mhsa-observations/1"


class Divergence(Exception):
    """The judge asked for an observation that the probe did not record (a bug in a check, or a
    record that was not made by this check)."""


_ABSENT = object()  # an Opaque with no object of the learner's behind it: a judge's


class Opaque:
    """Stands in for an object of the learner's that is not plain data: in a judge, where the
    object does not exist, and in a probe too, so that the body sees exactly what a judge will.
    A probe's stand-in still holds the object, for the observations that take it (:func:`unwrap`);
    an attribute of one is another, looked up only when an observation takes it."""

    __slots__ = ("_kind", "_name", "_obj", "_parent")

    def __init__(self, kind: str, name: Optional[str] = None, obj: Any = _ABSENT,
                 parent: Optional["Opaque"] = None):
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_obj", obj)  # with a parent: the attribute's name
        object.__setattr__(self, "_parent", parent)

    def __getattr__(self, name: str) -> Any:
        if name in ("__name__", "__qualname__") and self._name is not None:
            return self._name
        if name.startswith("__"):
            raise AttributeError(name)
        if self._obj is _ABSENT:
            return Opaque(f"{self._kind}.{name}")
        return Opaque(f"{self._kind}.{name}", None, name, parent=self)

    def __setattr__(self, name: str, value: Any) -> None:
        pass  # the learner's object lives in the probe's process: nothing to set here

    def _refuse(self, *args: Any, **kwargs: Any):
        raise Divergence(f"the judge used the learner's {self._kind} directly; observe it instead")

    __call__ = __bool__ = __len__ = __iter__ = __getitem__ = __eq__ = __lt__ = __float__ = __int__ = _refuse
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<the learner's {self._kind}>"

    def _resolve(self) -> Any:
        if self._obj is _ABSENT:
            raise Divergence(f"the learner's {self._kind} is not in this process")
        if self._parent is None:
            return self._obj
        return getattr(self._parent._resolve(), self._obj)


def unwrap(x: Any) -> Any:
    """The learner's objects behind a probe's stand-ins in ``x`` (inside tuples, lists and dicts
    too), for an observation to use; anything else as it is."""
    if isinstance(x, Opaque):
        return x._resolve()
    if type(x) in (tuple, list):
        return type(x)(unwrap(v) for v in x)
    if type(x) is dict:
        return {unwrap(k): unwrap(v) for k, v in x.items()}
    return x


def kind_of(x: Any) -> str:
    """The name of ``x``'s type, or of the learner's object an :class:`Opaque` stands for."""
    return x._kind if isinstance(x, Opaque) else type(x).__name__


# --------------------------------------------------------------------------- plain data


_DTYPES = {str(d).replace("torch.", ""): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128,
    torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)}


class _Encoder:
    def __init__(self) -> None:
        self.arrays: List[np.ndarray] = []
        self.live: List[Any] = []

    def array(self, a: np.ndarray) -> int:
        self.arrays.append(np.ascontiguousarray(a))
        return len(self.arrays) - 1

    def encode(self, x: Any, depth: int = 0) -> Any:
        if depth > 20:
            return self.opaque(x)
        if x is None or isinstance(x, (bool, str)):
            return x
        if isinstance(x, int) and type(x) in (int,):
            return x
        if isinstance(x, float) and type(x) is float:
            return x if math.isfinite(x) else {"__t__": "float", "v": repr(x)}
        if isinstance(x, (np.bool_, np.integer, np.floating)):
            return self.encode(x.item(), depth)
        if isinstance(x, LearnerError):
            return {"__t__": "lerr", "msg": str(x), "kind": x.kind}
        if isinstance(x, Tensor):
            return self.tensor(x)
        if isinstance(x, np.ndarray) and x.dtype != object:
            return {"__t__": "ndarray", "a": self.array(x.copy())}
        if isinstance(x, torch.dtype):
            return {"__t__": "dtype", "v": str(x).replace("torch.", "")}
        if isinstance(x, torch.device):
            return {"__t__": "device", "v": str(x)}
        if isinstance(x, torch.Size):
            return {"__t__": "size", "v": [int(n) for n in x]}
        if type(x) in (list, tuple):
            return {"__t__": type(x).__name__, "v": [self.encode(v, depth + 1) for v in x]}
        if type(x) is dict:
            return {"__t__": "dict", "k": [self.encode(k, depth + 1) for k in x],
                    "v": [self.encode(v, depth + 1) for v in x.values()]}
        return self.opaque(x)

    def tensor(self, t: Tensor) -> Any:
        try:
            if t.is_sparse or t.is_meta or getattr(t, "is_nested", False) or t.is_quantized:
                return self.opaque(t)
            dtype = str(t.dtype).replace("torch.", "")
            if dtype not in _DTYPES:
                return self.opaque(t)
            plain = torch.Tensor.detach(t).to("cpu")
            if type(plain) is not Tensor:
                plain = plain.as_subclass(Tensor)
            plain = plain.contiguous()
            data = plain.view(torch.int16).numpy() if plain.dtype == torch.bfloat16 else plain.numpy()
            return {"__t__": "tensor", "a": self.array(data.copy()), "dtype": dtype,
                    "rg": bool(t.requires_grad), "dev": str(t.device)}
        except Exception:
            return self.opaque(t)

    def opaque(self, x: Any) -> Any:
        self.live.append(x)
        try:
            name = x.__name__ if isinstance(getattr(x, "__name__", None), str) else None
        except Exception:
            name = None
        return {"__t__": "obj", "type": type(x).__name__, "name": name, "i": len(self.live) - 1}


def _decode(x: Any, arrays: List[np.ndarray], live: Optional[List[Any]]) -> Any:
    if not isinstance(x, dict):
        if isinstance(x, list):  # (only inside the tagged containers below)
            raise Divergence("a bare list in a record")
        return x
    tag = x.get("__t__")
    if tag == "float":
        return float(x["v"])
    if tag == "lerr":
        return LearnerError(str(x["msg"]), kind=str(x["kind"]))
    if tag == "tensor":
        a = _array(x, arrays)
        dtype = _DTYPES[x["dtype"]]
        t = torch.from_numpy(a.copy())
        if dtype == torch.bfloat16 and t.dtype == torch.int16:
            t = t.view(torch.bfloat16)
        if t.dtype != dtype:
            raise Divergence(f"a {x['dtype']} tensor recorded as an array of {a.dtype}")
        dev = str(x.get("dev", "cpu"))
        if dev.startswith("cuda"):  # (a judge without the GPU keeps it on the CPU)
            try:
                t = t.to(dev)
            except Exception:
                pass
        if x.get("rg") and (dtype.is_floating_point or dtype.is_complex):
            t.requires_grad_(True)
        return t
    if tag == "ndarray":
        return _array(x, arrays).copy()
    if tag == "dtype":
        return _DTYPES[x["v"]]
    if tag == "device":
        return torch.device(x["v"])
    if tag == "size":
        return torch.Size(x["v"])
    if tag in ("list", "tuple"):
        items = [_decode(v, arrays, live) for v in x["v"]]
        return items if tag == "list" else tuple(items)
    if tag == "dict":
        return {_decode(k, arrays, live): _decode(v, arrays, live) for k, v in zip(x["k"], x["v"])}
    if tag == "obj":
        if live is not None:
            return Opaque(str(x.get("type")), x.get("name"), live[int(x["i"])])
        return Opaque(str(x.get("type")), x.get("name"))
    raise Divergence(f"unknown entry in a record: {tag!r}")


def _array(x: dict, arrays: List[np.ndarray]) -> np.ndarray:
    i = x["a"]
    if type(i) is not int or not 0 <= i < len(arrays):
        raise Divergence(f"a record's entry names array {i!r} of {len(arrays)}")
    return arrays[i]


def signature(args: Any) -> Any:
    """What a call's arguments were, as plain data to compare: kinds, shapes, dtypes and exact
    small values; tensors by shape, dtype and two sums (compared with a tolerance, so that a judge
    with another thread count still matches)."""
    if args is None or isinstance(args, (bool, str)):
        return args
    if isinstance(args, int) and type(args) is int:
        return args
    if isinstance(args, float):
        return ["f", args if math.isfinite(args) else repr(args)]
    if isinstance(args, Tensor):
        try:
            d = torch.Tensor.detach(args).to("cpu")
            if d.dtype.is_floating_point or d.dtype.is_complex:
                d64 = d.to(torch.complex128 if d.dtype.is_complex else torch.float64)
                finite = torch.nan_to_num(d64.abs() if d.dtype.is_complex else d64, nan=0.0, posinf=0.0, neginf=0.0)
                sums = [float(finite.sum()), float(finite.abs().sum())]
            else:
                d64 = d.to(torch.int64)
                sums = [int(d64.sum()), int(d64.abs().sum())]
            return ["T", list(d.shape), str(d.dtype), sums]
        except Exception:
            return ["obj"]
    if isinstance(args, torch.dtype):
        return ["dtype", str(args)]
    if type(args) in (list, tuple) or isinstance(args, torch.Size):
        return [type(args).__name__] + [signature(a) for a in args]
    if type(args) is dict:
        return ["dict"] + [[str(k), signature(v)] for k, v in args.items()]
    return ["obj"]


def same_signature(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        if a[:1] == ["T"] and b[:1] == ["T"]:
            if a[1:3] != b[1:3]:
                return False
            return all(_near(x, y) for x, y in zip(a[3], b[3]))
        if a[:1] == ["f"] and b[:1] == ["f"]:
            return _near(a[1], b[1])
        return len(a) == len(b) and all(same_signature(x, y) for x, y in zip(a, b))
    return a == b


def _near(x: Any, y: Any) -> bool:
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return abs(x - y) <= 1e-6 * max(1.0, abs(x), abs(y))
    return x == y


# --------------------------------------------------------------------------- the record


@dataclass
class Entry:
    label: str
    signature: Any
    value: Any  # encoded
    raised: bool = False  # the observation raised a LearnerError (``value`` is it)


@dataclass
class Observations:
    """Everything a probe observed, in order, as plain data (plus its arrays)."""

    step: str
    seed: int
    hidden: bool
    entries: List[Entry] = field(default_factory=list)
    arrays: List[np.ndarray] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"format": FORMAT, "step": self.step, "seed": self.seed, "hidden": self.hidden,
                "entries": [[e.label, e.signature, e.value, e.raised] for e in self.entries],
                "n_arrays": len(self.arrays)}

    def save(self, path: Path) -> Path:
        """Write one file: a zip with ``observations.json`` and the arrays as ``.npy`` (no pickle)."""
        path = Path(path)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr("observations.json", json.dumps(self.to_json()))
            for i, a in enumerate(self.arrays):
                with z.open(f"a{i}.npy", "w") as f:
                    np.save(f, a, allow_pickle=False)
        return path

    @classmethod
    def load(cls, path: Path, max_bytes: int = 512 * 2**20) -> "Observations":
        """Read a record written by :meth:`save`, refusing (ValueError) anything larger than
        ``max_bytes`` unpacked, any array that is pickled or not plain numbers, and any malformed
        entry. Nothing in the file is run; a file that is not such a record is refused, never
        half-read."""
        try:
            return cls._load(Path(path), max_bytes)
        except ValueError:
            raise
        except (KeyError, IndexError, TypeError, AttributeError, OverflowError, RecursionError, MemoryError,
                EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as e:
            raise ValueError(f"not a readable record of observations ({type(e).__name__}: {e})") from None

    @classmethod
    def _load(cls, path: Path, max_bytes: int) -> "Observations":
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if sum(i.file_size for i in infos) > max_bytes:
                raise ValueError(f"observations larger than {max_bytes} bytes")
            names = [i.filename for i in infos]
            if len(names) != len(set(names)):
                raise ValueError("a name appears twice in the record")
            data = json.loads(z.read("observations.json"))
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError("not a record of observations")
            n = data["n_arrays"]
            if type(n) is not int or n != len(names) - 1 or set(names) != {"observations.json"} | {
                    f"a{i}.npy" for i in range(n)}:
                raise ValueError(f"n_arrays: expected the number of arrays in the record, got {n!r}")
            arrays = []
            for i in range(n):
                with z.open(f"a{i}.npy") as f:
                    arrays.append(_read_npy(f, z.getinfo(f"a{i}.npy").file_size))
        step, seed, hidden, items = data["step"], data["seed"], data["hidden"], data["entries"]
        if type(step) is not str or type(seed) is not int or type(hidden) is not bool or type(items) is not list:
            raise ValueError("step, seed, hidden, entries: expected a string, an integer, a bool and a list")
        entries = []
        for item in items:
            if type(item) is not list or len(item) != 4 or type(item[0]) is not str or type(item[3]) is not bool:
                raise ValueError(f"entry: expected [label, signature, value, raised], got {str(item)[:80]}")
            label, sig, value, raised = item
            if _depth(sig) > _MAX_DEPTH or _depth(value) > _MAX_DEPTH:
                raise ValueError(f"entry {label!r}: nested deeper than a probe writes")
            entries.append(Entry(label, sig, value, raised))
        return cls(step, seed, hidden, entries, arrays)


#: How deep a record's entries may nest: the encoder stops at depth 20 of the learner's
#: containers (two JSON levels each), and signatures nest no deeper than a check's arguments.
_MAX_DEPTH = 64


def _depth(x: Any, limit: int = _MAX_DEPTH + 1) -> int:
    """How deeply ``x`` (parsed JSON) nests, counted up to ``limit`` without recursion."""
    deepest, todo = 0, [(x, 0)]
    while todo:
        y, d = todo.pop()
        deepest = max(deepest, d)
        if d >= limit:
            return d
        if isinstance(y, list):
            todo.extend((v, d + 1) for v in y)
        elif isinstance(y, dict):
            todo.extend((v, d + 1) for v in y.values())
    return deepest


def _read_npy(f: Any, size: int) -> np.ndarray:
    """One ``.npy`` of plain numbers whose header agrees with its size (no pickle, no allocation
    larger than the data that is there)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"an array of .npy version {version}")
    if dtype.kind not in "biufc" or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise ValueError(f"an array of dtype {dtype}: only plain numbers are allowed")
    count = math.prod(shape)
    header = f.tell()
    if count * dtype.itemsize != size - header:
        raise ValueError(f"an array of shape {shape} whose data is {size - header} bytes")
    a = np.frombuffer(f.read(), dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return a.copy()


class Session:
    """The observations of one run of one check, being recorded or replayed."""

    def __init__(self, mode: str, observations: Observations, strict: bool = False):
        if mode not in ("record", "replay"):
            raise ValueError(f"mode: expected 'record' or 'replay', got {mode!r}")
        self.mode = mode
        self.observations = observations
        self.strict = strict
        self.position = 0
        self.divergences: List[str] = []
        self._encoder = _Encoder()
        if mode == "record":
            self._encoder.arrays = observations.arrays

    def exchange(self, label: str, args: Any, produce: Callable[[], Any]) -> Any:
        """Make one observation: ``produce()`` in record mode, read back in replay mode."""
        sig = signature(args)
        if self.mode == "record":
            token = _ACTIVE.set(None)  # what ``produce`` observes itself belongs to no record
            try:
                value, raised = produce(), False
            except LearnerError as e:
                value, raised = e, True
            finally:
                _ACTIVE.reset(token)
            encoded = self._encoder.encode(value)
            self.observations.entries.append(Entry(label, sig, encoded, raised))
            out = _decode(encoded, self.observations.arrays, self._encoder.live)
        else:
            entries = self.observations.entries
            found = self._next(label, sig)
            if found is None:
                if self.position >= len(entries):
                    return self._diverged(f"{label}: the probe recorded nothing more", raised_kind=True)
                return self._diverged(f"{label}: the probe recorded {entries[self.position].label} with other "
                                      "arguments", raised_kind=True)
            entry = entries[found]
            self.position = found + 1
            try:
                out = _decode(entry.value, self.observations.arrays, None)
            except (Divergence, KeyError, IndexError, TypeError, ValueError) as e:
                return self._diverged(f"{label}: unreadable record ({e})", raised_kind=True)
            raised = entry.raised
        if raised:
            if not isinstance(out, LearnerError):
                return self._diverged(f"{label}: a raised observation that is not an error", raised_kind=True)
            raise out
        return out

    def _next(self, label: str, sig: Any) -> Optional[int]:
        """Where the observation asked for is in the record: strictly the next entry; otherwise the
        next entry with the same label and arguments (a probe whose checks were disturbed in the
        learner's process may have recorded more than the judge asks for; the judge uses only
        observations made on exactly the inputs it chose itself)."""
        entries = self.observations.entries
        stop = min(len(entries), self.position + 1) if self.strict else len(entries)
        for i in range(self.position, stop):
            if entries[i].label == label and same_signature(entries[i].signature, sig):
                return i
        return None

    def _diverged(self, message: str, raised_kind: bool) -> Any:
        self.divergences.append(message)
        if self.strict:
            raise Divergence(message)
        raise LearnerError("was not observed when your code ran (the grader has no record of this call)")

    def finish(self) -> None:
        """In a strict replay every recorded observation must have been asked for."""
        if self.mode == "replay" and self.strict and self.position != len(self.observations.entries):
            message = f"the probe recorded {len(self.observations.entries) - self.position} more observations"
            self.divergences.append(message)
            if self.strict:
                raise Divergence(message)


_ACTIVE: contextvars.ContextVar[Optional[Session]] = contextvars.ContextVar("autograder_session", default=None)




@contextlib.contextmanager
def session(s: Optional[Session]):
    """Make ``s`` the running check's session for the extent of the block."""
    token = _ACTIVE.set(s)
    try:
        yield s
    finally:
        _ACTIVE.reset(token)


def exchange(label: str, args: Any, produce: Callable[[], Any]) -> Any:
    """One observation through the running check's session; with none, just ``produce()``."""
    s = _ACTIVE.get()
    if s is None:
        return produce()
    return s.exchange(label, args, produce)




def plain(x: Any) -> Tuple[Any, List[np.ndarray]]:
    """``x`` as plain data: (JSON-able tree, arrays); objects become opaque entries."""
    enc = _Encoder()
    return enc.encode(x), enc.arrays
