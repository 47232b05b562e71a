"""What ``conr cluster`` leaves in its output folder, all written atomically:

* ``assignments.csv``: path, cluster, boundary_ratio, distance_to_center, boundary
  (1 = the boundary filter would drop it at fr0), confidence (1 - d_own / d_next, see
  :func:`conr.ops.boundary.assignment_confidence`) and, when known, the true label;
* ``clusters/cluster_XX.png``: one grid per cluster, closest to the centre first,
  boundary samples framed red;
* ``plots/{tsne,neighbors,purity,training}.png`` (conr/outputs/plots.py);
* ``report.html``: one self-contained page (images embedded as base64, inline CSS,
  no external assets) with the numbers, the grids and the plots.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..io import atomic_write_bytes, atomic_write_text, check_writable
from .plots import ClusterSnapshot, make_plots, thumbnails

__all__ = ["write_assignments", "cluster_grid", "grid_geometry", "grid_members", "write_report", "write_outputs",
           "assignments_csv"]

BOUNDARY_RGB = (220, 30, 30)


def _name(snap: ClusterSnapshot, i: int) -> str:
    return snap.paths[i] if snap.paths is not None else f"image:{i}"


def assignments_csv(snap: ClusterSnapshot) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    from ..ops.boundary import assignment_confidence

    header = ["path", "cluster", "boundary_ratio", "distance_to_center", "boundary", "confidence"]
    if snap.truth is not None:
        header.append("true_label")
    w.writerow(header)
    conf = assignment_confidence(snap.features, snap.centers, snap.labels)
    for i in range(len(snap.labels)):
        row = [_name(snap, i), int(snap.labels[i]), f"{float(snap.ratios[i]):.6f}",
               f"{float(snap.distances[i]):.6f}", int(bool(snap.boundary[i])), f"{float(conf[i]):.6f}"]
        if snap.truth is not None:
            t = int(snap.truth[i])
            row.append(snap.classes[t] if t < len(snap.classes) else t)
        w.writerow(row)
    return buf.getvalue()


def write_assignments(snap: ClusterSnapshot, path: str | Path) -> Path:
    return atomic_write_text(path, assignments_csv(snap))


def grid_members(snap: ClusterSnapshot, cluster: int, max_images: int = 64) -> tuple[list[int], int]:
    """Indices shown for ``cluster``, in order of distance to the centre: all of them
    when they fit, else the closest three quarters of ``max_images`` and then the rest
    of the slots spread evenly over the remaining members out to the farthest.
    Returns (indices, number of closest shown before the spread part)."""
    members = (snap.labels == cluster).nonzero().flatten()
    order = members[torch.argsort(snap.distances[members], stable=True)].tolist()
    if len(order) <= max_images:
        return order, len(order)
    n_close = (3 * max_images) // 4
    rest = order[n_close:]
    n_spread = max_images - n_close
    picks = np.linspace(0, len(rest) - 1, n_spread).round().astype(int)
    return order[:n_close] + [rest[i] for i in picks], n_close


def grid_geometry(tile: int) -> tuple[int, int, int]:
    """(frame width, white space around each frame, cell size) of a cluster grid."""
    pad, sp = max(2, tile // 20), 2
    return pad, sp, tile + 2 * (pad + sp)


def cluster_grid(snap: ClusterSnapshot, cluster: int, max_images: int = 64, cols: int = 8,
                 tile: int | None = None) -> bytes:
    """PNG grid of one cluster (see :func:`grid_members`); boundary samples framed red."""
    idx, _ = grid_members(snap, cluster, max_images)
    tile = tile or max(64, int(snap.images.shape[-1]))
    pad, sp, cell = grid_geometry(tile)
    cols = max(1, min(cols, len(idx)))
    rows = max(1, math.ceil(len(idx) / cols))
    canvas = np.full((rows * cell, cols * cell, 3), 255, np.uint8)
    if idx:
        thumbs = thumbnails(snap.images[torch.tensor(idx)], tile)
        for n, i in enumerate(idx):
            r, c = divmod(n, cols)
            y, x = r * cell + sp, c * cell + sp
            if bool(snap.boundary[i]):
                canvas[y:y + cell - 2 * sp, x:x + cell - 2 * sp] = BOUNDARY_RGB
            canvas[y + pad:y + pad + tile, x + pad:x + pad + tile] = thumbs[n]
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- HTML

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1280px;
color:#222;padding:0 16px}
h1{font-size:26px;margin-bottom:4px}h2{font-size:20px;margin-top:32px;border-bottom:1px solid #ddd;
padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}
.sub{color:#666;margin-top:0}
.metrics{display:flex;gap:16px;margin:16px 0}
.metric{border:1px solid #ddd;border-radius:8px;padding:10px 18px;min-width:110px;text-align:center}
.metric .v{font-size:28px;font-weight:600}.metric .k{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}th{background:#f5f5f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.row{display:flex;gap:32px;flex-wrap:wrap;align-items:flex-start}.row>div{flex:1 1 420px}
.clusters{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:14px}
.plots{display:grid;grid-template-columns:1fr 1fr;gap:18px}.plots .wide{grid-column:1 / -1}
.cluster{border:1px solid #e3e3e3;border-radius:8px;padding:8px 10px}
.cluster img{width:100%}
.cluster h3{font-size:14px;margin:4px 0 6px}
img.plot{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:13px}
.warn{background:#fff4e5;border:1px solid #f0c36d;padding:8px 12px;border-radius:6px}
code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
"""

PLOT_TEXT = {
    "tsne": ("t-SNE of the learned features",
             "Each dot is an image (a seeded subset of up to 3,000), placed by t-SNE from its feature vector. "
             "Small dots are boundary samples: those the boundary filter would drop at fr0 (paper Fig. 4)."),
    "neighbors": ("Euclidean vs ConAff neighbours",
                  "Each query (left) with its 10 nearest images by plain Euclidean distance (upper row) and by the "
                  "contextual ConAff similarity CoNR trains with (lower row); red frames mark neighbours that do "
                  "not belong with the query (paper Fig. 1b / 5)."),
    "purity": ("Neighbour purity vs K",
               "Share of each image's K nearest neighbours that belong with it, for Euclidean and ConAff "
               "neighbourhoods, over all anchors (solid) and over the anchors the boundary filter keeps "
               "(dashed) (paper Fig. 2)."),
    "training": ("Training curves", "Loss and clustering scores per epoch, from the run's metrics.jsonl "
                                    "(paper Fig. 3c)."),
    "k_selection": ("Choosing the number of clusters",
                    "K was not given: k-means ran on the features at the end of stage 1 (the self-supervised "
                    "warm-up, which never uses K; at the end of training for a method without a stage 2) for "
                    "every candidate K, and the K with the highest mean silhouette (cosine distance; how much "
                    "closer each image is to its own cluster than to the next one, -1..1) was used for stage 2 "
                    "and the final clustering."),
}


def _img(data: bytes, cls: str = "plot", alt: str = "") -> str:
    return (f'<img class="{cls}" alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">')


def _table(header: list[str], rows: list[list], num_cols=()) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for j, v in enumerate(row):
            cls = ' class="num"' if j in num_cols else ""
            cells.append(f"<td{cls}>{html.escape(str(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def cluster_table(snap: ClusterSnapshot) -> tuple[list[str], list[list]]:
    header = ["cluster", "images", "share", "boundary", "mean distance to centre"]
    if snap.truth is not None:
        header += ["most common true label", "its share"]
    rows = []
    n = len(snap.labels)
    for c in range(snap.n_clusters):
        m = snap.labels == c
        size = int(m.sum())
        row = [c, size, f"{100 * size / n:.1f}%", f"{100 * float(snap.boundary[m].float().mean()) if size else 0:.0f}%",
               f"{float(snap.distances[m].mean()) if size else float('nan'):.3f}"]
        if snap.truth is not None:
            if size:
                counts = torch.bincount(snap.truth[m])
                top = int(counts.argmax())
                row += [snap.classes[top] if top < len(snap.classes) else top, f"{100 * float(counts[top]) / size:.0f}%"]
            else:
                row += ["-", "-"]
        rows.append(row)
    return header, rows


# how the joint candidate combined the two representations (conr.cluster.policy.joint_way), for the report
JOINT_WAYS = {"union": "the union of their neighbour graphs (links either holds)",
              "intersection": "the intersection of their neighbour graphs (links both hold)",
              "concatenation": "the two side by side (too few shared links to combine their graphs)"}


def _final_stage_section(partition: dict | None) -> list[str]:
    """The final stage's candidates, each criterion value and the choice (conr/cluster/final.py)."""
    if not partition or not partition.get("candidates"):
        return []
    from ..cluster.policy import CONSENSUS, RULES, WARMUP

    rows = partition["candidates"]
    crit = [k for k in RULES if any(k in r for r in rows)]   # stability: only where it was measured
    truth = [k for k in ("true_nmi", "true_acc") if k in rows[0]]
    header = ["candidate"] + crit + [k.replace("true_", "").upper() for k in truth] + ["time (s)", "chosen"]
    body = [[r["name"]] + [f"{r[k]:.3f}" if k in r else "" for k in crit] + [f"{r[k]:.3f}" for k in truth]
            + [f"{r.get('seconds', 0):.1f}", "yes" if r.get("chosen") else ""] for r in rows]
    rule = html.escape(str(partition.get("rule")))
    voted = partition["source"] == CONSENSUS
    out = ["<h2>Final stage</h2><p class=\"note\">" + (
           "The labels are <b>the candidates' consensus</b>: two images share a cluster as often as the candidates "
           "below put them together, each candidate's vote weighted by its agreement with the others (no labels "
           "used); the consensus column is each candidate's NMI with it" if voted else
           f"The labels come from <b>{html.escape(partition['source'])}</b>, "
           f"chosen without labels by the highest <b>{rule}</b> among partitions of the learned features and of the "
           f"raw pixels (and the self-labelling stage's, when it ran)")
           + (", each representation's first by the joint value, the most stable of those" if rule == "stability"
              else ", each partition's silhouette measured in the embeddings of the representations it was not "
              "made from" if rule == "away" else "") + "."
           + (" NMI / ACC use the ground truth, for you only: the rule never sees them." if truth else "")
           + "</p>", _table(header, body, num_cols=tuple(range(1, len(header) - 1)))]
    out += [f"<p class=\"note\">{html.escape(n)}</p>" for n in partition.get("notes", [])]
    warm = [r["name"] for r in rows if r["name"].endswith("/" + WARMUP)]
    if warm:
        out.append(f"<p class=\"note\">{html.escape(', '.join(warm))}: made on the features of the end of the "
                   "warm-up, where stage 2's seed was chosen; they vote too, so that an error of the seed, which stage 2 "
                   "carries into every partition of the end, is not the only voice (by default the three together "
                   "hold half of the vote: cluster.warmup_weight).</p>")
    out += [f"<p class=\"note\">{html.escape(r['name'])}: the two representations share {r['shared']:.0%} of a "
            f"point's neighbours, so it clusters {JOINT_WAYS.get(r['combined'], r['combined'])}.</p>"
            for r in rows if r.get("combined")]
    out += [f"<p class=\"note\">{html.escape(r['name'])}: in {r['started']} of its {r['layouts']} UMAP layouts the "
            "Gaussian mixture started from the other partitions fitted better than from its own starts, and was "
            "kept.</p>" for r in rows if r.get("started")]
    return out


def write_report(snap: ClusterSnapshot, path: str | Path, meta: dict, grids: dict[int, bytes],
                 plots: dict[str, bytes], max_grid: int = 64) -> Path:
    """The self-contained HTML page. ``meta``: title, source, metrics, settings rows,
    skipped files, files written (see :func:`write_outputs`)."""
    n, k = len(snap.labels), snap.n_clusters
    title = meta.get("title", "conr clustering report")
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class=\"sub\">{html.escape(meta.get('source', ''))} &middot; {n} images in {k} clusters &middot; "
             f"{html.escape(meta.get('when', datetime.now().strftime('%Y-%m-%d %H:%M')))}</p>"]
    metrics = meta.get("metrics") or {}
    if {"nmi", "acc", "ari"} <= metrics.keys():
        parts.append('<div class="metrics">' + "".join(
            f'<div class="metric"><div class="v">{100 * metrics[m]:.1f}</div><div class="k">{m.upper()} %</div></div>'
            for m in ("nmi", "acc", "ari")) + "</div>")
        truth = html.escape(meta.get("truth_note", "the labels that came with the images"))
        parts.append(f'<p class="note">Scores against the ground truth ({truth}); the clustering itself '
                     f'never saw it.</p>')
    else:
        parts.append('<p class="note">No ground truth came with these images, so there are no accuracy scores; '
                     'judge the clusters by the grids below.</p>')
    skipped = meta.get("skipped") or []
    if skipped:
        parts.append(f'<p class="warn"><b>{len(skipped)} unreadable image file(s) were skipped</b> '
                     f'(listed at the end of this page).</p>')
    settings = [["images clustered", n], ["clusters (K)", k], ["unreadable files skipped", len(skipped)]]
    settings += [list(r) for r in meta.get("settings", [])]
    header, rows = cluster_table(snap)
    parts.append('<div class="row"><div><h2>Summary</h2>' + _table([], settings) + "</div>"
                 '<div><h2>Cluster sizes</h2>' + _table(header, rows, num_cols=(0, 1, 2, 3, 4))
                 + f'<p class="note">"boundary": share of the cluster\'s images that the boundary filter would drop '
                 f'at fr0={snap.fr0:g} (their ratio of the distance to the own centre over the distance to the '
                 f'nearest other centre is among the largest {100 * (1 - snap.fr0):.0f}% of the whole set).</p>'
                 "</div></div>")

    parts.extend(_final_stage_section(meta.get("partition")))
    parts.append("<h2>Clusters</h2>")
    parts.append(f'<p class="note">Each grid: the images closest to the cluster centre first (left to right, top to '
                 f'bottom); when a cluster has more than {max_grid} images, the first {(3 * max_grid) // 4} closest '
                 f'are followed by images spread evenly over the rest, out to the farthest. '
                 f'<span style="color:#dc1e1e;font-weight:600">Red frame</span> = boundary sample.</p>')
    parts.append('<div class="clusters">')
    for c in range(k):
        size = int(rows[c][1])
        extra = f" &middot; mostly <b>{html.escape(str(rows[c][5]))}</b> ({rows[c][6]})" if snap.truth is not None \
            and size else ""
        parts.append(f'<div class="cluster"><h3>Cluster {c} &middot; {size} images{extra}</h3>'
                     + (_img(grids[c], "grid", f"cluster {c}") if c in grids and size else "<p>(empty)</p>")
                     + "</div>")
    parts.append("</div>")

    if plots:
        parts.append('<h2>Plots</h2><div class="plots">')
        for name in ("k_selection", "tsne", "purity", "training", "neighbors"):
            if name in plots:
                head, text = PLOT_TEXT[name]
                wide = ' class="wide"' if name in ("tsne", "neighbors", "k_selection") else ""  # purity | training
                parts.append(f"<div{wide}><h3>{html.escape(head)}</h3><p class=\"note\">{html.escape(text)}</p>"
                             + _img(plots[name], "plot", head) + "</div>")
        parts.append("</div>")

    files = meta.get("files") or []
    if files:
        parts.append("<h2>Files</h2><ul>" + "".join(f"<li><code>{html.escape(str(f))}</code></li>" for f in files)
                     + "</ul>")
    if skipped:
        shown = skipped[:500]
        parts.append(f"<h2>Skipped files ({len(skipped)})</h2>"
                     + _table(["file", "why"], [[p, why] for p, why in shown]))
        if len(skipped) > len(shown):
            parts.append(f"<p class=\"note\">... and {len(skipped) - len(shown)} more.</p>")
    parts.append('<p class="note">Made by conr (CoNR: Contextually Affinitive Neighborhood Refinery, NeurIPS 2023). '
                 'This page is self-contained: all images are embedded.</p></body></html>')
    return atomic_write_text(path, "\n".join(parts))


def write_outputs(snap: ClusterSnapshot, out_dir: str | Path, meta: dict, plots: bool = True,
                  max_grid: int = 64, seed: int = 0, log=print, k_selection: dict | None = None) -> dict[str, Path]:
    """assignments.csv, clusters/cluster_XX.png, plots/*.png and report.html in ``out_dir``;
    ``k_selection`` (an estimated K, see conr/kselect.py): plots/k_selection.png as well."""
    out = check_writable(Path(out_dir), need_bytes=_estimate_bytes(snap, max_grid))
    written: dict[str, Path] = {"assignments": write_assignments(snap, out / "assignments.csv")}
    grids = {}
    width = len(str(max(0, snap.n_clusters - 1)))
    for c in range(snap.n_clusters):
        grids[c] = cluster_grid(snap, c, max_grid)
        written[f"cluster_{c}"] = atomic_write_bytes(out / "clusters" / f"cluster_{c:0{max(2, width)}d}.png", grids[c])
    figs = {}
    if plots:
        figs = make_plots(snap, out / "plots", seed=seed, log=log)
    if k_selection is not None:  # the chosen K is shown even with plots=False: it is a decision, not a view
        from .plots import plot_k_selection

        figs = {"k_selection": plot_k_selection(k_selection), **figs}
        atomic_write_bytes(out / "plots" / "k_selection.png", figs["k_selection"])
    for name in figs:
        written[f"plot_{name}"] = out / "plots" / f"{name}.png"
    meta = dict(meta)
    meta.setdefault("files", [])
    meta["files"] = list(meta["files"]) + ["assignments.csv", f"clusters/ ({snap.n_clusters} PNG grids)"] + \
        ([f"plots/{n}.png" for n in figs] if figs else [])
    written["report"] = write_report(snap, out / "report.html", meta, grids, figs, max_grid)
    return written


def _estimate_bytes(snap: ClusterSnapshot, max_grid: int) -> int:
    side = max(64, int(snap.images.shape[-1]))
    grids = snap.n_clusters * min(max_grid, len(snap.labels)) * side * side * 3
    return int(2 * (grids + 4 * 2**20) + 200 * len(snap.labels))  # grids twice (PNG + base64), plots, CSV
