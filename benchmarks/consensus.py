"""Single UMAP + GMM runs against their consensus, on the raw pixels of the open sets.

The final stage's UMAP + GMM candidate is the consensus (conr/cluster/consensus.py) of
CONSENSUS_RUNS runs that differ only in UMAP's seed, over one exact k-NN graph
(conr/cluster/manifold.py). For each set this prints the ACC / NMI of every single run
(the spread a one-run candidate would have) and of the consensus the final stage uses,
and writes benchmarks/results/consensus.json.

    python benchmarks/consensus.py                    # digits, COIL-20, ORL (about 2 minutes)
    python benchmarks/consensus.py --datasets orl --seed 1
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> int:
    from suite import DATASETS, dataset_folder, pixels, scores

    from conr.cluster.consensus import consensus_partition
    from conr.cluster.manifold import (CONSENSUS_RUNS, PCA_ABOVE, PCA_DIMS, gmm_posterior, exact_neighbors,
                                       umap_embedding, umap_neighbors)
    from conr.io import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["digits", "coil20", "orl"], choices=list(DATASETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache")
    args = p.parse_args(argv)
    out = []
    print("| set | single runs ACC (min..max) | single runs NMI (min..max) | consensus ACC / NMI |")
    print("|---|---|---|---|")
    for name in args.datasets:
        found = dataset_folder(name, args.cache)
        if found is None:
            continue
        folder, k = found
        x, y = pixels(folder)
        if x.shape[1] > PCA_ABOVE:  # as the final stage's pixel candidates do
            from sklearn.decomposition import PCA

            x = PCA(PCA_DIMS, random_state=args.seed).fit_transform(x).astype(np.float32)
        neighbors = exact_neighbors(x, umap_neighbors(len(x), k))
        seeds = np.random.SeedSequence(args.seed).generate_state(CONSENSUS_RUNS) % (2**31 - 1)
        members = [gmm_posterior(umap_embedding(x, k, seed=int(s), neighbors=neighbors), k, 5, int(s)).argmax(1)
                   for s in seeds]
        single = [scores(y, m) for m in members]
        cons = scores(y, consensus_partition(members, k, args.seed))
        out.append({"dataset": name, "seed": args.seed, "runs": single, "consensus": cons})
        accs, nmis = [s["acc"] for s in single], [s["nmi"] for s in single]
        print(f"| {name} | {min(accs):.3f}..{max(accs):.3f} | {min(nmis):.3f}..{max(nmis):.3f} | "
              f"{cons['acc']:.3f} / {cons['nmi']:.3f} |", flush=True)
    atomic_write_text(ROOT / "benchmarks" / "results" / "consensus.json", json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
