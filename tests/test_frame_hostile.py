"""The check frame against what a learner's code may hand it: objects that are not plain data,
tensors the record cannot hold, warnings from the check's own arithmetic, and records that are
not what a probe writes. A check gives the same points and report in one process as split into
probe and judge, never raises and never writes to stderr; a hostile record is refused with a
ValueError. (No kernel, no nbgrader: fast.)"""

from __future__ import annotations

import ast
import collections
import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_check

from autograder import check_softmax, fallback
from autograder.frame import Divergence, LearnerError, call, compare
from autograder.frame import registry as registry_module
from autograder.frame.observe import FORMAT, Observations
from autograder.frame.registry import step, steps


def _softmax(x, dim=-1):  # a slice that is all -inf gives zeros, as the notebook asks
    m = x.amax(dim, keepdim=True)
    e = torch.exp(x - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    total = e.sum(dim, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


class _RaisingEverywhere:
    def __repr__(self):
        raise RuntimeError("repr")

    __str__ = __repr__

    def __eq__(self, other):
        raise RuntimeError("eq")

    __hash__ = object.__hash__

    def __getattr__(self, name):
        raise RuntimeError(f"getattr {name}")


class _BrokenTorchFunction(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") == "detach":
            raise RuntimeError("no detach here")
        return super().__torch_function__(func, types, args, kwargs or {})


_Pair = collections.namedtuple("_Pair", "out weights")

#: What a learner's softmax may return that is not plain data, or a tensor the record cannot hold.
ODD_OUTPUTS = {
    "generator": lambda x, dim=-1: (row for row in _softmax(x, dim)),
    "namedtuple": lambda x, dim=-1: _Pair(_softmax(x, dim), None),
    "torch.return_types": lambda x, dim=-1: torch.max(x, dim),
    "bytes": lambda x, dim=-1: b"\x00",
    "object whose repr, eq and getattr raise": lambda x, dim=-1: _RaisingEverywhere(),
    "Tensor subclass whose detach raises": lambda x, dim=-1: _softmax(x, dim).as_subclass(_BrokenTorchFunction),
    "complex32 tensor": lambda x, dim=-1: _softmax(x, dim).to(torch.complex32),
    "float8 tensor": lambda x, dim=-1: _softmax(x, dim).to(torch.float8_e4m3fn),
    "sparse tensor": lambda x, dim=-1: _softmax(x, dim).to_sparse(),
    "meta tensor": lambda x, dim=-1: _softmax(x, dim).to("meta"),
}


@pytest.mark.parametrize("name", list(ODD_OUTPUTS))
def test_odd_outputs_score_and_read_the_same_in_one_process_and_split(name, capsys):
    points, report = run_check(check_softmax, ODD_OUTPUTS[name], capsys, seed=11)
    assert points == 0.0
    assert "expected a tensor" in report, report


def test_a_correct_answer_still_earns_everything(capsys):
    points, report = run_check(check_softmax, _softmax, capsys, seed=11)
    assert points == 3.0, report


def test_a_non_tensor_output_is_named_by_its_type():
    from autograder.frame.observe import Opaque

    assert compare(Opaque("generator"), torch.zeros(1)).detail == "output is a generator, expected a tensor"


def test_a_warning_from_the_checks_own_code_never_reaches_stderr():
    """A warning from a check's own arithmetic on an odd output (casting a complex output to real,
    say) would reach stderr and cost the whole test cell in nbgrader, whatever the step's kind."""

    @step("toy_warns", points=1, notebook="00_orientation", home=None, kind="warmup")
    def check_toy_warns(fn, result, gen, hidden):
        warnings.warn("the check's own warning")
        result.add("ran", 1.0, True)

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert check_toy_warns(lambda x: x, seed=1, quiet=True) == 1.0
    finally:
        registry_module._STEPS.pop("toy_warns", None)
    assert [str(w.message) for w in caught] == []


# --------------------------------------------------------------------------- hostile records

GOOD = {"format": FORMAT, "step": "softmax", "seed": 1, "hidden": False, "entries": [], "n_arrays": 0}


def _npy(a, allow_pickle=False) -> bytes:
    b = io.BytesIO()
    np.save(b, a, allow_pickle=allow_pickle)
    return b.getvalue()


def _header_only(shape) -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return b.getvalue()


def _with(**changes) -> str:
    return json.dumps({**GOOD, **changes})


HOSTILE_RECORDS = {
    "not a zip": None,
    "no observations.json": {},
    "malformed JSON": {"observations.json": "{"},
    "JSON nested a million deep": {"observations.json": "[" * 10**6 + "]" * 10**6},
    "an entry nested deeper than a probe writes": {"observations.json": _with(
        entries=[["call", None, json.loads('{"__t__": "list", "v": [' * 200 + "]}" * 200), False]])},
    "no entries": {"observations.json": json.dumps({k: v for k, v in GOOD.items() if k != "entries"})},
    "entries not a list": {"observations.json": _with(entries="abc")},
    "an entry that is a number": {"observations.json": _with(entries=[5])},
    "an entry of two items": {"observations.json": _with(entries=[["call", None]])},
    "seed a list": {"observations.json": _with(seed=[1])},
    "step a dict": {"observations.json": _with(step={"a": 1})},
    "n_arrays infinite": {"observations.json": _with(n_arrays=1).replace('"n_arrays": 1', '"n_arrays": Infinity')},
    "n_arrays negative": {"observations.json": _with(n_arrays=-5)},
    "n_arrays a billion": {"observations.json": _with(n_arrays=10**9)},
    "an array missing": {"observations.json": _with(n_arrays=1)},
    "a pickled array": {"observations.json": _with(n_arrays=1),
                        "a0.npy": _npy(np.array([object()], dtype=object), allow_pickle=True)},
    "a structured array": {"observations.json": _with(n_arrays=1),
                           "a0.npy": _npy(np.zeros(2, dtype=[("a", "f8"), ("b", "i4")]))},
    "an array header claiming terabytes": {"observations.json": _with(n_arrays=1), "a0.npy": _header_only((2**40,))},
    "an array header larger than its data": {"observations.json": _with(n_arrays=1),
                                             "a0.npy": _header_only((1000, 1000)) + b"\0" * 64},
    "not an array": {"observations.json": _with(n_arrays=1), "a0.npy": b"hello"},
    "a name twice": [("observations.json", json.dumps(GOOD)), ("observations.json", _with(step="other"))],
}


@pytest.mark.parametrize("name", list(HOSTILE_RECORDS))
def test_a_hostile_record_is_refused_with_a_value_error(name, tmp_path):
    path = tmp_path / "record.zip"
    files = HOSTILE_RECORDS[name]
    if files is None:
        path.write_bytes(b"not a zip at all")
    else:
        with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as z:
            warnings.simplefilter("ignore")  # (zipfile warns about the duplicate name)
            for member, data in (files.items() if isinstance(files, dict) else files):
                z.writestr(member, data)
    with pytest.raises(ValueError):
        Observations.load(path)


def test_a_record_larger_than_allowed_is_refused_before_reading(tmp_path):
    path = tmp_path / "record.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("observations.json", json.dumps(GOOD))
        z.writestr("a0.npy", b"\0" * (2 * 2**20))
    with pytest.raises(ValueError, match="larger than"):
        Observations.load(path, max_bytes=2**20)


def _probed(tmp_path):
    step_ = check_softmax.step
    path = step_.probe(_softmax, seed=5).save(tmp_path / "record.zip")
    return step_, Observations.load(path)


def test_a_record_read_back_is_judged_as_in_one_process(tmp_path):
    step_, record = _probed(tmp_path)
    assert step_.judge(record, seed=5, strict=True).points == check_softmax(_softmax, seed=5, quiet=True) == 3.0


@pytest.mark.parametrize("tamper", ["negative array index", "array index past the end", "dtype unlike the array's"])
def test_an_entry_naming_the_wrong_array_is_a_divergence_not_a_crash(tamper, tmp_path):
    step_, record = _probed(tmp_path)
    entry = next(e for e in record.entries if isinstance(e.value, dict) and e.value.get("__t__") == "tensor")
    if tamper == "negative array index":
        entry.value["a"] = -1
    elif tamper == "array index past the end":
        entry.value["a"] = len(record.arrays)
    else:
        entry.value["dtype"] = "int64"
    with pytest.raises(Divergence):
        step_.judge(record, seed=5, strict=True)
    result = step_.judge(record, seed=5)
    assert result.points == 0.0 and "not in the record" in " ".join(result.notes)


def test_a_record_cannot_put_the_judges_tensors_on_the_meta_device(tmp_path):
    step_, record = _probed(tmp_path)
    for e in record.entries:
        if isinstance(e.value, dict) and e.value.get("__t__") == "tensor":
            e.value["dev"] = "meta"
    assert step_.judge(record, seed=5, strict=True).points == 3.0


# --------------------------------------------------------------------------- adding a step


@pytest.fixture
def toy_step():
    """A warm-up step declared as README's "Adding a step" says, removed from the registry after."""

    def double_reference(x):
        return 2 * x

    @step("toy_double", points=2, notebook="00_orientation", home=None, kind="warmup", reference=double_reference)
    def check_toy_double(fn, result, gen, hidden):
        """Check ``double(x) = 2x`` (max 2)."""
        x = torch.tensor([1.0, -2.0, 3.5])
        try:
            y = call(fn, x.clone())
        except LearnerError as e:
            result.zero_reason = f"double(x) {e}"
            return
        c = compare(y, 2 * x.double(), what="double(x)")
        result.add("public case", 1.0, c.ok, c.detail)

    try:
        yield check_toy_double, double_reference
    finally:
        registry_module._STEPS.pop("toy_double", None)


def test_a_new_step_checks_split_and_falls_back_on_its_reference(toy_step, capsys):
    check, reference = toy_step
    assert run_check(check, lambda x: x + x, capsys)[0] == 2.0
    assert run_check(check, lambda x: 3 * x, capsys)[0] == 0.0
    mine = lambda x: x + x  # noqa: E731
    assert fallback("toy_double", mine) is mine
    assert fallback("toy_double", lambda x: 3 * x) is reference
    out = capsys.readouterr().out
    assert "mhsa_lib.toy_double" not in out, "a step without a library home has no mhsa_lib reference"


def test_every_step_declared_in_a_check_module_is_registered():
    """A check module that autograder/checks/__init__.py does not import registers nothing, and
    no notebook could find its checks: every ``@step(...)`` written there must be in the registry."""
    registered = {s.name for s in steps()}
    for path in sorted((ROOT / "autograder" / "checks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "step"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                assert node.args[0].value in registered, f"{Path(path).name} declares {node.args[0].value!r} " \
                                                         "but autograder/checks/__init__.py does not import it"
