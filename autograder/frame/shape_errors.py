"""Reading a learner's shape error in the course's letters: the one reader of torch's shape-error
messages every check shares.

A :class:`~.errors.LearnerError`'s text (``raised RuntimeError: <torch's message> (line 3: ...)``)
is split by :func:`parse_error`; :func:`read_shape_error` recognises torch's message (a matrix
product, a batched one, a broadcast, a view, a concatenation, an axis out of range, ...) and says
which operation failed on which shapes, with the sizes named by the case's letters. Two ways to
name a size:

- :class:`Letters`: one letter per size, a size several axes share keeps its number (``(B, T, D)``);
- :class:`SizeNames`: every reading of a size, products too (``(B·T=10, H/Dh=2)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional, Sequence, Union

# --------------------------------------------------------------------------- naming sizes


class Letters:
    """The course's names for the sizes of a case (``{"B": 2, "T": 5, ...}``): a size that only
    one axis has is written by its letter, any other by its number."""

    def __init__(self, sizes: Mapping[str, int]):
        self.sizes = dict(sizes)
        counts: Dict[int, int] = {}
        for n in self.sizes.values():
            counts[n] = counts.get(n, 0) + 1
        self.by_size = {n: name for name, n in self.sizes.items() if counts[n] == 1}

    def size(self, n: int) -> str:
        return self.by_size.get(int(n), str(int(n)))

    def shape(self, shape: Sequence[int]) -> str:
        return "(" + ", ".join(self.size(n) for n in shape) + (",)" if len(shape) == 1 else ")")

    def legend(self) -> str:
        return ", ".join(f"{name}={n}" for name, n in self.sizes.items())


class SizeNames:
    """Sizes named with every reading: ``T=5``, ``B·T=10`` (a product of two sizes), ``H/Dh=2``
    (sizes that happen to be equal), or just ``7``; 1 stays 1 (any size may be 1)."""

    def __init__(self, sizes: Mapping[str, int]):
        self.sizes = dict(sizes)

    def size(self, n: int) -> str:
        n = int(n)
        if n <= 1:
            return str(n)
        sizes = self.sizes
        same = [k for k, v in sizes.items() if v == n]
        keys = [k for k, v in sizes.items() if v > 1]
        same += [f"{a}·{b}" for i, a in enumerate(keys) for b in keys[i + 1:] if sizes[a] * sizes[b] == n
                 and not ({a, b} == {"H", "Dh"} and "D" in same)]  # D is H·Dh by definition
        return f"{'/'.join(same)}={n}" if same else str(n)

    def shape(self, dims: Iterable[int]) -> str:
        return "(" + ", ".join(self.size(int(n)) for n in dims) + ")"


Names = Union[Letters, SizeNames]

# --------------------------------------------------------------------------- a learner's error

_ERROR = re.compile(r"^raised (?P<type>\w+): (?P<msg>.*?)(?: \(line (?P<lineno>\d+)(?:: (?P<line>.*))?\))?"
                    r"(?: — .*)?$")

#: Words of torch's messages about shapes.
SHAPE_WORDS = ("must match the size", "cannot be multiplied", "Expected size for first two dimensions",
               "Dimension out of range", "is invalid for input of size", "einsum()", "must be a 3D tensor",
               "must be a matrix", "expects a tensor with <= 2 dimensions", "does not broadcast",
               "shape mismatch", "size mismatch", "inconsistent tensor size", "same number of dimensions",
               "number of dimensions", "is not broadcastable", "expected 2D", "expected 3D")


@dataclass(frozen=True)
class RaisedError:
    type: str
    message: str
    line: str

    @property
    def about_shapes(self) -> bool:
        return self.type in ("RuntimeError", "IndexError", "ValueError") and any(
            w in self.message for w in SHAPE_WORDS)


def parse_error(text: str) -> Optional[RaisedError]:
    """The exception type, torch's message and the learner's line of a LearnerError's text; None
    if the text is not an exception the learner's code raised."""
    m = _ERROR.match(str(text).strip())
    if m is None:
        return None
    return RaisedError(m.group("type"), m.group("msg").strip(), (m.group("line") or "").strip())


# --------------------------------------------------------------------------- torch's messages

LINEAR_HINT = ("a weight stored as nn.Linear stores it, (out_features, in_features), is applied as "
               "x @ W.T (or F.linear(x, W)), not x @ W")


def read_shape_error(message: str, names: Union[Names, Mapping[str, int]], *, linear_weights: bool = False,
                     ndims: Sequence[int] = ()) -> Optional[str]:
    """Which operation failed on which shapes and what it needed, from torch's ``message`` (or a
    LearnerError's whole text), its sizes named by ``names`` (a :class:`Letters`, a
    :class:`SizeNames`, or the case's sizes by letter, read as SizeNames); None if it is no shape
    error this reader knows. ``linear_weights``: the step applies weights stored as nn.Linear
    stores them (a right operand that looks transposed gets that hint); ``ndims``: the numbers of
    axes of the case's inputs (said when an axis is out of range). The text has no final period."""
    if not isinstance(message, str):
        raise TypeError(f"message must be a str (torch's message), got {type(message).__name__}")
    if isinstance(names, Mapping):
        names = SizeNames(names)
    if not isinstance(names, (Letters, SizeNames)):
        raise TypeError(f"names must be Letters, SizeNames or a dict of sizes, got {type(names).__name__}")
    letters = set(names.sizes)
    name, shape = names.size, names.shape

    m = re.search(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)", message)
    if m:
        a, b, c, d = map(int, m.groups())
        hint = f": {LINEAR_HINT}" if linear_weights and d == b and c != b else ""
        return (f"a matrix product of {shape((a, b))} by {shape((c, d))} failed: the last size of the left "
                f"({name(b)}) must equal the first size of the right ({name(c)}){hint}")
    m = re.search(r"Expected size for first two dimensions of batch2 tensor to be: \[(\d+), (\d+)\] "
                  r"but got: \[(\d+), (\d+)\]", message)
    if m:
        a, b, c, d = map(int, m.groups())
        return (f"a batched matrix product failed: the second tensor should start with {shape((a, b))} but "
                f"starts with {shape((c, d))}. In `x @ y` the last axis of x must equal the second-to-last "
                "axis of y, and the leading axes must agree (are the heads, positions or features of one "
                "operand on other axes than you think?)")
    m = re.search(r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\) at "
                  r"non-singleton dimension (\d+)", message)
    if m:
        a, b, dim = map(int, m.groups())
        return (f"an elementwise operation (+, *, a mask, a matmul's batch axes) met sizes {name(a)} and "
                f"{name(b)} on axis {dim} of the broadcast result: to broadcast they must be equal, or one of "
                "them 1. Write the shape of each intermediate tensor next to its line and check which axes "
                "you pair")
    m = re.search(r"shape '\[([^\]]*)\]' is invalid for input of size (\d+)", message)
    if m:
        dims = [int(s) for s in re.findall(r"-?\d+", m.group(1))]
        heads = " (split D into H·Dh, or merge H·Dh back into D)" if "H" in letters else ""
        return (f"a view/reshape to {shape(dims)} of a tensor of {m.group(2)} elements failed: the new shape "
                f"must hold exactly as many elements{heads}")
    m = re.search(r"Sizes of tensors must match except in dimension (\d+)\. Expected size (\d+) but got "
                  r"size (\d+)", message)
    if m:
        dim, a, b = map(int, m.groups())
        cache = " (positions are axis -2 of (B, G, S, Dh))" if "G" in letters else ""
        return (f"torch.cat along axis {dim} met sizes {name(a)} and {name(b)} on another axis: every axis "
                f"but the one you concatenate along must agree{cache}")
    m = re.search(r"Dimension out of range \(expected to be in range of \[(-?\d+), (-?\d+)\], but got (-?\d+)\)",
                  message)
    if m:
        _, hi, got = map(int, m.groups())
        inputs = sorted(set(ndims))
        have = f" (the inputs here have {' or '.join(map(str, inputs))})" if inputs else ""
        heads = " (a (B, T, D) tensor where (B, H, T, Dh) was meant, or the reverse?)" if "H" in letters else ""
        return (f"your code uses axis {got} of a tensor that has only {hi + 1} axes{have}{heads}: count axes "
                "from the end (dim=-1, transpose(-2, -1)) so that the same code works whatever the number of "
                "leading axes")
    if "must be a 3D tensor" in message or "must be a matrix" in message or "<= 2 dimensions" in message:
        return ("torch.bmm takes only 3-D tensors, torch.mm and .t() only 2-D ones: use @ (torch.matmul) "
                "and transpose(-2, -1), which work with any number of leading axes")
    if message.startswith("einsum()"):
        return (f"your einsum does not fit these shapes ({message}). `...` in an equation stands for any number "
                "of leading axes")
    if re.search(r"expected (?:scalar type|m1 and m2 to have the same dtype)", message):
        return ("two tensors of different dtypes met in one operation: make new tensors with the input's "
                "dtype and device (torch.zeros(..., dtype=x.dtype, device=x.device))")
    return None
