"""The benchmark runner runs and writes what RESULTS.md and the GPU run rely on. Nothing here
measures speed: the smoke mode uses tiny shapes and one repeat, and only the format is checked."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, cpu_matmul_supports, graded_cell, notebook, write

BENCH = ROOT / "benchmarks"


def _load(name):
    """A module of benchmarks/, imported as the runner imports it (its folder on sys.path)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    if name != "run":
        return importlib.import_module(name)
    if "benchmarks_run" not in sys.modules:  # "run" alone is too common a module name
        spec = importlib.util.spec_from_file_location("benchmarks_run", BENCH / "run.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["benchmarks_run"] = module
        spec.loader.exec_module(module)
    return sys.modules["benchmarks_run"]


#: Whether this torch lets the CPU memory counter see freed storages (not on torch 2.1).
COUNTS_CPU_PEAKS = _load("bench_common").STORAGE_FREES_SEEN


@pytest.fixture(scope="module")
def runner():
    return _load("run")


@pytest.fixture(scope="module")
def smoke(runner, tmp_path_factory):
    """One smoke run of core, decoding, memory and grading, in this process (threads restored
    after); grading is skipped in smoke mode or when its script is absent."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    threads = torch.get_num_threads()
    try:
        returned = runner.main(["--smoke", "--groups", "core,decoding,memory,grading", "--threads", "1",
                                "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return returned, json.loads(out.read_text())


def test_smoke_run_writes_every_group(smoke):
    returned, written = smoke
    assert written["schema"] == 1
    assert set(written["groups"]) == {"core", "decoding", "memory", "grading"}
    for group in ("core", "decoding", "memory"):
        assert written["groups"][group]["status"] == "ok", written["groups"][group]
    assert written["groups"]["grading"]["status"] in ("ok", "skipped")
    env = written["environment"]
    for key in ("date", "python", "torch", "numpy", "cpu", "mode", "device", "threads"):
        assert key in env, key
    assert env["mode"] == "smoke" and env["device"] == "cpu" and env["threads"] == [1]
    assert returned["groups"].keys() == written["groups"].keys()


def test_core_rows_cover_every_candidate_both_passes(smoke):
    rows = smoke[1]["groups"]["core"]["rows"]
    core = {(r["impl"], r["pass"], r["causal"]) for r in rows if r["table"] == "core"}
    module = {(r["impl"], r["pass"], r["causal"]) for r in rows if r["table"] == "module"}
    core_impls = {"mhsa_lib reference", "mhsa_lib fast", "F.scaled_dot_product_attention", "NumPy"}
    module_impls = {"mhsa_lib MHA reference", "mhsa_lib MHA fast", "mhsa_lib fused-QKV fast",
                    "nn.MultiheadAttention", "nn.MultiheadAttention need_weights=False"}
    passes, causal = ("fwd", "fwd+bwd"), (False, True)
    assert core == {(i, p, c) for i in core_impls for p in passes for c in causal}
    assert module == {(i, p, c) for i in module_impls for p in passes for c in causal}
    for r in rows:
        assert r["median_s"] > 0 and math.isfinite(r["median_s"]), r
        assert r["flop_per_s"] == pytest.approx(r["flops"] / r["median_s"])
        if r["impl"] == "NumPy" or COUNTS_CPU_PEAKS:
            assert r["peak_extra_bytes"] is not None and r["peak_extra_bytes"] >= 0, r
        else:  # unknown rather than wrong
            assert r["peak_extra_bytes"] is None, r
        assert r["threads"] == 1 and r["dtype"] == "float32"
        if r["pass"] == "fwd":  # every candidate computes the same function
            assert r["max_abs_diff"] is not None and r["max_abs_diff"] < 1e-4, r


def test_core_flops_follow_the_formula(smoke):
    rows = smoke[1]["groups"]["core"]["rows"]
    r = next(r for r in rows if r["table"] == "core" and r["pass"] == "fwd" and not r["causal"])
    flops = 4 * r["B"] * r["H"] * r["T"] * r["T"] * r["Dh"]
    assert r["flops"] == flops
    causal_bwd = next(x for x in rows if x["table"] == "core" and x["pass"] == "fwd+bwd" and x["causal"])
    assert causal_bwd["flops"] == flops / 2 * 3.5


def test_goals_have_ratio_target_and_verdict(smoke):
    goals = smoke[1]["groups"]["core"]["goals"]
    targeted = {g["name"]: g for g in goals if g["target"] is not None}
    assert set(targeted) == {"fast forward / nn.MultiheadAttention eval",
                             "fast forward+backward / nn.MultiheadAttention train"}
    assert targeted["fast forward / nn.MultiheadAttention eval"]["target"] == 0.75
    assert targeted["fast forward+backward / nn.MultiheadAttention train"]["target"] == 1.05
    for g in goals:
        assert g["measured"] > 0
        assert g["met"] in (True, False, None)
        if g["target"] is not None:
            assert g["met"] == (g["measured"] <= g["target"])


def test_decoding_rows_and_cache_bytes(smoke):
    group = smoke[1]["groups"]["decoding"]
    rows = group["rows"]
    assert {r["variant"] for r in rows} == {"MHA", "GQA", "MQA"}
    assert {r["impl"] for r in rows} == {"no cache", "KVCache", "StaticKVCache"}
    for r in rows:
        assert r["tokens_per_s"] > 0
        if r["impl"] == "KVCache":  # the growing cache holds exactly prompt + new tokens
            assert r["kv_cache_bytes_measured"] == r["kv_cache_bytes_formula"]
        if r["impl"] != "no cache":
            assert r["max_abs_diff_vs_no_cache"] < 1e-4, r
    by_variant = {r["variant"]: r["kv_cache_bytes_formula"] for r in rows}
    assert by_variant["MQA"] < by_variant["GQA"] < by_variant["MHA"]
    assert [e["bytes"] for e in group["cache_size_examples"]] == [2 * 2**30, 512 * 2**20, 64 * 2**20]


def test_memory_rows_and_growth_goals(smoke):
    group = smoke[1]["groups"]["memory"]
    rows = group["rows"]
    assert {(r["T"], r["backend"]) for r in rows} == {(t, b) for t in (8, 16) for b in ("reference", "fast")}
    by = {(r["T"], r["backend"]): r for r in rows}
    for t in (8, 16):
        ref, fast = by[t, "reference"], by[t, "fast"]
        for key in ("forward_peak_bytes", "saved_for_backward_bytes") if COUNTS_CPU_PEAKS else ("saved_for_backward_bytes",):
            assert ref[key] > 0 and fast[key] > 0
        # the reference path keeps the (T, S) weights for backward; the fast path does not
        assert ref["saved_for_backward_bytes"] > fast["saved_for_backward_bytes"]
    targets = {g["name"]: (g["op"], g["target"]) for g in group["goals"]}
    assert targets == {
        "reference forward peak growth exponent in T": (">=", 1.8),
        "reference saved for backward growth exponent in T": (">=", 1.8),
        "fast forward peak growth exponent in T": ("<=", 1.2),
        "fast saved for backward growth exponent in T": ("<=", 1.2),
    }
    for g in group["goals"]:
        if COUNTS_CPU_PEAKS or "saved" in g["name"]:
            assert math.isfinite(g["measured"]) and g["met"] in (True, False)
        else:
            assert math.isnan(g["measured"]) and g["met"] is None


def test_growth_exponent_reads_the_last_doubling():
    memory = _load("bench_memory")
    rows = [{"backend": "reference", "T": t, "m": 3 * t * t + 100 * t} for t in (64, 128, 256)]
    expected = math.log((3 * 256**2 + 100 * 256) / (3 * 128**2 + 100 * 128)) / math.log(2)
    assert memory.growth_exponent(rows, "reference", "m") == pytest.approx(expected)
    assert memory.growth_exponent([{**r, "backend": "fast", "m": 7 * r["T"]} for r in rows], "fast", "m") == \
        pytest.approx(1.0)


def test_the_gpu_dtypes_run_through_every_group_on_the_cpu(runner):
    """What a GPU run measures in bf16 and fp16, tried on the CPU at tiny shapes, so the GPU run
    does not find a low-precision bug first (float16 only where this torch has it on the CPU)."""
    dtypes = ["bfloat16"] + (["float16"] if cpu_matmul_supports(torch.float16) else [])
    threads = torch.get_num_threads()
    try:
        results = runner.main(["--smoke", "--groups", "core,decoding,memory", "--threads", "1", "--dtypes", ",".join(dtypes)])
    finally:
        torch.set_num_threads(threads)
    groups = results["groups"]
    assert all(g["status"] == "ok" for g in groups.values()), groups
    core_rows = groups["core"]["rows"]
    assert {r["dtype"] for r in core_rows} == set(dtypes)
    assert "NumPy" not in {r["impl"] for r in core_rows}  # NumPy runs in float32 only
    for r in core_rows:
        assert r["median_s"] > 0
        if r["pass"] == "fwd":  # same function, within the dtype's rounding
            assert r["max_abs_diff"] < 0.1, r
    assert {r["dtype"] for r in groups["decoding"]["rows"]} == {"bfloat16"}
    assert {r["dtype"] for r in groups["memory"]["rows"]} == {"bfloat16"}


def test_gpu_goals_code_runs_on_the_cpu():
    """The GPU goal comparison (fast forward+backward against SDPA alone plus the four projection
    matmuls alone, and against nn.MultiheadAttention training) at the smoke shape on the CPU."""
    common, core = _load("bench_common"), _load("bench_core")
    goals, times = core.gpu_goals(common.Config(mode="smoke", device="cpu"))
    assert set(times) == {"mhsa_lib MHA fast", "mhsa_lib fused-QKV fast", "nn.MultiheadAttention",
                          "nn.MultiheadAttention need_weights=False", "SDPA alone", "4 projection matmuls alone",
                          "SDPA + projections"}
    assert all(t > 0 for t in times.values())
    assert times["SDPA + projections"] == times["SDPA alone"] + times["4 projection matmuls alone"]
    by = {g["name"]: g for g in goals}
    fast_vs_parts = by["fast fwd+bwd / (SDPA alone + 4 projection matmuls alone)"]
    assert (fast_vs_parts["op"], fast_vs_parts["target"]) == ("<=", 1.10)
    assert fast_vs_parts["measured"] == pytest.approx(times["mhsa_lib MHA fast"] / times["SDPA + projections"])
    speed_up = by["nn.MultiheadAttention train / fast (speed-up)"]
    assert (speed_up["op"], speed_up["target"]) == (">=", 2.0)
    assert speed_up["met"] == (speed_up["measured"] >= 2.0)
    assert "bf16" in fast_vs_parts["where"] and "(2, 2, 16, 8)" in fast_vs_parts["where"]


@pytest.mark.slow
def test_gpu_check_script_without_a_gpu_writes_its_files_and_fails(tmp_path):
    """The one-command GPU run, on a machine without CUDA: the library tests run (CUDA ones
    skipped with their reason), the benchmark says why it cannot run, and the script exits 1."""
    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), str(out)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cuda available: False" in (out / "machine.txt").read_text()
    tests = (out / "pytest.txt").read_text()
    assert "passed" in tests and "no CUDA device" in tests and "pytest exit code: 0" in tests
    bench = (out / "bench.txt").read_text()
    assert "torch.cuda.is_available() is False" in bench and "benchmark exit code: 1" in bench
    assert (out / "gpu.json").exists() and (out / "gpu.md").exists()


def test_arguments_and_defaults(runner):
    quick = runner.parse_args([])
    assert quick.mode == "quick" and quick.groups == ["core", "decoding", "memory"] and quick.threads == [2]
    assert quick.dtypes is None
    full = runner.parse_args(["--full"])
    assert full.groups == ["core", "decoding", "memory", "notebooks", "grading", "cluster"] and full.threads == [1, 2]
    assert runner.parse_args(["--groups", "notebooks", "--threads", "1,2"]).threads == [1, 2]
    assert runner.parse_args(["--dtypes", "bf16,FP16,float32,bf16"]).dtypes == [
        torch.bfloat16, torch.float16, torch.float32]
    with pytest.raises(SystemExit):
        runner.parse_args(["--groups", "nonsense"])


@pytest.mark.parametrize("bad", ["int8", "bf16,,fp8", ","])
def test_bad_dtypes_are_refused_by_name(runner, bad, capsys):
    with pytest.raises(SystemExit):
        runner.parse_args(["--dtypes", bad])
    err = capsys.readouterr().err
    assert "--dtypes" in err and repr(bad) in err and "bf16" in err


def test_default_dtypes_follow_the_device():
    common = _load("bench_common")
    assert common.Config(device="cpu").default_dtypes() == [torch.float32]
    assert common.Config(device="cuda").default_dtypes() == [torch.bfloat16, torch.float16, torch.float32]
    assert common.Config(device="cuda", mode="smoke").default_dtypes() == [torch.float32]
    assert common.Config(device="cuda", dtypes=[torch.float16]).default_dtypes() == [torch.float16]


def test_grading_group_skips_without_its_script(runner, monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "HERE", tmp_path)
    outcome = runner._group_grading(runner.bc.Config(mode="smoke"))
    assert outcome["status"] == "skipped"
    assert "bench_grading.py" in outcome["reason"]


def _fake_grading(runner, monkeypatch, tmp_path, source, mode):
    (tmp_path / "bench_grading.py").write_text(source)
    monkeypatch.setattr(runner, "HERE", tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bench_grading", raising=False)
    try:
        return runner._group_grading(runner.bc.Config(mode=mode))
    finally:
        sys.modules.pop("bench_grading", None)


def test_grading_group_calls_the_scripts_run(runner, monkeypatch, tmp_path):
    source = "def run(quick=False, smoke=False):\n    return {'status': 'ok', 'quick': quick, 'smoke': smoke}\n"
    outcome = _fake_grading(runner, monkeypatch, tmp_path, source, "smoke")
    assert outcome == {"status": "ok", "quick": True, "smoke": True}


def test_grading_group_calls_the_scripts_main_with_its_own_command_line(runner, monkeypatch, tmp_path):
    source = ("import argparse, sys\n"
              "def main():\n"
              "    args = argparse.ArgumentParser().parse_args()\n"
              "    print('graded', sys.argv[1:])\n"
              "    return 0\n")
    monkeypatch.setattr(sys, "argv", ["run.py", "--groups", "grading"])
    outcome = _fake_grading(runner, monkeypatch, tmp_path, source, "full")
    assert outcome["status"] == "ok" and outcome["exit_code"] == 0
    assert outcome["output"] == "graded []\n"
    assert sys.argv == ["run.py", "--groups", "grading"]  # restored
    skipped = _fake_grading(runner, monkeypatch, tmp_path, source, "smoke")
    assert skipped["status"] == "skipped" and "smoke" in skipped["reason"]


def test_numpy_backward_matches_autograd():
    core = _load("bench_core")
    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((2, 3, 5, 4)).astype(np.float64) for _ in range(4))
    for causal in (False, True):
        out, weights = core.numpy_attention(q, k, v, causal)
        grads = core.numpy_attention_backward(q, k, v, weights, dout)
        tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
        want = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
        want.backward(torch.tensor(dout))
        np.testing.assert_allclose(out, want.detach().numpy(), atol=1e-10)
        for got, t in zip(grads, (tq, tk, tv)):
            np.testing.assert_allclose(got, t.grad.numpy(), atol=1e-10)


def test_memory_counter_counts_new_storage_not_views():
    common = _load("bench_common")
    if not COUNTS_CPU_PEAKS:
        assert common.peak_extra_bytes(lambda: torch.ones(4)) is None  # unknown rather than a wrong sum
        pytest.skip(f"torch {torch.__version__} never reports a storage freed, so CPU peaks are not counted")
    x = torch.zeros(256, 256)
    assert common.peak_extra_bytes(lambda: x.t().reshape(-1)[:10]) == 256 * 256 * 4  # reshape copies
    assert common.peak_extra_bytes(lambda: x.t()[:3]) == 0  # views of inputs allocate nothing

    def two_temporaries():
        a = torch.ones(1024)  # 4 KiB, freed before the next one
        del a
        b = torch.ones(2048)  # 8 KiB
        return b

    assert common.peak_extra_bytes(two_temporaries) == 2048 * 4


@pytest.mark.slow
def test_notebook_timing_table(tmp_path):
    nbs = _load("bench_notebooks")
    path = write(notebook([graded_cell("check_one", 1, "print('ok')\n1.0\n"),
                           graded_cell("check_slow", 1, "import time\ntime.sleep(0.4)\n1.0\n")]),
                 tmp_path / "07_capstone.ipynb")
    result = nbs.run_notebooks([path])
    (row,) = result["rows"]
    assert row["notebook"] == "07_capstone.ipynb" and row["goal_s"] == 180
    assert row["status"] == "ok" and row["score"] == row["max_score"] == 2
    assert row["seconds"] > 0 and result["total_s"] == row["seconds"]
    steps = row["step_seconds"]
    assert set(steps) == {"check_one", "check_slow"}
    assert 0 < steps["check_one"] < steps["check_slow"] and steps["check_slow"] >= 0.4
    assert [g["target"] for g in result["goals"]] == [1.0, 1.0, 1.0]
    slowest = result["goals"][-1]
    assert slowest["name"] == "slowest step check seconds / 1 s" and "check_slow" in slowest["where"]
    assert slowest["measured"] == pytest.approx(steps["check_slow"])
    assert [p.name for p in nbs.discover()] == sorted(p.name for p in (ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))


def test_the_notebook_benchmark_times_every_notebook_of_the_course():
    """Every one, 00 to 08 and any after, numbered without a gap, in course order, the learners'
    copies too; the capstone (07) alone gets the longer goal."""
    nbs = _load("bench_notebooks")
    found = nbs.discover()
    assert len(found) >= 9 and [p.name[:2] for p in found] == [f"{i:02d}" for i in range(len(found))], found
    assert [p.stem for p in found] == sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [nbs.goal_for(p) for p in found] == [nbs.CAPSTONE_GOAL_S if p.name.startswith("07") else
                                                 nbs.NOTEBOOK_GOAL_S for p in found]
    assert nbs.goal_for(found[7]) == nbs.CAPSTONE_GOAL_S and nbs.goal_for(found[8]) == nbs.NOTEBOOK_GOAL_S


# --------------------------------------------------------------------------- the cluster group


def test_cluster_group_is_registered_and_skips_in_smoke_mode(runner):
    assert "cluster" in runner.GROUPS and "cluster" not in runner.QUICK_GROUPS
    assert runner.RUNNERS["cluster"] is runner._group_cluster
    assert runner.parse_args(["--groups", "cluster"]).groups == ["cluster"]
    outcome = runner._group_cluster(runner.bc.Config(mode="smoke"))
    assert outcome["status"] == "skipped" and "smoke" in outcome["reason"]


def _cluster_runs():
    """Three rounds of three candidates on a class of 12: local-2 takes 30-40 s, dask-2 33-44 s,
    dask-1 60-70 s; dask-2's scores agree with local-2's except student001's in one round."""
    runs = []
    times = {"local-2": [30.0, 40.0, 36.0], "dask-2": [33.0, 44.0, 39.0], "dask-1": [70.0, 60.0, 64.0]}
    cpu = {"local-2": [60.0, 66.0, 72.0], "dask-2": [66.0, 75.0, 69.0], "dask-1": [63.0, 60.0, 66.0]}
    for r in range(3):
        for c in ("local-2", "dask-2", "dask-1"):
            slots = 1 if c == "dask-1" else 2
            results = [{"student": f"s{i}", "exec_seconds": 3.0, "worker_seconds": 4.0 + r,
                        "wall_seconds": 4.5 + r, "score": 16} for i in range(12)]
            scores = {res["student"]: res["score"] for res in results}
            if c == "dask-2" and r == 1:
                scores["s1"] = 15
            runs.append({"candidate": c, "round": r, "n": 12, "seconds": times[c][r], "cpu_seconds": cpu[c][r],
                         "overheads": _load("bench_cluster").overheads(results, times[c][r], slots),
                         "scores": scores, "statuses": {"ok": 12}})
    return runs


def test_cluster_summary_medians_and_ratios():
    bench = _load("bench_cluster")
    summary = bench.summarize(_cluster_runs(), ["local-2", "dask-1", "dask-2"])
    rows = {r["candidate"]: r for r in summary["rows"]}
    assert [r["candidate"] for r in summary["rows"]] == ["local-2", "dask-1", "dask-2"]
    local, dask1, dask2 = rows["local-2"], rows["dask-1"], rows["dask-2"]
    assert (local["seconds"], dask1["seconds"], dask2["seconds"]) == (36.0, 64.0, 39.0)  # medians
    assert local["submissions_per_minute"] == pytest.approx(12 / 36 * 60)
    assert local["cpu_seconds_per_submission"] == pytest.approx(66 / 12)
    assert dask2["cpu_seconds_per_submission"] == pytest.approx(69 / 12)
    assert local["cpu_over_wall"] == pytest.approx(66 / 36)
    assert (local["slots"], dask1["slots"], local["rounds"]) == (2, 1, 3)
    # per submission beyond the 3 s run: worker 4-6 s (median 5), wall 4.5-6.5 s (median 5.5)
    assert local["in_worker_seconds"] == pytest.approx(2.0) and local["per_task_seconds"] == pytest.approx(2.5)
    assert local["everything_seconds"] == pytest.approx((36 * 2 - 36) / 12)
    assert dask1["everything_seconds"] == pytest.approx((64 * 1 - 36) / 12)
    goals = {g["name"]: g for g in summary["goals"]}
    overhead = goals["Dask 2 workers / local 2 workers, time for the class"]
    assert overhead["measured"] == pytest.approx(39 / 36) and overhead["target"] == 1.10
    assert overhead["op"] == "<=" and overhead["met"] is True
    assert goals["Dask 1 worker / Dask 2 workers, time (speed-up of the second worker)"]["measured"] == \
        pytest.approx(64 / 39)
    assert goals["Dask 2 workers / local 2 workers, CPU seconds per submission"]["measured"] == pytest.approx(69 / 66)
    assert all(g["target"] is None for n, g in goals.items() if n != overhead["name"])
    assert summary["disagreements"] == {"s1": {"local-2": [16], "dask-2": [15, 16], "dask-1": [16]}}
    assert summary["round_ratios"] == pytest.approx([33 / 30, 44 / 40, 39 / 36])
    assert local["grader_cpu_seconds_per_submission"] is None  # not counted apart in these runs


def test_cluster_overhead_goal_fails_past_ten_percent():
    bench = _load("bench_cluster")
    runs = [r for r in _cluster_runs() if r["candidate"] != "dask-1"]
    for r in runs:
        if r["candidate"] == "dask-2":
            r["seconds"] *= 1.2
    (goal,) = [g for g in bench.summarize(runs, ["local-2", "dask-2"])["goals"] if g["target"] is not None]
    assert goal["measured"] == pytest.approx(39 * 1.2 / 36) and goal["met"] is False
    assert bench.summarize(runs, ["local-2"])["goals"] == []  # nothing to compare with


def test_cluster_overheads_with_missing_fields():
    bench = _load("bench_cluster")
    results = [{"exec_seconds": 2.0, "worker_seconds": 3.0}, {"exec_seconds": 4.0, "worker_seconds": 4.5}]
    o = bench.overheads(results, seconds=10.0, slots=2)
    assert o == {"exec": 3.0, "in_worker": 0.75, "per_task": None, "everything": (20 - 6) / 2}
    assert bench.overheads([{"exec_seconds": None}], 5.0, 1)["everything"] is None
    assert bench.overheads([], 5.0, 1) == {"exec": None, "in_worker": None, "per_task": None, "everything": None}


def test_cluster_capacity_arithmetic():
    bench = _load("bench_cluster")
    c = bench.capacity(cpu_seconds_per_submission=7.2, submissions=1000 * 9, cores=16)
    assert c["cpu_hours"] == pytest.approx(18.0) and c["wall_hours"] == pytest.approx(18.0 / 16)
    with pytest.raises(ValueError, match="cores"):
        bench.capacity(7.2, 100, 0)


def test_cluster_run_refuses_bad_arguments_and_says_why_it_skips(monkeypatch):
    bench = _load("bench_cluster")
    with pytest.raises(ValueError, match="candidates.*'dask-3'"):
        bench.run(n=2, rounds=1, candidates=["dask-3"])
    with pytest.raises(ValueError, match="n=0"):
        bench.run(n=0, rounds=1)
    monkeypatch.setattr(bench, "dask_support", lambda: "no Dask here")
    assert bench.run(n=2, rounds=1) == {"status": "skipped", "reason": "no Dask here"}


def test_tree_cpu_seconds_counts_a_waited_child(tmp_path):
    """A parent whose child burns about half a second of CPU and ends: the parent's tree has it."""
    bench = _load("bench_cluster")
    ready = tmp_path / "ready"
    code = ("import subprocess, sys, time\n"
            "subprocess.run([sys.executable, '-c', 'import time\\nt = time.process_time()\\n"
            "while time.process_time() - t < 0.5: pass'])\n"
            f"open({str(ready)!r}, 'w').close()\n"
            "time.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the child did not finish"
        assert bench.tree_cpu_seconds([parent.pid]) >= 0.45
        assert bench.tree_cpu_seconds([]) == 0.0
    finally:
        parent.kill()
        parent.wait()


def test_cgroup_cpu_counts_a_grandchild_nobody_waits_for(tmp_path):
    """The case resource usage misses: a child that leaves a busy grandchild behind and ends. The
    grandchild goes to the system's init, yet its CPU time is in the group it was started in."""
    bench = _load("bench_cluster")
    if not bench.CgroupCPU.available():
        pytest.skip("cgroup v1 cpuacct is not writable here (needs root): the benchmark falls back to resource usage")
    done = tmp_path / "done"
    burn = ("import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n"
            f"open({str(done)!r}, 'w').close()\n")
    leave = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {burn!r}], start_new_session=True)\n"
    groups = bench.CgroupCPU()
    try:
        subprocess.run([sys.executable, "-c", leave], preexec_fn=groups.preexec("orphans"), check=True)
        deadline = time.monotonic() + 60
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done.exists(), "the grandchild did not finish"
        time.sleep(0.2)
        assert groups.seconds("orphans") >= 0.45
        assert groups.seconds("empty") == 0.0
    finally:
        groups.close()
    assert not groups.base.exists()


@pytest.mark.slow
def test_cluster_group_grades_a_tiny_class_on_real_dask_processes():
    """Two submissions, one round: a real scheduler and workers on 127.0.0.1, every candidate
    grading the class with the same scores, and no Dask process left afterwards."""
    bench = _load("bench_cluster")
    why = bench.dask_support()
    if why:
        pytest.skip(f"the Dask executor cannot run here: {why}")
    summary = bench.run(n=2, rounds=1, out=lambda *a: None)
    assert summary["status"] == "ok", summary
    rows = {r["candidate"]: r for r in summary["rows"]}
    assert set(rows) == {"local-2", "dask-1", "dask-2"}
    for r in rows.values():
        assert r["seconds"] > 0 and r["cpu_seconds_per_submission"] > 0, r
        assert r["exec_seconds"] > 0 and r["in_worker_seconds"] is not None, r
        assert sum(r["statuses"].values()) == 2
    assert summary["disagreements"] == {}
    assert summary["dask_processes_left"] == []
    assert [g["target"] for g in summary["goals"]].count(1.10) == 1
