"""The check frame itself: observations as plain data, the judge that never runs the learner's
code, notes that travel with their own result, fallback memory kept on the checked object."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch

import autograder
import autograder.checks  # noqa: F401  (registers every step)
from autograder.frame import LearnerError, Observations, Opaque, call, get, observe
from autograder.frame.observe import Divergence, Session, plain, same_signature, session, signature, unwrap
from autograder.frame.registry import checked


def test_plain_data_round_trips_and_objects_stay_opaque():
    value = {"t": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([True, False]), "h": torch.ones(2, dtype=torch.bfloat16),
             "n": [1, 2.5, float("nan"), None, "x"], "tup": (torch.float64, torch.Size([2, 3])),
             "err": LearnerError("raised KeyError", kind="error"), "obj": object()}
    obs = Observations("softmax", 1, False)
    s = Session("record", obs)
    with session(s):
        got = s.exchange("value", None, lambda: value)
    # a probe sees the judge's stand-in, which still holds the learner's object for observations
    assert isinstance(got["obj"], Opaque) and unwrap(got["obj"]) is value["obj"]
    assert torch.equal(got["t"], value["t"]) and got["t"] is not value["t"]  # tensors as copies
    replay = Session("replay", obs, strict=True)
    again = replay.exchange("value", None, lambda: pytest.fail("the judge ran the probe's code"))
    assert isinstance(again["obj"], Opaque)
    assert torch.equal(again["h"], value["h"]) and again["h"].dtype == torch.bfloat16
    assert again["tup"] == (torch.float64, torch.Size([2, 3])) and np.isnan(again["n"][2])
    assert isinstance(again["err"], LearnerError) and again["err"].kind == "error"
    json.dumps(plain(value)[0])  # strict JSON: NaN and objects are tagged


def test_an_opaque_stand_in_refuses_to_be_used():
    o = Opaque("module", "MyAttention")
    assert o.__name__ == "MyAttention" and isinstance(o.q_proj.weight, Opaque)
    for use in (lambda: o(1), lambda: bool(o), lambda: list(o), lambda: o == 1, lambda: float(o)):
        with pytest.raises(Divergence):
            use()


def test_signatures_match_within_a_tolerance_and_differ_on_real_changes():
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    assert same_signature(signature((x, 2)), signature((x + 1e-9, 2)))
    assert not same_signature(signature((x, 2)), signature((x + 1e-3, 2)))
    assert not same_signature(signature((x, 2)), signature((x.T, 2)))
    assert not same_signature(signature((x, 2)), signature((x, 3)))


def test_saved_observations_hold_no_pickle_and_are_size_limited(tmp_path):
    obs = Observations("softmax", 3, True)
    s = Session("record", obs)
    with session(s):
        call(lambda x: x * 2, torch.ones(4))
    path = obs.save(tmp_path / "o.zip")
    back = Observations.load(path)
    assert (back.step, back.seed, back.hidden, len(back.entries)) == ("softmax", 3, True, 2 - 1)
    with pytest.raises(ValueError, match="larger than"):
        Observations.load(path, max_bytes=10)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("observations.json", json.dumps({**obs.to_json(), "n_arrays": 1}))
        buf = io.BytesIO()
        np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
        z.writestr("a0.npy", buf.getvalue())
    with pytest.raises(ValueError):
        Observations.load(evil)


def softmax_good(x, dim=-1):  # a slice that is all -inf gives zeros, as the notebook asks
    m = x.amax(dim, keepdim=True)
    e = torch.exp(x - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    total = e.sum(dim, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def test_the_judge_never_runs_the_learners_code_and_scores_what_was_observed():
    step = get("softmax")
    calls = []

    def learner(x, dim=-1):
        calls.append(1)
        return softmax_good(x, dim)

    record = step.probe(learner, seed=5)
    n = len(calls)
    judged = step.judge(record, seed=5)
    assert len(calls) == n and judged.points == step.run(learner, seed=5).points == 3.0


def test_a_record_made_for_other_cases_earns_only_what_it_shows_on_the_graders_inputs():
    step = get("softmax")
    record = step.probe(softmax_good, seed=5)
    judged = step.judge(record, seed=6)  # the grader's own seed: other random cases, the same public one
    assert [p.passed for p in judged.parts][:2] == [True, False]
    assert judged.points < 3.0 and "not in the record" in " ".join(judged.notes)
    empty = Observations("softmax", 6, False)
    assert step.judge(empty, seed=6).points == 0.0
    with pytest.raises(Divergence):
        step.judge(record, seed=6, strict=True)


_NOTEBOOK = '''
import torch
import mhsa_lib
from torch import nn

def split_heads(x, num_heads):
    b, t, d = x.shape
    return x.reshape(b, num_heads, t, d // num_heads)  # no transpose: wrong

def merge_heads(x):
    b, h, t, dh = x.shape
    return x.reshape(b, t, h * dh)  # no transpose back: wrong

class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, num_heads, bias=True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError("d_model must be divisible by num_heads")
        self.num_heads = num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(d_model, d_model, bias=bias) for _ in range(4))

    def forward(self, x, mask=None, return_weights=False):
        q, k, v = (split_heads(p(x), self.num_heads) for p in (self.q_proj, self.k_proj, self.v_proj))
        out, weights = mhsa_lib.scaled_dot_product_attention(q, k, v, mask)
        out = self.out_proj(merge_heads(out))
        return (out, weights) if return_weights else out
'''


def test_every_isolation_note_reaches_the_report(capsys):
    """Two earlier steps wrong at once: both are swapped for the references and both notes are
    in the report (no note is lost to the nested checks of the earlier steps)."""
    namespace: dict = {}
    exec(_NOTEBOOK, namespace)
    points = autograder.check_multi_head_attention(namespace["MultiHeadAttention"], seed=1)
    out = " ".join(capsys.readouterr().out.split())
    assert "your split_heads does not pass its own check yet" in out
    assert "your merge_heads does not pass its own check yet" in out
    assert points == 6.0, out
    assert namespace["split_heads"].__name__ == "split_heads"  # the learner's names are put back


def test_fallback_remembers_on_the_object_and_says_what_it_uses(capsys):
    def wrong(x, dim=-1):
        return torch.exp(x)

    assert autograder.fallback("softmax", softmax_good) is softmax_good
    assert checked(softmax_good, "softmax")[0] is True
    import mhsa_lib

    assert autograder.fallback("softmax", wrong) is mhsa_lib.softmax
    assert "does not pass its check yet" in capsys.readouterr().out
    autograder.check_softmax(wrong, seed=0, quiet=True)
    assert checked(wrong, "softmax")[0] is False


def test_observe_turns_a_failure_inside_into_a_learner_error():
    with pytest.raises(LearnerError, match="raised ZeroDivisionError"):
        observe("boom", lambda: 1 / 0)


def test_a_judge_is_not_fooled_by_checks_disturbed_in_the_learners_process(monkeypatch):
    """A learner's process can patch what the probe's own copy of a check computes (here every
    comparison fails, so the probe takes extra diagnosis branches and records more): the judge
    uses only the observations made on the inputs it chose, and a correct answer keeps its marks."""
    from autograder.checks import attention
    from autograder.frame import Comparison

    step = get("softmax")
    with monkeypatch.context() as m:
        seen = []  # the public case compares right, every later case wrong: a diagnosis branch runs

        def disturbed(*args, **kwargs):
            seen.append(1)
            return Comparison(len(seen) == 1, "disturbed")

        m.setattr(attention, "compare", disturbed)
        m.setattr(attention, "close", lambda *args, **kwargs: False)
        record = step.probe(softmax_good, seed=9)
    assert step.judge(record, seed=9).points == 3.0
    with pytest.raises(Divergence):  # a strict judge (the tests') still sees that the record differs
        step.judge(record, seed=9, strict=True)
