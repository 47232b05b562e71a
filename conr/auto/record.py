"""One record per run: what the user set, what the automatic rules chose and why, and
what the time budget decided, resolved once before training.

Everything that writes about a run reads it: the header of config.yaml (:meth:`RunRecord.notes`),
budget.json (the budget's record with :meth:`RunRecord.repeat_pins`), the report's settings
(:meth:`RunRecord.settings_rows`) and the repeat command a command prints. It is frozen: a
later decision (K estimated after stage 1) makes a new record (:meth:`RunRecord.with_k`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from ..config import Config, dotted_get
from .budget import BudgetPlan
from .settings import neighbourhood_sizes, within_clusters

__all__ = ["RunRecord", "INPUT_KINDS"]

INPUT_KINDS = ("images", "vectors", "encoder")   # pixels trained from scratch; vectors given; an encoder's features


class ReadOnlyDict(dict):
    """A dict that refuses changes (and pickles, unlike a mappingproxy): a record's settings."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a run record is read-only: make a new one (dataclasses.replace, RunRecord.with_k)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse

    def __reduce__(self):
        return (ReadOnlyDict, (dict(self),))


def _frozen(mapping: Mapping | None) -> Mapping:
    """A read-only copy of nested plain data."""
    return ReadOnlyDict({k: _frozen(v) if isinstance(v, Mapping) else v for k, v in dict(mapping or {}).items()})


@dataclass(frozen=True)
class RunRecord:
    """A run's settings, each with where it came from.

    ``user``: the settings the user chose (config file, constructor arguments, overrides),
    nested as a config is; ``automatic``: the automatic settings (nested); ``reasons``:
    {dotted key: why} for every automatic setting the user left to the rules (the budget's
    decisions included); ``config``: the resolved configuration the run trains with (do not
    change it: make a new record); ``budget``: the time budget's plan (None: the epochs were
    given or the run resumed); ``encoder``: the spec of the encoder whose features the run
    clusters (None: none); ``k_selection``: K estimated after stage 1 (None: K given); ``n_rows``:
    the images or rows clustered (None: not known to the record)."""
    input_kind: str
    input_reason: str
    user: Mapping
    automatic: Mapping
    reasons: Mapping
    config: Config
    budget: BudgetPlan | None = None
    encoder: Mapping | None = None
    k_selection: Mapping | None = None
    n_rows: int | None = None

    def __post_init__(self):
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind={self.input_kind!r}: one of {INPUT_KINDS}")
        for name in ("user", "automatic", "reasons"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        if self.encoder is not None:
            object.__setattr__(self, "encoder", _frozen(self.encoder))

    # ------------------------------------------------------------ derived records
    def with_k(self, selection: Mapping) -> "RunRecord":
        """The record once K was estimated after stage 1 (``selection``: the K record), with
        stage 2's neighbourhood sized for that K where the rules sized it (:meth:`neighbourhood_for`)."""
        k = int(selection["k"])
        sizes, why = self._rule_neighbourhood(k)
        cfg = replace(self.config, cluster=replace(self.config.cluster, n_clusters=k),
                      stage2=replace(self.config.stage2, **sizes))
        reasons = {**self.reasons, "cluster.n_clusters": f"estimated after stage 1 ({selection['criterion']} over "
                                                          f"K = {selection['k_range'][0]}..{selection['k_range'][1]})"}
        for key, reason in why.items():
            reasons[key] = reason + f", K = {k} as estimated"
        return replace(self, config=cfg, reasons=reasons, k_selection=_frozen(selection))

    def neighbourhood_for(self, k: int) -> dict:
        """Stage 2's neighbourhood for K = ``k`` where the automatic rules chose it: its sizes
        ``{"k", "k1", "k2"}`` (half a cluster's expected members in a batch:
        :func:`conr.auto.settings.neighbourhood_sizes`) and ``same_cluster`` (where a cluster expects
        few members: :func:`conr.auto.settings.within_clusters`); a setting the user gave (any of the
        three sizes, or ``same_cluster``) or no rule chose (a method's config file) is left out."""
        return self._rule_neighbourhood(k)[0]

    def _rule_neighbourhood(self, k: int) -> tuple[dict, dict]:
        """:meth:`neighbourhood_for`'s settings and the rules' reasons for them ({dotted key: why})."""
        settings, why = {}, {}
        if dotted_get(dict(self.automatic), "stage2.k") is not None and all(
                self.user_value(f"stage2.{name}") is None for name in ("k", "k1", "k2")):
            sizes, why["stage2.k"] = neighbourhood_sizes(int(self.config.train.batch_size), k)
            settings.update(sizes)
        if (self.n_rows is not None and dotted_get(dict(self.automatic), "stage2.same_cluster") is not None
                and self.user_value("stage2.same_cluster") is None):
            settings["same_cluster"], why["stage2.same_cluster"] = within_clusters(self.n_rows, k)
        return settings, why

    def user_value(self, key: str) -> Any:
        """The value the user gave ``key`` (dotted), or None."""
        return dotted_get(dict(self.user), key)

    # ------------------------------------------------------------ what is written from it
    def notes(self) -> list[str]:
        """The comment lines of config.yaml: why each automatic setting is what it is."""
        return [f"input: {self.input_kind} ({self.input_reason})"] + [f"{k}: {v}" for k, v in self.reasons.items()]

    def settings_rows(self) -> list[list[str]]:
        """The report's rows for the automatic settings: ``key = value`` and why."""
        rows = []
        for key, why in self.reasons.items():
            value = self.config
            for part in key.split("."):
                value = getattr(value, part, None)
            rows.append([f"{key} = {value}", why])
        return rows

    def repeat_pins(self, trained_epochs: int) -> list[str]:
        """The overrides that make a run of the same input train exactly this run again: the
        budget's choices (reduced image size, stage 2's seed, a consensus's layouts, one CPU
        thread) where the user did not set them, the epochs and seed, and where the budget's
        time limit stopped it, that stop (same schedule, same end)."""
        cfg = self.config
        pins = []
        if self.budget is not None:
            if self.budget.reduced_from_size and self.user_value("data.image_size") is None:
                pins.append(f"data.image_size={cfg.data.image_size}")
            for key in ("stage2_seed", "consensus_runs"):
                value = getattr(self.budget, key)
                if value is not None and self.user_value(f"cluster.{key}") is None:
                    pins.append(f"cluster.{key}={value}")
            if self.budget.threads is not None:  # only where the user asked for train.threads=auto
                pins.append(f"train.threads={self.budget.threads}")
        pins.append(f"train.epochs={cfg.train.epochs}")
        if trained_epochs < cfg.train.epochs:
            pins.append(f"run.stop_after_epoch={trained_epochs}")
        return pins
