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
from .settings import neighbourhood_sizes

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
    clusters (None: none); ``k_selection``: K estimated after stage 1 (None: K given)."""
    input_kind: str
    input_reason: str
    user: Mapping
    automatic: Mapping
    reasons: Mapping
    config: Config
    budget: BudgetPlan | None = None
    encoder: Mapping | None = None
    k_selection: Mapping | None = None

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
        if sizes:
            reasons["stage2.k"] = why + f", K = {k} as estimated"
        return replace(self, config=cfg, reasons=reasons, k_selection=_frozen(selection))

    def neighbourhood_for(self, k: int) -> dict:
        """Stage 2's neighbourhood sizes ``{"k", "k1", "k2"}`` for K = ``k`` where the automatic
        rules chose them (half a cluster's expected members in a batch:
        :func:`conr.auto.settings.neighbourhood_sizes`); ``{}`` where the user set any of the three
        or no rule sized them (a method's config file)."""
        return self._rule_neighbourhood(k)[0]

    def _rule_neighbourhood(self, k: int) -> tuple[dict, str | None]:
        """:meth:`neighbourhood_for`'s sizes and the rule's reason for them (None where it gives none)."""
        if dotted_get(dict(self.automatic), "stage2.k") is None or any(
                self.user_value(f"stage2.{name}") is not None for name in ("k", "k1", "k2")):
            return {}, None
        return neighbourhood_sizes(int(self.config.train.batch_size), k)

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
