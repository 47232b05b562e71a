"""The results figure of a grid (``results.png``): bars per row, a line or a heatmap over
config keys, or the per-epoch metric of every row (Figure 3c)."""
from __future__ import annotations

from pathlib import Path

from .grid import METRICS, Sweep, config_value

__all__ = ["plot_sweep"]


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
        pts = sorted(((config_value(by_name[r["row"]].config, key), r) for r in rows), key=lambda t: t[0])
        for m in METRICS:
            ax.plot([p[0] for p in pts], [100 * (p[1].get(m) or 0.0) for p in pts], marker="o", label=m.upper())
        ax.set_xlabel(key)
        ax.set_ylabel("score (%), final epoch")
        ax.legend(fontsize=8)
    elif kind == "heatmap":
        kx, ky = sweep.plot["x"], sweep.plot["y"]
        xs = sorted({config_value(by_name[r.name].config, kx) for r in sweep.rows})
        ys = sorted({config_value(by_name[r.name].config, ky) for r in sweep.rows})
        grid = np.full((len(ys), len(xs)), np.nan)
        for r in rows:
            c = by_name[r["row"]].config
            grid[ys.index(config_value(c, ky)), xs.index(config_value(c, kx))] = 100 * (r.get(metric) or 0.0)
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
