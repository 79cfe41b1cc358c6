"""Headroom of schedule learning on the digits model: how much better than ComfyUI's default
schedule can L Euler steps get, globally, per class and per sample?

    python scripts/digits/headroom.py   # -> bench/results/digits_headroom.{md,json}

For L in --steps (default 3 and 4) it scores, on held-out prompts x seeds (10 digits x --eval-seeds
seeds, CFG --cfg): the uniform schedule, the model's default (ComfyUI ``simple``, SD3 shift 3),
the best global schedule, the best per-class schedules (both fitted on other seeds), the per-sample
oracle (fitted on the evaluated samples themselves: an upper bound for a per-instance policy)
and a global schedule fitted on the Fréchet distance. Measures: ``reference`` (PSNR in dB of the
decoded image to the 40-step default sample from the same noise, the ComfyUI back-end's main
reward), the Fréchet distance of classifier features to the 500 held-out real digits, class
accuracy and mean coverage. Schedules are fitted by gradient descent through an Euler loop
over the MMDiT (ComfyUI's samplers run under no_grad). Seeded; CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from digits_lib import (
    NEGATIVE,
    REPO,
    UNET_FILE,
    default_sigmas,
    embed_context,
    encode,
    euler,
    load_clip,
    load_fast_decoder,
    load_unet_file,
    noise_for,
    progress,
    prompts,
    setup_comfy,
)

from learned_schedules.training.rewards.digits import (
    DigitMeasures,
    class_coverage,
    frechet_distance,
    to_classifier_input,
)

OUT = REPO / "bench" / "results" / "digits_headroom"


class Setting:
    """The model, its conditioning and the measures, for one CFG scale."""

    def __init__(self, cfg: float) -> None:
        c = setup_comfy()
        self.net = load_unet_file()
        for p in self.net.parameters():
            p.requires_grad_(False)
        clip = load_clip(c)
        ctx, pooled = encode(clip, prompts() + [NEGATIVE])
        with torch.no_grad():
            self.ctx = embed_context(self.net, ctx)
        self.pooled = pooled
        self.decoder = load_fast_decoder()
        for p in self.decoder.parameters():
            p.requires_grad_(False)
        self.measures = DigitMeasures()
        for p in self.measures.model.parameters():
            p.requires_grad_(False)
        self.real, self.real_y = self.measures.held_out_features()
        self.cfg = cfg
        # ComfyUI's own sigmas for the default schedule (through the stock loader)
        import comfy.sd

        self.patcher = comfy.sd.load_diffusion_model(str(UNET_FILE))

    def sample(self, cls: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor
               ) -> torch.Tensor:
        """Grey images [N, 32, 32] for schedules [L+1] or [N, L+1] (differentiable)."""
        n = len(cls)
        x = euler(self.net, noise, sigmas, self.ctx[cls], self.pooled[cls],
                  self.ctx[10].expand(n, -1, -1), self.pooled[10].expand(n, -1), self.cfg)
        return self.decoder(x)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.measures.model.features(to_classifier_input(images))


def schedule(logits: torch.Tensor) -> torch.Tensor:
    """Unconstrained ``[..., L]`` -> decreasing sigmas ``[..., L+1]`` from 1 to 0."""
    steps = torch.softmax(logits, -1)
    return torch.cat([torch.ones_like(steps[..., :1]), 1 - steps.cumsum(-1)], -1).clamp_min(0)


def logits_of(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.log((sigmas[..., :-1] - sigmas[..., 1:]).clamp_min(1e-4))


def batched(fn, n: int, chunk: int = 100):
    return torch.cat([fn(slice(i, min(n, i + chunk))) for i in range(0, n, chunk)])


def psnr(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return -10 * torch.log10((img - ref).pow(2).flatten(1).mean(1).clamp_min(1e-10))


def fit(st: Setting, cls, noise, ref, init: torch.Tensor, groups: torch.Tensor, iters: int,
        objective: str = "reference", lr: float = 0.1, desc: str = "fit") -> torch.Tensor:
    """Fit one schedule per group (``groups[i]``: sample i's group) by Adam on the mean PSNR to
    the reference (or on the Fréchet distance, for one global group); returns logits."""
    n_groups = int(groups.max()) + 1
    logits = logits_of(init).repeat(n_groups, 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    for _ in progress(range(iters), desc=desc):
        sig = schedule(logits)[groups]
        img = st.sample(cls, noise, sig)
        if objective == "reference":
            loss = -psnr(img, ref).mean()
        else:
            loss = frechet_torch(st.features(img), st.real)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return logits.detach()


def frechet_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A differentiable Fréchet distance (trace term through an eigendecomposition)."""
    a, b = a.double(), b.double()
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    ev, evec = torch.linalg.eigh(cb)
    sqrt_b = evec @ torch.diag(ev.clamp_min(0).sqrt()) @ evec.T
    m = sqrt_b @ ca @ sqrt_b
    cross = torch.linalg.eigvalsh(m + 1e-9 * torch.eye(len(m), dtype=m.dtype)).clamp_min(
        1e-12).sqrt().sum()
    return ((a.mean(0) - b.mean(0)).pow(2).sum() + ca.trace() + cb.trace() - 2 * cross).float()


def evaluate(st: Setting, cls, noise, ref, sigmas: torch.Tensor) -> dict:
    """PSNR to the reference (mean, standard error), Fréchet distance, accuracy, coverage."""
    with torch.no_grad():
        img = batched(lambda s: st.sample(cls[s], noise[s],
                                          sigmas[s] if sigmas.ndim == 2 else sigmas), len(cls))
        p = psnr(img, ref)
        feats = st.features(img)
        logits = st.measures.model.fc2(feats)
    cov = class_coverage(st.real, st.real_y, feats, cls)
    return {"psnr": float(p.mean()), "psnr_se": float(p.std() / math.sqrt(len(p))),
            "psnr_each": p, "fd": frechet_distance(feats, st.real),
            "accuracy": float((logits.argmax(-1) == cls).float().mean()),
            "coverage": float(cov.nanmean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--cfg", type=float, default=2.0)
    ap.add_argument("--eval-seeds", type=int, default=20, help="per digit")
    ap.add_argument("--fit-seeds", type=int, default=10, help="per digit")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--oracle-samples", type=int, default=100)
    ap.add_argument("--init", choices=("default", "uniform"), default="default",
                    help="where the global / per-class fits start (uniform: at many steps, "
                         "where a short fit from the far-off default stays below uniform)")
    ap.add_argument("--skip", nargs="*", default=[], choices=("per_class", "global_fd"),
                    help="fits to leave out (to save time)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    st = Setting(args.cfg)

    def instances(n_per: int, seed0: int):
        cls = torch.arange(10).repeat_interleave(n_per)
        noise = noise_for([seed0 + i for i in range(len(cls))])
        ref_sig = default_sigmas(st.patcher, 40)
        with torch.no_grad():
            ref = batched(lambda s: st.sample(cls[s], noise[s], ref_sig), len(cls))
        return cls, noise, ref

    ev = instances(args.eval_seeds, 10_000)
    fi = instances(args.fit_seeds, 20_000)
    fi_big = instances(2 * args.fit_seeds, 30_000)
    rows, table = {}, []
    ceiling = evaluate(st, *ev, default_sigmas(st.patcher, 30))
    ref_self = evaluate(st, *ev, default_sigmas(st.patcher, 40))
    real_floor = None
    for L in args.steps:
        dflt = default_sigmas(st.patcher, L)
        uniform = torch.linspace(1, 0, L + 1)
        zeros = torch.zeros(len(fi[0]), dtype=torch.long)
        init = dflt if args.init == "default" else uniform
        g = schedule(fit(st, *fi, init, zeros, args.iters, desc=f"global L={L}"))[0]
        pc = g.expand(10, -1) if "per_class" in args.skip else schedule(
            fit(st, *fi, init, fi[0], args.iters, desc=f"per-class L={L}"))
        n_or = min(args.oracle_samples, len(ev[0]))
        pick = torch.linspace(0, len(ev[0]) - 1, n_or).round().long()
        sub = tuple(t[pick] for t in ev)
        orc = schedule(fit(st, *sub, g, torch.arange(n_or), args.iters,
                           desc=f"oracle L={L}"))
        gfd = g if "global_fd" in args.skip else schedule(
            fit(st, fi_big[0], fi_big[1], fi_big[2], init,
                torch.zeros(len(fi_big[0]), dtype=torch.long), args.iters,
                objective="fd", lr=0.05, desc=f"global-FD L={L}"))[0]
        res = {"uniform": evaluate(st, *ev, uniform), "default": evaluate(st, *ev, dflt),
               "best_global": evaluate(st, *ev, g)}
        if "per_class" not in args.skip:
            res["per_class"] = evaluate(st, *ev, pc[ev[0]])
        if "global_fd" not in args.skip:
            res["global_fd_fit"] = evaluate(st, *ev, gfd)
        # the oracle is scored on its own subset; so is the global schedule there, for the gap
        res_or = evaluate(st, *sub, orc)
        res_g_sub = evaluate(st, *sub, g)
        diff = res_or["psnr_each"] - res_g_sub["psnr_each"]
        res["per_sample_oracle"] = res_or
        rows[L] = {
            "schedules": {"default": dflt.tolist(), "best_global": g.tolist(),
                          "per_class": pc.tolist(), "global_fd_fit": gfd.tolist()},
            "results": {k: {m: v for m, v in r.items() if m != "psnr_each"}
                        for k, r in res.items()},
            "oracle_minus_global_psnr": float(diff.mean()),
            "oracle_minus_global_se": float(diff.std() / math.sqrt(len(diff))),
            "oracle_subset_global_psnr": res_g_sub["psnr"],
        }
        for k, r in res.items():
            table.append((L, k, r))
    out = {"cfg": args.cfg, "init": args.init, "skip": args.skip,
           "eval": f"10 digits x {args.eval_seeds} seeds (seeds 10000+)",
           "fit": f"10 digits x {args.fit_seeds} seeds (20000+), FD fit 10 x "
                  f"{2 * args.fit_seeds} (30000+)",
           "oracle_samples": args.oracle_samples, "iters": args.iters,
           "reference": "40-step default (simple) sample, same noise",
           "ceiling_30_steps": {m: v for m, v in ceiling.items() if m != "psnr_each"},
           "reference_40_steps": {m: v for m, v in ref_self.items() if m != "psnr_each"},
           "real_floor": real_floor, "by_steps": rows, "seconds": round(time.time() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(out, indent=1))  # names may hold dots
    lines = [f"# Digits model: schedule headroom (CFG {args.cfg})", "",
             f"Eval: {out['eval']}; reference = {out['reference']}. PSNR in dB (higher is "
             "better, ± standard error); FD = Fréchet distance of classifier features to 500 "
             "held-out real digits (lower is better). The per-sample oracle is scored on "
             f"{args.oracle_samples} of the eval instances.", "",
             f"Ceiling (default, 30 steps): PSNR {ceiling['psnr']:.2f}, FD {ceiling['fd']:.2f}, "
             f"accuracy {ceiling['accuracy']:.3f}, coverage {ceiling['coverage']:.3f}.", "",
             "| L | schedule | PSNR | FD | accuracy | coverage |", "|---|---|---|---|---|---|"]
    for L, k, r in table:
        lines.append(f"| {L} | {k} | {r['psnr']:.2f} ± {r['psnr_se']:.2f} | {r['fd']:.2f} | "
                     f"{r['accuracy']:.3f} | {r['coverage']:.3f} |")
    lines.append("")
    for L, r in rows.items():
        lines.append(f"L={L}: per-sample oracle - best global on the same instances: "
                     f"{r['oracle_minus_global_psnr']:+.2f} ± {r['oracle_minus_global_se']:.2f} "
                     "dB PSNR.")
    lines.append(f"\n{out['seconds']:.0f} s.")
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
