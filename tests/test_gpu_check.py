"""benchmarks/gpu_check.sh --smoke: the GPU readiness script, run on the CPU at tiny sizes,
writes every stage's JSON and a summary that says what ran, within its time budget."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


@pytest.mark.slow  # runs benchmarks/gpu_check.sh in a subprocess (~30-40 s)
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils' timeout")
def test_gpu_check_smoke_writes_every_json(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "CONR_DATA_ROOT", "GPU_CHECK_BUDGET_S")}
    env["TMPDIR"] = str(tmp_path)
    start = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), "--smoke", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["cifar10_timed.json", "gpu_check.json", "gpu_check.log", "kmeans.json", "neighbors.json",
                     "throughput.json"]
    assert len(files) <= 8  # what the device tool brings back from $OUT
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["complete"] and summary["mode"] == "smoke" and summary["device"] == "cpu"
    assert [s["stage"] for s in summary["stages"]] == ["kmeans", "throughput", "neighbors", "cifar10_timed"]
    for s in summary["stages"]:  # each stage ends by its time box (+ timeout's kill delay)
        assert s["seconds"] <= s["time_box_s"] + 12
    assert sum(s["seconds"] for s in summary["stages"]) <= summary["budget_s"] + 15
    assert elapsed < summary["budget_s"] + 60  # time-boxed stages: the whole stays near its budget
    ok = {s["stage"] for s in summary["stages"] if s["rc"] == 0}
    assert "kmeans" in ok  # the rest may be cut by their time box on a loaded machine; their JSON stays
    km = json.loads((out / "kmeans.json").read_text())
    impls = {r["impl"] for r in km["kmeans"]}
    assert {"conr.kmeans", "sklearn.KMeans"} <= impls
    assert all(0.0 <= r["nmi"] <= 1.0 and r["seconds"] > 0 for r in km["kmeans"])
    if "throughput" in ok:
        tp = json.loads((out / "throughput.json").read_text())
        assert tp["complete"] and tp["matmul"]["flop_per_s"] > 0
        paths = {(r["method"], r["path"]) for r in tp["rows"]}
        assert paths == {("byol", "fast"), ("byol", "reference"), ("conr", "fast"), ("conr", "reference")}
        assert all(r["flop_per_s"] > 0 and r["flops_per_step"] > 0 for r in tp["rows"])
        assert "conr_over_byol_time_fast" in tp["ratios"][0]
    if "neighbors" in ok:
        nb = json.loads((out / "neighbors.json").read_text())
        assert nb["complete"] and nb["sizes"][0]["batch"] == 64 and nb["step_share"]
    timed = json.loads((out / "cifar10_timed.json").read_text())
    if "cifar10_timed" in ok:
        assert timed["epochs_done"] == 3 and set(timed["final"]) == {"nmi", "acc", "ari"}
        assert timed["records"][-1]["epoch"] == 3
    assert not list(out.glob("*.pt")) and not list(out.glob("*.tmp"))  # checkpoints stay out of the results
