"""``learned-schedules calibrate`` with parsed arguments (``training.cli`` parses them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .args import CalibrateArgs


def calibrate_command(args: CalibrateArgs) -> dict[str, Any]:
    """Run a calibration; the paths written (the CLI prints them as one JSON line)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.backend == "testbed":
        from .run import run_testbed

        result = run_testbed(args, out)
    else:
        from .comfy_run import run_comfy

        result = run_comfy(args, out)
    return {k: result[k] for k in ("policy", "per_image", "report") if k in result}


__all__ = ["calibrate_command"]
