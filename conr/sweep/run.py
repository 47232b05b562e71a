"""Running a grid: the warm-up once, then every row from its checkpoint, each resumable
(a finished row leaves ``result.json`` and is skipped; a row stopped part-way resumes);
``results.csv``, ``epochs.csv`` and the figure after every row; purity grids (Figure 2)."""
from __future__ import annotations

import csv
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, ConfigError, config_to_dict
from ..io import atomic_write_text
from ..engine.warm_start import config_differences
from .grid import METRICS, RESULT_FILE, Sweep, SweepRow, load_sweep, safe_name
from .plot import plot_sweep

__all__ = ["run_sweep", "run_purity_sweep", "sweep_results", "write_outputs", "CSV_COLUMNS", "EPOCH_COLUMNS"]


def _saved_config(run_dir: Path) -> dict | None:
    p = run_dir / "config.yaml"
    return yaml.safe_load(p.read_text()) if p.exists() else None


def _check_same(run_dir: Path, cfg: Config, what: str) -> None:
    saved = _saved_config(run_dir)
    if saved is None:
        return
    diffs = config_differences(saved, config_to_dict(cfg))
    if diffs:
        shown = ", ".join(f"{k}: {v[0]!r} there, {v[1]!r} now" for k, v in list(diffs.items())[:5])
        raise ConfigError(f"{what} in {run_dir} was run with other settings ({shown}); delete that folder or "
                          f"choose another --out to run the grid as it is now")


def _is_stale(run_dir: Path) -> bool:
    """A conr run folder stopped before its first checkpoint: safe to start over."""
    from ..engine import CHECKPOINT_NAME

    return (run_dir / "config.yaml").exists() and not (run_dir / CHECKPOINT_NAME).exists()


def _history_of(run_dir: Path) -> list[dict]:
    from ..io import read_jsonl

    p = run_dir / "metrics.jsonl"
    return read_jsonl(p) if p.exists() else []


def _summary(name: str, overrides: list[str], history: list[dict], init_epoch: int, final: dict) -> dict:
    scored = [r for r in history if all(m in r for m in METRICS)]
    rec = {"row": name, "overrides": " ".join(overrides), "init_epoch": init_epoch,
           "epochs": int(history[-1]["epoch"]) if history else init_epoch}
    for m in METRICS:
        rec[m] = final.get(m)
    for m in METRICS:
        rec[f"best_{m}"] = max((r[m] for r in scored), default=None)
    best = max(scored, key=lambda r: r["acc"], default=None)
    rec["best_epoch"] = best["epoch"] if best else None
    rec["seconds"] = round(sum(r.get("epoch_seconds", 0.0) + r.get("cluster_seconds", 0.0) for r in history), 1)
    return rec


def _run_warmup(sweep: Sweep, log) -> dict:
    from ..engine import CHECKPOINT_NAME, Trainer, load_checkpoint

    w = sweep.warmup
    d = w.run_dir
    done = d / RESULT_FILE
    _check_same(d, w.config, "the warm-up")
    if done.exists():
        rec = json.loads(done.read_text())
        if rec.get("until_epoch") == w.until_epoch:
            log(f"[sweep] warm-up: reusing {d} (epoch {w.until_epoch})")
            return rec
    if _is_stale(d):
        shutil.rmtree(d)
    resume = (d / CHECKPOINT_NAME).exists()
    if resume and int(load_checkpoint(d)["epoch"]) > w.until_epoch:
        raise ConfigError(f"the warm-up in {d} is past epoch {w.until_epoch}; delete it or set warmup.until_epoch")
    log(f"[sweep] warm-up: {w.config.method} to epoch {w.until_epoch} of {w.config.train.epochs} in {d}"
        + (" (resuming)" if resume else ""))
    trainer = Trainer(w.config, run_dir=d, resume=resume, log=log)
    result = trainer.fit(until_epoch=w.until_epoch)
    trainer.close()
    rec = _summary("warmup", w.overrides, trainer.history, 0, result.metrics)
    rec["until_epoch"] = w.until_epoch
    atomic_write_text(done, json.dumps(rec, indent=1) + "\n")
    return rec


def _run_row(sweep: Sweep, row: SweepRow, log) -> dict:
    from ..engine import CHECKPOINT_NAME, Trainer

    d = row.run_dir
    _check_same(d, row.config, f"row {row.name!r}")
    done = d / RESULT_FILE
    if done.exists():
        log(f"[sweep] {row.name}: done already ({d / RESULT_FILE}), skipped")
        return json.loads(done.read_text())
    if _is_stale(d):
        shutil.rmtree(d)
    resume = (d / CHECKPOINT_NAME).exists()
    init = None
    if sweep.warmup is not None and not resume:
        init = sweep.warmup.run_dir / CHECKPOINT_NAME
    log(f"[sweep] {row.name}: {' '.join(row.overrides) or '(base settings)'}"
        + (" (resuming)" if resume else f" from the warm-up at epoch {sweep.warmup.until_epoch}" if init else ""))
    trainer = Trainer(row.config, run_dir=d, resume=resume, init_from=init, log=log)
    init_epoch = trainer.epoch if not resume else None
    result = trainer.fit()
    trainer.close()
    if init_epoch is None:  # resumed: the epoch it started from is the first logged epoch - 1
        init_epoch = int(trainer.history[0]["epoch"]) - 1 if trainer.history else 0
    rec = _summary(row.name, row.overrides, trainer.history, init_epoch, result.metrics)
    atomic_write_text(done, json.dumps(rec, indent=1) + "\n")
    return rec


CSV_COLUMNS = ["row", "overrides", "init_epoch", "epochs", "nmi", "acc", "ari", "best_nmi", "best_acc", "best_ari",
               "best_epoch", "seconds"]
EPOCH_COLUMNS = ["row", "epoch", "stage", "loss", "nmi", "acc", "ari", "keep_fraction"]


def _fmt(v: Any, key: str = "") -> Any:
    if isinstance(v, float):
        return f"{v:.1f}" if key == "seconds" else f"{v:.4f}"
    return "" if v is None else v


def _write_csv(path: Path, columns: list[str], records: list[dict]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: _fmt(r.get(k), k) for k in columns})
    return atomic_write_text(path, buf.getvalue())


def sweep_results(sweep: Sweep) -> tuple[list[dict], dict[str, list[dict]]]:
    """The finished rows' summaries (the warm-up first) and per-epoch histories."""
    records, histories = [], {}
    units = ([("warmup", sweep.warmup.run_dir)] if sweep.warmup is not None else []) + \
        [(r.name, r.run_dir) for r in sweep.rows]
    for name, d in units:
        p = d / RESULT_FILE
        if p.exists():
            rec = json.loads(p.read_text())
            rec["row"] = name
            records.append(rec)
            hist = _history_of(d)
            if name == "warmup":
                hist = [h for h in hist if h["epoch"] <= sweep.warmup.until_epoch]
            histories[name] = hist
    return records, histories


def write_outputs(sweep: Sweep) -> dict[str, Path]:
    records, histories = sweep_results(sweep)
    out = sweep.out
    paths = {"csv": _write_csv(out / "results.csv", CSV_COLUMNS, records)}
    per_epoch = [{"row": name, **h} for name, hist in histories.items() for h in hist]
    paths["epochs_csv"] = _write_csv(out / "epochs.csv", EPOCH_COLUMNS, per_epoch)
    if records:
        paths["plot"] = plot_sweep(sweep, records, histories, out / "results.png")
    return paths


def run_sweep(grid: str | Path | Sweep, overrides: list[str] | None = None, out: str | Path | None = None,
              only: list[str] | None = None, log=print) -> dict:
    """Run a grid (resumably) and write its CSV and plot; returns {"records", "paths"}."""
    sweep = grid if isinstance(grid, Sweep) else load_sweep(grid, overrides, out)
    out_dir = sweep.out
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, why in sweep.dropped:
        log(f"[sweep] {name}: left out ({why})")
    if sweep.kind == "purity":
        return run_purity_sweep(sweep, log=log)
    rows = sweep.rows
    if only:
        unknown = [n for n in only if n not in {r.name for r in rows}]
        if unknown:
            raise ConfigError(f"--rows: unknown row(s) {unknown}; rows: {', '.join(r.name for r in rows)}")
        rows = [r for r in rows if r.name in only]
    start = time.perf_counter()
    if sweep.warmup is not None:
        _run_warmup(sweep, log)
    for row in rows:
        _run_row(sweep, row, log)
        write_outputs(sweep)  # after every row: a killed sweep still leaves its table
    paths = write_outputs(sweep)
    records, _ = sweep_results(sweep)
    log(f"[sweep] {len(records)} result line(s) in {paths['csv']} ({time.perf_counter() - start:.0f} s)")
    return {"records": records, "paths": paths}


def run_purity_sweep(sweep: Sweep, log=print) -> dict:
    """Figure 2: neighbour purity against K of each listed checkpoint's features."""
    from ..outputs.evaluation import checkpoint_purity, plot_purity
    from ..engine import CHECKPOINT_NAME, Trainer

    p = sweep.purity
    if sweep.warmup is not None and "warmup" in p["checkpoints"].values():
        _run_warmup(sweep, log)
    results = {}
    for name, src in p["checkpoints"].items():
        ckpt = sweep.warmup.run_dir / CHECKPOINT_NAME if src == "warmup" else Path(src)
        cache = sweep.out / f"purity_{safe_name(name)}.json"
        settings = {"checkpoint": str(ckpt), "cli": sweep.cli,
                    **{k: p.get(k) for k in ("ks", "batch_size", "k1", "k2", "keep_fraction", "batches", "filter")}}
        if cache.exists():
            saved = json.loads(cache.read_text())
            if saved.get("settings") == settings:
                log(f"[sweep] purity {name}: done already ({cache}), skipped")
                results[name] = saved["result"]
                continue
        log(f"[sweep] purity {name}: features of {ckpt}")
        trainer = Trainer.from_checkpoint(ckpt, overrides=sweep.cli, log=log)
        res = checkpoint_purity(trainer, ks=p.get("ks"), batch_size=p.get("batch_size"), k1=p.get("k1"),
                                k2=p.get("k2"), keep_fraction=p.get("keep_fraction"), n_batches=p.get("batches"),
                                with_filter=p.get("filter", True))
        res["epoch"] = trainer.epoch
        atomic_write_text(cache, json.dumps({"settings": settings, "result": res}, indent=1) + "\n")
        results[name] = res
    records = []
    for name, res in results.items():
        for j, k in enumerate(res["ks"]):
            records.append({"row": name, "K": k, **{m: v[j] for m, v in res["curves"].items()}})
    modes = list(dict.fromkeys(m for res in results.values() for m in res["curves"]))
    paths = {"csv": _write_csv(sweep.out / "purity.csv", ["row", "K"] + modes, records)}
    paths["plot"] = plot_purity(results, sweep.out / "purity.png",
                                title=f"neighbour purity ({sweep.path.stem})")
    log(f"[sweep] purity of {len(results)} checkpoint(s) in {paths['csv']}")
    return {"records": records, "paths": paths, "results": results}
