"""Reliability: a full queue says so, an exception in one request leaves the worker and
the queue serving, a model that fails to load leaves the others serving, out-of-memory
during sampling is reported and the next request works, Stop (or a cancelled API job)
ends the sampling loop within 2 steps, and concurrent API users with different
schedulers get exactly the pictures they would get alone.

The faults are real: a model folder with a truncated weights file, a model whose UNet
does not fit its text encoder (it loads, then fails inside the sampling loop), and
torch's own OutOfMemoryError raised from inside a real pipeline run."""
from __future__ import annotations

import shutil
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from app_server import free_port
from playground import Cancelled, Playground, Registry, RunControl
from playground.errors import OutOfMemory
from playground.registry import make_entry, starter_entry
from playground.ui import build_app
from playground.ui.serving import launch_options

CONCURRENCY, MAX_QUEUE = 2, 2


def save_mismatched_model(folder):
    """A tiny text-to-image folder whose UNet expects 48-wide text features while its
    text encoder gives 32: every part loads, the first denoising step fails."""
    from conftest import build_tiny_pipeline, tiny_unet

    pipe = build_tiny_pipeline("text2img")
    unet = tiny_unet("text2img")
    config = dict(unet.config)
    config["cross_attention_dim"] = 48
    pipe.unet = type(unet).from_config(config)
    pipe.save_pretrained(folder, safe_serialization=True)


def save_truncated_model(source, folder):
    """A copy of a model folder whose UNet weights file is cut short."""
    shutil.copytree(source, folder)
    weights = next((folder / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])


@pytest.fixture(scope="module")
def faulty_app(tmp_path_factory, tiny_models):
    """The real app, two sampling runs at once and room for two waiting requests, serving
    the starter models beside two faulty ones."""
    root = tmp_path_factory.mktemp("faulty_models")
    save_mismatched_model(root / "mismatched")
    save_truncated_model(tiny_models / "text2img", root / "truncated")
    entries = [starter_entry(), make_entry("mismatched", str(root / "mismatched")),
               make_entry("truncated", str(root / "truncated"))]
    pg = Playground(Registry(entries, device="cpu", allowed_dirs=[str(root)]))
    app = build_app(pg, concurrency_limit=CONCURRENCY, max_queue=MAX_QUEUE)
    app.launch(prevent_thread_lock=True, quiet=True,
               **launch_options(app, host="127.0.0.1", port=free_port()))
    yield app, app.local_url, pg
    app.close()


@pytest.fixture(scope="module")
def client(faulty_app):
    return Client(faulty_app[1], verbose=False)


def text_to_image(client, **kwargs):
    path, settings = client.predict(api_name="/text_to_image", **kwargs)
    return np.asarray(Image.open(path).convert("RGB")), settings


def api_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name.startswith("playground-api") and t.is_alive()]


def wait_until(condition, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - start


# ---------------------------------------------------------------- faults

def test_an_exception_inside_a_request_leaves_the_worker_serving(client):
    for _ in range(CONCURRENCY + 1):  # more failures than workers: none may be lost
        with pytest.raises(AppError) as error:
            client.predict(prompt="a red circle", model="mismatched", steps=2,
                           api_name="/text_to_image")
        message = str(error.value)
        assert "still running" in message and "RuntimeError" in message
        assert "Traceback" not in message
    picture, settings = text_to_image(client, prompt="a red circle", steps=2, seed=3)
    assert picture.shape == (64, 64, 3) and picture.std() > 1
    assert settings["seed"] == 3


def test_a_model_that_fails_to_load_leaves_the_others_serving(client, faulty_app):
    with pytest.raises(AppError, match="could not be loaded"):
        client.predict(prompt="a red circle", model="truncated", steps=2,
                       api_name="/text_to_image")
    picture, _ = text_to_image(client, prompt="a red circle", steps=2, seed=3)
    assert picture.std() > 1
    assert ("truncated", "text_to_image") not in faulty_app[2].registry.loaded()


def test_out_of_memory_during_sampling_is_reported_and_the_next_run_works(starter):
    """torch's OutOfMemoryError raised inside a real pipeline run, from the step callback."""
    def out_of_memory_at_step_2(step, total):
        if step == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    expected = np.asarray(starter.text_to_image("a red circle", steps=4, seed=11))
    for _ in range(2):  # twice: the first failure left nothing behind
        with pytest.raises(OutOfMemory) as error:
            starter.text_to_image("a red circle", steps=4, seed=11,
                                  control=RunControl(on_progress=out_of_memory_at_step_2))
        assert "ran out of memory" in str(error.value) and "memory was freed" in str(error.value)
        assert isinstance(error.value, ValueError)  # a PlaygroundError: the UI shows it as is
        assert error.value.__context__ is None, "the message keeps the failed run's tensors"
    again = np.asarray(starter.text_to_image("a red circle", steps=4, seed=11))
    assert np.array_equal(expected, again)


# ---------------------------------------------------------------- Stop and cancel

def test_cancel_stops_the_sampling_loop_within_two_steps(starter):
    steps_seen, stopped_at = [], []
    control = RunControl()

    def on_progress(step, total):
        steps_seen.append(step)
        if step == 3:
            stopped_at.append(step)
            threading.Thread(target=control.cancel).start()  # Stop comes from another thread
            time.sleep(0.05)

    control.on_progress = on_progress
    with pytest.raises(Cancelled):
        starter.text_to_image("a red circle", steps=50, seed=1, control=control)
    assert stopped_at == [3] and max(steps_seen) <= 3 + 2, steps_seen


def test_a_cancelled_api_job_stops_sampling(client, faulty_app):
    """gradio_client's job.cancel() ends the server's sampling loop, not just the wait."""
    started = time.monotonic()
    full = text_to_image(client, prompt="a red circle", steps=40, seed=1)
    seconds_per_step = (time.monotonic() - started) / 40
    job = client.submit(prompt="a red circle", steps=150, seed=1, api_name="/text_to_image")
    wait_until(lambda: job.outputs(), 60, "the first step")
    first = job.outputs()[-1][1]
    assert first["total"] == 150 and 1 <= first["step"] < 150  # progress is streamed
    job.cancel()
    waited = wait_until(lambda: not api_workers(), 30, "the sampling thread to end")
    assert waited < max(2.0, 10 * seconds_per_step) + 1.0, \
        f"sampling went on {waited:.1f} s after cancel ({seconds_per_step:.3f} s per step)"
    assert faulty_app[0].playground_runs.count() == 0
    assert full[0].std() > 1
    picture, _ = text_to_image(client, prompt="a red circle", steps=2, seed=1)  # still serving
    assert picture.std() > 1


def test_a_closed_tabs_unload_event_stops_its_runs_and_no_one_elses(faulty_app):
    """What Gradio calls when a browser tab's heartbeat connection goes (the browser test
    closes real tabs): that session's runs are cancelled, another session's are not."""
    import asyncio

    import gradio as gr

    app, runs = faulty_app[0], faulty_app[0].playground_runs
    (on_close,) = [fn.fn for fn in app.fns.values() if any(t[1] == "unload" for t in fn.targets)]
    closing, other = RunControl(), RunControl()
    runs.start("closing-tab", "t2i", closing)
    runs.start("other-tab", "t2i", other)
    try:
        asyncio.run(on_close(gr.Request(session_hash="closing-tab")))
        assert closing.cancelled and not other.cancelled
    finally:
        runs.finish("closing-tab", "t2i", closing)
        runs.finish("other-tab", "t2i", other)


# ---------------------------------------------------------------- many users

def test_concurrent_api_users_get_what_they_would_get_alone(client, faulty_app):
    """Two users at once (the app runs two at a time), different schedulers and seeds:
    each picture equals the same request made alone."""
    requests = [dict(prompt="a red circle", scheduler="Euler a", steps=6, seed=21),
                dict(prompt="a blue square", scheduler="DDIM", steps=5, seed=22,
                     guidance=3.0)]
    alone = [text_to_image(client, **r)[0] for r in requests]
    clients = [Client(faulty_app[1], verbose=False) for _ in requests]  # two sessions
    together, errors = [None] * len(requests), []
    barrier = threading.Barrier(len(requests))

    def user(i):
        barrier.wait()
        try:
            together[i] = text_to_image(clients[i], **requests[i])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for r, a, (picture, settings) in zip(requests, alone, together):
        assert settings["scheduler"] == r["scheduler"] and settings["seed"] == r["seed"]
        assert np.array_equal(a, picture), f"{r['scheduler']} was disturbed by the other user"


def cancel_patiently(job, tries: int = 3):
    """`job.cancel()`, asked again when the request times out: gradio_client waits 5 s for
    the cancel's answer, and with both cores sampling the server can take longer."""
    for attempt in range(tries):
        try:
            return job.cancel()
        except httpx.TimeoutException:
            if attempt == tries - 1:
                raise


def test_a_full_queue_says_so_and_the_app_goes_on(client):
    """CONCURRENCY runs sample, MAX_QUEUE waits; the next request is told the queue is full."""
    jobs = []
    try:
        for i in range(CONCURRENCY + MAX_QUEUE + 2):
            jobs.append(client.submit(prompt="a red circle", steps=150, seed=i,
                                      api_name="/text_to_image"))
            time.sleep(0.3)  # in order, so that the first ones are running
        refused = []
        for job in jobs[CONCURRENCY + MAX_QUEUE:]:
            with pytest.raises(Exception) as error:
                job.result(timeout=60)
            refused.append(str(error.value))
        assert all("queue is full" in text.lower() for text in refused), refused
    finally:
        # waiting jobs first: Gradio cancels by session, so cancelling a running job of
        # this client first would let the waiting one start after its cancel was sent
        for job in reversed(jobs):
            cancel_patiently(job)
            time.sleep(0.2)
    wait_until(lambda: not api_workers(), 30, "the cancelled runs to end")
    picture, _ = text_to_image(client, prompt="a blue square", steps=2, seed=2)
    assert picture.std() > 1


def test_the_load_test_runs_and_counts(capsys):
    """`python -m playground.loadtest`, small: every request served, figures printed."""
    from playground import loadtest

    tally = loadtest.main(["--users", "2", "--requests", "4", "--steps", "1",
                           "--tasks", "text_to_image,upscale", "--max-seconds", "120"])
    out = capsys.readouterr().out
    assert not tally.errors and len(tally.latencies) == 4
    for figure in ("requests served: 4", "errors: 0", "p50", "p95", "peak",
                   "server memory", "models loaded", "users' process memory"):
        assert figure in out, out
    with pytest.raises(SystemExit):
        loadtest.parse_args(["--requests", str(loadtest.MAX_REQUESTS + 1)])
