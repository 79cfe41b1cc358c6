"""ART's cheap error signal: the one-sided finite difference along the flow vs the exact JVP.

``Q = J_x v . v + dv/dsigma`` (training/rl/flow_error.py) by one extra plain forward,
``(v(x + h v, sigma + h) - v) / h`` (forward) or ``(v - v(x - h v, sigma - h)) / h`` (backward),
against the forward-mode JVP in float64 of the same weights. Two parts:

* ``error``: the relative error at several flow times along an Euler trajectory, for a sweep
  of ``h``, both directions, the model computing in float32 and in bf16 (weights rounded to
  bf16 for every dtype, so the float64 JVP is the exact reference of the bf16 model), on the
  analytic testbed and on tiny random-weight SD3 and Flux built from ComfyUI's classes.
  Two measures, each RMS over items: ``vec`` = |Q_fd - Q_jvp| / |Q_jvp| (the vector) and
  ``size`` = (|Q_fd| - |Q_jvp|) / |Q_jvp| (the scalar ART weighs, ``error_size``).
* ``cost``: seconds of one model call, of one trajectory point with the JVP signal (a call for
  the tangent + one forward-mode JVP, float32, MATH attention) and with the finite difference
  (the call + one more call), as ratios to the call, in the same process. ``--device cuda
  --real-size``: real-size random-weight Flux-dev and SDXL at 1024^2, the forward and the
  finite difference in bf16 with ComfyUI's default attention, the JVP in float32.

    OMP_NUM_THREADS=1 python bench/q_finite_difference.py            # error sweep + CPU cost
    python bench/q_finite_difference.py --device cuda --real-size --parts cost   # a GPU

Writes bench/results/q_finite_difference.json (``--out``).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO.parent))
sys.path.insert(0, str(REPO / "tests"))

from learned_schedules.training.rl.flow_error import (  # noqa: E402
    FlowField,
    error_size,
    finite_difference_q,
    velocity_and_error,
)
from learned_schedules.training.testbed.backend import TestbedBackend  # noqa: E402
from learned_schedules.training.testbed.mixture import Testbed  # noqa: E402

log = logging.getLogger("q_finite_difference")

SIGMAS = (1.0, 0.9, 0.7, 0.5, 0.3, 0.1, 0.03, 0.01)
STEPS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TRAJECTORY_STEPS = 100

FLUX_MID = {"image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16,
            "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 256, "mlp_ratio": 4.0,
            "num_heads": 4, "depth": 2, "depth_single_blocks": 2, "axes_dim": [8, 28, 28],
            "theta": 10000, "qkv_bias": True, "guidance_embed": True}
SD3_MID = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 4,
           "input_size": None, "adm_in_channels": 2048, "num_patches": 1024,
           "context_embedder_config": {"target": "torch.nn.Linear",
                                       "params": {"in_features": 4096, "out_features": 256}},
           "pos_embed_max_size": 32, "pos_embed_scaling_factor": None,
           "x_block_self_attn_layers": []}
FLUX_DEV = {**FLUX_MID, "hidden_size": 3072, "num_heads": 24, "depth": 19,
            "depth_single_blocks": 38, "axes_dim": [16, 56, 56]}
SDXL = {"use_checkpoint": False, "image_size": 32, "out_channels": 4,
        "use_spatial_transformer": True, "legacy": False, "num_classes": "sequential",
        "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
        "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
        "channel_mult": [1, 2, 4], "transformer_depth_middle": 10,
        "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
        "use_temporal_attention": False, "use_temporal_resblock": False}


def signed_q(field: FlowField, x: torch.Tensor, sigma: torch.Tensor, v: torch.Tensor,
             h: float) -> torch.Tensor:
    """The one-sided difference with a signed step (h < 0: backward), one call."""
    hx = torch.tensor(h, dtype=x.dtype)
    with torch.no_grad():
        other = field(x + hx * v, sigma + h)
    return (other - v) / h


def errors(q: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    q, ref = q.double().flatten(1), ref.double().flatten(1)
    vec = (q - ref).norm(dim=1) / ref.norm(dim=1)
    size = (error_size(q) - error_size(ref)) / error_size(ref)
    return {"vec": float(vec.pow(2).mean().sqrt()), "size": float(size.pow(2).mean().sqrt()),
            "size_bias": float(size.mean())}


def sweep(field: FlowField, points: list[tuple[float, torch.Tensor, torch.Tensor]],
          x_dtype: torch.dtype) -> list[dict]:
    """FD errors at every (sigma, x, Q_ref) for every h and direction."""
    rows = []
    for sigma, x, ref in points:
        xs = x.to(x_dtype)
        s = torch.full((x.shape[0],), sigma, dtype=x_dtype)
        with torch.no_grad():
            v = field(xs, s)
        for h in STEPS:
            for name, signed in (("forward", h), ("backward", -h)):
                if not 0.0 <= sigma + signed <= 1.0:
                    continue
                rows.append({"sigma": sigma, "h": h, "direction": name,
                             **errors(signed_q(field, xs, s, v, signed), ref)})
        auto = finite_difference_q(field, xs, s, v)  # the default step of the field's dtype
        rows.append({"sigma": sigma, "h": None, "direction": "default", **errors(auto, ref)})
    return rows


def trajectory_points(field: FlowField, method: str) -> list[tuple[float, torch.Tensor,
                                                                   torch.Tensor]]:
    """Euler on a uniform grid from the noise; at each of :data:`SIGMAS` the state and the
    exact Q (float64 JVP)."""
    x = field.start.double()
    n = x.shape[0]
    points = []
    grid = torch.linspace(1.0, 0.0, TRAJECTORY_STEPS + 1, dtype=torch.float64)
    wanted = {round((1.0 - s) * TRAJECTORY_STEPS): s for s in SIGMAS}
    for k in range(TRAJECTORY_STEPS):
        s = torch.full((n,), float(grid[k]), dtype=torch.float64)
        v, q = velocity_and_error(field, x, s, method)
        if k in wanted:
            points.append((wanted[k], x.clone(), q.clone()))
        x = x + (grid[k + 1] - grid[k]) * v
    return points


# -- the testbed --------------------------------------------------------------------------
def lowp_testbed(testbed: Testbed, dtype: torch.dtype) -> Testbed:
    """A copy of the testbed whose tensors are in ``dtype`` (its closed form computes in it)."""
    out = copy.copy(testbed)
    for key, value in vars(testbed).items():
        if torch.is_tensor(value) and value.is_floating_point():
            setattr(out, key, value.to(dtype))
    return out


def testbed_error(contexts: int = 64) -> dict:
    backend = TestbedBackend(Testbed.default())
    ctx = backend.held_out_contexts(contexts, 7)
    ref_field = backend.flow_field(ctx)
    points = trajectory_points(ref_field, "double_backward")
    fields = testbed_fields(backend, ctx)
    return {name: sweep(field, points, torch.float32) for name, field in fields.items()
            if name != "float64"}


def testbed_fields(backend: TestbedBackend, ctx) -> dict[str, FlowField]:
    """The testbed's field computing in float64 (the reference), float32, bf16, and float32
    between a bf16 input cast and a bf16 output (a network's I/O rounding alone)."""
    fields = {"float64": backend.flow_field(ctx)}
    start = fields["float64"].start
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        tb = lowp_testbed(backend.testbed, dtype)

        def velocity(x, s, tb=tb, dtype=dtype):
            return tb.velocity(x.to(dtype), s.to(dtype), ctx.classes).float()

        fields[name] = FlowField(start=start.float(), velocity=velocity, compute_dtype=dtype)
    tb32 = lowp_testbed(backend.testbed, torch.float32)

    def rounded(x, s):
        return tb32.velocity(x.bfloat16().float(), s.float(), ctx.classes).bfloat16().float()

    fields["bf16 input and output"] = FlowField(start=start.float(), velocity=rounded,
                                                compute_dtype=torch.bfloat16)
    return fields


def testbed_schedules(steps: tuple[int, ...] = (5, 8, 12), trajectories: int = 96,
                      grid: int = 100, held: int = 256) -> dict:
    """ART direct end to end on the testbed: the mean |Q| per clock cell along uniform-clock
    trajectories (the reference field steps; each signal is evaluated at the same states),
    its equidistributed schedule, and the fidelity reward on held-out contexts, paired
    against uniform. The signal: the exact JVP, or the finite difference at the default step
    of each compute dtype."""
    from learned_schedules.policies.art import equidistributed_schedule
    from learned_schedules.policies.schedule import uniform_schedule

    backend = TestbedBackend(Testbed.default())
    ctx = backend.held_out_contexts(trajectories, 123)
    fields = testbed_fields(backend, ctx)
    ref = fields["float64"]
    signals = {"jvp (float64)": []}
    signals.update({f"finite difference ({k}, h {default_h(f)})": [] for k, f in fields.items()})
    x = ref.start.clone()
    for k in range(grid):
        s = torch.full((trajectories,), max(1.0 - k / grid, 1e-3), dtype=torch.float64)
        v, q = velocity_and_error(ref, x, s, "double_backward")
        signals["jvp (float64)"].append(error_size(q).mean())
        for field, key in zip(fields.values(), list(signals)[1:], strict=True):
            vv = field(x.to(field.start.dtype), s.to(field.start.dtype))
            q_fd = finite_difference_q(field, x.to(field.start.dtype),
                                       s.to(field.start.dtype), vv)
            signals[key].append(error_size(q_fd).double().mean())
        x = x - v / grid
    contexts = backend.held_out_contexts(held, 10_000)
    out = {}
    for n in steps:
        base = backend.rewards(contexts, uniform_schedule(n).expand(held, 1, -1))[:, 0]
        row = {}
        for name, cells in signals.items():
            flow = equidistributed_schedule(torch.stack(cells), n).float()
            diff = backend.rewards(contexts, flow.expand(held, 1, -1))[:, 0].double() - base
            row[name] = {"vs_uniform": float(diff.mean()),
                         "se": float(diff.std() / held ** 0.5),
                         "schedule": [round(float(f), 4) for f in flow]}
        out[f"L={n}"] = row
    return out


def default_h(field: FlowField) -> float:
    from learned_schedules.training.rl.flow_error import default_fd_step

    return default_fd_step(field)


# -- ComfyUI models ----------------------------------------------------------------------
def comfy_setup():
    from comfy_env import import_comfy

    tmp = Path(TemporaryDirectory().name)
    tmp.mkdir(parents=True, exist_ok=True)
    return import_comfy(tmp, cpu=not torch.cuda.is_available())


def shaped_cond(kind: str, n: int, device: str = "cpu", seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    if kind == "flux":
        tokens = torch.randn(1, 32, FLUX_MID["context_in_dim"], generator=g)
        extra = {"pooled_output": torch.randn(1, 768, generator=g), "guidance": 3.5}
    elif kind == "flux-tiny":
        tokens = torch.randn(1, 32, 64, generator=g)
        extra = {"pooled_output": torch.randn(1, 64, generator=g), "guidance": 3.5}
    elif kind == "sd3":
        tokens = torch.randn(1, 77, 4096, generator=g)
        extra = {"pooled_output": torch.randn(1, 2048, generator=g)}
    else:  # sdxl
        tokens = torch.randn(1, 77, 2048, generator=g)
        extra = {"pooled_output": torch.randn(1, 1280, generator=g), "width": 1024,
                 "height": 1024}
    tokens = tokens.expand(n, -1, -1).to(device)
    extra = {k: (v.expand(n, -1).to(device) if torch.is_tensor(v) else v)
             for k, v in extra.items()}
    return [[tokens, extra]]


TIME_SMOOTH = 30.0
"""``time_frequencies`` of the time-smooth variants (comfy_env.build_network_model)."""
TINY = {"tiny sd3 (2 blocks, 8x8 latent)": ("SD3", None, "sd3", (16, 8, 8)),
        "tiny flux (hidden 64, 8x8 latent)": ("Flux", None, "flux-tiny", (16, 8, 8))}
TINY_VARIANTS = {f"{name}, {label}": (spec, limit) for name, spec in TINY.items()
                 for label, limit in (("random", None), ("time-smooth", TIME_SMOOTH))}


def tiny_config(config_class: str) -> dict:
    from comfy_env import TINY_FLUX, TINY_SD3

    return TINY_SD3 if config_class == "SD3" else TINY_FLUX


def comfy_error(items: int = 4, std: float = 0.1) -> dict:
    from comfy_env import build_network_model
    from learned_schedules.training.comfy.flow_field import run_flow_field

    comfy_setup()
    out = {}
    for name, ((cls, _, kind, latent), limit) in TINY_VARIANTS.items():
        cfg = tiny_config(cls)
        noise = torch.randn((items, *latent), generator=torch.Generator().manual_seed(3))
        ref_model = build_network_model(cls, cfg, torch.float64, std=std,
                                        time_frequencies=limit)
        tokens, extra = shaped_cond(kind, items)[0]
        cond64 = [[tokens.double(), {k: (v.double() if torch.is_tensor(v) else v)
                                     for k, v in extra.items()}]]
        points = run_flow_field(ref_model, cond64, None, 1.0, noise.double(),
                                lambda f: {"points": trajectory_points(f, "forward_ad")})
        points = points["points"]
        out[name] = {}
        for dname, dtype in DTYPES.items():
            model = build_network_model(cls, cfg, dtype, std=std, time_frequencies=limit)
            res = run_flow_field(model, shaped_cond(kind, items), None, 1.0, noise,
                                 lambda f, p=points: {"rows": sweep(f, p, torch.float32)})
            out[name][dname] = res["rows"]
            log.info("%s %s done", name, dname)
    return out


def _point(field: FlowField, x: torch.Tensor, s: torch.Tensor, which: str) -> None:
    if which == "call":
        field(x, s)
    elif which == "jvp":
        velocity_and_error(field, x, s, "forward_ad")
    else:
        finite_difference_q(field, x, s, field(x, s))


def time_points(model, cond: list, noise: torch.Tensor, which: tuple[str, ...],
                repeats: int, device: str) -> dict[str, float]:
    """Seconds per call / JVP point / FD point on the model's field at mid flow time (any
    family: the denoiser's output stands for the velocity, the cost is the same)."""
    import comfy.samplers

    from learned_schedules.comfy_bridge.sigmas import sampling_of, sigma_range
    from learned_schedules.training.comfy.flow_field import FlowFieldSampler, compute_dtype
    from learned_schedules.training.comfy.sampling import make_guider

    cuda = device == "cuda"

    def clock() -> float:
        if cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    def fn(field: FlowField) -> dict:
        s = torch.full((noise.shape[0],), 0.5, device=noise.device)
        x = field.start * 0.5
        for w in which:  # warm up
            _point(field, x, s, w)
        spent = dict.fromkeys(which, 0.0)
        for _ in range(repeats):  # interleaved, so that drift hits every kind alike
            for w in which:
                t0 = clock()
                _point(field, x, s, w)
                spent[w] += clock() - t0
        return {w: torch.tensor(t / repeats) for w, t in spent.items()}

    _, sigma_max = sigma_range(sampling_of(model))
    sampler = FlowFieldSampler(fn, sigma_max, compute_dtype(model))
    with torch.inference_mode(False):
        make_guider(model, cond, None, 1.0).sample(
            noise, torch.zeros_like(noise), comfy.samplers.KSAMPLER(sampler),
            torch.tensor([sigma_max, 0.0]), disable_pbar=True, seed=0)
    return {k: float(v) for k, v in sampler.result.items()}


def cost(mid: bool, repeats: int) -> dict:
    """CPU: call / JVP point / FD point ratios on the tiny (and ``mid``) models, float32."""
    from comfy_env import build_network_model

    comfy_setup()
    models = {name: (cls, tiny_config(cls), kind, latent)
              for name, (cls, _, kind, latent) in TINY.items()}
    if mid:
        models["mid flux (hidden 256, 2+2 blocks, 64x64 latent)"] = ("Flux", FLUX_MID, "flux",
                                                                     (16, 64, 64))
        models["mid sd3 (4 blocks, hidden 256, 64x64 latent)"] = ("SD3", SD3_MID, "sd3",
                                                                 (16, 64, 64))
    out = {"threads": torch.get_num_threads(), "device": "cpu", "dtype": "float32"}
    for name, (cls, cfg, kind, latent) in models.items():
        model = build_network_model(cls, cfg, torch.float32, std=0.02)
        noise = torch.randn((1, *latent), generator=torch.Generator().manual_seed(0))
        t = time_points(model, shaped_cond(kind, 1), noise, ("call", "jvp", "fd"),
                        repeats if "tiny" in name else max(1, repeats // 3), "cpu")
        out[name] = {**{f"{k}_s": v for k, v in t.items()},
                     "jvp_point_over_call": t["jvp"] / t["call"],
                     "fd_point_over_call": t["fd"] / t["call"],
                     "jvp_q_over_call": t["jvp"] / t["call"] - 1.0,
                     "fd_q_over_call": t["fd"] / t["call"] - 1.0}
        log.info("%s: %s", name, out[name])
    return out


def real_size_cost(repeats: int) -> dict:
    """GPU: real-size random-weight Flux-dev and SDXL at 1024^2 (latent 128x128): the bf16
    forward (ComfyUI's default attention), the bf16 finite-difference point, and the float32
    forward-mode JVP point (MATH attention), each model built in turn."""
    from comfy_env import build_network_model

    comfy_setup()
    out = {"device": torch.cuda.get_device_name(0)}
    for name, cls, cfg, kind, latent in (("flux-dev 1024^2", "Flux", FLUX_DEV, "flux",
                                          (16, 128, 128)),
                                         ("sdxl 1024^2", "SDXL", SDXL, "sdxl", (4, 128, 128))):
        noise = torch.randn((1, *latent), device="cuda")
        cond = shaped_cond(kind, 1, "cuda")
        row = {}
        for dtype, which in ((torch.bfloat16, ("call", "fd")), (torch.float32, ("call", "jvp"))):
            model = build_network_model(cls, cfg, dtype, std=0.02, device="cuda",
                                        round_to=None)
            try:
                t = time_points(model, cond, noise, which, repeats, "cuda")
            except Exception as err:  # noqa: BLE001 - a failed measurement is reported
                t = {"error": repr(err)}
            row[str(dtype).removeprefix("torch.")] = t
            del model
            torch.cuda.empty_cache()
        bf, f32 = row.get("bfloat16", {}), row.get("float32", {})
        if "call" in bf and "fd" in bf:
            row["fd_q_over_bf16_call"] = bf["fd"] / bf["call"] - 1.0
        if "call" in bf and "jvp" in f32:
            row["jvp_q_over_bf16_call"] = (f32["jvp"] - f32["call"]) / bf["call"]
        out[name] = row
        log.info("%s: %s", name, row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", default=["error", "cost"],
                        choices=["error", "cost"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--real-size", action="store_true",
                        help="(with --device cuda) real-size Flux-dev and SDXL at 1024^2")
    parser.add_argument("--no-mid", action="store_true", help="skip the mid-size CPU models")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"
                                             / "q_finite_difference.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result: dict = {"sigmas": SIGMAS, "steps": STEPS, "torch": torch.__version__}
    if "error" in args.parts:
        t0 = time.perf_counter()
        result["error"] = {"testbed (64 contexts)": testbed_error(), **comfy_error()}
        result["testbed_art_direct"] = testbed_schedules()
        result["error_seconds"] = time.perf_counter() - t0
    if "cost" in args.parts:
        if args.device == "cuda" and args.real_size:
            result["cost_real_size"] = real_size_cost(args.repeats)
        else:
            result["cost"] = cost(not args.no_mid, args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, default=str).replace("}, {", "},\n{") + "\n")
    log.info("wrote %s", args.out)
    for model, per_dtype in result.get("error", {}).items():
        for dname, rows in per_dtype.items():
            best = {}
            for r in rows:
                if r["h"] is None:
                    continue
                key = (r["direction"], r["h"])
                best.setdefault(key, []).append(r["size"])
            ranked = sorted(best.items(), key=lambda kv: math.fsum(kv[1]) / len(kv[1]))[:3]
            log.info("%s %s best (direction, h) by mean size error: %s", model, dname,
                     [(k, round(math.fsum(v) / len(v), 4)) for k, v in ranked])


if __name__ == "__main__":
    main()
