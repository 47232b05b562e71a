"""Votes of the candidates instead of a choice among them, replayed on every run that kept its
candidates' labels (benchmarks/results/labels/ and variants/*/labels/).

Three label-free ways to let the candidates vote, each against the run's own choice and its best
candidate (the labels read only to score):

* a co-association consensus whose votes are weighted by each candidate's agreement with the others
  (its mean adjusted Rand index with them, to the power 0, 1, 4 or 8: 0 is the plain consensus, 4
  the ``consensus`` rule's and, since 2026-12-06, the default ending), so that weak candidates that
  agree with nobody count less (`conr.cluster.consensus.consensus_partition(..., weights=...)`);
* the medoid by agreement: the candidate of the highest mean adjusted Rand index with the others;
* a cluster vote: every candidate's clusters, each scored by how well the other candidates
  reproduce it (the mean over them of its best Jaccard overlap with one of their clusters), taken
  greedily from the best while at least half of a cluster is still unclaimed, until K; the
  samples left over go where most candidates' clusters send them.

Two more tables decide the default: the same replay on the runs made under ``away`` alone (the
ending the consensus replaced; stage 2's seed is still chosen by it), and the main table's own runs
ended by the weighted consensus (ACC and NMI).

    python benchmarks/vote_rules.py        # about 5 minutes (CIFAR-10's 10,000 rows dominate)

Writes benchmarks/results/vote_rules.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from conr.cluster.policy import AGREEMENT_POWER, vote_weights  # noqa: E402  (the default's own weights)

RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "vote_rules"
POWERS = tuple(sorted({0, 1, 4, 8, AGREEMENT_POWER}))
DEFAULT = f"consensus, weights agreement^{AGREEMENT_POWER}"
VOTES = (*(f"consensus, weights agreement^{p}" for p in POWERS), "medoid by agreement", "cluster vote")


def labelled_runs() -> list[tuple[Path, dict | None]]:
    """(labels file, the run's record from its folder's suite-runs.jsonl or None), for every run of
    results/ and variants/*/ that kept its candidates' labels."""
    out = []
    for folder in [RESULTS, *sorted((RESULTS / "variants").glob("*"))]:
        records = {}
        if (folder / "suite-runs.jsonl").exists():
            for line in (folder / "suite-runs.jsonl").read_text().splitlines():
                r = json.loads(line)
                records[f"{r['dataset']}-{r['row']}-{r['seed']}"] = r
        out += [(p, records.get(p.stem)) for p in sorted((folder / "labels").glob("*.npz"))]
    return out


def kept_runs() -> list[tuple[Path, dict | None]]:
    """:func:`labelled_runs` but those made under the ``consensus`` rule (their choice is a vote already)."""
    return [(p, record) for p, record in labelled_runs() if (record or {}).get("rule") != "consensus"]


def suite_runs(folders: list[Path]) -> list[tuple[Path, dict]]:
    """(labels file, record) of each run in the suite folders that kept its candidates' labels; a
    run (dataset, row, seed) that two folders hold counts once: the later
    folder's run, in the earlier one's place."""
    runs = {}
    for folder in folders:
        for rec in (json.loads(line) for line in (folder / "suite-runs.jsonl").read_text().splitlines()):
            path = folder / "labels" / f"{rec['dataset']}-{rec['row']}-{rec['seed']}.npz"
            if path.exists():
                runs[(rec["dataset"], rec["row"], rec["seed"])] = (path, rec)
    return list(runs.values())


def write_results(out: Path, lines: list[str], rows: list[dict]) -> None:
    """OUT.md (``lines``) and OUT.json (``rows``), each written whole or not at all; the table printed."""
    from conr.io import atomic_write_text

    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    atomic_write_text(out.with_suffix(".json"), json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


def replayed(runs: list[tuple[Path, dict | None]], replay) -> list[dict]:
    """``replay(path, record)`` of each run, the runs it returns None for left out; each row printed."""
    rows = []
    for path, record in runs:
        row = replay(path, record)
        if row is not None:
            rows.append(row)
            print(row, flush=True)
    return rows


def cluster_vote(labelings: list[np.ndarray], k: int, unclaimed: float = 0.5) -> np.ndarray:
    """The clusters the candidates reproduce most (module docstring), as one partition."""
    onehots = [np.eye(int(lab.max()) + 1)[lab] for lab in labelings]
    scored = []
    for a, ha in enumerate(onehots):
        for j in range(ha.shape[1]):
            member = ha[:, j]
            if not member.any():
                continue
            overlaps = []
            for b, hb in enumerate(onehots):
                if b != a:
                    inter = member @ hb
                    overlaps.append(float(np.max(inter / (member.sum() + hb.sum(0) - inter))))
            scored.append((np.mean(overlaps), a, j))
    scored.sort(key=lambda s: -s[0])
    labels = np.full(len(labelings[0]), -1)
    taken = 0
    for _, a, j in scored:
        member = onehots[a][:, j] > 0
        free = member & (labels < 0)
        if free.any() and free.sum() >= unclaimed * member.sum():
            labels[free] = taken
            taken += 1
            if taken == k:
                break
    left = np.flatnonzero(labels < 0)
    if left.size:
        accepted = np.stack([labels == c for c in range(taken)], 1).astype(float)
        votes = np.zeros((left.size, taken))
        for h in onehots:
            to = (h.T @ accepted).argmax(1)          # each of the candidate's clusters -> a taken cluster
            votes[np.arange(left.size), to[h[left].argmax(1)]] += 1
        labels[left] = votes.argmax(1)
    return labels


def replay(path: Path, record: dict | None) -> dict | None:
    from conr.cluster.consensus import agreement, consensus_partition
    from conr.ops.metrics import evaluate

    with np.load(path) as z:
        truth, names, labels = z["truth"], [str(n) for n in z["names"]], z["labels"].astype(np.int64)
    scored = truth >= 0
    if len(names) < 3 or not scored.any():
        return None
    k = int(record["k"]) if record else len(np.unique(truth[scored]))
    seed = int(record["seed"]) if record else 0   # the run's seed, as its own consensus would take it
    labelings = list(labels)

    def acc(lab) -> float:
        return round(float(evaluate(truth[scored], lab[scored])["acc"]), 4)

    each = [acc(lab) for lab in labelings]
    agree = agreement(labelings)
    row = {"run": str(path.relative_to(RESULTS)), "k": k, "best": max(each), "best_name": names[int(np.argmax(each))],
           "chosen": record["acc"] if record else None, "chosen_nmi": record["nmi"] if record else None,
           "rule": record.get("rule") if record else None}
    for p in POWERS:   # the default's power through the default's own vote_weights
        weights = vote_weights(agree) if p == AGREEMENT_POWER else agree.clip(0) ** p if p else None
        made = consensus_partition(labelings, k, seed=seed, weights=weights)
        row[f"consensus, weights agreement^{p}"] = acc(made)
        if p == AGREEMENT_POWER:
            row["default_nmi"] = round(float(evaluate(truth[scored], made[scored])["nmi"]), 4)
    row["medoid by agreement"] = each[int(np.argmax(agree))]
    row["cluster vote"] = acc(cluster_vote(labelings, k))
    return row


def by_cell(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The replayed runs grouped by (set, row), read off each labels file's name (SET-ROW-SEED)."""
    cells = defaultdict(list)
    for r in rows:
        dataset, row, _ = Path(r["run"]).stem.rsplit("-", 2)
        cells[(dataset, row)].append(r)
    return cells


def table(rows: list[dict]) -> list[str]:
    """Per set and row, the mean ACC of the choice, the best candidate and every vote; then the mean
    gap to the best and the runs within 0.01 of it, over the runs whose choice is recorded."""
    cells = by_cell(rows)
    cols = ("chosen", "best", *VOTES)
    lines = ["| set | row | runs | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for (dataset, row), got in sorted(cells.items()):
        means = [np.mean([r[c] for r in got if r[c] is not None]) if any(r[c] is not None for r in got) else None
                 for c in cols]
        lines.append(f"| {dataset} | {row} | {len(got)} | "
                     + " | ".join("–" if m is None else f"{m:.3f}" for m in means) + " |")
    recorded = [r for r in rows if r["chosen"] is not None]
    lines += ["", f"Over the {len(recorded)} runs whose choice is recorded (each run weighs the same):", "",
              "| rule | mean ACC | mean gap to the run's best | within 0.01 of the best | largest gap |", "|---|---|---|---|---|"]
    for c in ("chosen", *VOTES):
        gaps = [r["best"] - r[c] for r in recorded]
        lines.append(f"| {c} | {np.mean([r[c] for r in recorded]):.3f} | {np.mean(gaps):.4f} | "
                     f"{sum(g <= 0.01 for g in gaps)} of {len(gaps)} | {max(gaps):.3f} |")
    return lines


def default_change(rows: list[dict]) -> list[str]:
    """The default's change of 2026-12-06, on the runs made under ``away`` (the default before; stage
    2's seed is still chosen by it, so these replays are what the new ending makes of the same
    trainings): per set and row, the run's choice against the weighted consensus, and how often
    each is ahead by more than 0.001."""
    away = [r for r in rows if r["rule"] == "away" and r["chosen"] is not None]
    cells = by_cell(away)
    lines = ["| set | row | runs | away's choice | weighted consensus | best | consensus ahead | behind |",
             "|---|---|---|---|---|---|---|---|"]
    for (dataset, row), got in sorted(cells.items()):
        lines.append(f"| {dataset} | {row} | {len(got)} | {np.mean([r['chosen'] for r in got]):.3f} | "
                     f"{np.mean([r[DEFAULT] for r in got]):.3f} | {np.mean([r['best'] for r in got]):.3f} | "
                     f"{sum(r[DEFAULT] > r['chosen'] + 0.001 for r in got)} | "
                     f"{sum(r[DEFAULT] < r['chosen'] - 0.001 for r in got)} |")
    lines += ["", "| over the runs | mean ACC | within 0.01 of the best |", "|---|---|---|"]
    for name, key in (("away's choice", "chosen"), ("weighted consensus", DEFAULT)):
        lines.append(f"| {name} ({len(away)} runs) | {np.mean([r[key] for r in away]):.4f} | "
                     f"{sum(r['best'] - r[key] <= 0.01 for r in away)} |")
    return lines


def main_table(rows: list[dict]) -> list[str]:
    """The main table's own runs (results/labels, made under ``away``), ended by the default's
    weighted consensus: per set and row, ACC / NMI of the run's choice and of the consensus."""
    cells = by_cell([r for r in rows if r["run"].startswith("labels/") and r["chosen"] is not None])
    lines = ["| set | row | seeds | away's choice ACC / NMI | weighted consensus ACC / NMI | best candidate ACC |",
             "|---|---|---|---|---|---|"]
    for (dataset, row), got in sorted(cells.items()):
        mean = {k: np.mean([r[k] for r in got]) for k in ("chosen", "chosen_nmi", DEFAULT, "default_nmi", "best")}
        lines.append(f"| {dataset} | {row} | {len(got)} | {mean['chosen']:.3f} / {mean['chosen_nmi']:.3f} | "
                     f"{mean[DEFAULT]:.3f} / {mean['default_nmi']:.3f} | {mean['best']:.3f} |")
    return lines


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    rows = replayed(kept_runs(), replay)
    lines = ["# Votes of the candidates, replayed on the kept runs", "",
             "`python benchmarks/vote_rules.py` (docstring). ACC; \"chosen\": the run's own final choice.", "",
             *table(rows), "", "## The default's change (2026-12-06), on the runs made under `away`", "",
             "Stage 2's seed is still chosen by `away` (`conr.cluster.policy.seed_rule`), so on these runs the "
             "replay is what the new ending makes of the same training. Ahead / behind: by more than 0.001 ACC.", "",
             *default_change(rows), "", "## The main table's runs, ended by the weighted consensus", "",
             "`benchmarks/results/labels` (seeds 0-2 of `suite.py`'s deep rows). Runs on the encoder's features "
             "(`conr_encoder`; `byol` where `auto` takes the encoder) have no self-labelling, so their replay is "
             "exact; from scratch (`conr_scratch`, digits' `byol`) a run under the new default starts its "
             "self-labelled candidate from the consensus, so there the replay is not the run.", "",
             *main_table(rows)]
    write_results(OUT, lines, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
