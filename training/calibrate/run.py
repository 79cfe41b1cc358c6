"""``calibrate``'s runs: the shared steps (options, progress, ART through the trainer, the
policy files) and the testbed run; the ComfyUI run is :mod:`.comfy_run`."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ...calibration.fit import fit_per_image, per_image_policy
from ...calibration.problem import Meter
from ...calibration.run import CalibrationOptions, calibrate_global
from ...calibration.saving import save_calibrated
from ...policies.policy_file import load_policy, save_policy
from ..rl.progress import Progress
from .args import CalibrateArgs
from .report import CALIBRATED, PER_IMAGE, table_rows, write_report

log = logging.getLogger("learned_schedules.training")


def options_of(args: CalibrateArgs) -> CalibrationOptions:
    """The core's options from the command's flags."""
    return CalibrationOptions(steps=tuple(args.steps), search=args.search, budget=args.budget,
                              minutes=args.minutes or float("inf"),
                              iterations=args.iterations, lr=args.lr)


def teacher_cache(args: CalibrateArgs) -> str:
    """The teacher cache folder."""
    return args.teacher_cache or str(Path.home() / ".cache" / "learned_schedules" / "teacher")


def progress_callback(args: CalibrateArgs) -> tuple[Progress, Any]:
    """A progress line every ~10 s with ETA, fed with model calls."""
    prog = Progress(total=int(args.budget), desc="calibrate", terminal=False)

    def update(done: int, total: int) -> None:
        prog.total = max(total, done)
        prog.update(done, {})

    return prog, update


def art_schedule(args: CalibrateArgs, steps: int, out: Path
                 ) -> tuple[torch.Tensor, float, float]:
    """ART's direct solver through the trainer (``--algo art --art.solver direct``; on a
    ComfyUI model with the cheap error signal, one extra forward per Q in the model's own
    dtype: ``--art.error-signal finite_difference``, docs/art.md): its deployed global
    schedule, the wall time and its per-sample model calls (forwards plus forward-mode JVPs,
    from the run's metrics)."""
    from ..rl.config import TrainConfig
    from ..rl.engine import train

    small = args.backend == "comfy"
    cfg = TrainConfig.from_dict(dict(
        backend=args.backend, testbed_config=args.testbed_config, steps=steps, algo="art",
        iterations=4 if small else 16, batch=8 if small else 16, seed=args.seed,
        reward="reference" if small else None, eval_every=0, checkpoint_every=0,
        out=str(out), run_name=f"art_L{steps}__{time.strftime('%Y%m%d-%H%M%S')}",
        art={"solver": "direct",
             "error_signal": "finite_difference" if small else "jvp"}))
    if small:
        cfg.comfy = dataclasses.replace(args.comfy, sample_every=0)
    t0 = time.monotonic()
    result = train(cfg)
    loaded = load_policy(result.run_dir / "policy.safetensors")
    flow = loaded.policy.schedule({}, steps=steps)[0].double()
    calls = float("nan")
    with open(result.run_dir / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
        if last.get("model_calls"):
            calls = float(last["model_calls"]) + float(last.get("model_jvps") or 0)
    return flow, time.monotonic() - t0, calls


def save_outputs(args: CalibrateArgs, family: str, flows: dict[int, torch.Tensor],
                 per_image: dict[int, torch.nn.Module], summary: dict[str, Any], out: Path
                 ) -> dict[str, Any]:
    """The global policy file (every step count) and one per-image file per step count."""
    name = args.name or f"calibrated_{family}"
    training = {"calibrate": json.loads(json.dumps(dataclasses.asdict(args), default=str))}
    path = save_calibrated(out / f"{name}.safetensors", {c: flows[c] for c in args.steps},
                           method=f"calibrate-{args.method}", family=family,
                           training=training, summary=summary)
    paths = {"policy": str(path), "per_image": []}
    for steps, pol in per_image.items():
        p = out / f"{name}_per_image_L{steps}.safetensors"
        save_policy(p, pol, method="calibrate-teacher-per-image", model_family=family,
                    training=training, reward="reference", global_schedule=flows[steps],
                    extra={"calibration": summary})
        paths["per_image"].append(str(p))
    return paths


def run_testbed(args: CalibrateArgs, out: Path) -> dict[str, Any]:
    """Calibrate on the analytic testbed and evaluate on held-out contexts against its
    reference schedules (uniform, SD3's shift 3, Flux's shift)."""
    from ...policies.encoders import VectorEncoder
    from ..testbed.calibration import calibration_grid, calibration_problem
    from ..testbed.comparators import fixed_schedules
    from ..testbed.mixture import Testbed

    tb = Testbed.from_json(args.testbed_config) if args.testbed_config else Testbed.default()
    ctx = tb.contexts_from_seed(args.contexts, args.seed, with_target=False)
    problem = calibration_problem(tb, ctx)
    grid = calibration_grid(args.teacher_steps)
    t0 = time.monotonic()
    flows: dict[int, torch.Tensor] = {}
    summary: dict[str, Any] = {"method": args.method, "contexts": args.contexts,
                               "threads": torch.get_num_threads()}
    if args.method == "art":
        for steps in args.steps:
            flows[steps] = art_schedule(args, steps, out / "art")[0]
    else:
        prog, update = progress_callback(args)
        res = calibrate_global(problem, grid, options_of(args), cache_dir=teacher_cache(args),
                               progress=update)
        prog.close()
        flows = {s: r.flow for s, r in res.schedules.items()}
        summary.update(calls_per_context=res.calls, teacher_cached=res.teacher.from_cache,
                       losses={s: [r.loss_start, r.loss] for s, r in res.schedules.items()})
    per_image: dict[int, torch.nn.Module] = {}
    if args.per_image:
        teacher = res.teacher
        for steps in args.steps:
            torch.manual_seed(args.seed)
            pol = per_image_policy(VectorEncoder(tb.dim, tb.cond_dim, hidden=32, depth=1),
                                   flows[steps])
            per_image[steps], info = fit_per_image(
                problem, teacher, pol, Meter(), iterations=args.per_image_iterations,
                lr=args.per_image_lr, checkpointing=False, seed=args.seed)
            summary.setdefault("per_image", {})[steps] = info
    summary["seconds"] = time.monotonic() - t0
    tables = {}
    if args.eval_contexts:
        held = tb.contexts_from_seed(args.eval_contexts, args.eval_seed)
        feats = {"noise": held.noise.float(), "cond": held.cond.float()}
        for steps in args.steps:
            scheds = {CALIBRATED: flows[steps], **fixed_schedules(steps)}
            if steps in per_image:
                with torch.no_grad():
                    scheds[PER_IMAGE] = per_image[steps].schedule(feats).double()
            psnr = {name: -10.0 * torch.log10(tb.squared_error(held, s.double()) / tb.dim)
                    for name, s in scheds.items()}
            tables[steps] = table_rows(psnr)
    paths = save_outputs(args, "testbed", flows, per_image, summary, out)
    header = (f"# calibrate on the testbed ({args.method}, {args.contexts} contexts, "
              f"{summary['seconds']:.1f} s on {summary['threads']} threads)")
    if tables:
        paths["report"] = str(write_report(out, tables, args.eval_contexts, header, summary))
    return {**paths, "tables": tables, "summary": summary}


__all__ = ["options_of", "teacher_cache", "art_schedule", "save_outputs", "run_testbed"]
