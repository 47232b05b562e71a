"""The final stage: several partitions of the same images, and a label-free rule
that chooses one.

No single clustering algorithm wins on every set of images: k-means cuts the
elongated groups that the views of one object form, spectral clustering of the
k-NN graph merges classes that touch, and UMAP + a Gaussian mixture (the manifold
step, :mod:`conr.cluster.manifold`) is the strongest on digits but weaker on faces.
Neither do the learned features always beat the pixels after a short run. So the
final stage clusters each *representation* (the learned features, the raw pixels)
with each *algorithm* (``kmeans``, ``spectral``, ``umap_gmm``) and scores every
candidate with label-free criteria:

UMAP + GMM is the consensus of :data:`~conr.cluster.manifold.CONSENSUS_RUNS` runs
that differ in UMAP's seed (:mod:`conr.cluster.consensus`): one run's partition of
the same features moves by up to 9 points of ACC with the seed. Fewer where a time
budget is short for them (the pixels' consensus is timed first, and the run's later
ones make as many: :func:`conr.auto.budget.consensus_allowance`); and one, where the
default rule cannot choose it, for the features' own (the layout the criteria need).

Where the pixels are candidates, one more candidate weighs both representations
instead of choosing one: ``umap_gmm/joint``, UMAP + GMM on the fuzzy intersection of
the features' and the pixels' neighbour graphs (a link is strong only where both hold
it; :func:`~conr.cluster.manifold.joint_umap_gmm_consensus`). It takes the rules' head
start (:data:`JOINT`). Measured on the features saved from three default runs (digits,
ORL, COIL-20, seed 0; ACC / NMI): the joint candidate gave 0.959 / 0.941, 0.673 / 0.843
and 0.919 / 0.945 where the features alone gave 0.902 / 0.899, 0.575 / 0.796 and
0.957 / 0.977 and the pixels 0.875 / 0.895, 0.668 / 0.833 and 0.866 / 0.920. On COIL-20
the features alone are the better partition (the training linked an object's rotated
views, which the pixels do not, and the intersection drops those links); the default
rule does not let them compete with the joint one (below), which costs there what it
gains on the faces and digits.

* ``joint`` (the default): ``manifold``, except that where the joint candidate is one
  the features' own candidates do not compete with it (:func:`eligible`): it holds the
  features already, and the choice between the features' and the joint graph's
  partitions is again one between representations, which silhouette cannot make (on the
  suite's 9 runs with a joint candidate it kept a worse features' partition twice, on
  ORL: ACC 0.60 and 0.62 against 0.71 and 0.68, and took a worse joint one once, on
  COIL-20: 0.89 against 0.95). The pixels' candidates still compete, for a run too
  short to learn. Without the pixels it is ``manifold``;
* ``manifold``: ``prefer_features`` with a further head start of
  :data:`MANIFOLD_MARGIN` for the manifold step's partitions (UMAP + GMM of the
  features or of the pixels, and the self-labelled ones) over k-means and spectral
  ones. On the open suite's 8 deep runs and the demo's 3, k-means and spectral were
  the best candidate twice (by 0.003 and 0.025 of ACC), while a spectral partition
  that had merged classes won on silhouette by less than 0.02 twice (ACC 0.868 against
  0.952, 0.885 against 0.904); where spectral is clearly right and UMAP + GMM wrong (a
  broad group beside a tight pair: tests/test_final_stage.py) it leads by 0.31;
* ``prefer_features``: ``silhouette_umap`` with a head start of
  :data:`PRIOR_MARGIN` for UMAP + GMM of the learned features, the partition the
  training is for (of the joint graph where there is one: it holds the features too);
  another candidate must beat it clearly (as the pixels do after a run too short to
  learn: silhouette 0.53 against 0.44 on digits after 5 epochs).
  Silhouette cannot tell the better of the two representations: over 11 trained runs
  (the suite's 8, the demo's 3) the features' UMAP + GMM was the better partition in
  9 and trailed the pixels' on silhouette by up to 0.03 (demo: ACC 0.95
  against 0.87); the features lost on ORL (0.56 against 0.68) while leading on
  silhouette. The head start covers that spread, and stays below the gap of a run too
  short to learn;
* ``silhouette_umap``: the mean silhouette of the candidate's clusters in the UMAP
  embeddings of every representation (the same embeddings the manifold step
  makes), averaged over the representations, so no representation judges only its
  own partitions;
* ``agreement``: the mean normalised mutual information with the other candidates
  (the partition most of the others confirm);
* ``ncut``: 1 − (normalised cut / K) of the candidate on the union of the
  representations' 10-NN graphs (the share of neighbour links kept inside the
  clusters, each cluster weighted by its own volume, so tiny splinter clusters and
  merged classes both cost).

:data:`DEFAULT_RULE` was chosen by measurement (``benchmarks/final_rule.py``, README
"The final stage"). Every candidate and every criterion value is kept in the
:class:`~conr.cluster.partition.Partition` the stage returns.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .manifold import CONSENSUS_RUNS

__all__ = ["Candidate", "ALGORITHMS", "RULES", "DEFAULT_RULE", "cluster_representation", "score_candidates",
           "choose", "eligible", "preferred_for", "FinalStage"]

ALGORITHMS = ("kmeans", "spectral", "umap_gmm")
RULES = ("joint", "manifold", "prefer_features", "silhouette_umap", "agreement", "ncut")
DEFAULT_RULE = "joint"
PREFERRED = "umap_gmm/features"   # the manifold step on the learned features: N2D's ending, after training
JOINT = "umap_gmm/joint"          # ... on the intersection of the features' and the pixels' neighbour graphs:
                                  # preferred over PREFERRED where the pixels are candidates too
PRIOR_MARGIN = 0.05               # silhouette another candidate must gain over it to be chosen instead
GRAPH_NEIGHBORS = 10
SILHOUETTE_SAMPLES = 3000
MANIFOLD_MARGIN = 0.05            # the manifold rule's further head start for the manifold step's partitions
MANIFOLD_ALGORITHMS = ("umap_gmm", "self_label")


def preferred_for(names) -> str:
    """The candidate name that gets the head start among ``names``: :data:`JOINT` where it
    is one of them, else :data:`PREFERRED`."""
    return JOINT if JOINT in set(names) else PREFERRED


def derived_score(rule: str, name: str, algorithm: str, silhouette: float, preferred: str = PREFERRED) -> float:
    """The value of a rule derived from ``silhouette_umap`` (``prefer_features``,
    ``manifold``) for the candidate ``name`` made by ``algorithm``; ``preferred``: the
    candidate with the head start (:data:`PREFERRED`, or :data:`JOINT` where it is one)."""
    value = silhouette + (PRIOR_MARGIN if name == preferred else 0.0)
    if rule in ("manifold", "joint") and algorithm in MANIFOLD_ALGORITHMS:
        value += MANIFOLD_MARGIN
    return value


@dataclass
class Candidate:
    """One partition of the final stage."""
    algorithm: str
    representation: str
    labels: np.ndarray
    seconds: float = 0.0
    confidence: np.ndarray | None = None   # per-sample confidence where the algorithm gives one
    scores: dict = field(default_factory=dict)
    layouts: int | None = None             # UMAP + GMM: the UMAP layouts its consensus was made of

    @property
    def name(self) -> str:
        return f"{self.algorithm}/{self.representation}"

    def row(self) -> dict:
        return {"name": self.name, "algorithm": self.algorithm, "representation": self.representation,
                "seconds": round(self.seconds, 2), **({"layouts": self.layouts} if self.layouts else {}),
                **{k: round(float(v), 4) for k, v in self.scores.items()}}


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=10, random_state=seed).fit_predict(x).astype(np.int64)


def _spectral(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    from .spectral import eigen_solver, graph_neighbors

    nn = min(graph_neighbors(len(x), k), len(x) - 1)
    with warnings.catch_warnings():  # a graph in several pieces is fine: the pieces are clusters
        warnings.simplefilter("ignore")
        return SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=nn, assign_labels="kmeans",
                                  eigen_solver=eigen_solver(len(x)), random_state=seed).fit_predict(x).astype(np.int64)


def cluster_representation(x: np.ndarray, name: str, n_clusters: int, seed: int = 0,
                           algorithms=ALGORITHMS, given: dict | None = None, runs: int = CONSENSUS_RUNS,
                           max_seconds: float | None = None) -> tuple[list[Candidate], np.ndarray]:
    """Every algorithm's partition of one representation ``x`` [N, D], and its UMAP
    embedding (for the criteria). ``given``: labels already computed, by algorithm
    (the training loop's last k-means, say), used instead of computing them again.
    ``runs``, ``max_seconds``: the UMAP + GMM consensus's layouts, and the time they may
    take (fewer where it is short: :func:`~conr.cluster.manifold.affordable_runs`)."""
    from .manifold import umap_embedding, umap_gmm_consensus, umap_neighbors

    given = dict(given or {})
    algorithms = [a for a in algorithms if not (a == "kmeans" and "seeded_kmeans" in given)] + \
        [a for a in given if a not in algorithms]
    unknown = [a for a in algorithms if a not in ALGORITHMS and a not in given]
    if unknown:
        raise ValueError(f"unknown final-stage algorithm {unknown[0]!r}; choose from {ALGORITHMS}")
    out = []
    n_neighbors = umap_neighbors(len(x), n_clusters)
    start = time.perf_counter()
    if "umap_gmm" in algorithms and "umap_gmm" not in given:  # its first run's embedding serves the criteria
        manifold = umap_gmm_consensus(x, n_clusters, seed=seed, n_neighbors=n_neighbors, runs=runs,
                                      max_seconds=max_seconds)
        emb = manifold.embedding
    else:
        manifold, emb = None, umap_embedding(x, n_clusters, n_neighbors=n_neighbors, seed=seed)
    umap_seconds = time.perf_counter() - start
    for algo in algorithms:
        start = time.perf_counter()
        conf, layouts = None, None
        if algo in given:  # labels the caller computed (the training's own k-means, say)
            labels = np.asarray(given[algo], dtype=np.int64)
        elif algo == "kmeans":
            labels = _kmeans(x, n_clusters, seed)
        elif algo == "spectral":
            labels = _spectral(x, n_clusters, seed)
        else:  # umap_gmm: made above
            labels, conf, layouts = manifold.labels, manifold.confidence, manifold.runs
        seconds = time.perf_counter() - start + (umap_seconds if algo == "umap_gmm" else 0.0)
        out.append(Candidate(algo, name, labels, seconds, conf, layouts=layouts))
    return out, emb


def _silhouette(emb: np.ndarray, labels: np.ndarray, seed: int) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2:
        return -1.0
    n = len(labels)
    return float(silhouette_score(emb, labels, sample_size=min(n, SILHOUETTE_SAMPLES), random_state=seed))


def _knn_graph(x: np.ndarray, k: int):
    """Symmetric 0/1 adjacency of the k-NN graph (scipy CSR)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(x) - 1)
    g = NearestNeighbors(n_neighbors=k).fit(x).kneighbors_graph(mode="connectivity")
    g.setdiag(0)
    g = g.maximum(g.T)
    g.eliminate_zeros()
    return g.tocsr()


def normalized_cut(graph, labels: np.ndarray) -> float:
    """Σ_k cut(A_k, rest) / vol(A_k) of ``labels`` on a symmetric weighted graph."""
    labels = np.asarray(labels)
    deg = np.asarray(graph.sum(axis=1)).ravel()
    coo = graph.tocoo()
    inside = labels[coo.row] == labels[coo.col]
    within = np.bincount(labels[coo.row[inside]], weights=coo.data[inside], minlength=labels.max() + 1)
    vol = np.bincount(labels, weights=deg, minlength=labels.max() + 1)
    keep = vol > 0
    return float(((vol[keep] - within[keep]) / vol[keep]).sum())


def score_candidates(cands: list[Candidate], embeddings: dict[str, np.ndarray], reps: dict[str, np.ndarray],
                     n_clusters: int, seed: int = 0, rules=RULES) -> None:
    """Fill ``cand.scores[rule]`` for every candidate (higher is better for each)."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    if "silhouette_umap" in rules:
        for c in cands:
            c.scores["silhouette_umap"] = float(np.mean([_silhouette(e, c.labels, seed) for e in embeddings.values()]))
    if "agreement" in rules:
        for c in cands:
            others = [nmi(c.labels, o.labels) for o in cands if o is not c]
            c.scores["agreement"] = float(np.mean(others)) if others else 0.0
    preferred = preferred_for(c.name for c in cands)
    for rule in ("prefer_features", "manifold", "joint"):  # silhouette_umap, with head starts
        if rule in rules:
            for c in cands:
                sil = c.scores.get("silhouette_umap")
                if sil is None:
                    sil = c.scores["silhouette_umap"] = float(np.mean([_silhouette(e, c.labels, seed)
                                                                       for e in embeddings.values()]))
                c.scores[rule] = derived_score(rule, c.name, c.algorithm, sil, preferred)
    if "ncut" in rules:
        graph = None
        for x in reps.values():
            g = _knn_graph(x, GRAPH_NEIGHBORS)
            graph = g if graph is None else graph + g
        for c in cands:  # an empty cluster counts as fully cut (a collapsed partition cuts few links)
            empty = n_clusters - len(np.unique(c.labels))
            c.scores["ncut"] = 1.0 - (normalized_cut(graph, c.labels) + empty) / n_clusters


def eligible(cands: list, rule: str, representation=lambda c: c.representation, name=lambda c: c.name) -> list:
    """The candidates ``rule`` may choose: under ``joint``, where the joint candidate is
    one, not those of the features alone (the joint one holds the features, and silhouette
    cannot compare representations); the rest compete with it, the pixels' for a run too
    short to learn. ``representation`` / ``name``: how to read a candidate (a
    :class:`Candidate`, or a row of a saved candidate table)."""
    if rule == "joint" and any(name(c) == JOINT for c in cands):
        return [c for c in cands if representation(c) != "features"]
    return list(cands)


def choose(cands: list[Candidate], rule: str = DEFAULT_RULE) -> Candidate:
    """The eligible candidate (:func:`eligible`) of the highest ``rule`` score (ties:
    the earlier candidate)."""
    if rule not in RULES:
        raise ValueError(f"unknown final-stage rule {rule!r}; choose one of {RULES}")
    best = None
    for c in eligible(cands, rule):
        if best is None or c.scores[rule] > best.scores[rule]:
            best = c
    return best


class FinalStage:
    """The final stage over fixed representations: the pixels once (they do not change
    during training), the features every time it is asked.

    >>> stage = FinalStage(pixels, n_clusters=10, seed=0)
    >>> best, table = stage.run(features, given={"kmeans": pseudo_labels})
    """

    def __init__(self, pixels: np.ndarray | None, n_clusters: int, seed: int = 0, rule: str = DEFAULT_RULE,
                 algorithms=ALGORITHMS, log=None, consensus_runs: int = CONSENSUS_RUNS,
                 consensus_seconds: float | None = None):
        if rule not in RULES:
            raise ValueError(f"unknown final-stage rule {rule!r}; choose one of {RULES}")
        if int(consensus_runs) < 1:
            raise ValueError(f"consensus_runs={consensus_runs}: a consensus needs at least one UMAP layout")
        self.pixels = None if pixels is None else np.asarray(pixels, dtype=np.float32)
        self.n_clusters, self.seed, self.rule, self.algorithms = int(n_clusters), int(seed), rule, tuple(algorithms)
        # the layouts every consensus of the run is made of: the pixels' consensus may make fewer where
        # consensus_seconds is short (it is timed first), and the later ones then make as many
        self.consensus_runs, self.consensus_seconds = int(consensus_runs), consensus_seconds
        self.log = log or (lambda *a: None)
        self._pixel_cands: list[Candidate] | None = None
        self._pixel_emb: np.ndarray | None = None
        self._pixel_graph = None

    def pixel_candidates(self) -> tuple[list[Candidate], np.ndarray | None]:
        if self.pixels is None:
            return [], None
        if self._pixel_cands is None:
            self._pixel_cands, self._pixel_emb = cluster_representation(
                self.pixels, "pixels", self.n_clusters, self.seed, self.algorithms, runs=self.consensus_runs,
                max_seconds=self.consensus_seconds)
            made = next((c for c in self._pixel_cands if c.layouts), None)
            if made is not None and made.layouts < self.consensus_runs:
                self.log(f"final stage: UMAP + GMM consensus of {made.layouts} layouts, not {self.consensus_runs} "
                         f"(the pixels' took {made.seconds:.0f} s; {self.consensus_seconds:.0f} s allowed)")
                self.consensus_runs = made.layouts
        return self._pixel_cands, self._pixel_emb

    def joint_in_play(self) -> bool:
        """Whether :meth:`run` makes the joint candidate (the pixels are candidates, and so is UMAP + GMM)."""
        return self.pixels is not None and "umap_gmm" in self.algorithms

    def joint_candidate(self, features: np.ndarray) -> Candidate:
        """UMAP + GMM (consensus) on the fuzzy intersection of the features' and the
        pixels' neighbour graphs (:func:`~conr.cluster.manifold.joint_umap_gmm_consensus`):
        it weighs both representations instead of choosing one."""
        from .manifold import fuzzy_graph, graph_umap_gmm_consensus, intersect_graphs, umap_neighbors

        start = time.perf_counter()
        nn = umap_neighbors(len(features), self.n_clusters)
        if self._pixel_graph is None:
            self._pixel_graph = fuzzy_graph(self.pixels, nn, self.seed)
        graph = intersect_graphs(fuzzy_graph(features, nn, self.seed), self._pixel_graph)
        made = graph_umap_gmm_consensus(graph, self.n_clusters, self.seed, runs=self.consensus_runs)
        return Candidate("umap_gmm", "joint", made.labels, time.perf_counter() - start, made.confidence,
                         layouts=made.runs)

    def run(self, features: np.ndarray, given: dict | None = None,
            extra: list[Candidate] | None = None) -> tuple[Candidate, list[Candidate]]:
        """Candidates on ``features`` (unit rows) and the pixels, plus ``extra`` ones,
        scored; returns (the chosen one, all of them)."""
        feats = _unit(features)
        pix, pix_emb = self.pixel_candidates()
        # under the joint rule the features' own UMAP + GMM is not chosen where the joint one is made: one
        # layout (the one the criteria need anyway) lists it, a consensus would only cost time
        runs = 1 if self.rule == "joint" and self.joint_in_play() else self.consensus_runs
        cands, emb = cluster_representation(feats, "features", self.n_clusters, self.seed, self.algorithms, given,
                                            runs=runs)
        embeddings, reps = {"features": emb}, {"features": feats}
        if pix:
            cands, embeddings["pixels"], reps["pixels"] = cands + list(pix), pix_emb, self.pixels
            if self.joint_in_play():
                cands.append(self.joint_candidate(feats))
        self._embeddings, self._reps = embeddings, reps
        return self.rescore(cands + list(extra or []))

    def rescore(self, cands: list[Candidate]) -> tuple[Candidate, list[Candidate]]:
        """Score ``cands`` against the representations of the last :meth:`run` and choose."""
        for c in cands:
            c.scores = {}
        score_candidates(cands, self._embeddings, self._reps, self.n_clusters, self.seed)
        best = choose(cands, self.rule)
        self.log("final stage: " + ", ".join(f"{c.name} {c.scores[self.rule]:.3f}" for c in cands)
                 + f" -> {best.name} ({self.rule})")
        return best, cands
