"""Serve the diffusion playground: flags -> build the app -> launch.

    python app.py                      # http://127.0.0.1:7860 with the starter models
    python app.py --help               # every flag
"""
from __future__ import annotations

import argparse
import sys

import torch

from playground import Playground, PlaygroundError, Registry
from playground.ui import build_app
from playground.ui.memory import few_malloc_arenas
from playground.ui.serving import (exposure_warning, launch_options, login_checker,
                                   parse_login, read_auth_file, share_failed_message)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="The diffusion playground: text to image, "
                                "layout to image, inpainting and x4 super-resolution.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; "
                   "0.0.0.0: every network, add --auth)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]SOURCE[;OPTIONS]",
                   help="add a model (repeatable): a hub id or a local diffusers folder, "
                   "e.g. sd15=stable-diffusion-v1-5/stable-diffusion-v1-5;tasks=t2i,inpaint. "
                   "The starter models are always there.")
    p.add_argument("--models-file", metavar="FILE", help="a .toml or .json file of models")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                   help="a folder local models may be loaded from (repeatable)")
    p.add_argument("--device", choices=["cpu", "cuda", "mps"],
                   help="where models run (default: picked: cuda, then mps, then cpu)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                   help="weights' precision (default: float16 on GPUs, float32 on CPU)")
    p.add_argument("--memory-budget-gb", type=float, metavar="GB",
                   help="most GB of model weights kept loaded (least recently used go first)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads per sampling run (default: torch's choice, one per core; "
                   "1 can be faster for the small starter models on a busy host, see README's Benchmark)")
    p.add_argument("--concurrency", type=int, default=1, metavar="N",
                   help="sampling runs at once (default 1, right for a CPU)")
    p.add_argument("--max-queue", type=int, default=32, metavar="N",
                   help="requests that may wait; beyond it users see 'queue is full'")
    p.add_argument("--share", action="store_true",
                   help="also make a public Gradio share link (needs network; add --auth)")
    p.add_argument("--auth", metavar="USER:PASSWORD", help="require this login")
    p.add_argument("--auth-file", metavar="FILE", help="require a login from this file "
                   "(one user:password per line)")
    p.add_argument("--root-path", metavar="PATH",
                   help="URL prefix when served behind a proxy, e.g. /playground")
    return p.parse_args(argv)


def make_playground(args) -> Playground:
    budget = int(args.memory_budget_gb * 2**30) if args.memory_budget_gb else None
    registry = Registry.from_flags(args.model, args.models_file, allowed_dirs=args.allow_dir,
                                   device=args.device, dtype=args.dtype, memory_budget=budget)
    return Playground(registry)


def logins(args) -> list[tuple[str, str]]:
    found = [parse_login(args.auth)] if args.auth else []
    if args.auth_file:
        found += read_auth_file(args.auth_file)
    return found


def main(argv=None) -> None:
    args = parse_args(argv)
    few_malloc_arenas()  # before the server's threads: keeps its memory flat under load
    if args.threads is not None:
        if args.threads < 1:
            sys.exit(f"app.py: error: --threads must be 1 or more, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        pg = make_playground(args)
        users = logins(args)
    except PlaygroundError as error:
        sys.exit(f"app.py: error: {error}")
    warning = exposure_warning(args.host, args.share, bool(users))
    if warning:
        print(warning, file=sys.stderr)
    app = build_app(pg, concurrency_limit=args.concurrency, max_queue=args.max_queue)
    app.launch(**launch_options(app, host=args.host, port=args.port, share=args.share,
                                auth=login_checker(users) if users else None,
                                root_path=args.root_path), prevent_thread_lock=True)
    if args.share and not getattr(app, "share_url", None):
        print(share_failed_message(getattr(app, "local_url", None)), file=sys.stderr)
    app.block_thread()  # serve until Ctrl+C (returns at once if the server is not running)


if __name__ == "__main__":
    main()
