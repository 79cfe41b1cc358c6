"""The ComfyUI parts of bench/calibrate_table.py: the digits model and tiny random-weight
families (their numbers say the method runs on each architecture, not how good a schedule
is for a trained model of that family)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
STEPS = (4, 6, 8, 10)


def _digits_flags(out: Path) -> list[str]:
    d = REPO / "models" / "digits"
    return ["--config", str(REPO / "training" / "configs" / "digits_reference.json"),
            "--diffusion-model", str(d / "digits_mmdit.safetensors"),
            "--text-encoders", str(d / "digits_clip_l.safetensors"),
            "--vae", str(d / "digits_vae.safetensors"),
            "--prompts", str(REPO / "training" / "prompts" / "digits.txt"),
            "--cache-dir", str(out / "cond"), "--teacher-cache", str(out / "teacher"),
            "--contexts", "10", "--threads", "1"]


def digits(args, write) -> None:
    from comfy_env import import_comfy
    from learned_schedules.calibration.fit import fit_per_image, per_image_policy
    from learned_schedules.calibration.problem import Meter
    from learned_schedules.calibration.run import CalibrationOptions
    from learned_schedules.comfy_bridge import calibration as cc
    from learned_schedules.policies.policy_file import load_policy
    from learned_schedules.training.calibrate.comfy_run import (
        batch_inputs,
        calibration_contexts,
        comfy_backend,
        evaluate,
    )
    from learned_schedules.training.calibrate.report import markdown
    from learned_schedules.training.calibrate.run import art_schedule
    from learned_schedules.training.cli import parse_calibrate_args

    out = Path(args.out) / "digits"
    import_comfy(out / "base")
    cargs = parse_calibrate_args([*_digits_flags(out), "--steps", *map(str, STEPS),
                                  "--eval-contexts", "30"])
    b = comfy_backend(cargs)
    ctx = calibration_contexts(b, 10)
    pos, neg, noise = batch_inputs(b, ctx)
    feats = b.features(ctx)
    costs, flows, per_image = [], {}, {}
    for search in ("dp", "dp+gradient"):
        t0 = time.monotonic()
        box = {}

        def then(problem, result, search=search, box=box):
            if search != "dp+gradient":
                return None
            torch.manual_seed(0)
            pol = per_image_policy(b.build_encoder(0, 0), result.schedules[4].flow)
            meter = Meter()
            t1 = time.monotonic()
            box["policy"], box["info"] = fit_per_image(problem, result.teacher, pol, meter,
                                                       iterations=40, lr=1e-2)
            box["calls"], box["seconds"] = meter.calls, time.monotonic() - t1

        res = cc.calibrate(b.model, pos, neg, b.cfg, noise, CalibrationOptions(
            steps=STEPS, search=search, budget=900, iterations=12),
            cache_dir=str(out / "teacher"), features=feats, then=then, use_memory=False)
        flows[search] = {s: r.flow for s, r in res.schedules.items()}
        for s, r in res.schedules.items():
            costs.append(dict(method=f"teacher {search}", steps=s, calls=r.calls,
                              contexts=len(ctx), seconds=float("nan")))
        costs.append(dict(method=f"teacher {search}, all L (teacher incl.)", steps=0,
                          calls=res.calls, contexts=len(ctx), seconds=time.monotonic() - t0))
        if "policy" in box:
            per_image[4] = box["policy"]
            costs.append(dict(method="teacher per-image (40 gradient iterations)", steps=4,
                              calls=box["calls"], contexts=len(ctx), seconds=box["seconds"]))
    art = {}
    for s in STEPS if args.art else ():
        art[s], seconds, forwards = art_schedule(parse_calibrate_args(
            [*_digits_flags(out), "--method", "art", "--steps", str(s)]), s, out / "art")
        costs.append(dict(method="ART direct (trainer: 4 iterations x batch 8)", steps=s,
                          calls=forwards, contexts=1, seconds=seconds))
    shipped = load_policy(REPO / "models" / "digits" / "digits_policy_L4.safetensors").policy
    policies = {s: {"shipped REINFORCE policy (L4; resampled)": shipped} for s in STEPS}
    policies[4]["teacher per-image"] = per_image[4]
    fixed = {s: {"teacher dp": flows["dp"][s], **({"ART direct": art[s]} if s in art else {})}
             for s in STEPS}
    fixed[4]["reward-trained best global (docs/digits.md)"] = torch.tensor(
        [1, .716, .504, .217, 0], dtype=torch.float64)
    tables = evaluate(b, cargs, flows["dp+gradient"], policies, fixed)
    text = markdown(tables, 30, "# calibrate benchmark: digits model (calibrated = teacher "
                    "dp+gradient; PSNR to the 30-step result, 10 digits x 3 held-out seeds)")
    cost = ["| calibration | L | batched calls | contexts | per-sample forwards | wall s |",
            "|---|---|---|---|---|---|"] + [
        f"| {c['method']} | {c['steps'] or 'all'} | {c['calls']:.0f} | {c['contexts']} | "
        f"{c['calls'] * c['contexts']:.0f} | {c['seconds']:.1f} |" for c in costs]
    (REPO / "bench" / "results" / "calibrate_digits.md").write_text(
        text + "\n" + "\n".join(cost) + "\n")
    (REPO / "bench" / "results" / "calibrate_digits.json").write_text(json.dumps(
        {"tables": tables, "costs": costs}, indent=1, default=str))
    print(text, "\n".join(cost), sep="\n")


def families(args, write, names: list[str]) -> None:
    from tiny_families import TINY_FAMILIES, build_tiny, load_tiny, shaped_conditioning

    from comfy_env import import_comfy
    from learned_schedules.calibration.run import CalibrationOptions
    from learned_schedules.comfy_bridge import calibration as cc
    from learned_schedules.comfy_bridge.scheduler_table import applicable_schedules

    out = Path(args.out) / "families"
    import_comfy(out / "base")
    rows: dict[str, dict[int, torch.Tensor]] = {}
    costs = []
    for name in names:
        spec = TINY_FAMILIES[name]
        path = build_tiny(spec, out / f"{name}.safetensors")
        model = load_tiny(spec, path)
        cond = shaped_conditioning(spec, seed=0, batch=1)
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(8, *spec.latent, generator=g)
        held = torch.randn(8, *spec.latent, generator=g)
        t0 = time.monotonic()
        res = cc.calibrate(model, cond, None, 1.0, noise, CalibrationOptions(
            steps=STEPS, budget=600, iterations=10), cache_dir=str(out / "teacher"),
            use_memory=False)
        costs.append(dict(method=f"{name}: teacher dp+gradient, all L", steps=0,
                          calls=res.calls, contexts=8, seconds=time.monotonic() - t0))
        scheds = {"teacher": cc.teacher_grid(model, 30)}
        for s in STEPS:
            scheds[f"calibrated@{s}"] = res.schedules[s].flow
            scheds.update({f"{k}@{s}": f for k, f in applicable_schedules(model, s).items()})
        lat = cc.sample_few_step(model, cond, None, 1.0, held, scheds)
        ref = lat.pop("teacher")
        for key, x in lat.items():
            sched, s = key.rsplit("@", 1)
            mse = (x - ref).pow(2).flatten(1).mean(1)
            rows.setdefault(f"{name}: {sched}", {})[int(s)] = -10 * torch.log10(mse)
    write("families", rows, costs, "Tiny random-weight models (tests/tiny_families.py), one "
          "random conditioning, 8 calibration and 8 held-out noises; latent PSNR (peak 1) to "
          "the 30-step result; 1 thread. Random weights: these rows say the method runs on "
          "each architecture, not how good a schedule is for a trained model.")


__all__ = ["digits", "families"]
