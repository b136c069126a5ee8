"""Concurrent requests over one shared pipeline: each gets its own pipeline object and
scheduler, so results equal the sequential ones and a Stop stops only its own run."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from playground import Cancelled, RunControl

JOBS = [
    ("text_to_image", dict(prompt="a red circle", scheduler="DDIM", steps=6, seed=1)),
    ("text_to_image", dict(prompt="a blue square", scheduler="Euler a", steps=5, seed=2)),
    ("text_to_image", dict(prompt="a green triangle", scheduler="DPM++ 2M Karras", steps=4, seed=3,
                           guidance=3.0)),
    ("layout_to_image", dict(prompt="two objects", phrases=["a red circle"],
                             boxes=[[0.1, 0.1, 0.6, 0.6]], scheduler="Heun", steps=3, seed=4)),
    ("layout_to_image", dict(prompt="two objects", phrases=["a blue square"],
                             boxes=[[0.4, 0.4, 0.9, 0.9]], scheduler="UniPC", steps=4, seed=5)),
]


def run_all_at_once(playground, jobs):
    results, errors = [None] * len(jobs), []
    start = threading.Barrier(len(jobs))

    def work(i, task, kwargs):
        try:
            start.wait()
            results[i] = np.asarray(getattr(playground, task)(**kwargs))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_concurrent_requests_equal_sequential_ones(starter):
    sequential = [np.asarray(getattr(starter, task)(**kw)) for task, kw in JOBS]
    together = run_all_at_once(starter, JOBS)
    for (task, kwargs), alone, concurrent in zip(JOBS, sequential, together):
        assert np.array_equal(alone, concurrent), f"{task} {kwargs['scheduler']} was disturbed"
    shared = starter.registry.pipeline("starter", "text_to_image")
    assert type(shared.scheduler).__name__ == "DPMSolverMultistepScheduler"  # never swapped


def test_stop_stops_only_its_own_run(starter):
    victim = RunControl()
    steps_of_other = []
    other = RunControl(on_progress=lambda step, total: steps_of_other.append(step))
    victim.on_progress = lambda step, total: victim.cancel() if step == 1 else None
    outcome = {}

    def run(name, control, seed):
        try:
            outcome[name] = starter.text_to_image("a red circle", steps=8, seed=seed,
                                                  control=control)
        except Cancelled:
            outcome[name] = "cancelled"

    threads = [threading.Thread(target=run, args=("victim", victim, 1)),
               threading.Thread(target=run, args=("other", other, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcome["victim"] == "cancelled"
    assert outcome["other"].size == (64, 64) and steps_of_other == list(range(1, 9))


def test_a_cancelled_control_stops_before_any_step(starter):
    control = RunControl()
    control.cancel()
    with pytest.raises(Cancelled):
        starter.upscale(np.zeros((64, 64, 3), np.uint8), steps=3, control=control)
