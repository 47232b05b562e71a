"""Sorted output: the clustered images themselves, one folder per cluster.

``DIR/cluster_XX/<file>`` for each image; images the boundary filter would drop
(near another cluster, see conr/boundary.py) go to ``DIR/cluster_XX/boundary/``
so that the confident members of a cluster can be taken as a whole. Files are
copied atomically (temporary name, then rename) or linked (absolute symlinks).
Images from nested folders keep their sub-path in the name (``a/b/x.png`` ->
``a__b__x.png``), so equal file names from different folders never collide.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..io import atomic_write_bytes

__all__ = ["export_clusters", "export_name", "EXPORT_MODES"]

EXPORT_MODES = ("copy", "symlink")


def export_name(path: str | Path, root: str | Path | None) -> str:
    """The file name an image gets in its cluster folder."""
    path = Path(path)
    if root is not None:
        try:
            return "__".join(path.resolve().relative_to(Path(root).resolve()).parts)
        except ValueError:
            pass
    return path.name


def export_clusters(paths: list[str], labels, boundary, dest: str | Path, mode: str = "copy",
                    root: str | Path | None = None) -> dict[str, int]:
    """Write every image of ``paths`` into ``dest/cluster_XX/`` (``boundary/`` below it
    for boundary samples). ``labels``/``boundary``: per-image cluster and flag.
    Returns counts {"images", "boundary", "clusters"}."""
    if mode not in EXPORT_MODES:
        raise ValueError(f"--export-mode {mode!r}: choose one of {', '.join(EXPORT_MODES)}")
    dest = Path(dest)
    if dest.exists() and any(p.name != ".conr-output" for p in dest.iterdir()):
        raise FileExistsError(f"--export {dest} already holds files; give a new or empty folder")
    from ..data.folder import mark_output_folder

    mark_output_folder(dest)  # never clustered as input on a later run
    labels = [int(v) for v in labels]
    flags = [bool(v) for v in boundary]
    width = max(2, len(str(max(labels) if labels else 0)))
    n_boundary = 0
    for src, c, b in zip(paths, labels, flags):
        folder = dest / f"cluster_{c:0{width}d}"
        if b:
            folder = folder / "boundary"
            n_boundary += 1
        target = folder / export_name(src, root)
        if mode == "copy":
            atomic_write_bytes(target, Path(src).read_bytes())
        else:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{target.name}.link.tmp"
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(Path(src).resolve(), tmp)
            os.replace(tmp, target)
    return {"images": len(labels), "boundary": n_boundary, "clusters": len(set(labels))}
