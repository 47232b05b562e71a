"""The load other processes put on the machine (conr/machine_load.py): the arithmetic
by hand, /proc/stat parsing on a written file, and a real busy neighbour."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conr.auto.machine_load import LoadWindow, busy_cpu_seconds, quiet_factor


def test_quiet_factor_by_hand():
    # 2 threads on 2 cores, a spinning neighbour took 2/3 of a core (3 threads sharing 2 CPUs):
    # the work needs 1.33 / 2 of the measured time (measured: 291 ms quiet, 431 ms beside it)
    assert quiet_factor(2 / 3, threads=2, cores=2) == pytest.approx(2 / 3)
    assert quiet_factor(0.0, threads=2, cores=2) == 1.0
    assert quiet_factor(None, threads=2, cores=2) == 1.0            # unknown load: no correction
    assert quiet_factor(1.0, threads=4, cores=16) == 1.0            # the neighbour left the threads room
    assert quiet_factor(8.0, threads=16, cores=16) == pytest.approx(0.5)
    assert quiet_factor(15.9, threads=16, cores=16) == 0.25         # never more than 4x
    assert quiet_factor(0.93, threads=2, cores=2, floor=1 / 1.5) == pytest.approx(1 / 1.5)


def test_busy_seconds_from_a_stat_file(tmp_path):
    stat = tmp_path / "stat"
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal
    stat.write_text(f"cpu  {3 * hz} 0 {hz} {10 * hz} {hz} 0 0 0 0 0\ncpu0 1 2 3 4\n")
    assert busy_cpu_seconds(str(stat)) == pytest.approx(4.0)       # all but idle and iowait
    assert busy_cpu_seconds(str(tmp_path / "missing")) is None


@pytest.mark.slow  # spins a subprocess for 1.5 s and reads the machine's load
@pytest.mark.skipif(busy_cpu_seconds() is None, reason="no /proc/stat (not Linux): the load is unknown there")
def test_a_busy_neighbour_is_seen():
    window = LoadWindow()
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
    child.wait()
    time.sleep(0.1)
    assert window.other_cores() > 0.5    # the child spun about one core for 1.5 s of ~1.6
    assert LoadWindow().other_cores() is None   # a window too short to say


# ------------------------------------------------------------------ budget plans (conr/budget_plans.py)
def test_a_plan_is_recalled_on_the_same_machine_only():
    from conr.auto.plans import plans_path, recall_plan, remember_plan

    remember_plan("cmd", step_seconds=0.2725, epochs=100, image_size=32)
    assert plans_path().is_file() and "conr-cache" in str(plans_path())   # the test's folder (conftest)
    assert recall_plan("cmd", 0.296)["epochs"] == 100     # a quiet re-timing 9 % slower
    assert recall_plan("cmd", 0.431)["epochs"] == 100     # beside a spinning neighbour: 1.6x
    assert recall_plan("cmd", 0.1) is None                # a machine 2.7x faster plans afresh
    assert recall_plan("other command", 0.2725) is None


def test_same_command_same_epochs_through_the_budget():
    from conr.auto.budget import StepCosts
    from conr.auto.plans import same_plan
    from conr.config import load_config

    cfg = load_config("digits")
    data = type("Data", (), {"images": torch.zeros(200, 1, 16, 16, dtype=torch.uint8), "image_size": 16,
                             "channels": 1, "__len__": lambda self: 200})()
    first, threads, note = same_plan(cfg, data, 1.5, False, StepCosts(0.2725, 0.31, 1), 100, None)
    assert (first, threads, note) == (100, None, None)
    again, threads, note = same_plan(cfg, data, 1.5, False, StepCosts(0.296, 0.36, 1), 80, None)  # timing alone: 80
    assert (again, threads) == (100, None) and "bought 100 epochs on this machine before" in note
    other, _, _ = same_plan(cfg, data, 3.0, False, StepCosts(0.296, 0.36, 1), 200, None)     # another budget
    assert other == 200
    data.images[0] += 1  # other images: another command
    assert same_plan(cfg, data, 1.5, False, StepCosts(0.296, 0.36, 1), 80, None)[0] == 80


def test_a_plan_repeats_the_threads_it_chose():
    from conr.auto.budget import StepCosts
    from conr.auto.plans import same_plan
    from conr.config import load_config

    cfg = load_config("digits", ["train.threads=auto"])
    data = type("Data", (), {"images": torch.full((200, 1, 16, 16), 7, dtype=torch.uint8), "image_size": 16,
                             "channels": 1, "__len__": lambda self: 200})()
    assert same_plan(cfg, data, 2.0, False, StepCosts(0.02, 0.1, 4), 400, 1)[:2] == (400, 1)
    # re-timed, the threads looked not worth it this time: the first run's choice is repeated
    epochs, threads, note = same_plan(cfg, data, 2.0, False, StepCosts(0.025, 0.1, 4), 320, None)
    assert (epochs, threads) == (400, 1) and "400 epochs at 1 thread" in note
    # the same command without auto is another command: it never inherits auto's thread
    assert same_plan(load_config("digits"), data, 2.0, False, StepCosts(0.025, 0.1, 4), 320, None) == (320, None,
                                                                                                         None)


def test_fewer_threads_where_the_timing_says_they_buy_more(monkeypatch):
    """The budget's thread rule (train.threads=auto) on a hand-made timing: steps that take
    longer at two threads than at one (waking the sleeping threads costs more than the second
    core gives) make the run take one thread, recorded with its reason; the other way round,
    or where auto was not asked for, the count stays as it is."""
    import conr.auto.budget as budget
    from conr.auto.budget import StepCosts, fewer_threads_pay, one_thread_check_fits, time_budget
    from conr.auto.resolve import vector_settings
    from conr.data.vectors import VectorData
    from conr.engine.vectors import VectorTrainer
    from conr.threads import torch_threads

    one, two = StepCosts(0.03, 0.05, 4), StepCosts(0.08, 0.04, 4)
    assert fewer_threads_pay(100, all_threads=two, one_thread=one)
    assert not fewer_threads_pay(100, all_threads=StepCosts(0.032, 0.05, 4), one_thread=one)   # under 10 % saved
    assert one_thread_check_fits(two, minutes=3.0)           # ~1.4 s of 180: under 2 %
    assert not one_thread_check_fits(StepCosts(1.2, 8.0, 40), minutes=10.0)   # a ResNet's steps: ~50 s of 600

    data = VectorData(images=torch.randn(64, 8, generator=torch.Generator().manual_seed(0)),
                      labels=torch.full((64,), -1, dtype=torch.long))
    cfg, _, _ = vector_settings({"train": {"device": "cpu", "threads": "auto"}}, len(data), k=3)
    for slow_at_two, expected in ((True, 1), (False, None)):
        def timed(trainer, steps=16, checkpoints=False, step_times=None, slow_at_two=slow_at_two):
            multi = torch.get_num_threads() > 1
            return (two if multi else one) if slow_at_two else (one if multi else two)

        monkeypatch.setattr(budget, "measure_costs", timed)
        monkeypatch.setenv("CONR_CACHE_DIR", str(Path(os.environ["CONR_CACHE_DIR"]) / f"threads-{slow_at_two}"))
        with torch_threads(2):
            timing = time_budget(cfg, data, 3.0, time.perf_counter(), trainer_type=VectorTrainer, log=lambda *a: None)
            assert torch.get_num_threads() == 2          # the probe gave the count back
        assert timing.threads == expected
        plan = budget.BudgetPlan.decide(timing, 3.0, time.perf_counter(), default_layouts=1)
        assert plan.overrides().get("train.threads") == expected
        assert ("threads" in plan.record()) == (expected is not None)
        assert "2" in timing.thread_steps and "1" in timing.thread_steps
        run_cfg, _, reasons = vector_settings({"train": {"device": "cpu", "threads": "auto"}}, len(data), k=3,
                                              budget=plan)
        assert run_cfg.train.threads == (expected or "auto")
        assert ("train.threads" in reasons) == (expected is not None)
    cfg, _, _ = vector_settings({"train": {"device": "cpu"}}, len(data), k=3)   # not asked for: never timed
    with torch_threads(2):
        assert time_budget(cfg, data, 3.0, time.perf_counter(), trainer_type=VectorTrainer,
                           log=lambda *a: None).threads is None


def test_a_fit_gives_the_callers_threads_back():
    import conr

    x = torch.randn(60, 6, generator=torch.Generator().manual_seed(0)).numpy()
    from conr.threads import torch_threads

    with torch_threads(2):
        model = conr.CoNR(n_clusters=3, input="vectors", device="cpu", epochs=2, overrides=["train.threads=1"]).fit(x)
        assert torch.get_num_threads() == 2 and model.config_.train.threads == 1
