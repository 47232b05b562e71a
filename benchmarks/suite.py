"""The open benchmark suite: what `conr cluster` does with its defaults on real image
folders it was never tuned on, beside raw-pixel baselines and BYOL alone.

For each dataset it runs, on the same images:
  * conr      -- the estimator `conr cluster` calls (conr.CoNR(n_clusters=K).fit(FOLDER)),
                 default settings and default time budget (its encoder rule decides the path:
                 the row is the scratch or the encoder row of the same seed, the one it takes);
  * conr_scratch -- the same with encoder="none" (trained from scratch on the pixels);
  * conr_encoder -- the same with encoder="efficientnet_lite0" (CoNR on the embedded
                 encoder's features; the extraction counted, with an empty feature cache);
  * byol      -- the same with method=byol (no CoNR stage), the same budget;
  * kmeans    -- k-means (n_init 10) on the raw pixels;
  * spectral  -- spectral clustering on the raw pixels' 10-NN graph;
  * umap_gmm  -- the floor: UMAP (20 neighbours, min_dist 0, K dimensions) of the raw pixels
                 (their first 50 principal components above 1,000 values an image), then a
                 full-covariance Gaussian mixture of K components (5 starts): N2D without
                 its autoencoder, the best label-free partition the pixels give in a minute;
  * enc_kmeans, enc_spectral, enc_umap_gmm -- the same three on the embedded encoder's
                 features (their first 50 principal components for spectral and UMAP + GMM):
                 the photos' floor;
and, read off each conr run (not run separately):
  * conr_seed  -- the partition CoNR's stage 2 started from (the final stage's choice on the
                  warm-up's features and the pixels);
  * conr_first -- the final stage's choice before the self-labelling stage;
so the table shows what each stage added.
NMI / ACC / ARI and wall time per row; 3 seeds on every set.

    python benchmarks/suite.py                      # everything (resumes: finished rows are kept)
    python benchmarks/suite.py --datasets orl coil20 --seeds 0
    python benchmarks/suite.py --fresh              # forget earlier rows

Rows go to benchmarks/results/suite-runs.jsonl as they finish; the summary (mean ± std
over seeds) to benchmarks/results/suite.csv and suite.md. Datasets are read from
../shared/data (coil20/, orl/, cifar10-jpeg/test) and scikit-learn's digits, written
once as a PNG folder so that every set takes the folder path a user's photos take.
Run it alone: a second busy process on a 2-core machine slows torch several-fold,
and the budgets are wall time.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("CONR_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"

# name -> (folder, K, seeds)
OPEN = {
    "digits": (None, 10, 3),
    "coil20": (SHARED / "coil20", 20, 3),
    "orl": (SHARED / "orl", 40, 3),
    "cifar10": (SHARED / "cifar10-jpeg" / "test", 10, 3),
}
# held back: folders no default was tuned on (benchmarks/heldout_photos.py makes them, as links, the
# first time one is named); run only when named in --datasets, into a variants/ folder
HELD_BACK_ROOT = ROOT / "benchmarks" / ".cache" / "heldout"
HELD_BACK = {"photos10x200": (HELD_BACK_ROOT / "photos10x200", 10, 3),
             "photos6x500": (HELD_BACK_ROOT / "photos6x500", 6, 3),
             "coil20x10": (HELD_BACK_ROOT / "coil20x10", 20, 3)}
DATASETS = {**OPEN, **HELD_BACK}
ROWS = ("conr_scratch", "conr_encoder", "byol", "kmeans", "spectral", "umap_gmm", "enc_kmeans", "enc_spectral",
        "enc_umap_gmm")
DERIVED = ("conr", "conr_seed", "conr_first")  # read off the conr rows
ORDER = ("conr", "conr_first", "conr_seed", "conr_scratch", "conr_encoder", "byol", "kmeans", "spectral", "umap_gmm",
         "enc_kmeans", "enc_spectral", "enc_umap_gmm")
DEEP = {"conr_scratch": ("conr", "none"), "conr_encoder": ("conr", "efficientnet_lite0"), "byol": ("byol", "auto")}


def digits_folder(cache: Path) -> Path:
    """scikit-learn's 8x8 digits as one PNG per image in class folders (written once)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = cache / "sklearn-digits"
    if (root / ".complete").exists():
        return root
    d = load_digits()
    for i, (img, y) in enumerate(zip(d.images, d.target)):
        sub = root / str(y)
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img * 255 / 16).astype(np.uint8), "L").save(sub / f"{i:04d}.png")
    (root / ".complete").write_text("")
    return root


def pixels(folder: Path):
    """Raw pixels at native resolution (grey when the folder is grey), flattened to [0, 1]."""
    from conr.data.survey import survey_files
    from conr.data.folder import load_image_folder, scan_images

    survey = survey_files(scan_images(folder))
    data = load_image_folder(folder, survey.native_size, "auto", "skip", channels=1 if survey.grey else 3)
    return data.images.reshape(len(data), -1).float().numpy() / 255.0, data.labels.numpy()


def dataset_folder(name: str, cache: Path) -> tuple[Path, int] | None:
    """The folder and K of the open set ``name``; None (and why, printed) where it is missing."""
    folder, k, _ = DATASETS[name]
    folder = digits_folder(cache) if folder is None else folder
    if not folder.is_dir():
        print(f"skip {name}: {folder} is missing (see ../shared/data/README.md)")
        return None
    return folder, k


def scores(y, pred) -> dict:
    import torch

    from conr.ops.metrics import evaluate

    return {k: round(float(v), 4) for k, v in evaluate(torch.as_tensor(y), torch.as_tensor(pred)).items()}


def encoder_features(folder: Path, cache: Path):
    """The embedded encoder's features of a folder (cached under ``cache``) and the labels."""
    from conr.auto.photos import photo_data
    from conr.encoders import load_encoder

    os.environ["CONR_CACHE_DIR"] = str(cache / "encoder-floor")
    with contextlib.redirect_stdout(io.StringIO()):
        data = photo_data(folder, load_encoder("efficientnet_lite0"), log=lambda *a: None)
    return data.images.numpy(), data.labels.numpy()


def run_baseline(kind: str, folder: Path, k: int, seed: int, cache: Path | None = None) -> dict:
    from sklearn.cluster import KMeans, SpectralClustering

    if kind.startswith("enc_"):
        x, y = encoder_features(folder, cache)
        kind = kind[4:]
        if kind != "kmeans":
            from sklearn.decomposition import PCA

            x = PCA(50, random_state=seed).fit_transform(x)
    else:
        x, y = pixels(folder)
    start = time.perf_counter()
    if kind == "kmeans":
        pred = KMeans(k, n_init=10, random_state=seed).fit_predict(x)
    elif kind == "umap_gmm":  # the time includes PCA and UMAP's first-call compilation
        from conr.cluster.manifold import PCA_ABOVE, PCA_DIMS, umap_gmm

        if x.shape[1] > PCA_ABOVE:
            from sklearn.decomposition import PCA

            x = PCA(PCA_DIMS, random_state=seed).fit_transform(x)
        pred, _, _ = umap_gmm(x, k, seed=seed, n_neighbors=20, n_init=5, dims=k, covariance="full")  # N2D's recipe
    else:
        pred = SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=10, random_state=seed,
                                  assign_labels="kmeans").fit_predict(x)
    return {**scores(y, pred), "seconds": round(time.perf_counter() - start, 1)}


def run_deep(method: str, folder: Path, k: int, seed: int, minutes: float | None, encoder: str = "auto",
             cache: Path | None = None, overrides=(), labels_file: Path | None = None) -> dict:
    """One deep row; ``overrides``: further config settings (a variant of the defaults);
    ``labels_file``: where to keep the truth and every final-stage candidate's labels
    (benchmarks/final_rule.py replays rules that need them)."""
    import tempfile

    import conr

    with tempfile.TemporaryDirectory(dir=cache) as empty:  # a new user's run: no cached features or plans
        os.environ["CONR_CACHE_DIR"] = empty
        start = time.perf_counter()
        model = conr.CoNR(n_clusters=k, seed=seed, minutes=minutes, overrides=[f"method={method}", *overrides],
                          encoder=encoder)
        with contextlib.redirect_stdout(io.StringIO()):
            model.fit(folder)
    seconds = time.perf_counter() - start
    cfg = model.config_
    out = {**scores(model.data_.labels.numpy(), model.labels_), "seconds": round(seconds, 1),
           "epochs": cfg.train.epochs, "image_size": cfg.data.image_size, "channels": cfg.data.channels,
           "batch": cfg.train.batch_size, "backbone": cfg.model.backbone, "encoder": cfg.data.encoder,
           "input_kind": model.input_kind_}
    trainer = getattr(model, "trainer_", None)
    if trainer is not None and getattr(trainer, "warmup_ended", None) is not None:  # stage2.warmup_end=signal fired
        out.update(warmup_ended=trainer.warmup_ended, warmup_values=[round(v, 4) for v in trainer.warmup_values])
    if model.budget_:
        out.update(budget_minutes=model.budget_["minutes"], estimate_seconds=model.budget_["estimate_seconds"],
                   budget=model.budget_)  # what the budget measured and bought (epochs, reserve, layouts)
    part = getattr(model, "partition_", None)
    if part is not None:
        out.update(source=part.source, first_choice=part.first_choice, rule=part.rule,
                   candidates=part.candidates, seed_candidates=part.seed_candidates)
        if labels_file is not None and part.candidate_labels:
            from conr.io import atomic_write_bytes

            buf = io.BytesIO()
            names = list(part.candidate_labels)
            seeds = {}   # stage 2's seed's candidates, apart: a replay of the ending reads names and labels only
            if part.seed_candidate_labels:
                seed_names = list(part.seed_candidate_labels)
                seeds = {"seed_names": np.array(seed_names), "seed_labels": np.stack(
                    [part.seed_candidate_labels[n].numpy() for n in seed_names]).astype(np.int16)}
            np.savez_compressed(buf, truth=model.data_.labels.numpy(), names=np.array(names),
                                labels=np.stack([part.candidate_labels[n].numpy() for n in names]).astype(np.int16),
                                **seeds)
            labels_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(labels_file, buf.getvalue())
    if overrides:
        out["overrides"] = list(overrides)
    return out


def default_rows(rows: list[dict]) -> list[dict]:
    """The ``conr`` row of each dataset and seed: the path the defaults take there (the
    encoder rule, conr/auto/photos.py, on the folder's survey) -- the same computation as
    that path's explicit row."""
    from conr.auto.photos import choose_encoder
    from conr.data.folder import scan_images
    from conr.data.survey import survey_files

    out = []
    looks = {}
    for r in rows:
        if r["row"] not in ("conr_scratch", "conr_encoder"):
            continue
        name = r["dataset"]
        if name not in looks:
            folder = DATASETS[name][0] or digits_folder(ROOT / "benchmarks" / ".cache")
            looks[name] = choose_encoder("auto", survey_files(scan_images(folder)))[0]
        if (r["row"] == "conr_encoder") == (looks[name] is not None):
            out.append({**r, "row": "conr", "same_as": r["row"]})
    return out


def derived_rows(row: dict) -> list[dict]:
    """conr_seed and conr_first of a conr row: the stage-2 seed's and the first choice's
    scores, read off its candidate tables (true_* = scores against the ground truth)."""
    out = []
    for name, table, pick in (("conr_seed", row.get("seed_candidates") or [], None),
                              ("conr_first", row.get("candidates") or [], row.get("first_choice"))):
        chosen = [c for c in table if (c.get("chosen") if pick is None else c["name"] == pick)]
        if chosen and "true_nmi" in chosen[0]:
            c = chosen[0]
            out.append({"dataset": row["dataset"], "row": name, "seed": row["seed"], "k": row["k"],
                        "nmi": c["true_nmi"], "acc": c["true_acc"], "ari": c["true_ari"], "seconds": 0.0,
                        "source": c["name"]})
    return out


def summarise(rows: list[dict]) -> tuple[list[dict], str]:
    table = []
    rows = [r for r in rows if r["row"] != "conr"] + default_rows(rows)  # earlier files' conr rows: from scratch
    rows = list(rows) + [d for r in rows if r["row"] == "conr" for d in derived_rows(r)]
    for name in DATASETS:
        for kind in ORDER:
            got = [r for r in rows if r["dataset"] == name and r["row"] == kind]
            if not got:
                continue
            entry = {"dataset": name, "row": kind, "seeds": len(got)}
            for m in ("nmi", "acc", "ari", "seconds"):
                vals = [r[m] for r in got]
                entry[m] = round(statistics.mean(vals), 4)
                entry[f"{m}_std"] = round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0
            for m in ("epochs", "image_size", "channels", "batch", "budget_minutes", "encoder"):
                if m in got[0]:
                    entry[m] = got[0][m]
            if "source" in got[0]:  # which candidate each seed's labels came from
                entry["sources"] = ", ".join(sorted({r["source"] for r in got}))
            table.append(entry)
    lines = ["| dataset | row | seeds | NMI | ACC | ARI | time (s) | settings |", "|---|---|---|---|---|---|---|---|"]
    for e in table:
        def pm(m):
            return f"{e[m]:.3f} ± {e[m + '_std']:.3f}" if e["seeds"] > 1 else f"{e[m]:.3f}"
        budget = f"{e['budget_minutes']:.1f}" if isinstance(e.get("budget_minutes"), (int, float)) else "-"
        settings = ""
        if "epochs" in e:
            what = (f"{e['image_size']} px, {e['channels']} ch" if e.get("encoder") is None else
                    f"encoder {e['encoder']}, mlp head")
            settings = f"{what}, batch {e['batch']}, {e['epochs']} epochs, budget {budget} min"
        if e.get("sources"):
            settings += ("; " if settings else "") + f"labels from {e['sources']}"
        lines.append(f"| {e['dataset']} | {e['row']} | {e['seeds']} | {pm('nmi')} | {pm('acc')} | {pm('ari')} | "
                     f"{e['seconds']:.0f} | {settings} |")
    return table, "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(OPEN), choices=list(DATASETS),
                   help=f"default: the open sets; held back (named only): {', '.join(HELD_BACK)}")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: 0, 1 and 2)")
    p.add_argument("--byol-seeds", type=int, nargs="+",
                   help="seeds of the byol row, when fewer than the others' (default: the same)")
    p.add_argument("--minutes", type=float, help="time budget of the deep rows (default: conr's automatic budget)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache")
    p.add_argument("--fresh", action="store_true", help="forget the rows of earlier runs")
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="settings for the deep rows, a variant of the defaults (write it to its own --out)")
    args = p.parse_args(argv)

    from conr.io import atomic_write_text

    args.out.mkdir(parents=True, exist_ok=True)
    runs_file = args.out / "suite-runs.jsonl"
    rows = [] if args.fresh or not runs_file.exists() else \
        [json.loads(line) for line in runs_file.read_text().splitlines() if line.strip()]
    done = {(r["dataset"], r["row"], r["seed"]) for r in rows}
    for name in args.datasets:
        folder, k, n_seeds = DATASETS[name]
        if folder is None:
            folder = digits_folder(args.cache)
        if name in HELD_BACK:
            from heldout_photos import folder as held_back

            try:
                folder = held_back(name, HELD_BACK_ROOT, SHARED)
            except SystemExit as missing:  # its source is not in ../shared/data
                print(f"skip {name}: {missing}")
                continue
        if not folder.is_dir():
            print(f"skip {name}: {folder} is missing (see ../shared/data/README.md)")
            continue
        for seed in (args.seeds if args.seeds is not None else range(n_seeds)):
            for kind in args.rows:
                if (name, kind, seed) in done:
                    continue
                if kind == "byol" and args.byol_seeds is not None and seed not in args.byol_seeds:
                    continue
                if kind in DEEP:
                    method, encoder = DEEP[kind]
                    res = run_deep(method, folder, k, seed, args.minutes, encoder, args.cache, args.overrides,
                                   args.out / "labels" / f"{name}-{kind}-{seed}.npz")
                else:
                    res = run_baseline(kind, folder, k, seed, args.cache)
                row = {"dataset": name, "row": kind, "seed": seed, "k": k, **res}
                rows.append(row)
                with runs_file.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    table, md = summarise(rows)
    import csv

    buf = io.StringIO()
    keys = sorted({k for e in table for k in e}, key=lambda k: (k not in ("dataset", "row", "seeds"), k))
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(table)
    atomic_write_text(args.out / "suite.csv", buf.getvalue())
    import torch

    header = (f"conr open benchmark suite: `python benchmarks/suite.py` on {platform.machine()}, "
              f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
              f"{'CUDA' if torch.cuda.is_available() else 'no GPU'}.\n\n")
    atomic_write_text(args.out / "suite.md", header + md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
