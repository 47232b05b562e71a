"""What CoNR's stage 2 adds over BYOL alone, on every open set and on vectors.

Reads the open suite's runs (benchmarks/results/suite-runs.jsonl: the ``byol`` row and the
CoNR row of the same path, i.e. the same ``input_kind``: images from scratch, or the embedded
encoder's features) and benchmarks/results/embeddings.json (``byol_vectors`` and
``conr_vectors``). For each set: the run's own choice (ACC / NMI, mean over the seeds both
have), and each candidate on the trained features (k-means, spectral clustering, UMAP + GMM;
scores against the true labels, which no rule sees; "own" is the training's own labels: CoNR's
stage-2 partition carried to the end, BYOL's k-means of its features), because the final stage's UMAP + GMM
ending can hide a difference the features have; and the best candidate of each run but the vote (the
warm-up's included), what the ending could have kept. Writes benchmarks/results/conr_vs_byol.{md,json}.

    python benchmarks/suite.py --rows byol conr_scratch conr_encoder   # the image runs (resumes)
    python benchmarks/embeddings.py --methods conr_vectors byol_vectors  # the vector runs
    python benchmarks/conr_vs_byol.py                                    # the table

    # one code's runs kept in variant folders (later folders win a run both hold):
    python benchmarks/conr_vs_byol.py --runs benchmarks/results/variants/defaults-2026-12-04 \
        benchmarks/results/variants/byol-2026-12-04 --out benchmarks/results/conr_vs_byol-2026-12-04
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
FEATURE_CANDIDATES = ("own/features", "spectral/features", "umap_gmm/features")
BEST = "best candidate"   # the best of a run's candidates but the vote itself (the warm-up's included): what the
# ending could have kept
COLUMNS = (*FEATURE_CANDIDATES, BEST)   # the per-candidate columns of the table, in order
OWN = ("seeded_kmeans/features", "kmeans/features")  # the training's own labels: CoNR's carried stage-2
# partition, or BYOL's k-means of its features


def _kind(row: dict) -> str:
    """The path a run took: "images" (from scratch) or "encoder" (rows older than the field: by their row)."""
    return row.get("input_kind") or ("encoder" if row["row"] == "conr_encoder" else "images")


def suite_rows(sources: list[Path]) -> list[dict]:
    """The suite's runs from ``sources`` (suite-runs.jsonl files, or folders holding one); a
    run (dataset, row, seed) held by two sources is taken from the later one."""
    from conr.io import read_jsonl

    rows: dict = {}
    for src in sources:
        path = src / "suite-runs.jsonl" if src.is_dir() else src
        if not path.exists():
            raise SystemExit(f"no suite runs at {path}: run benchmarks/suite.py with --out {src} first")
        rows.update(((r["dataset"], r["row"], r["seed"]), r) for r in read_jsonl(path))
    return list(rows.values())


def _runs(sources: list[Path], vectors: list[Path]) -> dict:
    """{(set, path): {method: {seed: row}}} from the suite's runs and the vectors benchmark's
    files (a run two files hold is taken from the later one)."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    rows = suite_rows(sources)
    byol_paths = {(r["dataset"], r["seed"]): _kind(r) for r in rows if r["row"] == "byol"}
    for r in rows:
        if r["row"] == "byol":
            out[(r["dataset"], _kind(r))]["byol"][r["seed"]] = r
        elif r["row"] in ("conr_scratch", "conr_encoder") and byol_paths.get((r["dataset"], r["seed"])) == _kind(r):
            out[(r["dataset"], _kind(r))]["conr"][r["seed"]] = r
    for path in vectors:
        if str(path) == "none" or not path.exists():
            continue
        for r in json.loads(path.read_text())["runs"]:
            if r["method"] in ("conr_vectors", "byol_vectors"):
                out[(r["vectors"], "vectors")][r["method"].split("_")[0]][r["seed"]] = r
    return out


def _cand(row: dict, name: str) -> float | None:
    if name == BEST:
        got = [c["true_acc"] for c in row.get("candidates") or []
               if "true_acc" in c and not c["name"].startswith("consensus/")]
        return max(got) if got else None
    names = OWN if name == "own/features" else (name,)
    for wanted in names:
        for c in row.get("candidates") or []:
            if c["name"] == wanted and "true_acc" in c:
                return c["true_acc"]
    return None


def main(argv=None) -> int:
    from conr.io import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, nargs="+", default=[RESULTS / "suite-runs.jsonl"],
                    help="suite-runs.jsonl files or result folders (default: the suite's own)")
    ap.add_argument("--vectors", type=Path, nargs="+", default=[RESULTS / "embeddings.json"],
                    help="the vectors benchmark's runs (embeddings.json files; a later file wins a run both "
                         "hold); 'none': the image runs alone")
    ap.add_argument("--out", type=Path, default=RESULTS / "conr_vs_byol",
                    help="writes OUT.md and OUT.json (default: benchmarks/results/conr_vs_byol)")
    args = ap.parse_args(argv)

    mean = statistics.mean
    table = []
    head = ["set", "path", "seeds", "BYOL ACC / NMI", "CoNR ACC / NMI", "CoNR - BYOL (ACC)",
            *[f"{n} BYOL / CoNR" for n in COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    runs = _runs(args.runs, args.vectors)
    for (name, path), methods in sorted(runs.items(), key=lambda kv: (kv[0][1] == "vectors", kv[0][0])):
        seeds = sorted(set(methods.get("byol", {})) & set(methods.get("conr", {})))
        if not seeds:
            continue
        entry = {"set": name, "path": path, "seeds": seeds}
        for m in ("byol", "conr"):
            rs = [methods[m][s] for s in seeds]
            entry[m] = {"acc": round(mean(r["acc"] for r in rs), 4), "nmi": round(mean(r["nmi"] for r in rs), 4),
                        "acc_by_seed": [r["acc"] for r in rs], "sources": sorted({r.get("source", "") for r in rs})}
            for c in COLUMNS:
                got = [_cand(r, c) for r in rs]
                entry[m][c] = round(mean(got), 4) if all(g is not None for g in got) else None
        table.append(entry)
        b, c = entry["byol"], entry["conr"]
        cells = [f"{b[n]:.3f} / {c[n]:.3f}" if b[n] is not None and c[n] is not None else "-"
                 for n in COLUMNS]
        lines.append(f"| {name} | {path} | {len(seeds)} | {b['acc']:.3f} / {b['nmi']:.3f} | "
                     f"{c['acc']:.3f} / {c['nmi']:.3f} | {c['acc'] - b['acc']:+.3f} | " + " | ".join(cells) + " |")
    md = "\n".join(lines)
    print(md)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python benchmarks/conr_vs_byol.py", *map(_shown, given)])
    atomic_write_text(args.out.with_suffix(".md"), f"CoNR against BYOL alone, the same defaults and budget "
                      f"(`{command}`); ACC / NMI, mean over the seeds; the candidate "
                      "columns are ACC of each clustering of the trained features.\n\n" + md + "\n")
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(table, indent=1) + "\n")
    return 0


def _shown(arg: str) -> str:
    """A command-line argument as the repository's README would write it (paths from its root)."""
    try:
        return str(Path(arg).resolve().relative_to(ROOT))
    except ValueError:
        return arg


if __name__ == "__main__":
    raise SystemExit(main())
