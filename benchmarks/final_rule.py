"""Which label-free rule should choose the final partition: the table that decided.

Every conr / byol row of the open suite (benchmarks/results/suite-runs*.jsonl, the latest
runs, and benchmarks/results/archive/suite-runs*.jsonl, the kept earlier ones, some of whose
UMAP + GMM was a single run, not a consensus) carries
its final stage's candidate table: each candidate's value under every rule of
conr/cluster/final.py and, for this table only, its scores against the ground truth.
For each rule this script takes the candidate that rule would have chosen in every
run and reports the mean ACC / NMI it would have given, beside the best candidate of
each run (the oracle, which needs labels) and each single fixed candidate.

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


def main(argv=None) -> int:
    from conr.cluster.policy import RULES, derived_score, eligible, preferred_for
    from conr.io import atomic_write_text

    paths = sorted(RESULTS.glob("archive/suite-runs*.jsonl")) + sorted(RESULTS.glob("suite-runs*.jsonl"))
    rows = [json.loads(line) for path in paths  # the kept earlier runs (archive/) first, then today's
            for line in path.read_text().splitlines() if line.strip()]
    runs = [r for r in rows if r.get("candidates") and "true_acc" in r["candidates"][0]]
    if not runs:
        print("no run with a candidate table in suite-runs.jsonl: run benchmarks/suite.py first")
        return 1
    table: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    gaps: dict[str, list] = defaultdict(list)  # per run: the best candidate's ACC less the chosen one's
    for r in runs:
        key = (r["dataset"], r["row"])
        cands = r["candidates"]
        preferred = preferred_for(c["name"] for c in cands)
        for c in cands:  # the rules that are functions of silhouette_umap, derived again (rows older than them)
            for rule in ("prefer_features", "manifold", "joint"):
                c[rule] = derived_score(rule, c["name"], c["algorithm"], c["silhouette_umap"], preferred)
        for rule in RULES:
            best = max(eligible(cands, rule, lambda c: c["representation"], lambda c: c["name"]),
                       key=lambda c: c.get(rule, float("-inf")))
            table[key][rule].append((best["true_acc"], best["true_nmi"], best["name"]))
        oracle = max(cands, key=lambda c: c["true_acc"])
        for rule in RULES:  # the target: within 0.01 ACC of the run's best candidate
            gaps[rule].append(oracle["true_acc"] - table[key][rule][-1][0])
        table[key]["oracle (labels)"].append((oracle["true_acc"], oracle["true_nmi"], oracle["name"]))
        for c in cands:
            if c["algorithm"] != "self_label":
                table[key][c["name"]].append((c["true_acc"], c["true_nmi"], c["name"]))
    out, lines = [], ["| dataset | row | runs | chooser | ACC | NMI | chose |", "|---|---|---|---|---|---|---|"]
    overall: dict[str, list] = defaultdict(list)
    for (dataset, row), choosers in table.items():
        for chooser, got in choosers.items():
            acc = statistics.mean(g[0] for g in got)
            nmi = statistics.mean(g[1] for g in got)
            names = sorted({g[2] for g in got})
            out.append({"dataset": dataset, "row": row, "runs": len(got), "chooser": chooser, "acc": round(acc, 4),
                        "nmi": round(nmi, 4), "chose": names})
            if chooser in RULES or chooser == "oracle (labels)":
                lines.append(f"| {dataset} | {row} | {len(got)} | {chooser} | {acc:.3f} | {nmi:.3f} | "
                             f"{', '.join(names)} |")
                overall[chooser].append((acc, nmi))
    lines += ["", "Mean over the dataset/row cells (each cell weighs the same):", "",
              "| chooser | ACC | NMI | runs within 0.01 ACC of their best candidate | largest gap |",
              "|---|---|---|---|---|"]
    for chooser, vals in overall.items():
        g = gaps.get(chooser)
        close = f"{sum(x <= 0.01 for x in g)} of {len(g)}" if g else "all"
        lines.append(f"| {chooser} | {statistics.mean(v[0] for v in vals):.3f} | "
                     f"{statistics.mean(v[1] for v in vals):.3f} | {close} | {max(g) if g else 0.0:.3f} |")
    md = "\n".join(lines) + "\n"
    atomic_write_text(RESULTS / "final_rule.json", json.dumps(out, indent=1) + "\n")
    atomic_write_text(RESULTS / "final_rule.md", "Final-stage rules on the open suite's runs "
                      "(`python benchmarks/final_rule.py`).\n\n" + md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
