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


def test_best_candidate_leaves_the_vote_out_and_counts_the_warmups(script, tmp_path):
    """The column of what an ending could have kept: each run's best candidate (the warm-up's
    included), never the vote itself, averaged over the seeds by hand: CoNR (0.9 + 0.8) / 2,
    BYOL (0.7 + 0.6) / 2."""
    def cands(*pairs):
        return [{"name": n, "true_acc": a} for n, a in pairs]

    rows = [run("coil20", "conr_encoder", 0, 0.85, 0.9, "encoder"), run("coil20", "conr_encoder", 1, 0.75, 0.9, "encoder"),
            run("coil20", "byol", 0, 0.65, 0.9, "encoder"), run("coil20", "byol", 1, 0.55, 0.9, "encoder")]
    rows[0]["candidates"] = cands(("consensus/candidates", 0.99), ("kmeans/warmup", 0.9), ("umap_gmm/features", 0.5))
    rows[1]["candidates"] = cands(("spectral/features", 0.8), ("consensus/candidates", 0.95))
    rows[2]["candidates"] = cands(("kmeans/features", 0.7), ("consensus/candidates", 0.99))
    rows[3]["candidates"] = cands(("umap_gmm/features", 0.6))
    out = tmp_path / "table"
    assert script.main(["--runs", str(write(tmp_path / "runs", rows)), "--vectors", "none", "--out", str(out)]) == 0
    (entry,) = json.loads(out.with_suffix(".json").read_text())
    assert entry["conr"]["best candidate"] == pytest.approx(0.85)
    assert entry["byol"]["best candidate"] == pytest.approx(0.65)
    assert "| 0.650 / 0.850 |" in out.with_suffix(".md").read_text()


def test_vector_files_later_wins_a_run_both_hold(script, tmp_path):
    """Two vectors files: BYOL's runs from the first, CoNR's run of seed 0 replaced by the
    second's, so CoNR's mean is (0.9 + 0.7) / 2 and BYOL's (0.6 + 0.8) / 2."""
    def vec(method, seed, acc):
        return {"vectors": "coil20-conr", "method": method, "seed": seed, "acc": acc, "nmi": acc, "candidates": []}

    first = tmp_path / "first.json"
    first.write_text(json.dumps({"runs": [vec("byol_vectors", 0, 0.6), vec("byol_vectors", 1, 0.8),
                                          vec("conr_vectors", 0, 0.1), vec("conr_vectors", 1, 0.7)]}))
    second = tmp_path / "second.json"
    second.write_text(json.dumps({"runs": [vec("conr_vectors", 0, 0.9), vec("umap_gmm", 0, 0.5)]}))
    out = tmp_path / "table"
    runs = write(tmp_path / "runs", [])
    assert script.main(["--runs", str(runs), "--vectors", str(first), str(second), "--out", str(out)]) == 0
    (entry,) = json.loads(out.with_suffix(".json").read_text())
    assert (entry["set"], entry["path"], entry["seeds"]) == ("coil20-conr", "vectors", [0, 1])
    assert entry["conr"]["acc"] == pytest.approx(0.8) and entry["byol"]["acc"] == pytest.approx(0.7)
