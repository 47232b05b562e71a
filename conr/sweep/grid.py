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

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import (Config, ConfigError, apply_overrides, config_from_dict, read_yaml, resolve_config_path,
                      yaml_mapping)

__all__ = ["Sweep", "SweepRow", "Warmup", "load_sweep", "SWEEP_DIR", "shipped_grids", "PLOT_TYPES", "METRICS",
           "RESULT_FILE", "config_value", "safe_name"]

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


def config_value(cfg: Config, dotted: str) -> Any:
    """The value of a dotted config key (``stage2.fr0``); a ConfigError if there is no such key."""
    node: Any = cfg
    for part in dotted.split("."):
        if not hasattr(node, part):
            raise ConfigError(f"{dotted!r} is not a config key")
        node = getattr(node, part)
    return node


def safe_name(name: str) -> str:
    """A row name as a folder name."""
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
    spec = yaml_mapping(path, "grid", "base, overrides, rows, ...")
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
            rows.append(SweepRow(name=name, overrides=ov, config=cfg, run_dir=out_dir / safe_name(name)))
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
                config_value(common, plot[axis])
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
