"""Load test: N simulated users send requests to the app through `gradio_client`.

    python -m playground.loadtest                        # 200 requests, 8 users, 4 steps
    python -m playground.loadtest --users 8 --requests 200 --steps 4 --max-seconds 600

The app (starter models, as `python app.py` builds it) is started in this process on a
free port of 127.0.0.1 only, so that nothing outside this machine is ever sent a request.
The users run in a second process, so that this process's memory is the server's alone:
the clients' threads, buffers and results would otherwise be counted as the server's.
Each user has its own `Client` (its own session) and sends requests in turn, rotating
over the tasks, until the request count or the time limit is reached. One request per
task is sent first (not counted) so that the models, which load lazily, are in memory
before the measured run. Prints requests served, errors, latency (p50, p95, max), the
server's memory (before any request, with the models loaded, and over the run, tenth by
tenth) and the peak memory of the users' process.
"""
from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

MAX_REQUESTS = 10_000
MAX_SECONDS = 3_600
TASKS = ("text_to_image", "layout_to_image", "inpaint", "upscale")


@dataclass
class Tally:
    """What the users saw, shared between their threads."""
    latencies: list[float] = field(default_factory=list)
    per_task: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    errors: collections.Counter = field(default_factory=collections.Counter)
    issued: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_ticket(self, limit: int) -> int | None:
        with self.lock:
            if self.issued >= limit:
                return None
            self.issued += 1
            return self.issued - 1

    def served(self, task: str, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.per_task[task].append(seconds)

    def failed(self, error: BaseException) -> None:
        with self.lock:
            self.errors[f"{type(error).__name__}: {str(error)[:120]}"] += 1

    def as_dict(self) -> dict:
        """What crosses back from the users' process (plain values only)."""
        return {"latencies": self.latencies, "per_task": dict(self.per_task),
                "errors": dict(self.errors), "issued": self.issued}

    @classmethod
    def from_dict(cls, d: dict) -> "Tally":
        tally = cls(latencies=list(d["latencies"]), errors=collections.Counter(d["errors"]),
                    issued=d["issued"])
        tally.per_task.update(d["per_task"])
        return tally


class MemorySampler(threading.Thread):
    """Resident memory of this process, sampled every `every_s`."""

    def __init__(self, every_s: float = 0.25):
        super().__init__(daemon=True, name="loadtest-memory")
        import psutil
        self.process = psutil.Process()
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), self.process.memory_info().rss))
            self.stop.wait(self.every_s)

    def rss_now(self) -> int:
        return self.process.memory_info().rss


def make_inputs(folder: str) -> dict[str, str]:
    """The files the inpaint and upscale requests upload: the example picture and a mask."""
    import numpy as np
    from PIL import Image

    from .ui.examples import example_picture

    picture = os.path.join(folder, "picture.png")
    example_picture().save(picture)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    mask_path = os.path.join(folder, "mask.png")
    Image.fromarray(mask).save(mask_path)
    return {"picture": picture, "mask": mask_path}


def request_of(task: str, index: int, steps: int, files: dict[str, str]) -> dict:
    """A small valid request; the seed and prompt vary with the ticket number."""
    from gradio_client import handle_file

    colour = ("red", "green", "blue", "yellow")[index % 4]
    shape = ("circle", "square", "triangle")[index % 3]
    base = {"steps": steps, "seed": index, "api_name": f"/{task}"}
    if task == "text_to_image":
        return {"prompt": f"a {colour} {shape}", **base}
    if task == "layout_to_image":
        return {"prompt": f"a {colour} {shape}", "phrases": [f"a {colour} {shape}"],
                "boxes": [[0.2, 0.2, 0.7, 0.7]], **base}
    if task == "inpaint":
        return {"image": handle_file(files["picture"]), "mask": handle_file(files["mask"]),
                "prompt": f"a {colour} {shape}", **base}
    return {"image": handle_file(files["picture"]), "prompt": f"a {colour} {shape}",
            "noise_level": 20, **base}


def user(url: str, tally: Tally, args, files: dict[str, str], deadline: float) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    while time.monotonic() < deadline:
        ticket = tally.take_ticket(args.requests)
        if ticket is None:
            return
        task = args.tasks[ticket % len(args.tasks)]
        start = time.monotonic()
        try:
            client.predict(**request_of(task, ticket, args.steps, files))
        except Exception as error:  # noqa: BLE001 - counted and reported
            tally.failed(error)
        else:
            tally.served(task, time.monotonic() - start)


def run_users(url: str, args: argparse.Namespace, files: dict[str, str]) -> dict:
    """In the users' process: `args.users` users until `args.requests` were sent or
    `args.max_seconds` passed. Returns the tally (`Tally.as_dict`) and this process's
    peak resident memory."""
    memory = MemorySampler()
    memory.start()
    tally = Tally()
    deadline = time.monotonic() + args.max_seconds
    users = [threading.Thread(target=user, args=(url, tally, args, files, deadline),
                              name=f"loadtest-user-{i}") for i in range(args.users)]
    for thread in users:
        thread.start()
    for thread in users:
        thread.join()
    memory.stop.set()
    memory.join()
    return {**tally.as_dict(), "peak_rss": max(r for _, r in memory.samples)}


def warm_up_args(args: argparse.Namespace) -> argparse.Namespace:
    """One user, one request per task: loads every model the run will use."""
    return argparse.Namespace(**{**vars(args), "users": 1, "requests": len(args.tasks)})


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def tenths(values: list[int]) -> list[float]:
    """The mean of each tenth of `values` (fewer parts when there are few values)."""
    parts = min(10, len(values))
    bounds = [round(i * len(values) / parts) for i in range(parts + 1)]
    return [sum(values[a:b]) / (b - a) for a, b in zip(bounds, bounds[1:])]


def report(tally: Tally, memory: MemorySampler, seconds: float, args,
           before: int = 0, loaded: int = 0, users_peak: int = 0) -> str:
    lat = tally.latencies
    lines = [f"users {args.users}, requests asked {args.requests}, steps {args.steps}, "
             f"tasks {', '.join(args.tasks)}, concurrency {args.concurrency}",
             f"requests served: {len(lat)} in {seconds:.1f} s "
             f"({len(lat) / seconds if seconds else 0:.2f} per second)",
             f"errors: {sum(tally.errors.values())}"]
    lines += [f"  {count} x {message}" for message, count in tally.errors.most_common(5)]
    if lat:
        lines.append(f"latency: p50 {percentile(lat, 0.5):.2f} s, p95 {percentile(lat, 0.95):.2f} s, "
                     f"max {max(lat):.2f} s")
        for task, values in sorted(tally.per_task.items()):
            lines.append(f"  {task}: {len(values)} served, p50 {statistics.median(values):.2f} s")
    rss = [r for _, r in memory.samples]
    if rss:
        means = tenths(rss)
        lines.append(f"server memory (RSS of the app's process; the users run in another): "
                     f"before any request {mb(before)}, after one request per task "
                     f"(models loaded) {mb(loaded)}")
        lines.append(f"  during the run: start {mb(rss[0])}, peak {mb(max(rss))}, "
                     f"end {mb(rss[-1])}")
        lines.append(f"  mean of each tenth of the run: "
                     f"{', '.join(f'{m / 2**20:.0f}' for m in means)} MB")
    if users_peak:
        lines.append(f"users' process memory: peak {mb(users_peak)} (not the server's)")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Simulated users against the app on 127.0.0.1.")
    p.add_argument("--users", type=int, default=8, help="users sending at once (default 8)")
    p.add_argument("--requests", type=int, default=200,
                   help=f"requests in all (default 200, at most {MAX_REQUESTS})")
    p.add_argument("--steps", type=int, default=4, help="denoising steps per request (default 4)")
    p.add_argument("--max-seconds", type=float, default=600,
                   help=f"stop sending after this long (default 600, at most {MAX_SECONDS})")
    p.add_argument("--tasks", default=",".join(TASKS),
                   help="comma-separated tasks to rotate over (default: all four)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="the app's sampling runs at once (default 1, as app.py)")
    args = p.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not args.tasks or any(t not in TASKS for t in args.tasks):
        p.error(f"--tasks: choose from {', '.join(TASKS)}")
    if not 1 <= args.users <= 64:
        p.error("--users must be 1..64")
    if not 1 <= args.requests <= MAX_REQUESTS:
        p.error(f"--requests must be 1..{MAX_REQUESTS}")
    if not 0 < args.max_seconds <= MAX_SECONDS:
        p.error(f"--max-seconds must be above 0 and at most {MAX_SECONDS}")
    if not 1 <= args.steps <= 150:
        p.error("--steps must be 1..150")
    return args


def serve(args):
    """The app as app.py builds it, on a free port of 127.0.0.1."""
    import socket

    from . import Playground
    from .ui import build_app
    from .ui.memory import few_malloc_arenas
    from .ui.serving import launch_options

    few_malloc_arenas()  # as app.py does

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(Playground(), concurrency_limit=args.concurrency,
                    max_queue=max(32, 2 * args.users))
    app.launch(prevent_thread_lock=True, quiet=True,
               **launch_options(app, host="127.0.0.1", port=port))
    return app


def main(argv=None) -> Tally:
    args = parse_args(argv)
    app = serve(args)
    memory = MemorySampler()
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing shared
    try:
        with tempfile.TemporaryDirectory(prefix="loadtest-") as folder, \
                ProcessPoolExecutor(max_workers=1, mp_context=spawn) as users:
            files = make_inputs(folder)
            before = memory.rss_now()
            warm = Tally.from_dict(users.submit(run_users, app.local_url,
                                                warm_up_args(args), files).result())
            loaded = memory.rss_now()
            memory.start()
            start = time.monotonic()
            outcome = users.submit(run_users, app.local_url, args, files).result()
            seconds = time.monotonic() - start
            memory.stop.set()
            memory.join()
    finally:
        app.close()
    tally = Tally.from_dict(outcome)
    for message, count in warm.errors.items():
        tally.errors[f"(warm-up) {message}"] += count
    print(report(tally, memory, seconds, args, before=before, loaded=loaded,
                 users_peak=outcome["peak_rss"]))
    return tally


if __name__ == "__main__":
    result = main()
    sys.exit(1 if result.errors else 0)
