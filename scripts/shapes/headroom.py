"""Headroom of schedule learning on the shapes model: how much better than one global schedule
can a per-prompt or a per-sample schedule of L Euler steps get?

    python scripts/shapes/headroom.py   # -> bench/results/shapes_headroom.{md,json}

For each L in --steps, every schedule of a candidate set (ComfyUI's default ``simple`` at SD3
shift 3, the uniform schedule, the SD3 shift family s*t / (1 + (s-1)*t) on uniform t for nine
shifts, and seeded Dirichlet-random partitions) samples every instance (56 prompts x
(--fit-seeds + --eval-seeds) seeds, CFG --cfg, the same noise for every schedule), scored by
PSNR (dB) of the decoded image to the --ref-steps-step default sample from the same noise and
by the exact prompt checks (training/datasets/shapes.py: share of a prompt's checks passed).
From that one sweep, on the eval seeds:

* best global: the candidate with the best mean PSNR on the fit seeds;
* per group / per prompt: the candidate best on the fit seeds of that group / prompt
  (held out: chosen on other seeds than scored);
* per-prompt oracle: the candidate best on the eval seeds of the prompt itself;
* per-sample oracle: the best candidate of each eval instance.

All are maxima over the same finite candidate set (lower bounds on the continuous optima).
Margins are paired over eval instances (mean +- standard error). Seeded; CPU; fp32.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from shapes_lib import (
    NEGATIVE,
    REPO,
    UNET_FILE,
    data,
    default_sigmas,
    embed_context,
    encode,
    euler,
    load_clip,
    load_fast_decoder,
    noise_for,
    progress,
    prompts,
    psnr,
    setup_comfy,
    to_numpy_images,
)

OUT = REPO / "bench" / "results" / "shapes_headroom"
SHIFTS = (0.3, 0.5, 0.7, 1.4, 2.0, 4.5, 7.0, 10.0, 0.2)


class Setting:
    """The model, its conditioning and the fast (differentiable) decoder."""

    def __init__(self, unet: Path, cfg: float) -> None:
        c = setup_comfy()
        from digits_lib import load_unet_file

        self.net = load_unet_file(unet)
        for p in self.net.parameters():
            p.requires_grad_(False)
        clip = load_clip(c)
        self.names = prompts()
        ctx, pooled = encode(clip, self.names + [NEGATIVE])
        with torch.no_grad():
            self.ctx = embed_context(self.net, ctx)
        self.pooled = pooled
        self.empty = len(self.names)
        self.decoder = load_fast_decoder()
        self.cfg = cfg
        self.patcher = c.comfy.sd.load_diffusion_model(str(unet))

    @torch.no_grad()
    def sample(self, cls: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor,
               chunk: int = 64) -> torch.Tensor:
        """IMAGE-layout ``[N, 32, 32, 3]`` for schedules ``[L+1]`` or ``[N, L+1]``."""
        out = []
        for i in range(0, len(cls), chunk):
            s = slice(i, i + chunk)
            c, n = cls[s], noise[s]
            sig = sigmas[s] if sigmas.ndim == 2 else sigmas
            e = self.ctx[self.empty]
            x = euler(self.net, n, sig, self.ctx[c], self.pooled[c],
                      e.expand(len(c), -1, -1), self.pooled[self.empty].expand(len(c), -1),
                      self.cfg)
            out.append(self.decoder(x))
        return torch.cat(out)


def shift_schedule(L: int, shift: float) -> torch.Tensor:
    t = torch.linspace(1, 0, L + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t)).float()


def candidates(st: Setting, L: int, n_random: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Named candidate schedules ``[L+1]`` from 1 to 0."""
    return candidate_schedules(default_sigmas(st.patcher, L), n_random, seed)


def candidate_schedules(default: torch.Tensor, n_random: int, seed: int = 0
                        ) -> dict[str, torch.Tensor]:
    """The sweep's named schedules ``[L+1]`` from 1 to 0 beside the model's ``default`` one
    (SD3: sigma = flow time): uniform, the :data:`SHIFTS` and ``n_random`` seeded
    Dirichlet-random partitions (also used by ``bench/shapes_benchmark.py``)."""
    L = len(default) - 1
    out = {"default": default.float(), "uniform": torch.linspace(1, 0, L + 1)}
    for s in SHIFTS:
        out[f"shift{s:g}"] = shift_schedule(L, s)
    rng = np.random.default_rng(seed * 1000 + L)
    for k in range(n_random):
        steps = torch.from_numpy(rng.dirichlet(np.full(L, 1.5))).float()
        sig = torch.cat([torch.ones(1), 1 - steps.cumsum(0)]).clamp_min(0)
        sig[-1] = 0.0
        out[f"random{k}"] = sig
    return out


def check_scores(images: torch.Tensor, spec_idx: torch.Tensor, glyph_reader=None) -> np.ndarray:
    """Share of each image's prompt checks passed (glyph checks with ``glyph_reader``)."""
    imgs = to_numpy_images(images)
    glyphs = glyph_reader(images) if glyph_reader is not None else [None] * len(imgs)
    out = np.empty(len(imgs))
    for i, (img, k) in enumerate(zip(imgs, spec_idx.tolist(), strict=True)):
        res = data.checks(img, data.TRAINING_SPECS[k], glyphs[i])
        out[i] = np.mean(list(res.values())) if res else np.nan
    return out


def glyph_reader_or_none():
    """The glyph classifier's reading of images, when its file exists."""
    try:
        from learned_schedules.training.rewards.shapes import GlyphClassifier
    except ImportError:
        return None
    try:
        clf = GlyphClassifier.load()
    except ValueError:
        return None
    return clf.read


def _choose(psnrs: np.ndarray, keys: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Per instance: the candidate with the best mean PSNR on the fit instances of its key."""
    pick = np.empty(len(keys), dtype=int)
    for key in np.unique(keys):
        m = keys == key
        pick[m] = int(psnrs[:, m & fit].mean(1).argmax())
    return pick


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[~np.isnan(d)]
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[3, 4, 6])
    ap.add_argument("--cfg", type=float, default=2.0)
    ap.add_argument("--fit-seeds", type=int, default=2, help="per prompt")
    ap.add_argument("--eval-seeds", type=int, default=3, help="per prompt")
    ap.add_argument("--random", type=int, default=12, help="Dirichlet-random candidates")
    ap.add_argument("--ref-steps", type=int, default=30)
    ap.add_argument("--unet", type=Path, default=UNET_FILE)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    st = Setting(args.unet, args.cfg)
    reader = glyph_reader_or_none()
    P = len(st.names)
    n_per = args.fit_seeds + args.eval_seeds
    cls = torch.arange(P).repeat_interleave(n_per)
    seed_idx = torch.arange(n_per).repeat(P)
    is_fit = seed_idx < args.fit_seeds
    noise = noise_for([10_000 + i for i in range(len(cls))])
    ref = st.sample(cls, noise, default_sigmas(st.patcher, args.ref_steps))
    groups = np.array([data.TRAINING_SPECS[int(k)].group for k in cls])
    ev = ~is_fit.numpy()
    ref_checks = check_scores(ref, cls, reader)
    rows, report = {}, {}
    for L in args.steps:
        cands = candidates(st, L, args.random)
        names = list(cands)
        psnrs, scores = [], []
        for name in progress(names, desc=f"L={L}"):
            img = st.sample(cls, noise, cands[name])
            psnrs.append(psnr(img, ref).numpy())
            scores.append(check_scores(img, cls, reader))
        Pm, Sm = np.stack(psnrs), np.stack(scores)  # [K, N]
        fit, c_np = is_fit.numpy(), cls.numpy()
        g = int(Pm[:, fit].mean(1).argmax())

        per_prompt = _choose(Pm, c_np, fit)
        per_group = _choose(Pm, groups, fit)
        pp_oracle = np.empty(len(c_np), dtype=int)
        for p in range(P):
            m = c_np == p
            pp_oracle[m] = int(Pm[:, m & ev].mean(1).argmax())
        sample_oracle = Pm.argmax(0)
        idx = np.arange(len(c_np))
        picks = {"default": np.full(len(c_np), names.index("default")),
                 "uniform": np.full(len(c_np), names.index("uniform")),
                 "best_global": np.full(len(c_np), g), "per_group": per_group,
                 "per_prompt": per_prompt, "per_prompt_oracle": pp_oracle,
                 "per_sample_oracle": sample_oracle}
        res = {}
        for grp in ("all",) + data.GROUPS:
            m = ev & ((groups == grp) if grp != "all" else True)
            res[grp] = {}
            for k, pick in picks.items():
                p_k, s_k = Pm[pick, idx][m], Sm[pick, idx][m]
                gp, gs = Pm[g, idx][m], Sm[g, idx][m]
                res[grp][k] = {"psnr": float(p_k.mean()), "psnr_vs_global": paired(p_k, gp),
                               "checks": float(np.nanmean(s_k)),
                               "checks_vs_global": paired(s_k, gs)}
        rows[L] = res
        report[L] = {"candidates": {n: cands[n].tolist() for n in names},
                     "best_global": names[g],
                     "per_prompt": {st.names[p]: names[per_prompt[c_np == p][0]]
                                    for p in range(P)},
                     "results": res}
    out = {"cfg": args.cfg, "ref_steps": args.ref_steps, "prompts": P,
           "fit_seeds": args.fit_seeds, "eval_seeds": args.eval_seeds,
           "candidates": len(SHIFTS) + 2 + args.random, "glyph_check": reader is not None,
           "reference_checks": float(np.nanmean(ref_checks[ev])), "by_steps": report,
           "unet": str(args.unet.relative_to(REPO) if args.unet.is_relative_to(REPO)
                       else args.unet), "seconds": round(time.time() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(out, indent=1))
    lines = [f"# Shapes model: schedule headroom (CFG {args.cfg})", "",
             f"{P} prompts x {args.eval_seeds} eval seeds (schedules chosen on "
             f"{args.fit_seeds} other seeds per prompt); PSNR (dB) to the {args.ref_steps}-step "
             f"default sample from the same noise; checks = share of the prompt's exact checks "
             f"passed (glyph checks {'on' if reader else 'off'}); the {args.ref_steps}-step "
             f"reference passes {out['reference_checks']:.3f}. Candidates: default, uniform, "
             f"{len(SHIFTS)} shifts, {args.random} random. Margins: paired vs best global, "
             "± standard error.", "",
             "| L | group | default | uniform | best global | per group | per prompt | "
             "per-prompt oracle | per-sample oracle |", "|---|---|---|---|---|---|---|---|---|"]
    for L, res in rows.items():
        for grp, r in res.items():
            cells = []
            for k in ("default", "uniform", "best_global", "per_group", "per_prompt",
                      "per_prompt_oracle", "per_sample_oracle"):
                d, se = r[k]["psnr_vs_global"]
                cells.append(f"{r[k]['psnr']:.2f}" if k == "best_global" else
                             f"{r[k]['psnr']:.2f} ({d:+.2f} ± {se:.2f})")
            lines.append(f"| {L} | {grp} | " + " | ".join(cells) + " |")
    lines += ["", "Exact checks (share passed; paired vs best global):", "",
              "| L | group | default | best global | per prompt | per-prompt oracle |",
              "|---|---|---|---|---|---|"]
    for L, res in rows.items():
        for grp, r in res.items():
            cells = [f"{r[k]['checks']:.3f}" + ("" if k == "best_global" else
                                                 " ({:+.3f} ± {:.3f})".format(
                                                     *r[k]["checks_vs_global"]))
                     for k in ("default", "best_global", "per_prompt", "per_prompt_oracle")]
            lines.append(f"| {L} | {grp} | " + " | ".join(cells) + " |")
    lines.append("\nBest global: " + ", ".join(f"L={L}: {report[L]['best_global']}"
                                                for L in report) + f". {out['seconds']:.0f} s.")
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
