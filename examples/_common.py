"""What the three examples share: argument checks, the device, seeding, optional imports.

Each example runs as a script (``python examples/digit_sum.py``, this folder is then on
``sys.path``) and is importable (``main(argv)`` returns its results), which is how the tests
call them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random

import numpy as np
import torch

EXAMPLES_DIR = os.path.dirname(os.path.abspath(__file__))


def require(module: str, package: str, purpose: str):
    """Import ``module`` or stop with a message saying which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SystemExit(f"this example needs {package} {purpose}: pip install {package}") from None


def progress_bar(**kwargs):
    """A tqdm bar on stderr (stdout keeps only the results)."""
    tqdm = require("tqdm", "tqdm", "for its progress bars")
    return tqdm.tqdm(dynamic_ncols=True, **kwargs)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="cpu", help="cpu (default) or cuda / cuda:N where a GPU is available"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument(
        "--quick", action="store_true", help="a short run (well under a minute on 2 CPU cores)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: these models are small, and on a "
        "busy machine more threads than free cores slow them down)",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def pick_device(parser: argparse.ArgumentParser, name: str) -> torch.device:
    """``--device`` as a torch.device, or a parser error saying why it cannot be used."""
    try:
        device = torch.device(name)
    except RuntimeError:
        parser.error(f"--device {name}: not a device name (cpu, cuda, cuda:N)")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {name}: the examples run on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {name}: torch finds no CUDA GPU on this machine")
    if device.type == "cuda" and not rnnfast_has_cuda_kernels():
        parser.error(
            f"--device {name}: this build of rnnfast has no CUDA kernels "
            "(reinstall it where the CUDA toolkit is found, or with FORCE_CUDA=1)"
        )
    return device


def rnnfast_has_cuda_kernels() -> bool:
    import rnnfast  # noqa: F401  (registers the ops)

    return torch._C._dispatch_has_kernel_for_dispatch_key("rnnfast::recurrent_forward", "CUDA")


def set_up(parser: argparse.ArgumentParser, args: argparse.Namespace) -> torch.device:
    """Seed every generator and apply ``--threads``; returns the device."""
    device = pick_device(parser, args.device)
    if args.threads <= 0:
        parser.error(f"--threads must be positive, got {args.threads}")
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    return device


def make_out_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path
