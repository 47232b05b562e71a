"""Which label-free rule should choose the final partition: the table that decided.

Every conr / byol row of the open suite (benchmarks/results/suite-runs*.jsonl, the latest
runs, and benchmarks/results/archive/suite-runs*.jsonl, the kept earlier ones, some of whose
UMAP + GMM was a single run, not a consensus) carries
its final stage's candidate table: each candidate's value under every rule of
conr/cluster/final.py and, for this table only, its scores against the ground truth.
For each rule this script takes the candidate that rule would have chosen in every
run and reports the mean ACC / NMI it would have given, beside the best candidate of
each run (the oracle, which needs labels) and each single fixed candidate.

Variants of the defaults (``python benchmarks/suite.py --set KEY=VALUE --out
benchmarks/results/variants/NAME``) are read from variants/*/suite-runs.jsonl, their rows
named ``row [NAME]``. Where a run kept its candidates' labels (suite.py writes them to
labels/DATASET-ROW-SEED.npz beside its runs), the choosers that need the labels themselves
are replayed too: the co-association consensus (conr/cluster/consensus.py) of all the
candidates, of those the ``joint`` rule may choose, of its three of the highest ``joint``
value, and of the UMAP + GMM candidates. Beside the oracle, the best candidate ``joint`` may
choose (needs the labels): what any rule with its eligibility could reach; and where the gap
is: how often the choice is the best its rule may take, and the features' own candidates (which
``joint`` and ``away`` leave out where the joint candidate is) let back in by a label-free value.

    python benchmarks/final_rule.py            # reads suite-runs*.jsonl (and archive/), writes final_rule.{json,md}
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


CONSENSUS = ("consensus (replayed from the kept labels)", "consensus of the joint rule's eligible (kept labels)",
             "consensus of the 3 of the highest joint value (kept labels)",
             "consensus of the UMAP + GMM candidates (kept labels)")
MEDOID = "medoid: the candidate of most mean NMI with the others (kept labels)"
FROM_LABELS = (*CONSENSUS, MEDOID)
FEATURES_KMEANS = "the features' k-means, always (the carried partition, or a fresh one)"


def replay_from_labels(run: dict, cands: list[dict]) -> dict:
    """The choosers that need the candidates' labels, on a run that kept them: the two
    consensus choosers and the medoid (the candidate that agrees most, by mean NMI, with the
    others: a vote that chooses one of them instead of making a new partition). {chooser:
    (ACC, NMI, what it is)}; empty where the labels were not kept."""
    import numpy as np
    from sklearn.metrics import normalized_mutual_info_score

    from conr.cluster.consensus import consensus_partition
    from conr.cluster.policy import eligible
    from conr.ops.metrics import evaluate

    path = run.get("labels_file")
    if path is None:
        return {}
    path = ROOT / path  # an archived run names its labels from the repository's root
    if not path.exists():
        return {}
    with np.load(path) as z:
        truth, labels = z["truth"], dict(zip((str(n) for n in z["names"]), z["labels"].astype(np.int64)))
    out = {}
    pools = (cands, eligible(cands, "joint", lambda c: c["representation"], lambda c: c["name"]),
             sorted((c for c in cands if c["algorithm"] != "self_label"), key=lambda c: -c["joint"])[:3],
             [c for c in cands if c["algorithm"] == "umap_gmm"])
    for chooser, pool in zip(CONSENSUS, pools):
        pred = consensus_partition([labels[c["name"]] for c in pool], run["k"], seed=run["seed"])
        got = evaluate(truth, pred)
        out[chooser] = (got["acc"], got["nmi"], f"consensus of {len(pool)}")
    names = [c["name"] for c in cands]
    medoid = max(names, key=lambda n: np.mean([normalized_mutual_info_score(labels[n], labels[m])
                                               for m in names if m != n]))
    got = evaluate(truth, labels[medoid])
    out[MEDOID] = (got["acc"], got["nmi"], medoid)
    return out


def on_common_ground(cands: list[dict], chosen: str, carried_only: bool = False) -> dict:
    """The candidate ``away`` chose (named ``chosen``), or, where that is the joint candidate, a
    features' candidate if its silhouette in the input's embedding beats the joint candidate's
    there: neither partition was made in that layout alone, so the comparison is not one of two
    representations' own layouts. The features' candidate: that of the highest ``away`` value,
    or with ``carried_only`` the training's carried stage-2 partition (``seeded_kmeans``), the
    partition the run already had."""
    from conr.cluster.policy import JOINT

    kept = next(c for c in cands if c["name"] == chosen)
    features = [c for c in cands if c["representation"] == "features" and "away" in c
                and (not carried_only or c["algorithm"] == "seeded_kmeans")]
    ground = [e for e in kept["silhouette_in"] if e != "features"]   # the input's embedding
    if chosen != JOINT or not features or not ground:
        return kept
    own = max(features, key=lambda c: c["away"])
    return own if own["silhouette_in"].get(ground[0], float("-inf")) > kept["silhouette_in"][ground[0]] else kept


FEATURES_CRITERIA = {  # label-free values a features' candidate could be compared with the chosen one by
    "agreement": lambda c: c.get("agreement"),
    "ncut": lambda c: c.get("ncut"),
    "silhouette in the features' embedding": lambda c: (c.get("silhouette_in") or {}).get("features"),
    "silhouette in the input's embeddings": lambda c: _mean_or_none(
        [v for k, v in (c.get("silhouette_in") or {}).items() if k != "features"]),
    "silhouette in every embedding, mean": lambda c: _mean_or_none(list((c.get("silhouette_in") or {}).values())),
}


def _mean_or_none(values: list) -> float | None:
    return statistics.mean(values) if values else None


def where_the_gap_is(runs: list[dict]) -> list[str]:
    """Markdown: how much of the gap between each run's own choice and its best candidate is the
    choice among the candidates its rule may take, and how much the candidates it may not take
    (the features' own, left out where the joint candidate is); then the features' candidates
    let back in, each judged against the run's choice by one label-free value (the features'
    candidate of the highest value replaces the choice where that value is higher than the
    choice's): mean ACC and runs within 0.01 of their best, on the runs where both have it."""
    from conr.cluster.policy import JOINT_RULES, eligible

    named = [(r, next(c for c in r["candidates"] if c.get("chosen")))   # each run that names its choice, once
             for r in runs if any(c.get("chosen") for c in r["candidates"])]
    ranked = shut_out = 0
    for r, chosen in named:
        cands = r["candidates"]
        rule = r.get("rule") if r.get("rule") in JOINT_RULES else "joint"
        pool = eligible(cands, rule, lambda c: c["representation"], lambda c: c["name"], lambda c: c)
        best_pool = max(c["true_acc"] for c in pool)
        best = max(c["true_acc"] for c in cands)
        ranked += best_pool - chosen["true_acc"] <= 0.01
        shut_out += best_pool - chosen["true_acc"] <= 0.01 < best - chosen["true_acc"]
    lines = ["", f"Where the gap is, on the {len(named)} runs that name their choice: it is within 0.01 ACC of the "
             f"best candidate its rule may take in {ranked}; in {shut_out} of those the run's best candidate is one "
             "the rule may not take (the features' own, left out where the joint candidate is). The features' "
             "candidates let back in, judged against the choice by one value each (on the runs that kept it):", "",
             "| value | runs | the run's choice: ACC; within 0.01 | with the features' candidates competing: "
             "ACC; within 0.01 |", "|---|---|---|---|"]
    for label, value in FEATURES_CRITERIA.items():
        pairs = []
        for r, chosen in named:
            if value(chosen) is None:
                continue
            cands = r["candidates"]
            own = [c for c in cands if c["representation"] == "features" and c["algorithm"] != "self_label"
                   and value(c) is not None]
            pick = chosen
            if own and chosen["representation"] != "features":
                rival = max(own, key=value)
                pick = rival if value(rival) > value(chosen) else chosen
            best = max(c["true_acc"] for c in cands)
            pairs.append((chosen["true_acc"], pick["true_acc"], best))
        if pairs:
            lines.append(f"| {label} | {len(pairs)} | {statistics.mean(p[0] for p in pairs):.3f}; "
                         f"{sum(p[2] - p[0] <= 0.01 for p in pairs)} | {statistics.mean(p[1] for p in pairs):.3f}; "
                         f"{sum(p[2] - p[1] <= 0.01 for p in pairs)} |")
    return lines


def seed_against_end(runs: list[dict]) -> list[str]:
    """Markdown: per dataset and row, the ACC of the partition the final stage chose at stage 2's
    seed (kept in the run's ``seed_candidates``) against the run's own ACC at the end, and in how
    many runs the end fell more than 0.01 below the partition the run already had."""
    cells: dict[tuple, list] = defaultdict(list)
    for r in runs:
        chosen = [c for c in r.get("seed_candidates") or [] if c.get("chosen") and "true_acc" in c]
        if chosen:
            cells[(r["dataset"], r["row"])].append((chosen[0]["true_acc"], r["acc"]))
    if not cells:
        return []
    lines = ["", "Stage 2's seed against the end: ACC of the final stage's choice at stage 2's seed and the run's "
             "ACC at the end (after stage 2 and self-labelling), on the runs that kept both tables:", "",
             "| dataset | row | runs | seed's choice | end | end − seed | end more than 0.01 below the seed |",
             "|---|---|---|---|---|---|---|"]
    for (dataset, row), got in sorted(cells.items()):
        seed, end = statistics.mean(g[0] for g in got), statistics.mean(g[1] for g in got)
        lines.append(f"| {dataset} | {row} | {len(got)} | {seed:.3f} | {end:.3f} | {end - seed:+.3f} | "
                     f"{sum(g[1] - g[0] < -0.01 for g in got)} |")
    every = [g for got in cells.values() for g in got]
    lines.append(f"| all | | {len(every)} | {statistics.mean(g[0] for g in every):.3f} | "
                 f"{statistics.mean(g[1] for g in every):.3f} | "
                 f"{statistics.mean(g[1] - g[0] for g in every):+.3f} | {sum(g[1] - g[0] < -0.01 for g in every)} |")
    return lines


def main(argv=None) -> int:
    from conr.cluster.policy import RULES, away_silhouette, derived_score, eligible, preferred_for
    from conr.io import atomic_write_text, read_jsonl

    scored = [rule for rule in RULES if rule != "consensus"]  # the consensus is replayed from the labels

    rows = [r for path in sorted(RESULTS.glob("archive/suite-runs*.jsonl")) for r in read_jsonl(path)]  # kept earlier runs
    for path in sorted(RESULTS.glob("suite-runs*.jsonl")):  # today's: their labels, where kept, are in labels/
        for r in read_jsonl(path):
            rows.append({**r, "labels_file": RESULTS / "labels" / f"{r['dataset']}-{r['row']}-{r['seed']}.npz"})
    for path in sorted(RESULTS.glob("variants/*/suite-runs.jsonl")):
        for r in read_jsonl(path):
            rows.append({**r, "row": f"{r['row']} [{path.parent.name}]",
                         "labels_file": path.parent / "labels" / f"{r['dataset']}-{r['row']}-{r['seed']}.npz"})
    runs, seen = [], set()  # a run copied into a second variant (to summarise its seeds there), or repeated
    for r in rows:          # to the digit (its repeat command: the same candidates, other timings), counts once
        if r.get("candidates") and "true_acc" in r["candidates"][0]:
            untimed = [{k: v for k, v in c.items() if k != "seconds"} for c in r["candidates"]]
            same = (r["dataset"], r["row"].split(" [")[0], r["seed"], json.dumps(untimed, sort_keys=True))
            if same not in seen:
                seen.add(same)
                runs.append(r)
    choosers = scored + ["joint, carried competing", FEATURES_KMEANS, *FROM_LABELS]
    if not runs:
        print("no run with a candidate table in suite-runs.jsonl: run benchmarks/suite.py first")
        return 1
    table: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    gaps: dict[str, list] = defaultdict(list)  # per run: the best candidate's ACC less the chosen one's
    labelled: dict[str, list] = defaultdict(list)  # per run that kept its labels: (ACC, NMI, gap)
    measured: list = []  # per run that measured each candidate's stability: (run, joint's pick, stability's, best)
    away_runs: list = []  # per run that kept each embedding's silhouette: (run, joint's pick, away's, on common ground: the features', the carried, best)
    self_labelled: list = []  # per run with a self-labelled candidate: (its lead over the others, chosen, silhouette less seed's)
    for r in runs:
        key = (r["dataset"], r["row"])
        cands = r["candidates"]
        preferred = preferred_for(c["name"] for c in cands)
        for c in cands:  # the rules that are functions of silhouette_umap, derived again (rows older than them)
            for rule in ("prefer_features", "manifold", "joint"):
                c[rule] = derived_score(rule, c["name"], c["algorithm"], c["silhouette_umap"], preferred)
            if c.get("silhouette_in"):  # the away rule, where each embedding's silhouette was kept
                c["away"] = derived_score("away", c["name"], c["algorithm"],
                                          away_silhouette(c["silhouette_in"], c["representation"]), preferred)
        picked = {}
        for rule in scored:
            if rule == "stability" and not any("stability" in c for c in cands):
                continue  # measured only by runs under that rule (cluster.final_rule=stability)
            if rule == "away" and not all("away" in c for c in cands):
                continue  # only where every candidate kept its silhouette in each embedding (silhouette_in)
            best = max(eligible(cands, rule, lambda c: c["representation"], lambda c: c["name"], lambda c: c),
                       key=lambda c: c.get(rule, float("-inf")))
            picked[rule] = (best["true_acc"], best["true_nmi"], best["name"])
        if "stability" in picked:  # on its few runs alone, in a table of its own, not among the means of all runs
            measured.append((f"{r['dataset']} {r['row']} seed {r['seed']}", picked["joint"], picked.pop("stability"),
                             max(cands, key=lambda c: c["true_acc"])))
        if "away" in picked:  # on the runs that kept each embedding's silhouette, in a table of its own
            common = [on_common_ground(cands, picked["away"][2], carried) for carried in (False, True)]
            away_runs.append((f"{r['dataset']} {r['row']} seed {r['seed']}", picked["joint"], picked.pop("away"),
                              *((c["true_acc"], c["true_nmi"], c["name"]) for c in common),
                              max(cands, key=lambda c: c["true_acc"])))
        # the default rule with the training's own partition (the carried stage-2 labels) eligible beside it
        best = max((c for c in cands if c["representation"] != "features" or c["algorithm"] == "seeded_kmeans"),
                   key=lambda c: c["joint"])
        picked["joint, carried competing"] = (best["true_acc"], best["true_nmi"], best["name"])
        kmeans = next((c for c in cands if c["name"] in ("seeded_kmeans/features", "kmeans/features")), None)
        if kmeans is not None:  # what a silhouette in the features' own space mostly takes (raw_silhouette.py)
            picked[FEATURES_KMEANS] = (kmeans["true_acc"], kmeans["true_nmi"], kmeans["name"])
        picked.update(replay_from_labels(r, cands))
        oracle = max(cands, key=lambda c: c["true_acc"])
        for c in cands:
            seed = next((o for o in cands if "/" + o["name"] == c["name"][len("self_label"):]), None)
            if c["algorithm"] == "self_label" and seed is not None:
                lead = c["true_acc"] - max(o["true_acc"] for o in cands if o is not c)
                self_labelled.append((lead, bool(c.get("chosen")), c["silhouette_umap"] - seed["silhouette_umap"]))
        picked["oracle (labels)"] = (oracle["true_acc"], oracle["true_nmi"], oracle["name"])
        pool = eligible(cands, "joint", lambda c: c["representation"], lambda c: c["name"], lambda c: c)
        reach = max(pool, key=lambda c: c["true_acc"])   # the best any rule with joint's eligibility could do
        picked["best that joint may choose (labels)"] = (reach["true_acc"], reach["true_nmi"], reach["name"])
        for chooser, got in picked.items():  # the target: within 0.01 ACC of the run's best candidate
            table[key][chooser].append(got)
            gaps[chooser].append(oracle["true_acc"] - got[0])
            if any(n in picked for n in FROM_LABELS):
                labelled[chooser].append((*got[:2], oracle["true_acc"] - got[0]))
        for c in cands:
            if c["algorithm"] != "self_label":
                table[key][c["name"]].append((c["true_acc"], c["true_nmi"], c["name"]))
    out, lines = [], ["| dataset | row | runs | chooser | ACC | NMI | chose |", "|---|---|---|---|---|---|---|"]
    overall: dict[str, list] = defaultdict(list)
    for (dataset, row), by_chooser in table.items():
        for chooser, got in by_chooser.items():
            acc = statistics.mean(g[0] for g in got)
            nmi = statistics.mean(g[1] for g in got)
            names = sorted({g[2] for g in got})
            out.append({"dataset": dataset, "row": row, "runs": len(got), "chooser": chooser, "acc": round(acc, 4),
                        "nmi": round(nmi, 4), "chose": names})
            if chooser in choosers or chooser in ("oracle (labels)", "best that joint may choose (labels)"):
                lines.append(f"| {dataset} | {row} | {len(got)} | {chooser} | {acc:.3f} | {nmi:.3f} | "
                             f"{', '.join(names)} |")
                overall[chooser].append((acc, nmi))
    lines += ["", "The consensus and medoid choosers need the candidates' labels, kept only by runs since they were "
              "(benchmarks/results/labels/, variants/*/labels/): their means are over those cells alone."]
    lines += ["", "Mean over the dataset/row cells (each cell weighs the same):", "",
              "| chooser | ACC | NMI | runs within 0.01 ACC of their best candidate | largest gap |",
              "|---|---|---|---|---|"]
    for chooser, vals in overall.items():
        g = gaps.get(chooser)
        close = f"{sum(x <= 0.01 for x in g)} of {len(g)}" if g else "all"
        lines.append(f"| {chooser} | {statistics.mean(v[0] for v in vals):.3f} | "
                     f"{statistics.mean(v[1] for v in vals):.3f} | {close} | {max(g) if g else 0.0:.3f} |")
    if labelled:
        n = len(labelled["joint"])
        lines += ["", f"The {n} runs that kept their candidates' labels, every chooser on the same runs (mean per run):",
                  "", "| chooser | ACC | NMI | within 0.01 ACC of the run's best | largest gap |", "|---|---|---|---|---|"]
        for chooser, vals in labelled.items():
            lines.append(f"| {chooser} | {statistics.mean(v[0] for v in vals):.3f} | "
                         f"{statistics.mean(v[1] for v in vals):.3f} | {sum(v[2] <= 0.01 for v in vals)} of {len(vals)} | "
                         f"{max(v[2] for v in vals):.3f} |")
    if measured:
        lines += ["", f"The {len(measured)} runs under `cluster.final_rule=stability`, which measured each candidate's "
                  "stability: both rules on the same candidates (ACC, the candidate chosen):", "",
                  "| run | joint | stability | best candidate |", "|---|---|---|---|"]
        for run, joint, stable, best in measured:
            lines.append(f"| {run} | {joint[0]:.3f} {joint[2]} | {stable[0]:.3f} {stable[2]} | "
                         f"{best['true_acc']:.3f} {best['name']} |")
    if away_runs:
        columns = range(1, len(away_runs[0]) - 1)  # each chooser's pick, between the run's name and its best
        lines += ["", f"The {len(away_runs)} runs that kept each candidate's silhouette in every embedding "
                  "(`silhouette_in`): `joint`, `away` (the silhouette only in the other representations' "
                  "embeddings), and `away` with the features' own candidates judged on common ground (where "
                  "`away` takes the joint candidate, the features' candidate of the highest `away` value takes "
                  "its place if its silhouette in the input's embedding is higher than the joint one's: a layout "
                  "that is neither's own), and the same with only the carried stage-2 partition, the one the run "
                  "already had, on common ground; on the same candidates (ACC, the candidate chosen):", "",
                  "| run | joint | away | away, features on common ground | away, carried on common ground "
                  "| best candidate |", "|---|---|---|---|---|---|"]
        for run, *picks, best in away_runs:
            lines.append(f"| {run} | " + " | ".join(f"{p[0]:.3f} {p[2]}" for p in picks)
                         + f" | {best['true_acc']:.3f} {best['name']} |")
        lines.append("| mean; within 0.01 of the best | " + " | ".join(
            f"{statistics.mean(run[i][0] for run in away_runs):.3f}; "
            f"{sum(run[-1]['true_acc'] - run[i][0] <= 0.01 for run in away_runs)} of {len(away_runs)}"
            for i in columns) + f" | {statistics.mean(run[-1]['true_acc'] for run in away_runs):.3f} |")
    if self_labelled:
        leads = sorted(x[0] for x in self_labelled if x[0] > 0)
        lines += ["", f"Self-labelled candidates: {len(self_labelled)} runs; the best candidate in {len(leads)} (by "
                  + ", ".join(f"{x:.3f}" for x in leads) + f" ACC), chosen in {sum(x[1] for x in self_labelled)}; "
                  f"silhouette below its seed's in {sum(x[2] < 0 for x in self_labelled)} (median "
                  f"{statistics.median(x[2] for x in self_labelled):+.3f})."]
    lines += where_the_gap_is(runs)
    lines += seed_against_end(runs)
    md = "\n".join(lines) + "\n"
    atomic_write_text(RESULTS / "final_rule.json", json.dumps(out, indent=1) + "\n")
    atomic_write_text(RESULTS / "final_rule.md", "Final-stage rules on the open suite's runs "
                      "(`python benchmarks/final_rule.py`).\n\n" + md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
