"""benchmarks/conr_vs_byol.py on hand-made suite runs: which runs it pairs, which source wins
a run two hold, and the means it writes (counted here by hand)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("conr_vs_byol", ROOT / "benchmarks" / "conr_vs_byol.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(dataset, row, seed, acc, nmi, kind, own=None):
    cands = [] if own is None else [{"name": "seeded_kmeans/features" if row != "byol" else "kmeans/features",
                                     "true_acc": own}]
    return {"dataset": dataset, "row": row, "seed": seed, "acc": acc, "nmi": nmi, "input_kind": kind,
            "candidates": cands}


def write(folder: Path, rows) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "suite-runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_pairs_byol_with_conr_of_the_same_path_and_later_folders_win(script, tmp_path):
    conr = write(tmp_path / "conr", [
        run("orl", "conr_encoder", 0, 0.80, 0.90, "encoder", own=0.70),
        run("orl", "conr_encoder", 1, 0.70, 0.80, "encoder", own=0.60),
        run("orl", "conr_scratch", 0, 0.10, 0.10, "images"),       # another path than BYOL's: not paired
        run("orl", "byol", 1, 0.99, 0.99, "encoder"),              # replaced by the later folder's seed 1
    ])
    byol = write(tmp_path / "byol", [
        run("orl", "byol", 0, 0.75, 0.85, "encoder", own=0.50),
        run("orl", "byol", 1, 0.65, 0.75, "encoder", own=0.40),
    ])
    out = tmp_path / "table"
    assert script.main(["--runs", str(conr), str(byol), "--vectors", str(tmp_path / "none.json"),
                        "--out", str(out)]) == 0
    (entry,) = json.loads(out.with_suffix(".json").read_text())
    assert (entry["set"], entry["path"], entry["seeds"]) == ("orl", "encoder", [0, 1])
    assert entry["conr"]["acc"] == pytest.approx(0.75) and entry["conr"]["nmi"] == pytest.approx(0.85)
    assert entry["byol"]["acc"] == pytest.approx(0.70) and entry["byol"]["acc_by_seed"] == [0.75, 0.65]
    assert entry["conr"]["own/features"] == pytest.approx(0.65) and entry["byol"]["own/features"] == pytest.approx(0.45)
    md = out.with_suffix(".md").read_text()
    assert "| orl | encoder | 2 | 0.700 / 0.800 | 0.750 / 0.850 | +0.050 |" in md
    assert "--runs" in md   # the command that made it


def test_missing_runs_name_the_command_that_makes_them(script, tmp_path):
    with pytest.raises(SystemExit, match="run benchmarks/suite.py"):
        script.main(["--runs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t")])
