"""The final stage: several partitions of the same images, scored without labels.

No single clustering algorithm wins on every set of images: k-means cuts the elongated
groups that the views of one object form, spectral clustering of the k-NN graph merges
classes that touch, and UMAP + a Gaussian mixture (the manifold step,
:mod:`conr.cluster.manifold`) is the strongest on digits but weaker on faces. Nor do the
learned features always beat the input (the pixels, or the vectors a run started from)
after a short run. So the stage clusters each *representation* (the learned ``features``,
the input) with each *algorithm* (``kmeans``, ``spectral``, ``umap_gmm``), adds
``umap_gmm/joint`` (UMAP + GMM on the fuzzy intersection of the features' and the input's
neighbour graphs, a link strong only where both hold it; or their union,
``cluster.joint_graph``) where the input is a candidate,
and scores every candidate with label-free criteria:

* ``silhouette_umap``: the mean silhouette of the candidate's clusters in the UMAP
  embeddings of every representation, averaged, so no representation judges only its own
  (each embedding's value is kept in ``Candidate.silhouettes``, ``silhouette_in`` of the
  candidate table, for rules measured later);
* ``agreement``: the mean normalised mutual information with the other candidates;
* ``ncut``: 1 - (normalised cut / K) on the union of the representations' k-NN graphs;
* ``prefer_features``, ``manifold``, ``joint``: silhouette with the head starts of
  :mod:`conr.cluster.policy`, which also says which candidates may compete;
* ``away``: ``joint`` with each candidate's silhouette only in the other representations'
  embeddings (:func:`~conr.cluster.policy.away_silhouette`);
* ``consensus``: the NMI with ``consensus/candidates``, the co-association consensus of all
  the candidates (:func:`consensus_candidate`), which this rule makes and chooses.

Every candidate and every criterion value is kept in the run's
:class:`~conr.cluster.partition.Partition`. Measurements: docs/final-stage.md.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .policy import (CONSENSUS, CONSENSUS_RUNS, DEFAULT_JOINT_GRAPH, DEFAULT_RULE, GRAPH_NEIGHBORS, JOINT_GRAPHS,
                     JOINT_RULES, RULES, SILHOUETTE_SAMPLES, STABILITY_RESAMPLES, STABILITY_SHARE, away_silhouette,
                     DEFAULT_WARMUP_WEIGHT, WARMUP, WARMUP_WEIGHTS, best_by, derived_score, joint_way, preferred_for,
                     shared_weights, vote_weights)

__all__ = ["Candidate", "ALGORITHMS", "cluster_representation", "algorithm_labels", "score_candidates",
           "weighted_vote", "consensus_candidate", "choose", "unit_rows", "normalized_cut", "sampled_silhouette", "FinalStage"]

ALGORITHMS = ("kmeans", "spectral", "umap_gmm")


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
    combined: str | None = None            # the joint candidate: how it combined the views (policy.joint_way) ...
    shared: float | None = None            # ... from the fraction of a point's neighbours they share
    started: int | None = None             # UMAP + GMM: layouts whose mixture fitted best from a start partition
    silhouettes: dict = field(default_factory=dict)  # silhouette in each representation's UMAP embedding

    @property
    def name(self) -> str:
        return f"{self.algorithm}/{self.representation}"

    def row(self) -> dict:
        return {"name": self.name, "algorithm": self.algorithm, "representation": self.representation,
                "seconds": round(self.seconds, 2), **({"layouts": self.layouts} if self.layouts else {}),
                **({"started": self.started} if self.layouts else {}),
                **({"combined": self.combined, "shared": round(self.shared, 4)} if self.combined else {}),
                **({"silhouette_in": {k: round(float(v), 4) for k, v in self.silhouettes.items()}}
                   if self.silhouettes else {}),
                **{k: round(float(v), 4) for k, v in self.scores.items()}}


def unit_rows(x: np.ndarray) -> np.ndarray:
    """The rows of ``x`` scaled to unit length (float32; an all-zero row stays zero): vectors
    compared by direction, as the learned features are (an encoder's pooled activations take a
    square root first: :func:`conr.encoders.directions.feature_directions`)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=10, random_state=seed).fit_predict(x).astype(np.int64)


def algorithm_labels(algorithm: str, x: np.ndarray, n_clusters: int, seed: int,
                     mixture_starts: bool = True) -> np.ndarray:
    """``algorithm``'s partition of ``x`` on its own: k-means, spectral, or UMAP + GMM of one
    layout, its mixture also started from k-means of ``x`` with ``mixture_starts`` (the final
    stage's consensus of several, started from every partition of ``x`` it has, is made by
    :func:`cluster_representation`)."""
    from .manifold import umap_gmm_consensus, umap_neighbors
    from .spectral import spectral_labels

    if algorithm == "kmeans":
        return _kmeans(x, n_clusters, seed)
    if algorithm == "spectral":
        return spectral_labels(x, n_clusters, seed)
    return umap_gmm_consensus(x, n_clusters, seed, umap_neighbors(len(x), n_clusters), runs=1,
                              starts=[_kmeans(x, n_clusters, seed)] if mixture_starts else ()).labels


def cluster_representation(x: np.ndarray, name: str, n_clusters: int, seed: int = 0,
                           algorithms=ALGORITHMS, given: dict | None = None, runs: int = CONSENSUS_RUNS,
                           max_seconds: float | None = None,
                           mixture_starts: bool = True) -> tuple[list[Candidate], np.ndarray]:
    """Every algorithm's partition of one representation ``x`` [N, D], and its UMAP
    embedding (for the criteria). ``given``: labels already computed, by algorithm
    (the training loop's last k-means, say), used instead of computing them again.
    ``runs``, ``max_seconds``: the UMAP + GMM consensus's layouts, and the time they may
    take (fewer where it is short: :func:`~conr.cluster.manifold.affordable_runs`). The
    other partitions are made first: with ``mixture_starts`` each layout's mixture also
    starts from each of them and keeps the fit of the highest likelihood
    (:func:`~conr.cluster.manifold.fit_gmm_posterior`)."""
    from .manifold import manifold_dims, umap_embedding, umap_gmm_consensus, umap_neighbors

    given = dict(given or {})
    algorithms = [a for a in algorithms if not (a == "kmeans" and "seeded_kmeans" in given)] + \
        [a for a in given if a not in algorithms]
    unknown = [a for a in algorithms if a not in ALGORITHMS and a not in given]
    if unknown:
        raise ValueError(f"unknown final-stage algorithm {unknown[0]!r}; choose from {ALGORITHMS}")
    made: dict[str, Candidate] = {}
    for algo in algorithms:
        if algo == "umap_gmm" and algo not in given:
            continue
        start = time.perf_counter()
        if algo in given:  # labels the caller computed (the training's own k-means, say)
            labels = np.asarray(given[algo], dtype=np.int64)
        else:
            labels = algorithm_labels(algo, x, n_clusters, seed)
        made[algo] = Candidate(algo, name, labels, time.perf_counter() - start)
    n_neighbors = umap_neighbors(len(x), n_clusters)
    start = time.perf_counter()
    if "umap_gmm" in algorithms and "umap_gmm" not in given:  # its first run's embedding serves the criteria
        manifold = umap_gmm_consensus(x, n_clusters, seed=seed, n_neighbors=n_neighbors, runs=runs,
                                      max_seconds=max_seconds,
                                      starts=[c.labels for c in made.values()] if mixture_starts else ())
        emb = manifold.embedding
        made["umap_gmm"] = Candidate("umap_gmm", name, manifold.labels, time.perf_counter() - start,
                                     manifold.confidence, layouts=manifold.runs, started=manifold.started)
    else:
        emb = umap_embedding(x, manifold_dims(len(x), n_clusters), n_neighbors=n_neighbors, seed=seed)
    return [made[a] for a in algorithms], emb


def sampled_silhouette(emb: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """The silhouette of ``labels`` in ``emb`` on at most :data:`~conr.cluster.policy.SILHOUETTE_SAMPLES`
    rows drawn with ``seed`` (the same rows for every partition of the same rows); -1 for one cluster."""
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

    if {"silhouette_umap", "prefer_features", "manifold", *JOINT_RULES} & set(rules):
        for c in cands:  # in every representation's embedding, each kept (c.silhouettes), and their mean
            c.silhouettes = {name: sampled_silhouette(e, c.labels, seed) for name, e in embeddings.items()}
            c.scores["silhouette_umap"] = float(np.mean(list(c.silhouettes.values())))
    if "agreement" in rules:
        for c in cands:
            others = [nmi(c.labels, o.labels) for o in cands if o is not c]
            c.scores["agreement"] = float(np.mean(others)) if others else 0.0
    preferred = preferred_for(c.name for c in cands)
    for rule in ("prefer_features", "manifold", "joint"):  # silhouette_umap, with head starts
        if rule in rules:
            for c in cands:
                c.scores[rule] = derived_score(rule, c.name, c.algorithm, c.scores["silhouette_umap"], preferred)
    if "away" in rules:  # joint's head starts on the silhouette in the other representations' embeddings
        for c in cands:
            c.scores["away"] = derived_score("away", c.name, c.algorithm,
                                             away_silhouette(c.silhouettes, c.representation), preferred)
    if "consensus" in rules:  # agreement with the consensus of all, where it was made
        made = next((c for c in cands if c.name == CONSENSUS), None)
        if made is not None:
            for c in cands:
                c.scores["consensus"] = 1.0 if c is made else float(nmi(made.labels, c.labels))
    if "ncut" in rules:
        graph = None
        for x in reps.values():
            g = _knn_graph(x, GRAPH_NEIGHBORS)
            graph = g if graph is None else graph + g
        for c in cands:  # an empty cluster counts as fully cut (a collapsed partition cuts few links)
            empty = n_clusters - len(np.unique(c.labels))
            c.scores["ncut"] = 1.0 - (normalized_cut(graph, c.labels) + empty) / n_clusters


def weighted_vote(labelings, n_clusters: int, seed: int = 0, warmup=(), warmup_share: float | None = None
                  ) -> np.ndarray:
    """``n_clusters`` clusters of the co-association matrix of ``labelings``
    (:func:`~conr.cluster.consensus.consensus_partition`), each labeling's vote counted by its
    agreement with the others (:func:`conr.cluster.policy.vote_weights`): the default ending's vote.
    ``warmup``: one mark a labeling, true for the warm-up's; together they hold ``warmup_share`` of
    the vote (:func:`conr.cluster.policy.shared_weights`; None: each by its own weight)."""
    from .consensus import agreement, consensus_partition

    weights = shared_weights(vote_weights(agreement(labelings)), warmup, warmup_share)
    return consensus_partition(labelings, n_clusters, seed=seed, weights=weights)


def consensus_candidate(cands: list[Candidate], n_clusters: int, seed: int = 0,
                        warmup_share: float | None = WARMUP_WEIGHTS[DEFAULT_WARMUP_WEIGHT]) -> Candidate:
    """``consensus/candidates``: the :func:`weighted_vote` of every candidate's labels: two images
    belong together as often as the candidates put them together, so an error only some
    candidates make is outvoted. The warm-up's candidates (representation ``warmup``) hold
    ``warmup_share`` of the vote between them."""
    start = time.perf_counter()
    labels = weighted_vote([c.labels for c in cands], n_clusters, seed, warmup=[c.representation == WARMUP for c in cands],
                           warmup_share=warmup_share)
    algorithm, representation = CONSENSUS.split("/")
    return Candidate(algorithm, representation, labels, time.perf_counter() - start)


def choose(cands: list[Candidate], rule: str = DEFAULT_RULE) -> Candidate:
    """The candidate ``rule`` chooses (:func:`conr.cluster.policy.best_by`)."""
    return best_by(cands, rule)


class FinalStage:
    """The final stage over fixed representations: the input once (the pixels, or the vectors
    a run started from: they do not change during training), the features every time it is
    asked. :meth:`prepare` makes the input's candidates and records what they cost
    (``input_seconds``, and ``compile_seconds`` of UMAP's one-time compilation), so that a
    time budget can reserve the later passes.

    >>> stage = FinalStage(pixels, n_clusters=10, seed=0)
    >>> best, table = stage.run(features, given={"kmeans": pseudo_labels})
    """

    def __init__(self, inputs: np.ndarray | None, n_clusters: int, seed: int = 0, rule: str = DEFAULT_RULE,
                 algorithms=ALGORITHMS, log=None, consensus_runs: int = CONSENSUS_RUNS,
                 consensus_seconds: float | None = None, input_name: str = "pixels", mixture_starts: bool = True,
                 joint_graph: str = DEFAULT_JOINT_GRAPH, joint_inputs: np.ndarray | None = None,
                 warmup_share: float | None = WARMUP_WEIGHTS[DEFAULT_WARMUP_WEIGHT]):
        if rule not in RULES:
            raise ValueError(f"unknown final-stage rule {rule!r}; choose one of {RULES}")
        if int(consensus_runs) < 1:
            raise ValueError(f"consensus_runs={consensus_runs}: a consensus needs at least one UMAP layout")
        self.inputs = None if inputs is None else np.asarray(inputs, dtype=np.float32)
        # the input's rows as the joint candidate's graph reads them, where not as its own candidates do (measured
        # by benchmarks/input_geometry.py: the joint graph's input as it comes, the candidates by direction)
        self.joint_inputs = None if joint_inputs is None or inputs is None else np.asarray(joint_inputs, np.float32)
        self.input_name = input_name
        self.mixture_starts = bool(mixture_starts)   # UMAP + GMM's mixtures also start from the other partitions
        joint_way(1.0, joint_graph)                  # an unknown graph is named here, not after the training
        self.joint_graph = joint_graph               # how the joint candidate combines the views' graphs
        self.n_clusters, self.seed, self.rule, self.algorithms = int(n_clusters), int(seed), rule, tuple(algorithms)
        self.warmup_share = warmup_share             # the warm-up's candidates' part of the vote (None: by count)
        # the layouts every consensus of the run is made of: the input's consensus may make fewer where
        # consensus_seconds is short (it is timed first), and the later ones then make as many
        self.consensus_runs, self.consensus_seconds = int(consensus_runs), consensus_seconds
        self.log = log or (lambda *a: None)
        self.input_seconds: float | None = None     # what the input's candidates took (prepare)
        self.compile_seconds: float = 0.0           # UMAP's one-time compilation before them
        self._input_cands: list[Candidate] | None = None
        self._input_emb: np.ndarray | None = None
        self._input_graph = None
        self._input_neighbors = None
        self._embeddings: dict = {}
        self._reps: dict = {}
        self._stability: dict = {}   # the stability rule's values: the input's candidates' kept across passes

    def with_k(self, n_clusters: int) -> "FinalStage":
        """The same stage for another K (the input kept; its candidates made again when asked)."""
        return FinalStage(self.inputs, n_clusters, self.seed, self.rule, self.algorithms, self.log,
                          self.consensus_runs, self.consensus_seconds, self.input_name, self.mixture_starts,
                          self.joint_graph, self.joint_inputs, self.warmup_share)

    def prepare(self) -> float:
        """Compile UMAP (once a process) and make the input's candidates, timed; returns the
        seconds the candidates took (0 without an input)."""
        from .manifold import warm_up_umap

        self.compile_seconds = warm_up_umap() if self.inputs is not None else 0.0
        start = time.perf_counter()
        self.input_candidates()
        self.input_seconds = time.perf_counter() - start
        if self.inputs is not None:
            self.log(f"final stage: {self.input_name} candidates in {self.input_seconds:.1f} s (after "
                     f"{self.compile_seconds:.1f} s of UMAP's one-time compilation)")
        return self.input_seconds

    def input_candidates(self) -> tuple[list[Candidate], np.ndarray | None]:
        if self.inputs is None:
            return [], None
        if self._input_cands is None:
            self._input_cands, self._input_emb = cluster_representation(
                self.inputs, self.input_name, self.n_clusters, self.seed, self.algorithms, runs=self.consensus_runs,
                max_seconds=self.consensus_seconds, mixture_starts=self.mixture_starts)
            made = next((c for c in self._input_cands if c.layouts), None)
            if made is not None and made.layouts < self.consensus_runs:
                self.log(f"final stage: UMAP + GMM consensus of {made.layouts} layouts, not {self.consensus_runs} "
                         f"(the {self.input_name}' took {made.seconds:.0f} s; {self.consensus_seconds:.0f} s allowed)")
                self.consensus_runs = made.layouts
        return self._input_cands, self._input_emb

    def joint_in_play(self) -> bool:
        """Whether :meth:`run` makes the joint candidate (the input is a candidate, and so is UMAP + GMM)."""
        return self.inputs is not None and "umap_gmm" in self.algorithms

    def joint_candidate(self, features: np.ndarray, starts=()) -> Candidate:
        """UMAP + GMM (consensus) of the features and the input together: it weighs both
        representations instead of choosing one. Where their neighbour graphs share enough
        links (:func:`~conr.cluster.policy.joint_way`), of their fuzzy intersection (a link
        strong only where both hold it) or, with ``joint_graph`` ``union``, their fuzzy union (a
        link either holds, stronger where both do); where they share almost none, of the two
        side by side (:func:`~conr.cluster.manifold.side_by_side`). The input's graph is made
        from :attr:`joint_inputs` where given (else the candidates' rows). ``starts``: partitions
        each layout's mixture also starts from (:func:`~conr.cluster.manifold.fit_gmm_posterior`)."""
        from .manifold import (exact_neighbors, fuzzy_graph, graph_umap_gmm_consensus, intersect_graphs,
                               shared_neighbors, side_by_side, umap_gmm_consensus, umap_neighbors, union_graphs)

        start = time.perf_counter()
        rows = self.inputs if self.joint_inputs is None else self.joint_inputs
        nn = umap_neighbors(len(features), self.n_clusters)
        if self._input_neighbors is None:
            self._input_neighbors = exact_neighbors(rows, nn)
        own = exact_neighbors(features, nn)
        shared = shared_neighbors(own[0], self._input_neighbors[0])
        way = joint_way(shared, self.joint_graph)
        if way in JOINT_GRAPHS:
            if self._input_graph is None:
                self._input_graph = fuzzy_graph(rows, nn, self.seed, neighbors=self._input_neighbors)
            combine = union_graphs if way == "union" else intersect_graphs
            graph = combine(fuzzy_graph(features, nn, self.seed, neighbors=own), self._input_graph)
            made = graph_umap_gmm_consensus(graph, self.n_clusters, self.seed, runs=self.consensus_runs,
                                            starts=starts)
        else:
            made = umap_gmm_consensus(side_by_side(features, rows), self.n_clusters, self.seed, nn,
                                      runs=self.consensus_runs, starts=starts)
        self.log(f"final stage: the features and the {self.input_name} share {shared:.0%} of a point's {nn} "
                 f"neighbours: the joint candidate by {way}")
        return Candidate("umap_gmm", "joint", made.labels, time.perf_counter() - start, made.confidence,
                         layouts=made.runs, combined=way, shared=shared, started=made.started)

    def run(self, features: np.ndarray, given: dict | None = None, extra: list[Candidate] | None = None,
            rule: str | None = None) -> tuple[Candidate, list[Candidate]]:
        """Candidates on ``features`` (unit rows) and the input, plus ``extra`` ones,
        scored; returns (the chosen one, all of them). ``rule``: the stage's own by default
        (stage 2's seed passes :func:`~conr.cluster.policy.seed_rule` of it)."""
        feats = unit_rows(features)
        own, own_emb = self.input_candidates()
        # under the joint and away rules the features' own UMAP + GMM is not chosen where the joint one is
        # made: one layout (the one the criteria need anyway) lists it, a consensus would only cost time
        runs = 1 if self.rule in (*JOINT_RULES, "consensus") and self.joint_in_play() else self.consensus_runs
        cands, emb = cluster_representation(feats, "features", self.n_clusters, self.seed, self.algorithms, given,
                                            runs=runs, mixture_starts=self.mixture_starts)
        embeddings, reps = {"features": emb}, {"features": feats}
        if own:
            cands = cands + list(own)
            embeddings[self.input_name], reps[self.input_name] = own_emb, self.inputs
            if self.joint_in_play():  # its mixtures also start from both views' other partitions
                starts = [c.labels for c in cands if c.algorithm != "umap_gmm"] if self.mixture_starts else ()
                cands.append(self.joint_candidate(feats, starts))
        self._embeddings, self._reps = embeddings, reps
        if self.rule == "stability":
            self._stability = {k: v for k, v in self._stability.items() if k.endswith("/" + self.input_name)}
            for c in cands:
                if c.name not in self._stability and c.algorithm in ALGORITHMS:
                    self._stability[c.name] = self.stability(c, feats)
        return self.rescore(cands + list(extra or []), rule)

    def stability(self, cand: Candidate, features: np.ndarray) -> float:
        """How well ``cand``'s algorithm finds its partition again: run again on
        :data:`~conr.cluster.policy.STABILITY_RESAMPLES` random subsamples of
        :data:`~conr.cluster.policy.STABILITY_SHARE` of the rows (``features``: the unit rows
        of :meth:`run`), each from another seed, the mean adjusted Rand index of each new
        partition with ``cand``'s own on the same rows."""
        from sklearn.metrics import adjusted_rand_score

        start = time.perf_counter()
        rng = np.random.default_rng(self.seed + 7)
        n, k = len(cand.labels), self.n_clusters
        values = []
        for r in range(1, STABILITY_RESAMPLES + 1):
            idx = np.sort(rng.choice(n, int(round(STABILITY_SHARE * n)), replace=False))
            seed = self.seed + r
            if cand.representation == "joint":
                again = FinalStage(self.inputs[idx], k, seed, consensus_runs=1, input_name=self.input_name,
                                   joint_graph=self.joint_graph,
                                   joint_inputs=None if self.joint_inputs is None else self.joint_inputs[idx]
                                   ).joint_candidate(features[idx]).labels
            else:
                x = (features if cand.representation == "features" else self.inputs)[idx]
                again = algorithm_labels(cand.algorithm, x, k, seed, self.mixture_starts)
            values.append(adjusted_rand_score(cand.labels[idx], again))
        self.log(f"final stage: {cand.name} stability {np.mean(values):.3f} ({time.perf_counter() - start:.1f} s)")
        return float(np.mean(values))

    def rescore(self, cands: list[Candidate], rule: str | None = None) -> tuple[Candidate, list[Candidate]]:
        """Score ``cands`` against the representations of the last :meth:`run` and choose by
        ``rule`` (the stage's own by default; under ``consensus`` the consensus of ``cands`` is
        made again first)."""
        rule = rule or self.rule
        cands = [c for c in cands if c.name != CONSENSUS]
        if rule == "consensus" and len(cands) >= 2:
            cands.append(consensus_candidate(cands, self.n_clusters, self.seed, self.warmup_share))
        for c in cands:
            c.scores = {}
        score_candidates(cands, self._embeddings, self._reps, self.n_clusters, self.seed)
        for c in cands:
            if c.name in self._stability:
                c.scores["stability"] = self._stability[c.name]
        best = choose(cands, rule)
        self.log("final stage: " + ", ".join(f"{c.name} {c.scores[rule]:.3f}" if rule in c.scores else
                                             f"{c.name} (no {rule})" for c in cands) + f" -> {best.name} ({rule})")
        return best, cands
