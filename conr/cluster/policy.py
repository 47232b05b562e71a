"""The final stage's policy, in one place: which candidate it chooses, who may compete,
how many UMAP layouts a consensus may take, and when a time budget leaves stage 2 its seed.

Everything here is a named constant or a small function of plain values; the stage itself
(:mod:`conr.cluster.final`) makes and scores the candidates, the budget
(:mod:`conr.auto.budget`) sizes the epochs. Why each value is what it is, with the runs
that measured it: docs/final-stage.md.

The rules are label-free. ``joint`` gives each candidate partition the mean silhouette of
its clusters in every representation's UMAP embedding, plus head starts:

* :data:`PRIOR_MARGIN` for the partition the training is for (:func:`preferred_for`: UMAP +
  GMM of the learned features, or of the joint graph of the features and the input where
  there is one);
* :data:`MANIFOLD_MARGIN` for the manifold step's partitions (:data:`MANIFOLD_ALGORITHMS`)
  over k-means and spectral ones, under the ``manifold`` and ``joint`` rules;
* under ``joint``, where the joint candidate is made, the features' own candidates do not
  compete (:func:`eligible`): silhouette cannot compare representations.

The ``stability`` rule lets silhouette choose only within a representation: each
representation's candidate of the highest ``joint`` value, then, among those, the most
stable (:data:`STABILITY_SHARE`, :data:`STABILITY_RESAMPLES`: its algorithm run again on
random subsamples from other seeds, the adjusted Rand index with its own partition there).
Agreement between two partitions of the same images means the same whichever
representation made them, which silhouette does not. Candidates no algorithm can make
again (the training's carried labels, the self-labelled partition) are not chosen by it.

The ``away`` rule (:data:`DEFAULT_RULE` from 2026-12-04 to 2026-12-06, :data:`CHOICE_RULE` since) is ``joint`` with each candidate's
silhouette taken only in the embeddings of the *other* representations
(:func:`away_silhouette`): a partition made in one view is judged in the views it was not made
in, where the tight clumps of its own layout do not count for it; a candidate made of no single
representation (the joint one) is judged in all. With no training it kept the joint candidate
(0.452) where ``joint`` took the pixels' UMAP + GMM (0.221) on CIFAR-10; on 16 candidate tables
of whole runs both chose the same (docs/final-stage.md, "Judged away from home").

The ``consensus`` rule chooses no single candidate: it makes :data:`CONSENSUS`, the
co-association consensus of all of them (:mod:`conr.cluster.consensus`), and takes it;
every candidate's value under it is its NMI with that consensus. Each candidate's vote counts
by its agreement with the others (:func:`vote_weights`: its mean adjusted Rand index with them,
to the power :data:`AGREEMENT_POWER`), so weak candidates that agree with nobody do not outvote
the rest. The other rules never choose the consensus candidate. It is :data:`DEFAULT_RULE` since
2026-12-06 (docs/final-stage.md, "The weighted consensus as the default"): replayed on the 192 kept
runs made under ``away``, it lifted the mean ACC from 0.750 to 0.755 and the runs within 0.01 of
their best candidate from 88 to 99. Under it stage 2's seed is still one candidate, chosen by
:data:`CHOICE_RULE` (:func:`seed_rule`), so the training is the one those runs measured; the consensus
as the seed (``cluster.seed_rule=consensus``) gained on ORL and was level on COIL-20 and digits in 15 paired
whole runs (docs/final-stage.md, "The consensus as stage 2's seed").
"""
from __future__ import annotations

__all__ = ["RULES", "DEFAULT_RULE", "JOINT_GRAPHS", "DEFAULT_JOINT_GRAPH", "PREFERRED", "JOINT", "PRIOR_MARGIN", "MANIFOLD_MARGIN", "MANIFOLD_ALGORITHMS", "JOINT_RULES",
           "GRAPH_NEIGHBORS", "JOINT_MIN_SHARED", "STABILITY_SHARE", "STABILITY_RESAMPLES", "SILHOUETTE_SAMPLES",
           "CONSENSUS_RUNS", "CLUSTERING_SHARE", "CONSENSUS_SHARE", "MAX_INPUT_ROWS", "SMALL_CLUSTER_MEMBERS", "SELF_LABEL_MIN_MEMBERS", "CONSENSUS", "AGREEMENT_POWER", "TWO_STAGE_METHODS",
           "CHOICE_RULE", "WARMUP", "WARMUP_VOTERS", "WARMUP_WEIGHTS", "DEFAULT_WARMUP_WEIGHT", "FEATURES_VOTE", "SEED_RULES", "seed_rule", "warmup_voters", "preferred_for", "vote_weights", "shared_weights", "joint_way", "derived_score", "away_silhouette", "eligible", "best_by", "affordable_runs",
           "consensus_allowance", "reserved_seconds", "refresh_epochs", "seed_fits"]

# ----------------------------------------------------------------------------- choosing

RULES = ("joint", "manifold", "prefer_features", "silhouette_umap", "agreement", "ncut", "consensus", "stability",
         "away")
DEFAULT_RULE = "consensus"
CHOICE_RULE = "away"              # where one candidate must be chosen: stage 2's seed under consensus, and its fallback
WARMUP = "warmup"                 # the representation name of the warm-up's candidates in the ending's vote ...
WARMUP_VOTERS = ("kmeans/features", "spectral/features", "umap_gmm/features")  # ... those on its features
# ... and their part of the vote (cluster.warmup_weight): half (the training before stage 2 and after it count
# alike, however many candidates each has) | count (each candidate by its own weight, 3 of 11 or so)
WARMUP_WEIGHTS = {"half": 0.5, "count": None}
DEFAULT_WARMUP_WEIGHT = "half"
FEATURES_VOTE = "features_consensus"  # a seed rule only: the weighted vote of the candidates on the features alone
SEED_RULES = (*RULES, FEATURES_VOTE)
JOINT_RULES = ("joint", "away")   # where the joint candidate is made, the features' own candidates do not compete
PREFERRED = "umap_gmm/features"   # the manifold step on the learned features: N2D's ending, after training
JOINT = "umap_gmm/joint"          # ... on the intersection (or union) of the features' and the input's neighbour graphs
CONSENSUS = "consensus/candidates"  # the co-association consensus of every candidate (the consensus rule's choice)
AGREEMENT_POWER = 4               # a candidate's vote in it: its mean adjusted Rand index with the others, to this power
PRIOR_MARGIN = 0.05               # silhouette another candidate must gain over the preferred one to be chosen
MANIFOLD_MARGIN = 0.05            # the manifold rule's further head start for the manifold step's partitions
MANIFOLD_ALGORITHMS = ("umap_gmm", "self_label")
GRAPH_NEIGHBORS = 10              # the ncut criterion's k-NN graph of each representation
JOINT_MIN_SHARED = 0.1            # the joint candidate combines the two neighbour graphs where they share at least
                                  # this fraction of a point's neighbours; below it, it lays the views side by side
JOINT_GRAPHS = ("intersection", "union")   # how it combines them (cluster.joint_graph)
DEFAULT_JOINT_GRAPH = "intersection"
STABILITY_SHARE = 0.8             # the stability rule's subsamples: this share of the images, drawn at random ...
STABILITY_RESAMPLES = 2           # ... this many times, each clustered again from another seed
SILHOUETTE_SAMPLES = 3000         # silhouette on at most this many points (sampled with the run's seed)


def joint_way(shared: float, graph: str = DEFAULT_JOINT_GRAPH) -> str:
    """How the joint candidate combines the features and the input, from ``shared``, the
    mean fraction of a point's neighbours the two views hold in common: by ``graph``
    (:data:`JOINT_GRAPHS`: the ``union`` of their neighbour graphs, a link either view holds,
    stronger where both do; or their ``intersection``, a link strong only where both hold it)
    where they share at least :data:`JOINT_MIN_SHARED`, ``concatenation`` below (graphs that
    share almost no links are two unrelated views: an intersection keeps almost nothing and
    falls apart into pieces, a union mixes neighbours that have nothing in common).

    The union was measured against the default intersection on vectors, where the head's
    views are the input's nearest rows and an intersection drops the links the head adds
    (docs/final-stage.md, "Union or intersection"; docs/results.md, "The joint candidate of the
    union"): in whole encoder-path runs it lifted the held-back photo folders (0.484 -> 0.542,
    0.567 -> 0.599) and COIL-20 (0.969 -> 0.978) but cost CIFAR-10 3.9 points (2 seeds) and
    ORL 0.8, so it is a setting, not the default.
    """
    if graph not in JOINT_GRAPHS:
        raise ValueError(f"unknown joint graph {graph!r}; choose one of {JOINT_GRAPHS}")
    return graph if shared >= JOINT_MIN_SHARED else "concatenation"


def vote_weights(agreements) -> list[float] | None:
    """Each candidate's vote in the consensus from its mean adjusted Rand index with the others
    (negative counts as none), to the power :data:`AGREEMENT_POWER`; None (equal votes) where no
    candidate agrees with another. Measured on 248 kept runs (docs/final-stage.md, "Votes instead of
    a choice"): the power 4 left the fewest runs more than 0.01 under their best candidate."""
    weights = [max(0.0, float(a)) ** AGREEMENT_POWER for a in agreements]
    return weights if sum(weights) > 0 else None


def shared_weights(weights, in_share, share: float | None) -> list[float] | None:
    """``weights`` (one a candidate; None: equal) rescaled so that the candidates ``in_share`` marks
    hold ``share`` of the total and the others the rest, each side keeping its own proportions;
    unchanged where ``share`` is None or either side holds no weight.

    The ending's vote under ``cluster.warmup_weight=half`` (:data:`WARMUP_WEIGHTS`): the end's
    candidates all come from features stage 2 pulled towards one seed, so where the seed was wrong
    they agree on its error and, counted one by one, outvote the warm-up's three (digits seed 2 of
    2026-12-06: the end's eight 0.87-0.91, the warm-up's k-means and UMAP + GMM 0.951, the vote 0.905).
    Counted as two witnesses, the end and the warm-up, each half (docs/final-stage.md, "The warm-up
    as half of the vote")."""
    marks = [bool(m) for m in in_share]
    if share is None or not any(marks) or all(marks):
        return weights
    w = [1.0] * len(marks) if weights is None else [float(v) for v in weights]
    inside = sum(v for v, m in zip(w, marks) if m)
    outside = sum(v for v, m in zip(w, marks) if not m)
    if inside <= 0 or outside <= 0:
        return weights
    return [v * (share / inside if m else (1.0 - share) / outside) for v, m in zip(w, marks)]


def warmup_voters(seed_candidates: dict, rule: str, votes: bool = True) -> dict:
    """The warm-up's candidates that vote in the ending (``cluster.warmup_votes``): those stage 2's seed
    was chosen among that were made on the warm-up's features (:data:`WARMUP_VOTERS`; the input's
    are the end's own again), under the ``consensus`` rule only (a vote; a rule that chooses one
    candidate chooses among the end's). ``seed_candidates``: {name: labels}; returns {algorithm: labels}.

    Stage 2 pulls the features towards its seed, so a seed's error is carried into every candidate of
    the end, which then agree with each other on it; the warm-up's features were not trained on the
    seed. Replayed on 15 whole runs of the defaults of 2026-12-06 (``benchmarks/warmup_vote.py``), the
    vote with them was ahead in 9 and behind in 1: COIL-20 0.965 -> 0.976, ORL 0.790 -> 0.796, digits
    0.940 -> 0.941, CIFAR-10 0.517 level (docs/final-stage.md, "The warm-up's candidates in the vote").
    Together they hold half of the vote (:data:`WARMUP_WEIGHTS`, :func:`shared_weights`)."""
    if not votes or rule != "consensus":
        return {}
    return {name.split("/")[0]: labels for name, labels in seed_candidates.items() if name in WARMUP_VOTERS}


def seed_rule(rule: str, choice: str = "auto") -> str:
    """The rule that chooses stage 2's seed (and its refreshes) in a run under ``rule``: ``choice``
    where it names one (``cluster.seed_rule``), else the rule itself, but :data:`CHOICE_RULE` under
    ``consensus``. A seed is a partition the training then pulls the features towards; as the seed, the
    consensus gained 1.0 point on ORL and was level on COIL-20 and digits in 15 whole runs paired with
    the default's (the same warm-ups; benchmarks/seed_rule.py), too little on one set to change it.
    :data:`FEATURES_VOTE` (a seed rule only) seeds stage 2 with the weighted vote of the candidates made
    on the warm-up's features alone, leaving out the input's and the joint one, which carry the input's
    errors: in 15 whole runs paired with the default's (benchmarks/seed_rule.py) it ended 1.7 points
    higher on digits and 0.4 on COIL-20 but 1.0 lower on ORL (five runs of six) and 0.7 on CIFAR-10:
    the end then repeats the seed's three instead of adding a second view to them, so not the default."""
    if rule not in RULES:
        raise ValueError(f"unknown cluster.final_rule {rule!r}; choose one of {RULES}")
    if choice == "auto":
        return CHOICE_RULE if rule == "consensus" else rule
    if choice not in SEED_RULES:
        raise ValueError(f"unknown cluster.seed_rule {choice!r}; choose auto or one of {SEED_RULES}")
    return choice


def preferred_for(names) -> str:
    """The candidate name that gets the head start among ``names``: :data:`JOINT` where it
    is one of them, else :data:`PREFERRED`."""
    return JOINT if JOINT in set(names) else PREFERRED


def derived_score(rule: str, name: str, algorithm: str, silhouette: float, preferred: str = PREFERRED) -> float:
    """The value of a rule derived from a silhouette (``prefer_features``, ``manifold``,
    ``joint`` from ``silhouette_umap``; ``away`` from :func:`away_silhouette`) for the
    candidate ``name`` made by ``algorithm``: the silhouette plus the rule's head starts."""
    value = silhouette + (PRIOR_MARGIN if name == preferred else 0.0)
    if rule in ("manifold", *JOINT_RULES) and algorithm in MANIFOLD_ALGORITHMS:
        value += MANIFOLD_MARGIN
    return value


def away_silhouette(silhouettes: dict, representation: str) -> float:
    """The ``away`` rule's silhouette: the mean of ``silhouettes`` ({embedding: value}) over
    the embeddings other than ``representation``'s own; all of them where it has none among
    them (the joint candidate, the consensus) or no other is there."""
    away = [v for k, v in silhouettes.items() if k != representation] or list(silhouettes.values())
    return float(sum(away) / len(away))


def eligible(cands: list, rule: str, representation=lambda c: c.representation, name=lambda c: c.name,
             scores=lambda c: c.scores) -> list:
    """The candidates ``rule`` may choose: under ``joint``, where the joint candidate is
    one, not those of the features alone (the joint one holds the features, and silhouette
    cannot compare representations); the rest compete with it, the input's for a run too
    short to learn. Under ``stability``, each representation's candidate of the highest
    ``joint`` value among those with a measured stability. ``away`` leaves out what ``joint``
    does (:data:`JOINT_RULES`). Under ``consensus``, :data:`CONSENSUS` alone (:func:`best_by`
    takes the default's choice where it was not made); under the others, any candidate but
    :data:`CONSENSUS`.
    ``representation`` / ``name`` / ``scores``: how to read a candidate (a
    :class:`~conr.cluster.final.Candidate`, or a row of a saved candidate table)."""
    if rule == "consensus":
        return [c for c in cands if name(c) == CONSENSUS]
    cands = [c for c in cands if name(c) != CONSENSUS]
    if rule == "stability":  # each representation's choice by the joint value, where a stability was measured
        cands = [c for c in cands if scores(c).get("stability") is not None]
        firsts: dict = {}
        for c in cands:
            held = firsts.get(representation(c))
            if held is None or scores(c)["joint"] > scores(held)["joint"]:
                firsts[representation(c)] = c
        return list(firsts.values())
    if rule in JOINT_RULES and any(name(c) == JOINT for c in cands):
        return [c for c in cands if representation(c) != "features"]
    return list(cands)


def best_by(cands: list, rule: str, score=lambda c, rule: c.scores[rule], **read):
    """The eligible candidate of the highest ``rule`` score (ties: the earlier one)."""
    if rule not in RULES:
        raise ValueError(f"unknown final-stage rule {rule!r}; choose one of {RULES}")
    best = None
    if rule == "consensus" and not any(read.get("name", lambda c: c.name)(c) == CONSENSUS for c in cands):
        rule = CHOICE_RULE  # no consensus was made (fewer than two candidates): one candidate, chosen
    pool = eligible(cands, rule, **read)
    if rule == "stability" and not pool:  # no stability was measured: one candidate, chosen by the choice rule
        rule, pool = CHOICE_RULE, eligible(cands, CHOICE_RULE, **read)
    for c in pool:
        if best is None or score(c, rule) > score(best, rule):
            best = c
    return best


# ----------------------------------------------------------------------------- its cost

CONSENSUS_RUNS = 5          # UMAP layouts (seeds) a UMAP + GMM consensus is made of, at most; odd
CLUSTERING_SHARE = 1 / 3    # two passes of the candidates (stage 2's seed and the end) may take this share
CONSENSUS_SHARE = CLUSTERING_SHARE / 8   # one consensus's layouts may take this share of the budget
MAX_INPUT_ROWS = 200_000    # beyond this the input's own candidates are skipped (memory and UMAP time)
SMALL_CLUSTER_MEMBERS = 40   # a cluster expecting fewer members (N / K) is small: no self-labelling, and stage 2
                             # keeps its neighbours within a pseudo-cluster (conr.auto.settings.within_clusters)
SELF_LABEL_MIN_MEMBERS = SMALL_CLUSTER_MEMBERS  # a cluster head learns from a cluster's confident half
TWO_STAGE_METHODS = ("conr", "simsiam_connr", "moco_connr")   # methods with a stage 2 to seed


def affordable_runs(layout_seconds: float, max_seconds: float | None, cap: int = CONSENSUS_RUNS) -> int:
    """The most layouts, odd (a consensus of two has no majority) and at most ``cap``,
    that take at most ``max_seconds`` at ``layout_seconds`` each; at least one. None:
    no time limit, ``cap``."""
    if max_seconds is None or layout_seconds <= 0:
        return int(cap)
    runs = int(max_seconds // layout_seconds)
    runs = runs if runs % 2 else runs - 1
    return int(max(1, min(cap, runs)))


def consensus_allowance(minutes: float | None) -> float | None:
    """Seconds one UMAP + GMM consensus may take in a ``minutes`` budget (None: no limit):
    :data:`CONSENSUS_SHARE` of it, half of what each of the four input-stage equivalents a
    seeded run reserves may have within :data:`CLUSTERING_SHARE` (the input's candidates,
    the features' and the joint ones at stage 2's seed and at the end), so that more
    layouts never cost stage 2 its seed."""
    return None if minutes is None else CONSENSUS_SHARE * minutes * 60


def reserved_seconds(method: str, final: str, stage2_seed: str, with_input: bool, self_label_epochs: int,
                     input_stage_seconds: float, epoch_seconds: float = 0.0, refreshes: int = 0,
                     rule: str = DEFAULT_RULE) -> float:
    """Seconds a budget keeps for the clustering stages around training: the candidates on
    the features at stage 2's start (a two-stage method seeded by the final stage) and at the
    end, each about what the input's candidates took, and as much again for the joint
    candidate where the input is a candidate; and self-labelling (an epoch of it about a
    quarter of a training epoch); ``refreshes``: further passes inside stage 2
    (:func:`refresh_epochs`). Under the ``stability`` rule a pass also makes its candidates
    again on :data:`STABILITY_RESAMPLES` subsamples of :data:`STABILITY_SHARE` of the rows."""
    if final != "auto":
        return 0.0
    passes = 2 + refreshes if method in TWO_STAGE_METHODS and stage2_seed == "final" else 1
    per_pass = (2 if with_input else 1) * (1 + (STABILITY_RESAMPLES * STABILITY_SHARE if rule == "stability" else 0))
    return passes * per_pass * input_stage_seconds + 0.25 * self_label_epochs * epoch_seconds


def refresh_epochs(stage2_start: int, epochs: int, refreshes: int) -> set[int]:
    """The epochs after which the carried stage-2 partition is chosen afresh by the final
    stage (``cluster.stage2_refreshes``): ``refreshes`` of them, evenly spaced inside stage 2
    (epochs ``stage2_start``..``epochs``, 1-based), never its last epoch (the final stage
    follows it anyway)."""
    length = epochs - stage2_start + 1
    if refreshes <= 0 or length < 2:
        return set()
    picks = {stage2_start - 1 + round(r * length / (refreshes + 1)) for r in range(1, refreshes + 1)}
    return {e for e in picks if stage2_start <= e < epochs}


def seed_fits(reserved: float, minutes: float) -> bool:
    """Whether the passes of the final stage's candidates a seeded run makes (two, more with
    ``cluster.stage2_refreshes``; ``reserved`` seconds in all) fit in
    :data:`CLUSTERING_SHARE` of a ``minutes`` budget; where they do not, stage 2 starts from
    k-means of the warm-up's features and one pass is reserved."""
    return reserved <= CLUSTERING_SHARE * minutes * 60
