"""conr predict: assign new images to the clusters of a trained run, without training."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Assign every image under FOLDER to the nearest cluster centre of the trained run RUN
(a run folder, e.g. OUT/run of `conr cluster --out OUT`; OUT itself works too) and write
the same columns as conr cluster's assignments.csv: path, cluster, boundary_ratio,
distance_to_center, boundary, confidence (and true_label when FOLDER has one sub-folder
per class). The boundary flag marks the images of FOLDER whose ratio is among the
largest (1 - fr0) of FOLDER, as in conr cluster. Nothing is trained."""


def resolve_run(path: str | Path) -> Path:
    """The run folder for RUN: itself, or RUN/run for a conr cluster output folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"RUN {path} does not exist; give a run folder (OUT/run of conr cluster --out OUT)")
    if path.is_dir() and not (path / "checkpoint.pt").exists() and (path / "run" / "checkpoint.pt").exists():
        return path / "run"
    if path.is_dir() and not (path / "checkpoint.pt").exists():
        raise FileNotFoundError(f"RUN {path} holds no checkpoint.pt; give a trained run folder "
                                f"(OUT/run of conr cluster --out OUT)")
    return path


def predict_snapshot(est, folder, on_bad_image: str = "skip"):
    """A ClusterSnapshot of the images under ``folder`` assigned to ``est``'s clusters."""
    import torch

    from ..estimator import NotFittedError
    from ..outputs.plots import ClusterSnapshot

    if getattr(est, "cluster_centers_", None) is None:
        raise NotFittedError("the run holds no cluster centres to assign to; train it to the end first")
    est.set_params(on_bad_image=on_bad_image)
    data = est.load(folder)
    feats = torch.from_numpy(est.transform(data))
    centers = torch.from_numpy(est.cluster_centers_)
    cfg = est.config_
    labels = est.assign_features(feats)
    s = cfg.stage2
    return ClusterSnapshot(images=data.images, features=feats, labels=labels, centers=centers,
                           truth=data.labels if data.has_labels else None, classes=list(data.classes),
                           paths=data.paths, fr0=s.fr0, keep_rule=s.keep_rule, ratio_variant=s.ratio_variant,
                           k1=s.k1, k2=s.k2), data


def run(args) -> int:
    from ..estimator import CoNR
    from ..options import command_options
    from ..outputs.report import write_assignments

    folder = Path(args.folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"FOLDER {folder} is not a folder of images")
    out = Path(args.out) if args.out else Path(f"{folder.resolve().name}-predictions.csv")
    with command_options({"data.on_bad_image": "--on-bad-image", "data.root": "FOLDER", "train.device": "--device"}):
        run_dir = resolve_run(args.run)
        est = CoNR.from_checkpoint(run_dir, device=args.device)
        snap, data = predict_snapshot(est, folder, args.on_bad_image)
        write_assignments(snap, out)
        if args.export:
            from ..outputs.export import export_clusters

            export_clusters(snap.paths, snap.labels.tolist(), snap.boundary.tolist(), args.export,
                            args.export_mode, root=folder)
    sizes = snap.labels.bincount(minlength=snap.n_clusters).tolist()
    print(f"assigned {len(snap.labels)} images to the {snap.n_clusters} clusters of {run_dir} (sizes {sizes}); "
          f"{len(data.skipped)} unreadable skipped")
    print(f"assignments: {out}")
    if args.export:
        print(f"exported into {args.export}/cluster_XX/")
    return 0


def register(sub) -> None:
    p = sub.add_parser("predict", help="assign new images to a trained run's clusters (no training)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="trained run folder (OUT/run of conr cluster --out OUT)")
    p.add_argument("folder", metavar="FOLDER", help="folder of new images (searched recursively)")
    p.add_argument("--out", help="CSV to write (default: ./<folder name>-predictions.csv)")
    p.add_argument("--export", metavar="DIR", help="also sort the images into DIR/cluster_XX/")
    p.add_argument("--export-mode", choices=("copy", "symlink"), default="copy")
    p.add_argument("--on-bad-image", choices=("skip", "fail"), default="skip",
                   help="unreadable image files: skip them or stop (default: skip)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.set_defaults(func=run)
