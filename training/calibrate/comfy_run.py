"""``calibrate`` on a ComfyUI model: contexts, conditioning and noise from the ComfyUI back-end
(:class:`training.comfy.backend.ComfyBackend`, reward ``reference``: no reward model is
loaded), the calibration through the bridge's adapter (:mod:`comfy_bridge.calibration`) and
the evaluation table: PSNR of the decoded few-step images to the decoded many-step image of
the same held-out (prompt, seed), for the calibrated schedule(s) and every ComfyUI schedule
that applies to the model (:mod:`comfy_bridge.scheduler_table`). On a video model
(``--frames``, latents ``[N, C, T, h, w]``) the table compares latents, with no decode, as
the trainer's ``reference`` reward does there (``--reference-space``, ``auto``: latents for
video): decoding every row through a video VAE would cost more than the calibration."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ...calibration.fit import fit_per_image, per_image_policy
from ...calibration.problem import Meter
from ..comfy.references import psnr as image_psnr
from .args import CalibrateArgs
from .report import CALIBRATED, PER_IMAGE, table_rows, write_report
from .run import art_schedule, options_of, progress_callback, save_outputs, teacher_cache

log = logging.getLogger("learned_schedules.training")
TEACHER = "teacher"


def comfy_backend(args: CalibrateArgs) -> Any:
    """The ComfyUI back-end of the model options (reward ``reference``: none loaded)."""
    from ..comfy.backend import ComfyBackend
    from ..rl.config import TrainConfig

    cfg = TrainConfig.from_dict(dict(backend="comfy", reward="reference", seed=args.seed,
                                     pool_size=max(4096, 4 * args.contexts)))
    cfg.comfy = dataclasses.replace(args.comfy, sample_every=0)
    return ComfyBackend.from_config(cfg)


def batch_inputs(backend: Any, contexts: Any) -> tuple[list, list | None, torch.Tensor]:
    """(positive, negative, noise) of a batch of contexts that share a token count."""
    prompts = backend.prompt_texts(contexts)
    return backend._batched_cond(prompts), backend._negative(len(prompts)), \
        backend.noise(contexts)


def calibration_contexts(backend: Any, n: int) -> Any:
    """``n`` training contexts of one token-length group (the largest), since a
    calibration runs as one batch."""
    ctx = backend.pool.select(torch.arange(n))
    groups = list(backend.inputs.batches(backend.prompt_texts(ctx)))
    if len(groups) > 1:
        biggest = max(groups, key=len)
        log.info("calibrate: %d of %d contexts share a token count; calibrating on them",
                 len(biggest), n)
        ctx = ctx.select(biggest)
    return ctx


def run_comfy(args: CalibrateArgs, out: Path) -> dict[str, Any]:
    """Calibrate on a ComfyUI model, write the policy file(s) and the evaluation table."""
    from ...comfy_bridge import calibration as cc

    b = comfy_backend(args)
    ctx = calibration_contexts(b, args.contexts)
    pos, neg, noise = batch_inputs(b, ctx)
    features = b.features(ctx)
    summary: dict[str, Any] = {"method": args.method, "contexts": len(ctx),
                               "threads": torch.get_num_threads(),
                               "teacher_steps": args.teacher_steps, "cfg": b.cfg,
                               "psnr_space": "latents" if b.reference_space == "latent"
                               else "decoded images",
                               "expert_boundary": b.expert_boundary}
    t0 = time.monotonic()
    per_image: dict[int, torch.nn.Module] = {}
    if args.method == "art":
        if b.low_model is not None:
            raise ValueError("--method art runs on one model; calibrate two experts "
                             "(--low-noise-model) with --method teacher.")
        flows = {s: art_schedule(args, s, out / "art")[0] for s in args.steps}
    else:
        def then(problem: Any, result: Any) -> dict[int, Any]:
            fits = {}
            for steps in args.steps:
                torch.manual_seed(args.seed)
                pol = per_image_policy(b.build_encoder(0, 0), result.schedules[steps].flow)
                fits[steps] = fit_per_image(problem, result.teacher, pol, Meter(),
                                            iterations=args.per_image_iterations,
                                            lr=args.per_image_lr, seed=args.seed)
            return fits

        prog, update = progress_callback(args)
        res = cc.calibrate(b.model, pos, neg, b.cfg, noise, options_of(args),
                           teacher_steps=args.teacher_steps, cache_dir=teacher_cache(args),
                           progress=update, features=features,
                           then=then if args.per_image else None, use_memory=False,
                           low_model=b.low_model, boundary=b.expert_boundary)
        prog.close()
        flows = {s: r.flow for s, r in res.schedules.items()}
        summary.update(calls_per_context=res.calls, teacher_cached=res.teacher.from_cache,
                       calibration_seconds=res.seconds,
                       losses={s: [r.loss_start, r.loss] for s, r in res.schedules.items()})
        for steps, (pol, info) in (res.extra or {}).items():
            per_image[steps] = pol
            summary.setdefault("per_image", {})[steps] = info
    summary["seconds"] = time.monotonic() - t0
    paths = save_outputs(args, b.model_family, flows, per_image, summary, out)
    tables = evaluate(b, args, flows, {s: {PER_IMAGE: p} for s, p in per_image.items()}) \
        if args.eval_contexts else {}
    space = summary["psnr_space"]
    header = (f"# calibrate {b.model_family} ({args.method}, {len(ctx)} contexts, "
              f"{summary['seconds']:.0f} s on {summary['threads']} threads; PSNR of the "
              f"{space} to the {args.teacher_steps}-step result)")
    if tables:
        paths["report"] = str(write_report(out, tables, args.eval_contexts, header, summary))
    return {**paths, "tables": tables, "summary": summary}


def evaluate(b: Any, args: CalibrateArgs, flows: dict[int, torch.Tensor],
             policies: dict[int, dict[str, torch.nn.Module]] | None = None,
             fixed: dict[int, dict[str, torch.Tensor]] | None = None
             ) -> dict[int, list[dict[str, Any]]]:
    """The evaluation tables by step count (see the module docstring); ``policies``: per-image
    policies by step count and row name (their mean schedule per context), ``fixed``: more
    flow schedules by step count and row name (benchmarks)."""
    policies, fixed = policies or {}, fixed or {}
    from ...comfy_bridge import calibration as cc
    from ...comfy_bridge.scheduler_table import applicable_schedules

    held = b.held_out_contexts(args.eval_contexts, args.eval_seed)
    grid = cc.teacher_grid(b.model, args.teacher_steps)
    scores: dict[str, list[torch.Tensor]] = {}
    comparators = {s: applicable_schedules(b.model, s) for s in args.steps}
    for idx in b.inputs.batches(b.prompt_texts(held)):
        sub = held.select(idx)
        pos, neg, noise = batch_inputs(b, sub)
        scheds = {TEACHER: grid}
        feats = b.features(sub) if policies else {}
        for steps in args.steps:
            scheds[f"{CALIBRATED}@{steps}"] = flows[steps]
            scheds.update({f"{name}@{steps}": f for name, f in comparators[steps].items()})
            scheds.update({f"{name}@{steps}": f for name, f in fixed.get(steps, {}).items()})
            for name, pol in policies.get(steps, {}).items():
                with torch.no_grad():
                    scheds[f"{name}@{steps}"] = pol.schedule(feats, steps=steps).double()
        latents = cc.sample_few_step(b.model, pos, neg, b.cfg, noise, scheds,
                                     low_model=b.low_model, boundary=b.expert_boundary)
        view = (lambda lat: lat) if b.reference_space == "latent" else b.decode
        ref = view(latents.pop(TEACHER))
        for key, lat in latents.items():
            scores.setdefault(key, []).append(image_psnr(view(lat), ref))
    tables = {}
    for steps in args.steps:
        tag = f"@{steps}"
        psnr = {k[:-len(tag)]: torch.cat(v) for k, v in scores.items() if k.endswith(tag)}
        tables[steps] = table_rows(psnr)
    return tables


__all__ = ["comfy_backend", "batch_inputs", "calibration_contexts", "run_comfy", "evaluate"]
