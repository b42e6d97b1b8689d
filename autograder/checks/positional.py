"""Step checks for ``sinusoidal_positional_encoding(seq_len, d_model)`` and ``apply_rotary(x, offset)`` (notebook 07).

Shape letters: T positions (0 … T-1), D model width. Feature pair (2i, 2i+1) holds
sin(p·ω_i), cos(p·ω_i) with ω_i = 1 / 10000^(2i/D).

Besides the values (compared in float64 with ``mhsa_lib``), the check probes what makes the
encoding useful: it does not depend on how many positions are asked for, every value lies in
[-1, 1], position 0 is [0, 1, 0, 1, …], and moving k positions on is one fixed linear map of the
encoding, the same for every position (fitted by least squares on the learner's own output).

``apply_rotary(x, offset=0)`` rotates feature pair (2i, 2i+1) of row t of x (…, T, Dh) by
(offset + t)·ω_i, ω_i = 10000^(-2i/Dh). Its check compares values with ``mhsa_lib.apply_rotary``
and probes the properties attention relies on: norms are kept, shifting queries and keys by the
same number of positions leaves the scores unchanged, and decoding with a cache (keys rotated once,
the new token at offset = cache length) reproduces the scores of rotating the whole sequence.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

import mhsa_lib

from ..frame import (
    CheckResult,
    LearnerError,
    attempt,
    compare,
    describe_failures,
    find_shortcuts,
    matches,
)
from ..frame.diagnosis import diagnose_by_output
from ..frame.mistakes import Mistake
from ..frame.registry import step
from ..frame.variants import Axis, generate
from ..mistakes import positional as M
from .heads import HARD_CODED

PE_POINTS = 4.0
#: "Yours vs expected" in the feedback: code that sets ``yours`` and ``ref`` from ``fn`` (see grading).
PE_PICTURE = (
    'yours = fn(16, 12); ref = mhsa_lib.sinusoidal_positional_encoding(16, 12)\n'
    "axes = ('position', 'feature')"
)
PE_LIBRARY = ("sinusoidal_positional_encoding", "shift_matrix", "_frequencies", "TinyTransformer")
PUBLIC = (4, 6)  # T=4 positions, D=6 features
ATOL = 1e-4  # float32 sines of angles up to ~60 are good to a few 1e-6


def _reference(seq_len: int, d_model: int) -> Tensor:
    return mhsa_lib.sinusoidal_positional_encoding(seq_len, d_model, dtype=torch.float64)


def _sizes(gen: torch.Generator) -> Tuple[int, int]:
    """A random (T, D), D even, T != D."""
    while True:
        t = int(torch.randint(3, 41, (1,), generator=gen))
        d = 2 * int(torch.randint(2, 13, (1,), generator=gen))
        if t != d:
            return t, d


@step("sinusoidal_positional_encoding", forbidden=((), PE_LIBRARY),
      points=PE_POINTS, notebook="07_capstone_tiny_transformer", home="positional", reference=mhsa_lib.sinusoidal_positional_encoding, picture=PE_PICTURE)
def check_sinusoidal_positional_encoding(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check ``sinusoidal_positional_encoding(seq_len, d_model) -> (T, D)`` (max 4)."""
    step = "sinusoidal_positional_encoding"
    seen: List[Tuple[Tuple[int, int], Any]] = []

    got = attempt(fn, *PUBLIC)
    if isinstance(got, LearnerError) and got.kind == "not_implemented":
        result.zero_reason = f"{step} {got}"
        return
    seen.append((PUBLIC, got))
    c_pub = compare(got, _reference(*PUBLIC), what=f"{step}(4, 6)", atol=ATOL)
    detail = c_pub.detail if not isinstance(got, LearnerError) else f"{step}(4, 6) {got}"
    result.add("public case: T=4 positions, D=6", 1.0, c_pub.ok, detail)

    fails = []
    for _ in range(6 if hidden else 3):
        t, d = _sizes(gen)
        y = attempt(fn, t, d)
        seen.append(((t, d), y))
        c = compare(y, _reference(t, d), what="encoding", atol=ATOL)
        if not c.ok:
            fails.append(f"T={t}, D={d}: {y if isinstance(y, LearnerError) else c.detail}")
    result.add("random sizes (T != D, D even)", 1.0, not fails, describe_failures(fails, 1))

    problems = _probes(fn, gen)
    result.add("probes: shape (T, D); values in [-1, 1]; position 0 is [0, 1, 0, 1, …]; the first T "
               "rows do not depend on how many positions are asked for", 1.0, not problems,
               "; ".join(problems))

    shift_problems = _shift_probe(fn)
    result.add("probe: moving k positions on is one fixed linear map of the encoding, the same for "
               "every position (PE[p + k] = PE[p] M_kᵀ)", 1.0, not shift_problems, "; ".join(shift_problems))

    if not result.passed:
        _diagnose(result, seen)
        if c_pub.ok and fails:
            other = attempt(fn, 7, 10)
            if isinstance(other, Tensor) and matches(other, got):
                result.diagnose(HARD_CODED)
    shortcuts = find_shortcuts(fn, (5, 8), (), forbid_library=PE_LIBRARY)
    if shortcuts:
        result.zero_reason = (f"your {step} calls {', '.join(shortcuts)}: this step asks you to build "
                              "the encoding yourself (torch.arange, torch.sin, torch.cos)")
    return


def _as_float64(y: Any) -> Optional[Tensor]:
    if isinstance(y, Tensor) and y.dtype.is_floating_point:
        return y.detach().to("cpu", torch.float64)
    return None


def _probes(fn: Callable, gen: torch.Generator) -> List[str]:
    t, d = 9, 12
    y = attempt(fn, t, d)
    if isinstance(y, LearnerError):
        return [f"{t}, {d}: {y}"]
    if not isinstance(y, Tensor):
        return [f"returned {type(y).__name__}, expected a tensor"]
    if tuple(y.shape) != (t, d):
        hint = " (transposed: rows are positions, columns features)" if tuple(y.shape) == (d, t) else ""
        return [f"shape {tuple(y.shape)} for T={t}, D={d}, expected (T, D) = {(t, d)}{hint}"]
    pe = _as_float64(y)
    if pe is None:
        return [f"dtype {y.dtype}, expected a floating-point tensor"]
    problems = []
    if not bool(torch.isfinite(pe).all()) or float(pe.abs().max()) > 1 + 1e-6:
        problems.append("some values are outside [-1, 1] (or not finite): every entry is a sine or a cosine")
    row0 = torch.tensor([0.0, 1.0] * (d // 2), dtype=torch.float64)
    if not torch.allclose(pe[0], row0, atol=ATOL):
        problems.append(f"position 0 is {[round(v, 3) for v in pe[0, :4].tolist()]}…, expected [0, 1, 0, 1, …] "
                        "(sin 0 on even features, cos 0 on odd ones)")
    longer = _as_float64(attempt(fn, 2 * t + 3, d))
    if longer is None or tuple(longer.shape) != (2 * t + 3, d) or not torch.allclose(longer[:t], pe, atol=ATOL):
        problems.append(f"the first {t} rows change when more positions are asked for: position p's "
                        "encoding depends on p and D only, not on T")
    return problems


def _shift_probe(fn: Callable) -> List[str]:
    t, d = 48, 8
    pe = _as_float64(attempt(fn, t, d))
    if pe is None or tuple(pe.shape) != (t, d):
        return [f"could not probe: expected a (T, D) = {(t, d)} floating-point tensor"]
    problems = []
    for k in (1, 5):
        a, b = pe[:-k], pe[k:]  # rows p and p + k
        m = torch.linalg.lstsq(a, b).solution  # (D, D): a @ m ≈ b
        residual = float((a @ m - b).norm() / b.norm().clamp_min(1e-12))
        if residual > 1e-4:
            problems.append(f"no single linear map takes PE[p] to PE[p + {k}] for all p (relative "
                            f"residual {residual:.2g}): sin and cos of each pair must share one frequency")
            break
    return problems


#: The encoding's structural choices and the wrong ones learners make (frame/variants.py), each
#: with its phrase; the generated variants combine up to two. A new wrong choice of these kinds is
#: one more entry here, and the diagnosis names it.
PE_AXES = [
    Axis("numerator", "2i", {
        "i": "your exponent is i/D with i the pair index (0, 1, 2, …): the exponent is 2i/D, the even "
             "feature index over D (torch.arange(0, D, 2) / D)",
        "j": "feature j uses the frequency 1/10000^(j/D): each feature gets its own frequency. Features 2i "
             "and 2i+1 share one, 1/10000^(2i/D) (use j // 2, or torch.arange(0, D, 2))",
        "2i//": "the exponent 2i/D is computed with integer division (2i // D is 0), so every pair gets the "
                "same frequency: divide as floats",
    }),
    Axis("denominator", "D", {
        "T": "the exponent divides by the number of positions T: it is 2i/D, with D the model width (a "
             "position's encoding must not depend on how many positions there are)",
        "D/2": "the exponent divides by D/2: it is 2i/D",
    }),
    Axis("base", 10000.0, {
        1000.0: "your frequencies use the base 1000: ω_i = 1 / 10000^(2i/D), base 10000",
        100000.0: "your frequencies use the base 100000: ω_i = 1 / 10000^(2i/D), base 10000",
    }),  # (base 100 is the same encoding as the exponent i/D: one name for one output)
    Axis("frequency", "divide", {"multiply": "you multiply the position by 10000^(2i/D): the frequencies "
                                             "must fall from 1 to about 1/10000, so divide: p / 10000^(2i/D)"}),
    Axis("layout", "interleaved", {
        "halves": "you put all the sines first and all the cosines after ([sin | cos]); the course (and the "
                  "paper) interleave them: feature 2i is sin, 2i+1 is cos",
    }),
    Axis("first", "sin", {
        "cos": "sin and cos are swapped: even features (0, 2, 4, …) hold the sine, odd features the cosine",
    }),
    Axis("start", 0, {1: "your positions start at 1: the first token is position 0 (torch.arange(seq_len))"}),
]


def _pe_variant(c: Dict[str, Any]) -> Callable[[int, int], Tensor]:
    """The encoding built with the choices ``c``: column j's frequency and function follow them."""
    def fn(t: int, d: int) -> Tensor:
        j = torch.arange(d, dtype=torch.float64)
        pair = torch.div(j, 2, rounding_mode="floor") if c["layout"] != "halves" else j % (d // 2)
        denominator = {"D": d, "T": t, "D/2": d / 2}[c["denominator"]]
        if c["numerator"] == "2i//":
            exponent = torch.div(2 * pair, denominator, rounding_mode="floor")
        else:
            exponent = {"2i": 2 * pair, "i": pair, "j": j}[c["numerator"]] / denominator
        sign = -1.0 if c["frequency"] == "divide" else 1.0
        omega = c["base"] ** (sign * exponent)  # (D,)
        angle = (torch.arange(t, dtype=torch.float64) + c["start"]).unsqueeze(1) * omega  # (T, D)
        sine = j < d // 2 if c["layout"] == "halves" else j % 2 == 0
        if c["first"] == "cos":
            sine = ~sine
        return torch.where(sine, torch.sin(angle), torch.cos(angle))
    return fn


def _same_as_asked(c: Dict[str, Any]) -> bool:
    """i / (D/2) is 2i/D: not a variant."""
    return not (c["numerator"] == "i" and c["denominator"] == "D/2")


def pe_variants() -> List[Mistake]:
    return list(generate(PE_AXES, _pe_variant, valid=_same_as_asked))


def _diagnose(result: CheckResult, seen) -> None:
    if diagnose_by_output(result, seen, M.PE_MISTAKES, lambda m, args: m.fn(*args), atol=ATOL):
        return
    usable = [(args, y.detach().to("cpu", torch.float64)) for args, y in seen
              if isinstance(y, Tensor) and y.dtype.is_floating_point and tuple(y.shape) == tuple(args)]
    if usable:
        diagnose_by_output(result, usable, distinct_variants([args for args, _ in usable]),
                           lambda m, args: m.fn(*args), atol=ATOL)


def distinct_variants(sizes) -> List[Mistake]:
    """The generated variants that differ from the right encoding on at least one of ``sizes``
    ((T, D) pairs): for some sizes a variant coincides with it (base 1000 over T = 9 is base 10000
    over D = 12), and a variant that gives the right encoding names no mistake."""
    refs = [(t, d, _reference(t, d)) for t, d in sizes]
    return [m for m in pe_variants() if not all(matches(m.fn(t, d), ref, atol=ATOL) for t, d, ref in refs)]




# =========================================================================== rotary embeddings

ROPE_POINTS = 4.0
#: "Yours vs expected": the scores of one query vector placed at positions 2…11 (offset 2) against one
#: key vector at positions 0…11 rotated by mhsa_lib; rotated right, each score depends only on the
#: distance between the two positions (constant diagonals). Your rotation of the queries meets the
#: reference's keys, so that a convention that rotates q and k alike the wrong way still shows.
ROPE_PICTURE = (
    'q = torch.randn(1, 8, generator=g).repeat(10, 1); k = torch.randn(1, 8, generator=g).repeat(12, 1)\n'
    'k_rot = mhsa_lib.apply_rotary(k, 0)\n'
    'ref = mhsa_lib.apply_rotary(q, 2) @ k_rot.T\n'
    'yours = fn(q.clone(), 2) @ k_rot.T\n'
    "axes = ('query row (position 2 + row)', 'key position')"
)
ROPE_LIBRARY = ("apply_rotary", "_frequencies", "shift_matrix", "sinusoidal_positional_encoding")
ROPE_ATOL = 1e-4  # float32 rotations of angles up to ~100


def _rope_reference(x: Tensor, offset: int) -> Tensor:
    return mhsa_lib.apply_rotary(x.double(), offset)


def _rope_input(gen: torch.Generator, hidden: bool) -> Tuple[Tensor, int]:
    """A random (…, T, Dh) float32 input (2 to 4 dims, Dh even, T != Dh) and an offset."""
    ndim = int(torch.randint(2, 5, (1,), generator=gen))
    while True:
        t = int(torch.randint(1, 13, (1,), generator=gen))
        dh = 2 * int(torch.randint(1, 17, (1,), generator=gen))
        if t != dh:
            break
    lead = [int(torch.randint(1, 4, (1,), generator=gen)) for _ in range(ndim - 2)]
    offset = int(torch.randint(0, 60 if hidden else 30, (1,), generator=gen))
    return torch.randn(*lead, t, dh, generator=gen), offset


def _scores(q: Any, k: Any) -> Optional[Tensor]:
    """q @ kᵀ in float64, or None when the learner's outputs cannot be multiplied."""
    q, k = _as_float64(q), _as_float64(k)
    if q is None or k is None or q.dim() < 2 or k.dim() < 2 or q.shape[-1] != k.shape[-1]:
        return None
    try:
        return q @ k.transpose(-2, -1)
    except RuntimeError:
        return None


def _close(a: Optional[Tensor], b: Optional[Tensor], atol: float) -> bool:
    """Same shape and close (False for anything else: shapes that only broadcast do not count)."""
    return a is not None and b is not None and a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=1e-4)


@step("apply_rotary", forbidden=((), ROPE_LIBRARY),
      points=ROPE_POINTS, notebook="07_capstone_tiny_transformer", home="positional", reference=mhsa_lib.apply_rotary,
      picture=ROPE_PICTURE)
def check_apply_rotary(fn: Any, result: CheckResult, gen: torch.Generator, hidden: bool) -> None:
    """Check ``apply_rotary(x, offset=0) -> (…, T, Dh)`` (max 4)."""
    step = "apply_rotary"
    seen: List[Tuple[Tuple[Tensor, int], Any]] = []

    x_pub = torch.randn(5, 6, generator=torch.Generator().manual_seed(7))  # (T=5, Dh=6)
    got = attempt(fn, x_pub.clone(), 2)
    if isinstance(got, LearnerError) and got.kind == "not_implemented":
        result.zero_reason = f"{step} {got}"
        return
    seen.append(((x_pub, 2), got))
    c_pub = compare(got, _rope_reference(x_pub, 2), what=f"{step}(x, 2)", atol=ROPE_ATOL)
    detail = c_pub.detail if not isinstance(got, LearnerError) else f"{step}(x, 2) {got}"
    result.add("public case: x (T=5, Dh=6), offset 2", 1.0, c_pub.ok, detail)

    fails = []
    for _ in range(6 if hidden else 3):
        x, offset = _rope_input(gen, hidden)
        y = attempt(fn, x.clone(), offset)
        seen.append(((x, offset), y))
        c = compare(y, _rope_reference(x, offset), what="rotated x", atol=ROPE_ATOL)
        if not c.ok:
            fails.append(f"x {tuple(x.shape)}, offset {offset}: {y if isinstance(y, LearnerError) else c.detail}")
    result.add("random shapes (…, T, Dh) and offsets", 1.0, not fails, describe_failures(fails, 1))

    problems = _rope_relative_probe(fn, gen)
    result.add("probes: shape kept; norms of every row kept; the scores q_rot·k_rot do not change when both "
               "are shifted by the same number of positions", 1.0, not problems, "; ".join(problems))

    cache_problems = _rope_cache_probe(fn, gen)
    result.add("probe: decoding with a cache (keys rotated once when cached, the new token at offset = cache "
               "length) gives the scores of rotating the whole sequence", 1.0, not cache_problems,
               "; ".join(cache_problems))

    if not result.passed:
        _rope_diagnose(result, seen)
        if c_pub.ok and fails:
            other = attempt(fn, x_pub.clone() + 1.0, 2)
            if isinstance(other, Tensor) and matches(other, got):
                result.diagnose(HARD_CODED)
    x_short = torch.randn(3, 4, generator=torch.Generator().manual_seed(3))  # not the global RNG: the judge must see the same call
    shortcuts = find_shortcuts(fn, (x_short, 1), (), forbid_library=ROPE_LIBRARY)
    if shortcuts:
        result.zero_reason = (f"your {step} calls {', '.join(shortcuts)}: this step asks you to build "
                              "the rotation yourself (torch.arange, torch.cos, torch.sin, slicing)")
    return


def _rope_relative_probe(fn: Callable, gen: torch.Generator) -> List[str]:
    t, dh = 7, 8
    q, k = torch.randn(2, t, dh, generator=gen), torch.randn(2, t, dh, generator=gen)
    c = int(torch.randint(3, 40, (1,), generator=gen))
    q0 = attempt(fn, q.clone(), 0)
    if isinstance(q0, LearnerError):
        return [f"x {tuple(q.shape)}, offset 0: {q0}"]
    if not isinstance(q0, Tensor) or tuple(q0.shape) != tuple(q.shape):
        shape = tuple(q0.shape) if isinstance(q0, Tensor) else type(q0).__name__
        return [f"returned {shape} for x {tuple(q.shape)}, expected the same shape as x"]
    problems = []
    y = _as_float64(q0)
    if y is None or not _close(y.norm(dim=-1), q.double().norm(dim=-1), ROPE_ATOL):
        problems.append("the norm of some row changed: a rotation keeps every vector's length (each pair "
                        "(2i, 2i+1) is turned, not scaled)")
    s0 = _scores(q0, attempt(fn, k.clone(), 0))
    sc = _scores(attempt(fn, q.clone(), c), attempt(fn, k.clone(), c))
    if not _close(s0, sc, 1e-3):
        problems.append(f"the scores of queries and keys both shifted by {c} positions differ from the "
                        "unshifted ones: they must depend on the offset between the positions only")
    elif _close(s0, _scores(q, k), 1e-3):
        problems.append("the scores equal those of the unrotated q and k: nothing was rotated")
    return problems


def _rope_cache_probe(fn: Callable, gen: torch.Generator) -> List[str]:
    s, dh = 9, 6
    q, k = torch.randn(s, dh, generator=gen), torch.randn(s, dh, generator=gen)
    full = _scores(attempt(fn, q.clone(), 0), attempt(fn, k.clone(), 0))  # (S, S)
    cached = attempt(fn, k[: s - 1].clone(), 0)  # the prompt's keys, rotated once when cached
    new_k = attempt(fn, k[s - 1:].clone(), s - 1)  # the new token at position S-1 = cache length
    new_q = attempt(fn, q[s - 1:].clone(), s - 1)
    if full is None or not all(isinstance(v, Tensor) for v in (cached, new_k)):
        return [f"could not probe: expected floating tensors shaped like x ({s}, {dh})"]
    try:
        keys = torch.cat([_as_float64(cached), _as_float64(new_k)], dim=0)
    except (TypeError, RuntimeError):
        return [f"could not probe: expected floating tensors shaped like x ({s}, {dh})"]
    step_scores = _scores(new_q, keys)
    if full.dim() != 2 or not _close(step_scores, full[s - 1:], 1e-3):
        return [f"the new token's scores against the cache (offset {s - 1}, its position) differ from row "
                f"{s - 1} of the full sequence's scores: row t of x is at position offset + t"]
    return []


#: The rotary embedding's structural choices and the wrong ones (frame/variants.py).
ROPE_AXES = [
    Axis("sign", 1.0, {-1.0: "you rotate by -p·ω_i (the sine's sign flipped)"}),
    Axis("exponent", "2i/Dh", {
        "i/Dh": "your frequencies use i/Dh: ω_i = 10000^(-2i/Dh)",
        "-2i/Dh": "your frequencies grow (10000^(+2i/Dh)): ω_i = 10000^(-2i/Dh)",
    }),
    Axis("layout", "pairs", {
        "halves": "you pair feature i with i + Dh/2 (rotate_half, the GPT-NeoX/Llama convention); the course "
                  "pairs adjacent features (2i, 2i+1)",
    }),
    Axis("use_offset", True, {False: "you ignore the offset: row t is at position offset + t"}),
    Axis("start", 0, {1: "your positions start one too late: row t is at position offset + t"}),
    Axis("base", 10000.0, {1000.0: "your frequencies use the base 1000: ω_i = 10000^(-2i/Dh)"}),
]


def _rope_variant(choices):
    def fn(x: Tensor, offset: int = 0) -> Tensor:
        return M._rotate(x, offset, **choices)
    return fn


def _rope_diagnose(result: CheckResult, seen) -> None:
    if diagnose_by_output(result, seen, M.ROPE_MISTAKES, lambda m, args: m.fn(*args), atol=ROPE_ATOL):
        return
    usable = [(args, y.detach().to("cpu", torch.float64)) for args, y in seen
              if isinstance(y, Tensor) and y.dtype.is_floating_point and tuple(y.shape) == tuple(args[0].shape)]
    if usable:
        diagnose_by_output(result, usable, generate(ROPE_AXES, _rope_variant), lambda m, args: m.fn(*args),
                           atol=ROPE_ATOL)
