"""Which epochs are stage 2 (Method.stage2_start) in the trainer's records and the report of
`conr cluster`, for every method with a stage 2; tiny folder runs (small_cnn, 4 epochs)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conr.commands.cluster import _epochs_line
from conr.config import load_config
from conr.methods import build_method

from test_cluster_report import TINY, make_folder, run_cli

STAGE2 = ["train.epochs=4", "stage2.start_epoch=2", "stage2.t_end=3"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("stages")
    old = os.environ.get("CONR_CACHE")
    os.environ["CONR_CACHE"] = str(base / "cache")
    yield make_folder(base / "photos", per_class=8), base
    if old is None:
        os.environ.pop("CONR_CACHE", None)
    else:
        os.environ["CONR_CACHE"] = old


@pytest.mark.parametrize("method,start", [("conr", 801), ("simsiam_connr", 801), ("moco_connr", 801),
                                          ("byol", None), ("simsiam", None), ("moco", None), ("hadis", None)])
def test_stage2_start_of_each_method(method, start):
    cfg = load_config("cifar10", [f"method={method}", "model.backbone=small_cnn", "model.width=4"])
    m = build_method(cfg, 3)
    assert m.stage2_start() == start  # stage2.start_epoch = 800: stage 2 trains epochs 801..1000
    assert m.in_stage2(801) is (start is not None) and not m.in_stage2(800)


def test_epochs_line():
    assert _epochs_line(4, 4, 3) == "4 of 4 (stage 2 from epoch 3)"
    assert _epochs_line(2, 4, 3) == "2 of 4 (stopped in stage 1; stage 2 would begin at epoch 3)"
    assert _epochs_line(4, 4, None) == "4 of 4"


@pytest.mark.slow  # trains through `conr cluster`
@pytest.mark.parametrize("method", ["simsiam_connr", "moco_connr"])
def test_report_and_records_name_stage2(folder, method):
    src, base = folder
    out = base / method
    rc, stdout = run_cli(["cluster", str(src), "--k", "3", "--out", str(out), "--no-plots",
                          f"method={method}"] + TINY + STAGE2)
    assert rc == 0, stdout
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == [1, 1, 2, 2]
    html = (out / "report.html").read_text()
    assert "4 of 4 (stage 2 from epoch 3)" in html
    assert (out / "run" / "stage1.pt").exists()  # the last stage-1 epoch's checkpoint, as CoNR's


def test_resume_at_the_end_of_stage1_drops_a_provisional_k_clustering(tmp_path: Path):
    """A run that estimated K at the end of stage 1 (clustered there with a provisional K) and
    was killed before clustering again resumes with the chosen K: the checkpoint's clustering
    of another K is not used for stage 2 (boundary filter) nor reported."""
    from conr.engine import Trainer

    over = ["data.subset=300", "model.width=8", "model.hidden_dim=64", "model.proj_dim=32",
            "train.batch_size=100", "train.epochs=3", "stage2.start_epoch=2", "stage2.t_end=3",
            "cluster.eval_every=1", "cluster.n_init=1", "run.progress=false", "run.tensorboard=false",
            "train.warmup_epochs=1", f"run.out_dir={tmp_path}", "run.name=r"]
    first = Trainer(load_config("digits", over + ["cluster.n_clusters=10"]), log=lambda *a: None)
    first.fit(until_epoch=2)  # end of stage 1, clustered with the provisional K = 10
    assert first.centers.shape[0] == 10 and first.cluster_epoch == 2
    again = Trainer(load_config("digits", over + ["cluster.n_clusters=4"]), run_dir=tmp_path / "r", resume=True,
                    log=lambda *a: None)
    assert again.epoch == 2 and again.cluster_epoch == -1  # stale: K differs
    seen = []
    step = again.cluster_step
    again.cluster_step = lambda: (seen.append(again.epoch), step())[1]
    result = again.fit()
    assert seen[0] == 2  # clustered with K = 4 before the first stage-2 epoch
    assert result.centers.shape[0] == 4 and int(result.labels.max()) <= 3


# ------------------------------------------------------------------ repeatable budget runs
def _timings(step: float, seed: int, busy: bool, n: int = 16) -> list[float]:
    """Simulated step timings: ±2 % jitter; ``busy``: another process slows a random 60 % of
    the steps by 30-100 % (as a neighbour starting beside the timing)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = step * rng.uniform(0.98, 1.02, n)
    if busy:
        hit = rng.random(n) < 0.6
        t[hit] *= rng.uniform(1.3, 2.0, hit.sum())
    return t.tolist()


def test_robust_step_ignores_a_busy_neighbour():
    from conr.auto.budget import robust_step

    for seed in range(20):
        quiet = robust_step(_timings(0.1, seed, busy=False))
        busy = robust_step(_timings(0.1, seed, busy=True))
        assert abs(busy / quiet - 1) < 0.04, seed
        # the mean of the middle half (the former estimate) moves by tens of percent
        mid = sorted(_timings(0.1, seed, busy=True))[4:12]
        assert sum(mid) / len(mid) > 1.1 * quiet


def test_umap_compilation_counts_as_a_fixed_allowance():
    from conr.auto.budget import COMPILE_ALLOWANCE, seconds_left

    # a compilation that took 35 s instead of 12 s (a busy machine) leaves the same seconds
    assert seconds_left(1.5, elapsed=50.0, compile_seconds=35.0) == seconds_left(1.5, elapsed=27.0, compile_seconds=12.0)
    assert seconds_left(1.5, elapsed=27.0, compile_seconds=12.0) == 90 - 15 - COMPILE_ALLOWANCE
    assert seconds_left(2.0, elapsed=10.0) == 110.0  # no compilation in this process: nothing allowed for


def test_epochs_are_on_the_grid_and_the_most_that_fit():
    from conr.auto.budget import EPOCH_GRID, StepCosts, epochs_for_budget, grid_floor, seconds_for

    assert all(b / a <= 1.5 for a, b in zip(EPOCH_GRID[6:], EPOCH_GRID[7:]))  # ratio ~1.25 from 10 on
    assert grid_floor(219) == 200 and grid_floor(126) == 100 and grid_floor(1) == 1
    costs = StepCosts(step_seconds=0.1, cluster_seconds=0.3, iters_per_epoch=4)
    for budget in (30.0, 90.0, 240.0, 600.0):
        e = epochs_for_budget(budget, costs)
        assert e in EPOCH_GRID and seconds_for(e, costs) <= budget
        later = [g for g in EPOCH_GRID if g > e]
        assert not later or seconds_for(later[0], costs) > budget  # the next grid value would not fit


def _old_epochs(seconds: float, step: float, cluster: float, iters: int) -> int:
    """The former rule, typed here: any epoch count 2..1000 that fits, from the middle-half mean."""
    from conr.auto.budget import StepCosts, seconds_for

    costs = StepCosts(step, cluster, iters)
    fits = [e for e in range(2, 1001) if seconds_for(e, costs) <= seconds]
    return max(fits) if fits else 2


@pytest.mark.slow  # 300 simulated budgets: ~1-2 s
def test_a_busy_neighbour_rarely_changes_the_epochs():
    """300 random runs (steps 10-500 ms, 1-64 steps an epoch, clustering 0.1-5 s, budgets 1-10 min),
    each timed quiet and beside a busy neighbour: the epochs agree in >= 90 % of them (a count
    that fits right at a grid value can still tip over), where the former rule (mean of the
    middle half, any epoch count) agreed in under 25 %."""
    import numpy as np

    from conr.auto.budget import StepCosts, epochs_for_budget, robust_step

    rng = np.random.default_rng(0)
    same = same_old = 0
    runs = 300
    for seed in range(runs):
        step, iters = float(np.exp(rng.uniform(np.log(0.01), np.log(0.5)))), int(rng.integers(1, 65))
        cluster, budget = float(rng.uniform(0.1, 5.0)), float(rng.uniform(60, 600))
        quiet, busy = _timings(step, seed, busy=False), _timings(step, seed, busy=True)
        new = {epochs_for_budget(budget, StepCosts(robust_step(t), cluster, iters)) for t in (quiet, busy)}
        old = {_old_epochs(budget, float(np.mean(sorted(t)[4:12])), cluster, iters) for t in (quiet, busy)}
        same += len(new) == 1
        same_old += len(old) == 1
    assert same >= 0.9 * runs, (same, same_old)
    assert same_old < 0.25 * runs, (same, same_old)


@pytest.mark.slow  # two budgeted trainings through `conr cluster`
def test_printed_repeat_command_reproduces_the_assignments(folder):
    """A budgeted run (the epochs come from a timing) prints, in its report and repeat.txt,
    the command that trains it again (budget.json keeps the overrides that pin it); that
    command gives the same assignments."""
    import shlex

    src, base = folder
    out = base / "budgeted"
    tiny = [o for o in TINY if not o.startswith("train.epochs=")]
    rc, stdout = run_cli(["cluster", str(src), "--k", "3", "--out", str(out), "--no-plots", "--minutes", "0.25",
                          "--seed", "3"] + tiny)
    assert rc == 0, stdout
    budget = json.loads((out / "run" / "budget.json").read_text())
    repeat = (out / "run" / "repeat.txt").read_text().strip()
    assert f"train.epochs={budget['epochs']}" in repeat and "--seed 3" in repeat
    assert all(pin in repeat.split() for pin in budget["repeat_overrides"])
    assert repeat in stdout
    import html as _html
    assert _html.escape(repeat) in (out / "report.html").read_text()
    argv = shlex.split(repeat)
    assert argv[:2] == ["conr", "cluster"]
    rc, again = run_cli(argv[1:])
    assert rc == 0, again
    first = (out / "assignments.csv").read_text()
    second = (Path(f"{out}-repeat") / "assignments.csv").read_text()
    assert first == second


def test_stop_after_epoch_keeps_the_schedule(tmp_path: Path):
    """run.stop_after_epoch=2 of train.epochs=3 trains the first 2 epochs of the 3-epoch run
    (same LR and losses, deterministic CPU) and ends clustered."""
    from conr.config import ConfigError
    from conr.engine import Trainer

    over = ["data.subset=200", "model.width=8", "model.hidden_dim=64", "model.proj_dim=32",
            "train.batch_size=100", "train.epochs=3", "stage2.start_epoch=1", "stage2.t_end=3",
            "cluster.n_init=1", "run.progress=false", "run.tensorboard=false", "train.warmup_epochs=1",
            "train.deterministic=true", "cluster.n_clusters=10"]
    full = Trainer(load_config("digits", over), write=False, log=lambda *a: None).fit()
    cut = Trainer(load_config("digits", over + ["run.stop_after_epoch=2"]), write=False, log=lambda *a: None)
    res = cut.fit()
    assert cut.epoch == 2 and [r["epoch"] for r in res.history] == [1, 2]
    for a, b in zip(full.history[:2], res.history):
        assert a["lr"] == b["lr"] and a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    assert res.labels.shape == (200,)
    with pytest.raises(ConfigError, match="stop_after_epoch"):
        load_config("digits", over + ["run.stop_after_epoch=4"])


def _record(cfg, budget=None, user=None):
    from conr.auto.record import RunRecord

    return RunRecord(input_kind="images", input_reason="a folder path", user=user or {}, automatic={}, reasons={},
                     config=cfg, budget=budget)


def _plan(**decided):
    from conr.auto.budget import BudgetPlan

    return BudgetPlan(minutes=10.0, epochs=200, reserved_seconds=10.0, estimate_seconds=500.0, max_epoch_minutes=15.0,
                      **decided)


def test_repeat_command_of_a_run_the_time_limit_stopped():
    from conr.cli import build_parser
    from conr.commands.cluster import repeat_command

    cfg = load_config("digits", ["train.epochs=200", "train.seed=7"])
    args = build_parser().parse_args(["cluster", "/data/my photos", "--k", "auto", "train.seed=7", "model.width=8",
                                      "train.epochs=12"])
    cmd = repeat_command(args, Path("/data/my photos"), Path("out"), _record(cfg), 179)
    assert cmd == ("conr cluster '/data/my photos' --out out-repeat --k auto --seed 7 model.width=8 "
                   "train.epochs=200 run.stop_after_epoch=179")
    # a budget that shrank the images: the repeat loads them at the size trained
    cfg.data.image_size = 24
    record = _record(cfg, _plan(image_size=24, reduced_from_size=32))
    assert "data.image_size=24 train.epochs=200" in repeat_command(args, Path("/data/my photos"), Path("out"),
                                                                   record, 200)
    # ... unless the user chose the size
    chosen = _record(cfg, _plan(image_size=24, reduced_from_size=32), user={"data": {"image_size": 24}})
    assert chosen.repeat_pins(200) == ["train.epochs=200"]


def test_a_budget_shrink_reloads_what_the_repeat_loads(tmp_path: Path):
    """When the budget trains smaller images, it loads them again from the folder at that
    size: the same pixels a repeat with data.image_size=<size> reads (resizing the first
    load instead gave other pixels and other clusters)."""
    from conr.data.base import resize_uint8
    from conr.data.convert import as_image_data, reload_folder

    folder = make_folder(tmp_path / "photos", per_class=4)
    first = as_image_data(folder, 32)
    first.normalization = "imagenet"
    again = reload_folder(folder, 24, first)
    direct = as_image_data(folder, 24, channels=first.channels)
    assert torch.equal(again.images, direct.images) and again.paths == direct.paths
    assert again.normalization == "imagenet" and again.channels == first.channels
    assert not torch.equal(resize_uint8(first.images, 24), direct.images)  # why it reloads


def test_a_budget_too_small_for_two_final_stage_passes_drops_the_seed():
    """Where the final stage's candidates twice (stage 2's seed, the end) would take more
    than a third of the budget, stage 2 starts from k-means and one pass is reserved;
    otherwise both are, and the repeat command pins what the budget chose."""
    from conr.auto.budget import reserve
    from conr.cluster.policy import CLUSTERING_SHARE, reserved_seconds
    from conr.cli import build_parser
    from conr.commands.cluster import repeat_command

    cfg = load_config("digits", ["cluster.final=auto", "cluster.stage2_seed=final", "cluster.self_label_epochs=0"])
    small, note = reserve(cfg, 10.0, 1.0, minutes=6)
    # 2 passes x (features + joint) of 10 s each
    assert note is None and small == reserved_seconds("conr", "auto", "final", True, 0, 10.0) == 40.0
    big, note = reserve(cfg, 125.0, 1.0, minutes=10)
    assert 4 * 125.0 > CLUSTERING_SHARE * 600 and big == 2 * 125.0 and "stage2_seed=kmeans" in note
    assert reserved_seconds("byol", "auto", "final", True, 0, 10.0) == 20.0   # no stage 2 to seed: one pass
    assert reserved_seconds("conr", "auto", "final", True, 0, 10.0, refreshes=2) == 80.0  # 2 passes more
    assert reserved_seconds("conr", "kmeans", "final", True, 0, 10.0) == 0.0  # no final stage
    # the stability rule makes each pass's candidates again on 2 subsamples of 80 %: 1 + 2 x 0.8 passes' worth
    assert reserved_seconds("conr", "auto", "final", True, 0, 10.0, rule="stability") == pytest.approx(40.0 * 2.6)
    args = build_parser().parse_args(["cluster", "photos", "--k", "10"])
    record = _record(cfg, _plan(stage2_seed="kmeans"))
    assert "cluster.stage2_seed=kmeans" in repeat_command(args, Path("photos"), Path("out"), record, cfg.train.epochs)


def test_what_the_budget_changes_carries_its_reason():
    """A budget that drops stage 2's seed or shortens a consensus says so in the settings'
    reasons (config.yaml, the report), not the automatic rule's reason for the value it
    replaced, and sets both in the config, where the user did not set them."""
    import time

    from conr.auto.budget import BudgetPlan, BudgetTiming, StepCosts
    from conr.auto.record import RunRecord
    from conr.auto.resolve import image_settings
    from conr.data.convert import as_image_data
    from conr.data.survey import survey_images

    seed_note = "time budget: ... (cluster.stage2_seed=kmeans)"
    timing = BudgetTiming(epochs=120, image_size=16, reserved_seconds=10.0, estimate_seconds=500.0,
                          costs=StepCosts(0.1, 1.0, 10), other_cores=0.0, quiet_factor=1.0, seed_note=seed_note)
    plan = BudgetPlan.decide(timing, 10.0, time.perf_counter(), default_layouts=5, layouts=1)
    assert plan.stage2_seed == "kmeans" and plan.consensus_runs == 1 and plan.record()["consensus_runs"] == 1
    data = as_image_data(np.random.default_rng(0).integers(0, 255, (60, 16, 16, 3), dtype=np.uint8), 16)
    cfg, _, reasons = image_settings({}, survey_images(data.images), data, device_type="cpu", k=3, budget=plan)
    assert cfg.train.epochs == 120 and cfg.cluster.stage2_seed == "kmeans" and cfg.cluster.consensus_runs == 1
    assert reasons["cluster.stage2_seed"] == seed_note and "consensus of 1 layouts" in reasons["cluster.consensus_runs"]
    assert reasons["train.epochs"] == "sized to the 10-min time budget"
    record = RunRecord(input_kind="images", input_reason="an array", user={}, automatic={}, reasons=reasons,
                       config=cfg, budget=plan)
    assert f"cluster.stage2_seed: {seed_note}" in record.notes()
    assert ["cluster.stage2_seed = kmeans", seed_note] in record.settings_rows()
    # the user's own choice stands
    mine, _, why = image_settings({"cluster": {"consensus_runs": 3}}, survey_images(data.images), data,
                                  device_type="cpu", k=3, budget=plan)
    assert mine.cluster.consensus_runs == 3 and "cluster.consensus_runs" not in why

