"""The replays that judge the final stage's choice, on hand-made tables whose answers are
counted by hand: benchmarks/final_rule.py's seed-against-end table and
benchmarks/joint_union.py's choice with one joint candidate or both."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def final_rule():
    return load("final_rule")


@pytest.fixture(scope="module")
def joint_union():
    return load("joint_union")


def run(dataset, seed_acc, end_acc, chosen=True):
    return {"dataset": dataset, "row": "conr_encoder", "acc": end_acc,
            "seed_candidates": [{"name": "kmeans/features", "true_acc": 0.1},
                                {"name": "umap_gmm/joint", "true_acc": seed_acc, "chosen": chosen}]}


def test_seed_against_end_counts_the_runs_that_fell(final_rule):
    runs = [run("orl", 0.80, 0.77), run("orl", 0.70, 0.71), run("coil20", 0.90, 0.95),
            run("coil20", 0.5, 0.1, chosen=False),   # no choice kept at the seed: not counted
            {"dataset": "orl", "row": "byol", "acc": 0.3}]   # no seed table: not counted
    lines = final_rule.seed_against_end(runs)
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[3:-1]]
            for line in lines if line.startswith("| ") and not line.startswith("| dataset")}
    # orl: seed mean 0.75, end 0.74, -0.01; one run fell by 0.03 (the other rose by 0.01)
    assert rows[("orl", "conr_encoder")] == ["2", "0.750", "0.740", "-0.010", "1"]
    assert rows[("coil20", "conr_encoder")] == ["1", "0.900", "0.950", "+0.050", "0"]
    # all three: seed 0.8, end (0.77 + 0.71 + 0.95) / 3 = 0.81
    assert rows[("all", "")] == ["3", "0.800", "0.810", "+0.010", "1"]
    assert final_rule.seed_against_end([{"dataset": "orl", "row": "byol", "acc": 0.3}]) == []


def cand(name, acc, away, representation=None):
    return {"name": name, "representation": representation or name.split("/")[1], "acc": acc, "away": away}


def tables(when, inter_joint, union_joint, others):
    return [{"graph": "intersection", "when": when, "table": others + [inter_joint]},
            {"graph": "union", "when": when, "table": others + [union_joint]}]


def test_away_choices_with_each_graph_and_both(joint_union):
    others = [cand("kmeans/features", 0.90, 0.99),     # the features' own: not eligible beside a joint one
              cand("umap_gmm/encoder", 0.60, 0.50)]
    rows = tables("end", cand("umap_gmm/joint", 0.70, 0.45), cand("umap_gmm/joint", 0.80, 0.55), others)
    got = joint_union.away_choices(rows, "end")
    assert got["intersection"] == 0.60   # the encoder's (0.50) over the intersection's joint (0.45)
    assert got["union"] == 0.80
    assert got["both"] == 0.80 and got["both_took"] == "union"
    assert got["best"] == 0.90 and got["best_name"] == "kmeans/features"
    rows = tables("end", cand("umap_gmm/joint", 0.70, 0.65), cand("umap_gmm/joint", 0.80, 0.55), others)
    got = joint_union.away_choices(rows, "end")
    assert got["both"] == 0.70 and got["both_took"] == "umap_gmm/joint"


def test_away_choices_needs_both_tables(joint_union):
    rows = [{"graph": "intersection", "when": "end", "table": [cand("umap_gmm/joint", 0.7, 0.4)]},
            {"graph": "union", "when": "end"}]   # rows made before the tables were kept
    assert joint_union.away_choices(rows, "end") is None
    assert joint_union.away_choices(rows, "seed") is None
