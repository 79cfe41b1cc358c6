"""ART on the default analytic testbed at L in {3, 5, 8, 12}, and the cost of its error signal.

* ART is trained ONCE per variant (its clock lives on the K-point grid and does not depend on
  the step budget; each L reads it at ``s = j / L``): ``art global`` (the actor reads
  ``(s, psi)`` only; the distilled clock) and ``art instance`` (the actor also reads the
  encoded context; the clock of each held-out context, kept per instance).
* ``art objective optimum``: the exact minimiser of ART's objective for a global clock (flow
  time spaced so that every step covers the same integral of ``sqrt(mean |Q|)``, with ``|Q|``
  measured along trajectories of the 512 training contexts on the 100-point grid). It is what
  ART-RL converges to in theory; the gap between it and ``art global`` is the RL's.
* comparators on the same held-out contexts (the testbed table's: seed 10000, 512): uniform,
  SD3's shift 3, the best global schedule (Adam through the exact sampler on 512 training
  contexts, 3 starts x 400 iterations), and the Dirichlet JS policy's held-out reward from
  ``bench/results/testbed_table.json`` (mean over 3 training seeds; not paired).
* training cost in model evaluations (velocity calls; a JVP costs ``jvp_ratio`` calls).
* ``--comfy``: one Q evaluation (a velocity call for the tangent + one forward-mode JVP)
  relative to one model call on the tiny ComfyUI SD3 and Flux (CPU, 1 thread).

Usage: ``nice python bench/art_table.py [--iterations 300] [--comfy]``; writes
``bench/results/art.md`` and ``art.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from learned_schedules.policies.art import (
    clock_to_schedule,
    distil_global_clock,
    equidistributed_schedule,
)
from learned_schedules.policies.schedule import shifted_schedule, uniform_schedule
from learned_schedules.training.rl.backend import policy_features
from learned_schedules.training.rl.checkpoint import read_checkpoint
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import train
from learned_schedules.training.rl.flow_error import velocity_and_error
from learned_schedules.training.testbed.backend import TestbedBackend
from learned_schedules.training.testbed.comparators import best_global_schedule
from learned_schedules.training.testbed.mixture import DTYPE, Testbed

EVAL_SEED = 10_000
REPO = Path(__file__).resolve().parents[1]


def art_config(tmp: str, iterations: int, features: bool, grid: int, batch: int,
               solver: str = "actor_critic") -> TrainConfig:
    return TrainConfig.from_dict(dict(
        algo="art", steps=8, iterations=iterations, batch=batch, hidden=32, out=tmp,
        run_name="r", progress=False, checkpoint_every=0, eval_every=0, eval_contexts=16,
        lr_schedule="constant",
        art=dict(grid=grid, width=64, lr=1e-3, critic_lr=3e-3, gamma_lr=1.0, penalty=10.0,
                 sigma_floor=1e-2, features=features, distill_contexts=256, solver=solver)))


def train_art(iterations: int, features: bool, grid: int, batch: int,
              solver: str = "actor_critic") -> dict:
    with TemporaryDirectory() as tmp:
        cfg = art_config(tmp, iterations, features, grid, batch, solver)
        t0 = time.perf_counter()
        result = train(cfg)
        seconds = time.perf_counter() - t0
        with (result.run_dir / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
        state = sorted((result.run_dir / "checkpoints").glob("state_*.safetensors"))[-1]
        tensors, _ = read_checkpoint(state)
    out = {"policy": result.policy.eval(), "config": cfg, "seconds": seconds,
           "iterations": iterations, "batch": batch, "grid": grid,
           "model_calls": float(rows[-1]["model_calls"]),
           "model_jvps": float(rows[-1]["model_jvps"])}
    if solver == "direct":
        out["q_cells"] = tensors["algo.q_sum"].double() / float(tensors["algo.q_count"])
    else:
        late = rows[-50:]
        out["gamma"] = float(rows[-1]["gamma"])
        out["violation_last50"] = sum(float(r["constraint_violation"]) for r in late) / len(late)
        out["abs_violation_last50"] = sum(float(r["abs_violation"]) for r in late) / len(late)
    return out


def paired(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a - b).double()
    return float(d.mean()), float(d.std() / math.sqrt(d.numel()))


def comfy_q_cost(repeats: int = 5) -> dict:
    """Seconds of one model call and of one Q evaluation (call + JVP) on the tiny SD3 and
    Flux (CPU, 1 thread, float32, MATH attention)."""
    sys.path.insert(0, str(REPO / "tests"))
    from comfy_env import (
        build_tiny_flux,
        build_tiny_flux_text_encoders,
        build_tiny_sd3,
        import_comfy,
    )
    from learned_schedules.training.comfy.flow_field import run_flow_field

    tmp = Path(TemporaryDirectory().name)
    tmp.mkdir(parents=True, exist_ok=True)
    cui = import_comfy(tmp)
    import comfy.sd

    out = {}
    build_tiny_sd3(tmp / "sd3.safetensors", std=0.02)
    sd3 = comfy.sd.load_diffusion_model(str(tmp / "sd3.safetensors"))
    flux = build_tiny_flux()
    clip = build_tiny_flux_text_encoders(tmp)
    enc = cui.nodes.CLIPTextEncode().encode
    flux_pos = enc(clip, "a red cat")[0]
    flux_pos = [[flux_pos[0][0], {**flux_pos[0][1], "guidance": 3.5}]]
    sd3_pos = [[torch.randn(1, 77, 4096), {"pooled_output": torch.randn(1, 2048)}]]
    for name, model, pos in (("tiny sd3 (1.9M, 8x8 latent, cfg 1)", sd3, sd3_pos),
                             ("tiny flux (hidden 64, 8x8 latent)", flux, flux_pos)):
        noise = torch.randn(1, 16, 8, 8)

        def fn(field):
            s = torch.full((1,), 0.5)
            x = field.start * 0.5
            for _ in range(2):  # warm up
                field(x, s)
                velocity_and_error(field, x, s)
            t0 = time.process_time()
            for _ in range(repeats):
                field(x, s)
            t1 = time.process_time()
            for _ in range(repeats):
                velocity_and_error(field, x, s, "forward_ad")
            t2 = time.process_time()
            return {"call": torch.tensor((t1 - t0) / repeats),
                    "q": torch.tensor((t2 - t1) / repeats)}

        res = run_flow_field(model, pos, None, 1.0, noise, fn)
        out[name] = {"call_s": float(res["call"]), "q_s": float(res["q"]),
                     "q_over_call": float(res["q"] / res["call"])}
    return out


def testbed_q_cost(backend: TestbedBackend, repeats: int = 200) -> dict:
    ctx = backend.held_out_contexts(16, 3)
    field = backend.flow_field(ctx)
    x, s = field.start * 0.4, torch.full((16,), 0.4, dtype=DTYPE)
    out = {}
    for _ in range(20):
        field(x, s)
    t0 = time.process_time()
    for _ in range(repeats):
        field(x, s)
    call = (time.process_time() - t0) / repeats
    for method in ("double_backward", "forward_ad"):
        for _ in range(5):
            velocity_and_error(field, x, s, method)
        t0 = time.process_time()
        for _ in range(repeats // 4):
            velocity_and_error(field, x, s, method)
        out[method] = (time.process_time() - t0) / (repeats // 4) / call
    return {"call_s": call, "q_over_call": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[3, 5, 8, 12])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--grid", type=int, default=40)
    parser.add_argument("--contexts", type=int, default=512)
    parser.add_argument("--train-contexts", type=int, default=512)
    parser.add_argument("--fit-iters", type=int, default=400)
    parser.add_argument("--direct-iterations", type=int, default=16,
                        help="iterations (x 16 trajectories) of the direct solver")
    parser.add_argument("--no-instance", action="store_true")
    parser.add_argument("--comfy", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    testbed = Testbed.default()
    backend = TestbedBackend(testbed)
    held = backend.held_out_contexts(args.contexts, EVAL_SEED)
    train_ctx = testbed.contexts_from_seed(args.train_contexts, EVAL_SEED + 1)
    report: dict = {"config": vars(args), "steps": {}}
    arts = {"art direct": train_art(args.direct_iterations, False, 100, 16, "direct"),
            "art-rl global": train_art(args.iterations, False, args.grid, args.batch)}
    if not args.no_instance:
        arts["art-rl instance"] = train_art(args.iterations, True, args.grid, args.batch)
    js_table = json.loads((REPO / "bench" / "results" / "testbed_table.json").read_text())
    distil_ctx = backend.draw_contexts(256, torch.Generator().manual_seed(1))
    for steps in args.steps:
        scheds = {"uniform": uniform_schedule(steps, DTYPE),
                  "sd3 (shift 3)": shifted_schedule(steps, 3.0, DTYPE)}
        t0 = time.perf_counter()
        scheds["best global"] = best_global_schedule(testbed, train_ctx, steps,
                                                     iters=args.fit_iters)
        fit_seconds = time.perf_counter() - t0
        scheds["art direct (global)"] = equidistributed_schedule(arts["art direct"]["q_cells"],
                                                                 steps)
        pol = arts["art-rl global"]["policy"]
        feats = policy_features(pol, backend, distil_ctx)
        scheds["art-rl global"] = distil_global_clock(pol, feats, steps=steps).flow.double()
        if "art-rl instance" in arts:
            ipol = arts["art-rl instance"]["policy"]
            with torch.no_grad():
                inst = clock_to_schedule(ipol.clock(policy_features(ipol, backend, held)),
                                         steps)
            scheds["art-rl instance"] = inst
            with torch.no_grad():
                gi = distil_global_clock(ipol, policy_features(ipol, backend, distil_ctx),
                                         steps=steps)
            scheds["art-rl instance, distilled"] = gi.flow.double()
        rewards = {}
        for name, s in scheds.items():
            s = s if s.ndim == 2 else s.expand(len(held), -1)
            rewards[name] = backend.rewards(held, s[:, None, :].float())[:, 0].double()
        rows = []
        for name, r in rewards.items():
            du = paired(r, rewards["uniform"])
            db = paired(r, rewards["best global"])
            rows.append({"name": name, "mean": float(r.mean()),
                         "se": float(r.std() / math.sqrt(r.numel())), "vs_uniform": du,
                         "vs_best_global": db})
        js = None
        key = str(steps)
        if key in js_table["steps"]:
            js = next((r for r in js_table["steps"][key]["rows"] if r["name"] == "policy js"),
                      None)
        cost = {"best global": 3 * (args.fit_iters + 1) * args.train_contexts * steps}
        report["steps"][key] = {"rows": rows, "js": js, "fit_seconds": fit_seconds,
                                "cost": cost,
                                "schedules": {k: v.tolist() for k, v in scheds.items()
                                              if v.ndim == 1}}
        print(steps, [(r["name"], round(r["mean"], 3)) for r in rows], flush=True)
    report["art"] = {k: {kk: (vv.tolist() if torch.is_tensor(vv) else vv)
                         for kk, vv in v.items() if kk not in ("policy", "config")}
                     for k, v in arts.items()}
    report["testbed_q_cost"] = testbed_q_cost(backend)
    if args.comfy:
        report["comfy_q_cost"] = comfy_q_cost()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "art.json").write_text(json.dumps(report, indent=1))
    (out / "art.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [f"Default testbed, {cfg['contexts']} held-out contexts (seed {EVAL_SEED}), "
             f"fidelity reward (mean ± SE; differences paired per context). Every ART clock "
             f"is trained once and read at every L.\n"]
    for key, st in report["steps"].items():
        lines += [f"### L = {key}\n", "| schedule | reward | vs uniform | vs best global |",
                  "|---|---|---|---|"]
        for r in st["rows"]:
            lines.append(f"| {r['name']} | {r['mean']:.3f} ± {r['se']:.3f} | "
                         f"{r['vs_uniform'][0]:+.3f} ± {r['vs_uniform'][1]:.3f} | "
                         f"{r['vs_best_global'][0]:+.3f} ± {r['vs_best_global'][1]:.3f} |")
        if st["js"]:
            js = st["js"]
            lines.append(f"| Dirichlet JS policy (testbed table, 3 seeds, unpaired) | "
                         f"{js['mean']:.3f} ± {js['se_contexts']:.3f} | | |")
        lines.append(f"\nBest global fit: {st['cost']['best global']:,} velocity calls "
                     f"(+ as many backward passes, + reference solutions), "
                     f"{st['fit_seconds']:.0f} s.\n")
    for name, a in report["art"].items():
        extra = "" if "gamma" not in a else (
            f"; final gamma {a['gamma']:.2f}; psi(T) - T over the last 50 iterations: mean "
            f"{a['violation_last50']:+.3f}, mean absolute {a['abs_violation_last50']:.3f}")
        lines.append(f"* {name}: {a['iterations']} iterations x {a['batch']} trajectories x "
                     f"{a['grid']} grid points = {a['model_calls']:,.0f} velocity calls + "
                     f"{a['model_jvps']:,.0f} JVPs, {a['seconds']:.0f} s{extra}.")
    tq = report["testbed_q_cost"]
    lines.append("* Testbed: one Q evaluation (call + JVP) costs "
                 + ", ".join(f"{v:.1f}x ({k})" for k, v in tq["q_over_call"].items())
                 + f" one velocity call ({1e6 * tq['call_s']:.0f} us).")
    for name, c in (report.get("comfy_q_cost") or {}).items():
        lines.append(f"* {name}: one Q evaluation (call + forward-mode JVP, MATH attention) "
                     f"= {c['q_over_call']:.1f}x one model call ({1e3 * c['call_s']:.1f} ms, "
                     f"CPU, 1 thread).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
