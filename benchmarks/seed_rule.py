"""Stage 2's seed chosen by one rule against another, on the same runs: whole runs paired by
set, row and seed.

A run's training is deterministic on one machine up to stage 2's seed (the same epochs give the
same warm-up), so two suite folders whose runs differ only in ``cluster.seed_rule`` hold the
same seed candidates and differ from there on: the seed each rule took, and everything stage 2
and the final stage made from it. This script pairs the runs of a base folder with those of a
variant folder and checks that their seed candidates match (a pair whose warm-ups differ is left
out and named). The true labels serve only for the scores.

    # the default seed (the `away` rule's choice), then the consensus as the seed, each alone:
    python benchmarks/suite.py --datasets orl --rows conr_encoder --seeds 0 1 2 3 4 5 \\
        --out benchmarks/results/variants/consensus-default-2026-12-06
    python benchmarks/suite.py --datasets orl --rows conr_encoder --seeds 0 1 2 3 4 5 \\
        --set cluster.seed_rule=consensus --out benchmarks/results/variants/seed-consensus
    # (the same epochs for a set whose budget chose them: each seed with its base run's
    #  repeat_overrides, e.g. --seeds 2 --set cluster.seed_rule=consensus train.epochs=160)
    python benchmarks/seed_rule.py --base benchmarks/results/variants/consensus-default-2026-12-06 \\
        --variant benchmarks/results/variants/seed-consensus --out benchmarks/results/seed_rule-2026-12-06

A base folder made before a change of the ending (``cluster.warmup_votes``, 2026-12-06) is scored as
the default ends it now with ``--base-replay``: the JSON of ``benchmarks/warmup_vote.py`` on the same
runs, whose ``end + warm-up's features`` vote is the default's ending of that day (the warm-up's
candidates by count, ``cluster.warmup_weight=count``), replayed from the labels.

    python benchmarks/seed_rule.py --base benchmarks/results/variants/seed-labels-2026-12-06 \
        --base-replay benchmarks/results/warmup_vote.json \
        --variant benchmarks/results/variants/seed-features-vote-2026-12-06 \
        --names away features_consensus --out benchmarks/results/seed_rule-features-2026-12-06

Any other change that leaves the warm-up and stage 2's seed alone pairs the same way (``--subject``
names it), e.g. stage 2's neighbourhood size:

    python benchmarks/seed_rule.py --base benchmarks/results/variants/warmup-half-2026-12-06 \
        benchmarks/results/variants/warmup-votes-more-2026-12-06 \
        --variant benchmarks/results/variants/neighbourhood-2026-12-06 --names "k=10" "half a cluster" \
        --subject "Stage 2's neighbourhood on vectors" --out benchmarks/results/neighbourhood-2026-12-06

Writes OUT.md and OUT.json: per run, the seed's ACC under each rule and the best single seed candidate,
the run's ending (ACC / NMI) under each; per set, the means and the runs ahead and behind.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
TIE = 0.001  # ACC within this counts as level


def _runs(folders: list[Path]) -> dict:
    """{(set, row, seed): run} of the suite folders; a run two folders hold is taken from the later one."""
    from conr_vs_byol import suite_rows

    return {(r["dataset"], r["row"], r["seed"]): r for r in suite_rows(folders)}


def _seed(run: dict) -> dict:
    """The seed candidates' ACC by name, and the chosen one's."""
    table = run.get("seed_candidates") or []
    accs = {c["name"]: c.get("true_acc") for c in table}
    chosen = next((c for c in table if c.get("chosen")), None)
    return {"accs": accs, "chosen": chosen["name"] if chosen else None,
            "chosen_acc": chosen.get("true_acc") if chosen else None}


REPLAYED = "end + warm-up's features"   # warmup_vote.py's column: the default's ending since cluster.warmup_votes


def replayed_endings(base: dict, replay: Path) -> dict:
    """``base`` with each run's ending (ACC, NMI) replaced by the vote ``replay`` (warmup_vote.py's JSON)
    made from its labels; a run the replay does not hold is left out."""
    made = {(r["set"], r["row"], r["seed"]): r for r in json.loads(replay.read_text())}
    return {key: {**run, "acc": made[key][REPLAYED], "nmi": made[key][f"{REPLAYED} nmi"]}
            for key, run in base.items() if key in made}


def pair(base: dict, variant: dict) -> tuple[list[dict], list[str]]:
    """Paired rows of the runs both folders hold, and the keys left out (warm-ups that differ)."""
    rows, skipped = [], []
    for key in sorted(set(base) & set(variant)):
        b, v = base[key], variant[key]
        sb, sv = _seed(b), _seed(v)
        shared = set(sb["accs"]) & set(sv["accs"])
        same = b["epochs"] == v["epochs"] and shared and all(sb["accs"][n] == sv["accs"][n] for n in shared)
        if not same or sb["chosen_acc"] is None or sv["chosen_acc"] is None:
            skipped.append(f"{key[0]} {key[1]} seed {key[2]}: epochs {b['epochs']} / {v['epochs']}, "
                           f"{'seed candidates differ' if shared else 'no seed candidates'}")
            continue
        best_seed = max(a for n, a in sb["accs"].items() if a is not None and n in shared)
        best_end = max(c.get("true_acc") or 0.0 for c in v["candidates"] if c["name"] != "consensus/candidates")
        rows.append({"set": key[0], "row": key[1], "seed": key[2], "epochs": b["epochs"],
                     "seed_base": sb["chosen"], "seed_base_acc": sb["chosen_acc"],
                     "seed_variant": sv["chosen"], "seed_variant_acc": sv["chosen_acc"], "seed_best_acc": best_seed,
                     "base_acc": b["acc"], "base_nmi": b["nmi"], "variant_acc": v["acc"], "variant_nmi": v["nmi"],
                     "variant_best_candidate": best_end})
    return rows, skipped


def summary(rows: list[dict]) -> list[dict]:
    by = defaultdict(list)
    for r in rows:
        by[(r["set"], r["row"])].append(r)
    out = []
    for (s, row), rs in sorted(by.items()):
        mean = lambda k: round(statistics.fmean(r[k] for r in rs), 4)  # noqa: E731
        diff = [r["variant_acc"] - r["base_acc"] for r in rs]
        out.append({"set": s, "row": row, "runs": len(rs), "seed_base_acc": mean("seed_base_acc"),
                    "seed_variant_acc": mean("seed_variant_acc"), "seed_best_acc": mean("seed_best_acc"),
                    "base_acc": mean("base_acc"), "base_nmi": mean("base_nmi"), "variant_acc": mean("variant_acc"),
                    "variant_nmi": mean("variant_nmi"), "ahead": sum(d > TIE for d in diff),
                    "behind": sum(d < -TIE for d in diff)})
    return out


def markdown(rows: list[dict], table: list[dict], skipped: list[str], names: tuple[str, str], command: str,
             replayed: bool = False, subject: str = "Stage 2's seed") -> str:
    base, variant = names
    lines = [f"{subject}: `{base}` against `{variant}`, whole runs paired by set, row and seed (the same "
             f"warm-up, checked by their seed candidates); `{command}`. ACC / NMI; the seed columns are the seed's "
             f"ACC (true labels, which no rule sees)." + (f" The `{base}` endings are the default's vote replayed from "
             f"the runs' labels (`benchmarks/warmup_vote.py`, \"{REPLAYED}\")." if replayed else ""), "",
             f"| set | row | runs | seed: {base} | seed: {variant} | best single seed candidate | ending: {base} | "
             f"ending: {variant} | {variant} ahead / behind |", "|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        lines.append(f"| {t['set']} | {t['row']} | {t['runs']} | {t['seed_base_acc']:.3f} | {t['seed_variant_acc']:.3f} "
                     f"| {t['seed_best_acc']:.3f} | {t['base_acc']:.3f} / {t['base_nmi']:.3f} "
                     f"| {t['variant_acc']:.3f} / {t['variant_nmi']:.3f} | {t['ahead']} / {t['behind']} |")
    lines += ["", "Per run (ACC):", "", f"| set | seed | epochs | seed: {base} | seed: {variant} | best single seed candidate "
              f"| ending: {base} | ending: {variant} |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set']} | {r['seed']} | {r['epochs']} | {r['seed_base']} {r['seed_base_acc']:.3f} "
                     f"| {r['seed_variant']} {r['seed_variant_acc']:.3f} | {r['seed_best_acc']:.3f} "
                     f"| {r['base_acc']:.3f} | {r['variant_acc']:.3f} |")
    if skipped:
        lines += ["", "Left out (not the same warm-up): " + "; ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", type=Path, nargs="+", required=True, help="suite folders of the reference seed rule")
    p.add_argument("--base-replay", type=Path, help="warmup_vote.py's JSON of the base's runs: their endings as "
                   "the default votes them now")
    p.add_argument("--variant", type=Path, nargs="+", required=True, help="suite folders of the other seed rule")
    p.add_argument("--names", nargs=2, default=("away", "consensus"), help="the two seed rules, as the table names them")
    p.add_argument("--subject", default="Stage 2's seed",
                   help="what the two folders' runs differ in, as the table's first line names it (any change "
                        "that leaves the warm-up and the seed candidates alone pairs the same way)")
    p.add_argument("--out", type=Path, required=True, help="output stem: writes STEM.md and STEM.json")
    a = p.parse_args(argv)
    base = _runs(a.base)
    rows, skipped = pair(replayed_endings(base, a.base_replay) if a.base_replay else base, _runs(a.variant))
    if not rows:
        raise SystemExit("no run of the two folders shares its warm-up: run the variant with the base's seeds "
                         "and epochs (its runs' repeat_overrides)")
    table = summary(rows)
    command = "python benchmarks/seed_rule.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    md = markdown(rows, table, skipped, tuple(a.names), command, replayed=a.base_replay is not None,
                  subject=a.subject)
    from conr.io import atomic_write_text

    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out.with_suffix(".md"), md)
    atomic_write_text(a.out.with_suffix(".json"), json.dumps({"summary": table, "runs": rows, "skipped": skipped},
                                                             indent=1) + "\n")
    print(md)


if __name__ == "__main__":
    main()
