"""The replays that judge the final stage's choice, on hand-made tables whose answers are
counted by hand: benchmarks/final_rule.py's seed-against-end table and where-the-gap-is table,
benchmarks/joint_union.py's choice with one joint candidate or both, and
benchmarks/candidate_noise.py's summary of the final stage drawn again with other seeds, and
benchmarks/joint_noise.py's table, benchmarks/vote_rules.py's cluster vote and table, and
benchmarks/seed_rule.py's pairing of whole runs by their warm-up, benchmarks/warmup_vote.py's votes
with the warm-up's candidates, benchmarks/vote_witnesses.py's endings for CoNR and BYOL alike, and the
suite folders' reader they share."""
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


def scored(name, acc, agreement, chosen=False):
    representation = name.split("/")[-1]
    return {"name": name, "algorithm": name.split("/")[0], "representation": representation,
            "true_acc": acc, "agreement": agreement, "ncut": 0.5, "chosen": chosen}


def test_where_the_gap_is_separates_the_ranking_from_the_candidates_left_out(final_rule):
    # run 1: the joint choice is the best it may take, the features' UMAP + GMM (left out) is 5 points
    # better and agrees more with the others; run 2: the rule ranked wrong among what it may take;
    # run 3: the choice is the best candidate and the features' one agrees more, wrongly
    runs = [{"rule": "away", "candidates": [scored("umap_gmm/joint", 0.90, 0.6, chosen=True),
                                            scored("umap_gmm/features", 0.95, 0.7),
                                            scored("umap_gmm/encoder", 0.85, 0.5)]},
            {"rule": "away", "candidates": [scored("umap_gmm/joint", 0.70, 0.6, chosen=True),
                                            scored("umap_gmm/encoder", 0.80, 0.5),
                                            scored("spectral/features", 0.60, 0.4)]},
            {"rule": "joint", "candidates": [scored("umap_gmm/joint", 0.90, 0.6, chosen=True),
                                             scored("spectral/features", 0.80, 0.9)]}]
    lines = final_rule.where_the_gap_is(runs)
    head = next(line for line in lines if line.startswith("Where the gap is"))
    assert "on the 3 runs" in head and "may take in 2;" in head and "in 1 of those" in head
    agreement = next(line for line in lines if line.startswith("| agreement |"))
    # the choice: (0.90 + 0.70 + 0.90) / 3, within 0.01 of its run's best in run 3 only; the features'
    # candidates competing by agreement: 0.95, 0.70 (spectral's 0.4 < 0.6 keeps the choice), 0.80, within
    # in run 1 only
    assert agreement == "| agreement | 3 | 0.833; 1 | 0.817; 1 |"


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


@pytest.fixture(scope="module")
def candidate_noise():
    return load("candidate_noise")


def draw(seed, chosen, **acc):
    names = {"kmeans": "kmeans/features", "joint": "umap_gmm/joint", "enc": "umap_gmm/encoder",
             "f3": "umap_gmm/features (3 layouts)"}
    return {"seed": seed, "chosen": names[chosen], "acc": {names[k]: v for k, v in acc.items()},
            "eligible": ["umap_gmm/encoder", "umap_gmm/joint"]}


def test_candidate_noise_separates_each_draws_best_from_the_best_by_mean(candidate_noise):
    # kmeans/features is the best of draw 0 by luck (0.70); by its mean (0.60) it trails the joint one (0.65)
    runs = {"a": [draw(0, "joint", kmeans=0.70, joint=0.64, enc=0.60, f3=0.99),
                  draw(1, "joint", kmeans=0.50, joint=0.66, enc=0.62, f3=0.10)]}
    r = candidate_noise.summary(runs)["a"]
    assert r["chosen"] == pytest.approx(0.65)
    assert r["best_per_draw"] == pytest.approx((0.70 + 0.66) / 2)   # the 3-layout remake is not a stage candidate
    assert (r["best_fixed_name"], r["best_fixed"]) == ("umap_gmm/joint", pytest.approx(0.65))
    assert (r["best_eligible_name"], r["best_eligible"]) == ("umap_gmm/joint", pytest.approx(0.65))
    assert (r["within_draw"], r["within_fixed"], r["draws"]) == (1, 2, 2)   # draw 0 is 0.06 under its best, 0.01 under the best by mean
    assert r["candidates"]["kmeans/features"] == {"mean": 0.6, "low": 0.5, "high": 0.7}


@pytest.fixture(scope="module")
def raw_silhouette():
    return load("raw_silhouette")


def test_neighbours_share_on_two_pairs(raw_silhouette):
    import numpy as np

    x = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]])
    one, three = raw_silhouette.nearest(x, k=1), raw_silhouette.nearest(x, k=3)
    assert one.ravel().tolist() == [1, 0, 3, 2]                                  # each row's nearest is its pair
    assert raw_silhouette.neighbours_share(one, np.array([0, 0, 1, 1])) == 1.0
    assert raw_silhouette.neighbours_share(one, np.array([0, 1, 0, 1])) == 0.0
    assert raw_silhouette.neighbours_share(three, np.array([0, 0, 1, 1])) == pytest.approx(1 / 3)
    assert raw_silhouette.raw_silhouette(x, np.zeros(4, dtype=int)) == -1.0


def test_raw_rules_pick_by_their_own_space(raw_silhouette):
    def c(name, rep, acc, chosen, sil, nb):
        return {"name": name, "representation": rep, "acc": acc, "chosen": chosen,
                "silhouette": {"features": sil[0], "input": sil[1]}, "neighbours": {"features": nb[0], "input": nb[1]}}

    table = [c("kmeans/features", "features", 0.60, False, (0.50, 0.20), (0.6, 0.5)),   # at home in the features
             c("umap_gmm/encoder", "input", 0.70, False, (0.25, 0.40), (0.7, 0.8)),
             c("umap_gmm/joint", "joint", 0.65, True, (0.30, 0.30), (0.85, 0.6))]
    picks, rows = raw_silhouette.choices({"run": {"end": table}})
    took = {rule: got[0] for rule, got in picks.items()}
    assert took["default (`away`, as the stage chose)"] == (0.65, False)           # 0.05 under the best
    assert took["raw silhouette, the features' space"] == (0.60, False)
    assert took["raw silhouette, the input's space"] == (0.70, True)
    assert took["raw silhouette, mean of both"] == (0.60, False)                    # 0.35 against 0.325 and 0.30
    assert took["raw silhouette, away"] == (0.65, False)   # kmeans 0.20 (input), encoder 0.25 (features), joint 0.30
    assert took["neighbours' share, mean of both"] == (0.70, True)                # 0.75 against 0.55 and 0.725
    assert took["neighbours' share, away"] == (0.65, False)  # kmeans 0.5, encoder 0.7, joint 0.725
    assert rows == ["| run | end | " + " | ".join(
        f"{a:.3f} {n}" for a, n in [(0.65, "umap_gmm/joint"), (0.60, "kmeans/features"), (0.70, "umap_gmm/encoder"),
                                    (0.60, "kmeans/features"), (0.65, "umap_gmm/joint"), (0.70, "umap_gmm/encoder"),
                                    (0.65, "umap_gmm/joint")]) + " | 0.700 umap_gmm/encoder |"]


@pytest.fixture(scope="module")
def joint_noise():
    return load("joint_noise")


def test_joint_noise_table_means_and_ranges(joint_noise):
    weights = {str(w): 0.5 for w in joint_noise.WEIGHTS}
    layouts = {f"{n}/{s}": v for n in joint_noise.LAYOUTS for s, v in zip(joint_noise.SEEDS, (0.4, 0.5, 0.6))}
    rows = [{"run": "a", "by_weight": {**weights, "0.1": 0.9}, "by_layouts": layouts, "best": 0.8, "best_name": "x"},
            {"run": "b", "by_weight": {**weights, "0.1": 0.3}, "by_layouts": {**layouts, "5/0": 0.5},
             "best": 0.6, "best_name": "y"}]
    lines = joint_noise.table(rows)
    mean_weight = next(line for line in lines if line.startswith("| mean |"))
    assert mean_weight == "| mean | 0.500 | 0.500 | 0.500 | 0.500 | 0.600 | 0.700 |"   # 0.1: (0.9 + 0.3) / 2; best 0.7
    run_b = [line for line in lines if line.startswith("| b |")][1]
    assert run_b == "| b | 0.500 / 0.200 | 0.500 / 0.200 | 0.533 / 0.100 |"   # 5 layouts: 0.5, 0.5, 0.6
    assert lines[-1] == "| mean | 0.500 / 0.200 | 0.500 / 0.200 | 0.517 / 0.150 |"


def test_cluster_vote_keeps_the_clusters_most_candidates_make():
    """Two candidates find the four groups; a third cuts two of them across (the joint candidate's
    error on COIL-20): the vote keeps the groups the two reproduce."""
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    vote_rules = load("vote_rules")
    truth = np.repeat(np.arange(4), 30)
    cross = truth.copy()
    cross[np.r_[0:15, 30:45]] = 0
    cross[np.r_[15:30, 45:60]] = 1                  # groups 0 and 1 cut the other way
    labelings = [truth, (truth + 1) % 4, cross]
    assert adjusted_rand_score(truth, vote_rules.cluster_vote(labelings, 4)) == 1.0


def test_vote_rules_table_means_and_gaps():
    vote_rules = load("vote_rules")
    base = {c: 0.5 for c in vote_rules.VOTES}
    rows = [{**base, "run": "labels/orl-conr_encoder-0.npz", "best": 0.80, "chosen": 0.78},
            {**base, "run": "labels/orl-conr_encoder-1.npz", "best": 0.526, "chosen": 0.52},
            {**base, "run": "variants/x/labels/coil20-byol-0.npz", "best": 0.9, "chosen": None}]   # not in the summary
    lines = vote_rules.table(rows)
    assert "| orl | conr_encoder | 2 | 0.650 | 0.663 | " + " | ".join(["0.500"] * len(vote_rules.VOTES)) + " |" in lines
    assert lines[2].startswith("| coil20 | byol | 1 | – | 0.900 |")
    assert "| chosen | 0.650 | 0.0130 | 1 of 2 | 0.020 |" in lines          # gaps 0.02 and 0.006
    assert "| cluster vote | 0.500 | 0.1630 | 0 of 2 | 0.300 |" in lines    # gaps 0.3 and 0.026


def test_vote_rules_default_change_and_main_table_count_by_hand():
    """The default's change counts only runs made under away, and ahead / behind by more than 0.001;
    the main table reads only results/labels."""
    vote_rules = load("vote_rules")
    d = vote_rules.DEFAULT

    def row(run, chosen, vote, best, rule="away", nmi=0.5, vote_nmi=0.6):
        return {"run": run, "chosen": chosen, d: vote, "best": best, "rule": rule, "chosen_nmi": nmi,
                "default_nmi": vote_nmi}

    rows = [row("labels/orl-conr_encoder-0.npz", 0.78, 0.80, 0.80),          # ahead, the vote at the best
            row("labels/orl-conr_encoder-1.npz", 0.76, 0.7595, 0.79),       # level (within 0.001)
            row("variants/v/labels/orl-conr_encoder-0.npz", 0.70, 0.681, 0.71),  # behind
            row("variants/w/labels/orl-conr_encoder-0.npz", 0.10, 0.90, 0.90, rule="joint")]   # not away's
    lines = vote_rules.default_change(rows)
    assert "| orl | conr_encoder | 3 | 0.747 | 0.747 | 0.767 | 1 | 1 |" in lines
    assert "| away's choice (3 runs) | 0.7467 | 0 |" in lines                  # gaps 0.02, 0.03, 0.01 > 0.01
    assert "| weighted consensus (3 runs) | 0.7468 | 1 |" in lines            # gaps 0, 0.0305, 0.029
    table = vote_rules.main_table(rows)
    assert table[2:] == ["| orl | conr_encoder | 2 | 0.770 / 0.500 | 0.780 / 0.600 | 0.795 |"]


def _seed_run(seed, epochs, seed_accs, chosen, acc, nmi=0.9):
    table = [{"name": n, "true_acc": a, "chosen": n == chosen} for n, a in seed_accs.items()]
    return {"dataset": "orl", "row": "conr_encoder", "seed": seed, "epochs": epochs, "acc": acc, "nmi": nmi,
            "seed_candidates": table, "candidates": [{"name": "kmeans/features", "true_acc": acc}]}


def test_seed_rule_pairs_runs_only_where_their_warm_up_is_the_same():
    """Two runs of one seed are paired when their epochs and shared seed candidates match; a run
    whose warm-up differs (other epochs, or other seed candidates) is left out and named; the
    summary counts by hand: one run ahead by 0.02, one behind by 0.01, one level."""
    mod = load("seed_rule")
    warm = {"kmeans/features": 0.70, "umap_gmm/joint": 0.72}
    base = {(("orl", "conr_encoder", s)): _seed_run(s, 100, warm, "umap_gmm/joint", a)
            for s, a in ((0, 0.75), (1, 0.76), (2, 0.74), (3, 0.70), (4, 0.70))}
    cons = {**warm, "consensus/candidates": 0.74}
    variant = {("orl", "conr_encoder", 0): _seed_run(0, 100, cons, "consensus/candidates", 0.77),
               ("orl", "conr_encoder", 1): _seed_run(1, 100, cons, "consensus/candidates", 0.75),
               ("orl", "conr_encoder", 2): _seed_run(2, 100, cons, "consensus/candidates", 0.7405),
               ("orl", "conr_encoder", 3): _seed_run(3, 120, cons, "consensus/candidates", 0.90),
               ("orl", "conr_encoder", 4): _seed_run(4, 100, {**cons, "kmeans/features": 0.71},
                                                     "consensus/candidates", 0.90)}
    rows, skipped = mod.pair(base, variant)
    assert [r["seed"] for r in rows] == [0, 1, 2]
    assert len(skipped) == 2 and "seed 3: epochs 100 / 120" in skipped[0] and "seed candidates differ" in skipped[1]
    assert rows[0]["seed_base_acc"] == 0.72 and rows[0]["seed_variant_acc"] == 0.74 and rows[0]["seed_best_acc"] == 0.72
    (t,) = mod.summary(rows)
    assert (t["runs"], t["ahead"], t["behind"]) == (3, 1, 1)
    assert t["base_acc"] == pytest.approx(0.75) and t["variant_acc"] == pytest.approx((0.77 + 0.75 + 0.7405) / 3, abs=1e-4)


def test_seed_rule_scores_the_base_as_the_default_votes_it_now(tmp_path):
    """``--base-replay``: each base run's ending (ACC and NMI) is the replay's "end + warm-up's features"
    vote, not the one it was made with; a base run the replay does not hold is left out, so it is not
    paired with the variant's."""
    import json

    mod = load("seed_rule")
    base = {("orl", "conr_encoder", s): _seed_run(s, 100, {"umap_gmm/joint": 0.72}, "umap_gmm/joint", 0.70, 0.80)
            for s in (0, 1)}
    replay = tmp_path / "warmup_vote.json"
    replay.write_text(json.dumps([{"set": "orl", "row": "conr_encoder", "seed": 0, "end": 0.70,
                                   "end + warm-up's features": 0.78, "end + warm-up's features nmi": 0.88}]))
    made = mod.replayed_endings(base, replay)
    assert list(made) == [("orl", "conr_encoder", 0)]
    assert (made[("orl", "conr_encoder", 0)]["acc"], made[("orl", "conr_encoder", 0)]["nmi"]) == (0.78, 0.88)
    assert base[("orl", "conr_encoder", 0)]["acc"] == 0.70   # the runs read are not changed
    variant = {("orl", "conr_encoder", s): _seed_run(s, 100, {"umap_gmm/joint": 0.72}, "umap_gmm/joint", 0.75)
               for s in (0, 1)}
    rows, _ = mod.pair(made, variant)
    assert [(r["seed"], r["base_acc"], r["variant_acc"]) for r in rows] == [(0, 0.78, 0.75)]


def test_warmup_vote_on_a_run_whose_end_carries_the_seeds_error(tmp_path):
    """Three clusters of 20; the end's two feature candidates move half of cluster 2 into cluster 1
    (ACC 50/60), the input's k-means is right, and so are the warm-up's three feature candidates and
    its k-means of the input (the same partition as the end's: counted once). The end's vote keeps
    the error; every vote with the warm-up's candidates, and theirs alone, is right."""
    import numpy as np

    mod = load("warmup_vote")
    truth = np.repeat([0, 1, 2], 20)
    wrong = np.repeat([0, 1, 2], [20, 30, 10])
    np.savez(tmp_path / "run.npz", truth=truth, names=np.array(["spectral/features", "umap_gmm/features",
                                                               "kmeans/pixels", "consensus/candidates"]),
             labels=np.stack([wrong, wrong, truth, wrong]),
             seed_names=np.array(["kmeans/features", "spectral/features", "umap_gmm/features", "kmeans/pixels"]),
             seed_labels=np.stack([truth, (truth + 1) % 3, truth, truth]))
    row = mod.replay(tmp_path / "run.npz", {"dataset": "toy", "row": "conr_scratch", "seed": 0, "k": 3, "acc": 0.8333})
    assert row["end"] == pytest.approx(50 / 60, abs=1e-4) and row["best end"] == 1.0 and row["best warm-up"] == 1.0
    assert row["end + warm-up"] == row["end + warm-up's features"] == row["warm-up alone"] == 1.0
    assert len(mod.joined({"kmeans/pixels": truth}, {"kmeans/pixels": (truth + 2) % 3, "x": wrong})) == 2
    assert len(mod.joined({"umap_gmm/joint": truth}, {"umap_gmm/joint": wrong})) == 2   # the same name, another partition
    lines = mod.table([row])
    assert row["end + warm-up's features nmi"] == 1.0 and row["end nmi"] < 1.0
    assert lines[2].startswith("| toy | conr_scratch | 1 | 0.833 | 0.833 | 1.000 | 1.000 | 1.000 | 1.000 | 1.000 |")
    assert "| end + warm-up's features | 1.0000 | 1 | 0 | 1 of 1 |" in lines


def test_vote_variants_weights_by_hand():
    """The evenness of cluster sizes (1 for equal clusters, 0 for one, log 2 / log 4 for two equal
    of four), weights shared within a group, and every variant of the vote on candidates that all
    hold the same partition (under other cluster ids) returning it."""
    import math

    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    mod = load("vote_variants")
    assert mod.size_evenness(np.repeat([0, 1, 2, 3], 5), 4) == pytest.approx(1.0)
    assert mod.size_evenness(np.zeros(20, dtype=int), 4) == 0.0
    assert mod.size_evenness(np.repeat([0, 1], 10), 4) == pytest.approx(math.log(2) / math.log(4))
    assert mod.shared_weights(np.array([1.0, 1.0, 0.6]), ["a", "a", "b"]).tolist() == [0.5, 0.5, 0.6]
    truth = np.repeat([0, 1, 2], 10)
    names = ["kmeans/features", "umap_gmm/features", "spectral/pixels", "self_label/umap_gmm/joint"]
    made = mod.variants(names, [truth, (truth + 1) % 3, (truth + 2) % 3, truth], 3, seed=0)
    assert set(made) == set(mod.VARIANTS)
    assert all(adjusted_rand_score(truth, lab) == 1.0 for lab in made.values())


def test_vote_witnesses_by_hand():
    """Groups sharing the vote equally (each keeping its own proportions; a group without weight
    gives its share away), the choice of the labeling closest to the others (a lone dissenter loses
    to the vote), every variant returning the partition all candidates hold, and the count of sets
    where CoNR is level with BYOL alone, on hand-made rows."""
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    mod = load("vote_witnesses")
    assert mod.group_weights([1.0, 3.0, 2.0], ["a", "a", "b"]) == pytest.approx([0.125, 0.375, 0.5])
    assert mod.group_weights([1.0, 0.0, 2.0], ["a", "b", "c"]) == pytest.approx([0.5, 0.0, 0.5])
    assert mod.group_weights(None, ["a", "b", "b", "b"]) == pytest.approx([0.5, 1 / 6, 1 / 6, 1 / 6])
    truth = np.repeat([0, 1, 2], 10)
    odd = np.tile([0, 1, 2], 10)
    chosen = mod.closest([truth, (truth + 1) % 3, odd], None, truth, adjusted_rand_score)
    assert chosen is truth
    assert mod.closest([odd, truth, truth], None, odd, adjusted_rand_score) is not odd   # two agree, the vote did not
    end = {"kmeans/features": truth, "umap_gmm/pixels": (truth + 1) % 3, "spectral/features": (truth + 2) % 3}
    made = mod.variants(end, [truth, (truth + 1) % 3], truth, 3, seed=0)
    assert set(made) == set(mod.VARIANTS)
    assert all(adjusted_rand_score(truth, lab) == 1.0 for lab in made.values())
    byol_only = mod.variants(end, [], None, 3, seed=0)
    assert "seed in the warm-up's half" not in byol_only
    rows = [{"set": s, "row": m, "seed": 0, "own": a, "best": a, **{v: a for v in mod.VARIANTS}}
            for s, m, a in (("x", "conr", 0.9), ("x", "byol", 0.8), ("y", "conr", 0.5), ("y", "byol", 0.6))]
    rows[0]["no input"] = 0.7
    lines = mod.table(rows)
    assert "| default | 1 of 2 |" in lines and "| no input | 0 of 2 |" in lines
    assert "| x | conr | 1 | 0.900 | 0.700 |" in "\n".join(lines)


def test_suite_runs_reads_each_run_once_from_the_later_folder(tmp_path):
    """The replays' shared reader: a run two folders hold counts once, the later folder's; a run
    whose labels file is missing is left out; the order is the records'."""
    import json

    mod = load("vote_rules")
    folders = []
    for name, records in (("a", [("orl", 0, 0.70), ("orl", 1, 0.71), ("coil20", 0, 0.90)]),
                          ("b", [("orl", 1, 0.81), ("digits", 0, 0.95)])):
        folder = tmp_path / name
        (folder / "labels").mkdir(parents=True)
        lines = []
        for dataset, seed, acc in records:
            lines.append(json.dumps({"dataset": dataset, "row": "conr_encoder", "seed": seed, "acc": acc}))
            if (dataset, seed) != ("coil20", 0):   # its labels were not kept
                (folder / "labels" / f"{dataset}-conr_encoder-{seed}.npz").write_bytes(b"")
        (folder / "suite-runs.jsonl").write_text("\n".join(lines) + "\n")
        folders.append(folder)
    runs = mod.suite_runs(folders)
    assert [(r["dataset"], r["seed"], r["acc"]) for _, r in runs] == [("orl", 0, 0.70), ("orl", 1, 0.81),
                                                                      ("digits", 0, 0.95)]
    assert runs[1][0] == folders[1] / "labels" / "orl-conr_encoder-1.npz"
