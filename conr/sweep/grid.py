"""Experiment grids (``conr sweep GRID.yaml``): the paper's ablations and sweeps as
one resumable command.

A grid file is YAML::

    description: what the grid reproduces
    kind: train                # train (default): train every row | purity: Figure 2 analysis
    base: cifar10.yaml         # config file: relative to the grid file, or a shipped config name
    out: runs/sweeps/table2    # results folder (default runs/sweeps/<grid name>); --out overrides
    overrides:                 # shared by the warm-up and every row (mapping or list of key=value)
      train.epochs: 1000
    warmup:                    # optional: one stage-1 run, trained once, every row starts from it
      overrides: {method: byol}  # (the default) on top of the shared overrides
      until_epoch: 800         # stop here (default: stage2.start_epoch); the schedule stays train.epochs'
      dir: runs/sweeps/cifar10_byol   # (default <out>/warmup); grids naming the same dir share it
    rows:                      # named rows of overrides (mapping or list of key=value) ...
      byol: {method: byol}
      conr: {}
    product:                   # ... and/or the product of lists (row names from the values)
      stage2.fr0: [0.7, 0.8, 0.9, 1.0]
    plot: {type: bar}          # bar | line (x: key) | heatmap (x, y: keys) | epochs; metric: acc
    purity:                    # kind: purity only
      checkpoints: {byol: warmup}   # name -> run folder / checkpoint, or "warmup"
      ks: [1, 5, 10, 20, 50, 100]

Overrides apply in the order: base file, shared, warm-up or row, command line (the
command line wins). Every row runs in ``<out>/<row>`` (from the warm-up's checkpoint
through ``init_from`` when there is one). A finished row leaves ``result.json``; rows
that have one are skipped, a row stopped part-way is resumed from its checkpoint, so
re-running the command completes a sweep. A folder whose recorded config differs from
the grid's is an error, never silently reused. Outputs: ``results.csv`` (one line per
row: final and best NMI / ACC / ARI, epochs, seconds), ``epochs.csv`` (per-epoch
metrics of every row) and ``results.png``.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import (Config, ConfigError, apply_overrides, config_from_dict, config_to_dict, read_yaml,
                     resolve_config_path)
from ..io import atomic_write_text
from ..warm_start import config_differences

__all__ = ["Sweep", "SweepRow", "Warmup", "load_sweep", "run_sweep", "sweep_results", "SWEEP_DIR",
           "shipped_grids", "PLOT_TYPES"]

SWEEP_DIR = Path(__file__).resolve().parent.parent / "configs" / "sweeps"
PLOT_TYPES = ("bar", "line", "heatmap", "epochs")
_GRID_KEYS = {"description", "kind", "base", "out", "overrides", "warmup", "rows", "product", "plot", "purity"}
_WARMUP_KEYS = {"overrides", "until_epoch", "dir"}
_PURITY_KEYS = {"checkpoints", "ks", "batch_size", "k1", "k2", "keep_fraction", "batches", "filter"}
METRICS = ("nmi", "acc", "ari")
RESULT_FILE = "result.json"


def shipped_grids() -> list[Path]:
    return sorted(SWEEP_DIR.glob("*.yaml"))


def _resolve_grid(name: str | Path) -> Path:
    p = Path(name)
    if p.is_file():
        return p
    stem = p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml"
    if (SWEEP_DIR / stem).is_file():
        return SWEEP_DIR / stem
    names = ", ".join(q.stem for q in shipped_grids())
    raise FileNotFoundError(f"grid file {str(name)!r} not found; give a path or one of the shipped grids: {names}")


def _format_value(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v)


def _override_list(raw: Any, where: str) -> list[str]:
    """A mapping {dotted.key: value} or a list of "dotted.key=value" strings, as strings."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        return [f"{k}={_format_value(v)}" for k, v in raw.items()]
    if isinstance(raw, list) and all(isinstance(x, str) and "=" in x for x in raw):
        return list(raw)
    raise ConfigError(f"{where} must be a mapping of dotted keys to values or a list of key=value strings, "
                      f"got {raw!r}")


def _get(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not hasattr(node, part):
            raise ConfigError(f"{dotted!r} is not a config key")
        node = getattr(node, part)
    return node


def _safe_name(name: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_.=+" else "_" for c in str(name))
    if not out or out.startswith("."):
        raise ConfigError(f"row name {name!r} cannot name a folder")
    return out


@dataclass
class SweepRow:
    name: str
    overrides: list[str]          # the row's own overrides
    config: Config                # fully resolved
    run_dir: Path


@dataclass
class Warmup:
    overrides: list[str]
    until_epoch: int
    config: Config
    run_dir: Path


@dataclass
class Sweep:
    path: Path
    kind: str
    description: str
    base: Path
    shared: list[str]
    cli: list[str]
    out: Path
    rows: list[SweepRow]
    warmup: Warmup | None = None
    dropped: list[tuple[str, str]] = field(default_factory=list)  # product combinations that cannot run
    plot: dict = field(default_factory=dict)
    purity: dict = field(default_factory=dict)


def _build(base_raw: dict, *override_lists: list[str]) -> Config:
    raw = base_raw
    for ov in override_lists:
        raw = apply_overrides(raw, ov)
    return config_from_dict(raw)


def load_sweep(grid: str | Path, overrides: list[str] | None = None, out: str | Path | None = None) -> Sweep:
    """Read and check a grid file: every row's config is built and validated (no data is
    read, nothing is trained). ``overrides`` (the command line's) apply last."""
    path = _resolve_grid(grid)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"grid {path} is not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"grid {path} must be a mapping (base, overrides, rows, ...)")
    unknown = set(spec) - _GRID_KEYS
    if unknown:
        raise ConfigError(f"grid {path}: unknown key(s) {sorted(unknown)}; known: {sorted(_GRID_KEYS)}")
    kind = spec.get("kind", "train")
    if kind not in ("train", "purity"):
        raise ConfigError(f"grid {path}: kind={kind!r} is not one of 'train', 'purity'")
    if "base" not in spec:
        raise ConfigError(f"grid {path} needs base: a config file (e.g. cifar10.yaml)")
    base = resolve_config_path(spec["base"], path.parent)
    base_raw = read_yaml(base)
    shared = _override_list(spec.get("overrides"), f"grid {path}: overrides")
    cli = list(overrides or [])
    out_dir = Path(out) if out is not None else Path(spec.get("out") or Path("runs") / "sweeps" / path.stem)
    common = _build(base_raw, shared, cli)

    warmup = None
    if spec.get("warmup") is not None:
        w = spec["warmup"] if isinstance(spec["warmup"], dict) else {}
        if spec["warmup"] is not True and not isinstance(spec["warmup"], dict):
            raise ConfigError(f"grid {path}: warmup must be a mapping (overrides, until_epoch, dir) or true")
        bad = set(w) - _WARMUP_KEYS
        if bad:
            raise ConfigError(f"grid {path}: unknown warmup key(s) {sorted(bad)}; known: {sorted(_WARMUP_KEYS)}")
        w_over = _override_list(w.get("overrides", {"method": "byol"}), f"grid {path}: warmup.overrides")
        w_cfg = _build(base_raw, shared, w_over, cli)
        until = int(w.get("until_epoch") or common.stage2.start_epoch)
        if not 1 <= until < w_cfg.train.epochs:
            raise ConfigError(f"grid {path}: warmup.until_epoch={until} must lie in [1, train.epochs="
                              f"{w_cfg.train.epochs}): the rows need epochs after the warm-up")
        w_dir = Path(w["dir"]) if w.get("dir") else out_dir / "warmup"
        warmup = Warmup(overrides=w_over, until_epoch=until, config=w_cfg, run_dir=w_dir)

    named: list[tuple[str, list[str]]] = []
    rows_spec = spec.get("rows") or {}
    if not isinstance(rows_spec, dict):
        raise ConfigError(f"grid {path}: rows must be a mapping of row name -> overrides")
    for name, ov in rows_spec.items():
        named.append((str(name), _override_list(ov, f"grid {path}: rows.{name}")))
    product = spec.get("product") or {}
    if not isinstance(product, dict) or not all(isinstance(v, list) and v for v in product.values()):
        raise ConfigError(f"grid {path}: product must map dotted keys to non-empty lists of values")
    combos = []
    if product:
        keys = list(product)
        for values in itertools.product(*(product[k] for k in keys)):
            name = ",".join(f"{k.split('.')[-1]}={_format_value(v)}" for k, v in zip(keys, values))
            combos.append((name, [f"{k}={_format_value(v)}" for k, v in zip(keys, values)]))

    rows, dropped, seen = [], [], set()
    if kind == "train":
        for i, (name, ov) in enumerate(named + combos):
            if name in seen:
                raise ConfigError(f"grid {path}: row {name!r} appears twice")
            seen.add(name)
            try:
                cfg = _build(base_raw, shared, ov, cli)
            except ConfigError as exc:
                if i >= len(named):  # a product combination that cannot run (e.g. k2 > k1): left out
                    dropped.append((name, str(exc)))
                    continue
                raise ConfigError(f"grid {path}, row {name!r}: {exc}") from None
            if warmup is not None and cfg.train.epochs <= warmup.until_epoch:
                raise ConfigError(f"grid {path}, row {name!r}: train.epochs={cfg.train.epochs} leaves no epoch "
                                  f"after the warm-up (until_epoch={warmup.until_epoch})")
            rows.append(SweepRow(name=name, overrides=ov, config=cfg, run_dir=out_dir / _safe_name(name)))
        if not rows:
            raise ConfigError(f"grid {path} has no row that can run (rows / product)")
        if warmup is not None and any(r.name == "warmup" for r in rows):
            raise ConfigError(f"grid {path}: 'warmup' is reserved for the warm-up; rename that row")

    plot = dict(spec.get("plot") or {})
    ptype = plot.get("type", "bar" if kind == "train" else "purity")
    if kind == "train":
        if ptype not in PLOT_TYPES:
            raise ConfigError(f"grid {path}: plot.type={ptype!r} is not one of {', '.join(PLOT_TYPES)}")
        for axis in ("x", "y"):
            if plot.get(axis) is not None:
                _get(common, plot[axis])
        if ptype in ("line", "heatmap") and not plot.get("x"):
            raise ConfigError(f"grid {path}: plot.type={ptype} needs plot.x (a dotted config key)")
        if ptype == "heatmap" and not plot.get("y"):
            raise ConfigError(f"grid {path}: plot.type=heatmap needs plot.y (a dotted config key)")
        if plot.get("metric", "acc") not in METRICS:
            raise ConfigError(f"grid {path}: plot.metric must be one of {', '.join(METRICS)}")
    plot["type"] = ptype

    purity = dict(spec.get("purity") or {})
    if kind == "purity":
        bad = set(purity) - _PURITY_KEYS
        if bad:
            raise ConfigError(f"grid {path}: unknown purity key(s) {sorted(bad)}; known: {sorted(_PURITY_KEYS)}")
        cks = purity.get("checkpoints") or ({"warmup": "warmup"} if warmup is not None else None)
        if not isinstance(cks, dict) or not cks:
            raise ConfigError(f"grid {path}: kind=purity needs purity.checkpoints (name -> run folder, or "
                              f"'warmup' for the grid's warm-up)")
        if "warmup" in cks.values() and warmup is None:
            raise ConfigError(f"grid {path}: purity.checkpoints names 'warmup' but the grid has no warmup")
        purity["checkpoints"] = {str(k): str(v) for k, v in cks.items()}
        ks = purity.get("ks")
        if ks is not None and (not isinstance(ks, list) or not all(isinstance(k, int) and k >= 1 for k in ks)):
            raise ConfigError(f"grid {path}: purity.ks must be a list of positive integers")
    return Sweep(path=path, kind=kind, description=str(spec.get("description", "")).strip(), base=base,
                 shared=shared, cli=cli, out=out_dir, rows=rows, warmup=warmup, dropped=dropped, plot=plot,
                 purity=purity)


# ----------------------------------------------------------------------------- running

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
    from ..train import CHECKPOINT_NAME

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
    from ..train import CHECKPOINT_NAME, Trainer, load_checkpoint

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
    from ..train import CHECKPOINT_NAME, Trainer

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


# ----------------------------------------------------------------------------- purity grids

def run_purity_sweep(sweep: Sweep, log=print) -> dict:
    """Figure 2: neighbour purity against K of each listed checkpoint's features."""
    from ..evaluation import checkpoint_purity, plot_purity
    from ..train import CHECKPOINT_NAME, Trainer

    p = sweep.purity
    if sweep.warmup is not None and "warmup" in p["checkpoints"].values():
        _run_warmup(sweep, log)
    results = {}
    for name, src in p["checkpoints"].items():
        ckpt = sweep.warmup.run_dir / CHECKPOINT_NAME if src == "warmup" else Path(src)
        cache = sweep.out / f"purity_{_safe_name(name)}.json"
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


# ----------------------------------------------------------------------------- plots

def plot_sweep(sweep: Sweep, records: list[dict], histories: dict[str, list[dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    kind = sweep.plot.get("type", "bar")
    metric = sweep.plot.get("metric", "acc")
    title = sweep.plot.get("title") or sweep.path.stem
    by_name = {r.name: r for r in sweep.rows}
    rows = [r for r in records if r["row"] in by_name]
    fig, ax = plt.subplots(figsize=(7, 4))
    if kind == "bar":
        names = [r["row"] for r in records]
        x = np.arange(len(names))
        for j, m in enumerate(METRICS):
            vals = [100 * (r.get(m) or 0.0) for r in records]
            bars = ax.bar(x + (j - 1) * 0.27, vals, 0.27, label=m.upper())
            if m == metric:
                ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("score (%), final epoch")
        top = max([100 * (r.get(m) or 0.0) for r in records for m in METRICS] + [1.0])
        ax.set_ylim(0, top * 1.22)  # room for the value labels and the legend above the bars
        ax.legend(fontsize=8, ncol=3, loc="upper left")
    elif kind == "line":
        key = sweep.plot["x"]
        pts = sorted(((_get(by_name[r["row"]].config, key), r) for r in rows), key=lambda t: t[0])
        for m in METRICS:
            ax.plot([p[0] for p in pts], [100 * (p[1].get(m) or 0.0) for p in pts], marker="o", label=m.upper())
        ax.set_xlabel(key)
        ax.set_ylabel("score (%), final epoch")
        ax.legend(fontsize=8)
    elif kind == "heatmap":
        kx, ky = sweep.plot["x"], sweep.plot["y"]
        xs = sorted({_get(by_name[r.name].config, kx) for r in sweep.rows})
        ys = sorted({_get(by_name[r.name].config, ky) for r in sweep.rows})
        grid = np.full((len(ys), len(xs)), np.nan)
        for r in rows:
            c = by_name[r["row"]].config
            grid[ys.index(_get(c, ky)), xs.index(_get(c, kx))] = 100 * (r.get(metric) or 0.0)
        im = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_xticks(range(len(xs)), [str(v) for v in xs])
        ax.set_yticks(range(len(ys)), [str(v) for v in ys])
        ax.set_xlabel(kx)
        ax.set_ylabel(ky)
        fig.colorbar(im, ax=ax, label=f"{metric.upper()} (%)")
    else:  # epochs: the per-epoch metric of every row (Figure 3c)
        for name, hist in histories.items():
            pts = [(h["epoch"], 100 * h[metric]) for h in hist if metric in h]
            if pts:
                style = dict(color="0.6", linestyle=":") if name == "warmup" else {}
                ax.plot(*zip(*pts), marker="." if len(pts) < 60 else None, label=name, **style)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric.upper()} (%)")
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
