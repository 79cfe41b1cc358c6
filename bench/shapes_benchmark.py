"""The shapes model's schedules read against their ceilings, at L = 3, 4 and 6, on held-out
(prompt, seed) contexts, per prompt group and overall.

    OMP_NUM_THREADS=1 python bench/shapes_benchmark.py   # -> bench/results/shapes_benchmark.*

Rows: the model's default (``simple``, SD3 shift 3), the best global schedule, the calibrated
one (``models/shapes/shapes_calibrated.safetensors``, the ``calibrate`` command), the learned
per-image policy (``models/shapes/shapes_policy_L<L>.safetensors``), per prompt (each prompt's
best sweep candidate on the fit seeds: a per-prompt table chosen on other seeds) and the
per-prompt oracle (each prompt's best candidate on the scored seeds themselves).

* Scored contexts: the 56 prompts x ``--seeds`` held-out seeds from ``--seed`` (the trainer's
  held-out contexts, ``held_out_contexts``: 10 000, 10 001, 10 002 as ``eval --seeds 3`` uses).
* Best global and per prompt are chosen on OTHER held-out seeds (``--fit-seeds`` per prompt
  from ``--fit-seed``), from the candidate sweep of ``scripts/shapes/headroom.py`` (default,
  uniform, nine SD3 shifts, ``--random`` Dirichlet-random partitions); the per-prompt oracle
  is a maximum over the same candidates (a lower bound on the continuous optimum).
* Reward: PSNR (dB) of the decoded image to the 30-step default sample from the same noise
  (the trainer's ``reference`` reward, through the trainer's ComfyUI back-end: stock loaders,
  the bridge's Euler step loop). Differences are paired with best global over contexts
  (mean ± standard error); gap closed = (row − best global) / (per-prompt oracle − best
  global), of the means.
* Exact prompt-following scores (``ShapesScores``, ``training/rewards/shapes.py``: checks
  passed, glyph log-probability, colour error (lower is better), texture strength) of every
  row's images, paired with best global over the contexts that have the score.
* Spread: how far each row's per-prompt mean schedule lies from the row's overall mean
  (mean / largest absolute deviation, flow time), and for the learned policy how far its
  per-image schedules lie from their prompt's mean (within prompt).

Seeded (contexts, candidates, policies in mean mode); ``--threads`` CPU threads (default 1).
Writes ``<out>.md``, ``<out>.json`` and ``<out>.png`` (the learned schedules by prompt group).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("shapes_benchmark")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "shapes"))
from headroom import candidate_schedules  # noqa: E402  (the headroom sweep's candidates)

CONFIG = REPO / "training" / "configs" / "shapes_reference.json"
MODELS = REPO / "models" / "shapes"
OUT = REPO / "bench" / "results" / "shapes_benchmark"
ROWS = ("default", "best_global", "calibrated", "learned", "per_prompt", "per_prompt_oracle")
LOWER_IS_BETTER = ("colour_error",)


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    """Mean and standard error of ``a - b`` over the entries where both exist, and their
    count."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return float("nan"), float("nan"), len(d)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d)


def make_backend(threads: int):
    """The trainer's ComfyUI back-end of the shapes reference config (reward ``reference``,
    30-step references)."""
    from learned_schedules.training.rl.backend import make_backend as build
    from learned_schedules.training.rl.config import TrainConfig

    torch.set_num_threads(threads)
    data = json.loads(CONFIG.read_text())
    data["diffusion_model"] = str(REPO / data["diffusion_model"])
    data["vae"] = str(REPO / data["vae"])
    data["text_encoders"] = str(REPO / data["text_encoders"])
    data["prompts"] = str(REPO / data["prompts"])
    return build(TrainConfig.from_dict(data))


def spread(flows: np.ndarray, prompt_ids: np.ndarray) -> dict[str, float]:
    """Per-prompt mean schedules' deviation from the overall mean (``across``) and the
    per-image schedules' from their prompt's mean (``within``), mean and max, flow time."""
    overall = flows.mean(0)
    means = {p: flows[prompt_ids == p].mean(0) for p in np.unique(prompt_ids)}
    across = np.abs(np.stack(list(means.values())) - overall)
    within = np.abs(flows - np.stack([means[p] for p in prompt_ids]))
    return {"across_mean": float(across.mean()), "across_max": float(across.max()),
            "within_mean": float(within.mean()), "within_max": float(within.max())}


class Bench:
    """One back-end, its scored and fit contexts, their references, prompts and groups."""

    def __init__(self, args: argparse.Namespace) -> None:
        from learned_schedules.training.datasets import shapes as data
        from learned_schedules.training.rewards.shapes import ShapesScores

        self.b = make_backend(args.threads)
        n_prompts = self.b.held_out_count()
        self.ev = self.b.held_out_contexts(n_prompts * args.seeds, args.seed)
        self.fit = self.b.held_out_contexts(n_prompts * args.fit_seeds, args.fit_seed)
        if set(self.ev.seeds.tolist()) & set(self.fit.seeds.tolist()):
            raise ValueError("--seed and --fit-seed give overlapping seeds.")
        self.prompts = self.b.prompt_texts(self.ev)
        self.groups = np.array([data.spec_of(p).group for p in self.prompts])
        self.ev_ids = self.ev.prompt_ids.numpy()
        self.fit_ids = self.fit.prompt_ids.numpy()
        self.ref_ev = self.b.references.images(self.ev)
        self.ref_fit = self.b.references.images(self.fit)
        self.scorer = ShapesScores()
        self.group_names = data.GROUPS

    def images(self, ctx, flow: torch.Tensor) -> torch.Tensor:
        """Decoded images of contexts under flow schedules ``[N, L+1]`` or one ``[L+1]``."""
        flow = flow.float()
        if flow.ndim == 1:
            flow = flow.expand(len(ctx), -1)
        with torch.inference_mode():
            return self.b.decode(self.b.rollouts.sample_flow(ctx, flow))

    def psnr(self, images: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
        from learned_schedules.training.comfy.references import psnr

        return psnr(images, ref).double().numpy()

    def scores(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        return self.scorer(images, self.prompts)


def run_steps(bench: Bench, L: int, args: argparse.Namespace) -> dict:
    """Every row's PSNR, exact scores and schedules at L steps; the tables' numbers."""
    from learned_schedules.policies.policy_file import load_policy
    from learned_schedules.training.eval import policy_schedules

    t0, c0 = time.monotonic(), time.process_time()
    b, n = bench.b, len(bench.ev)
    default = b.comparators(L, schedulers=["simple"])["simple"]
    cands = candidate_schedules(default, args.random)
    names = list(cands)
    fit_psnr = np.stack([bench.psnr(bench.images(bench.fit, cands[k]), bench.ref_fit)
                         for k in names])  # [K, N_fit]
    ev_imgs = [bench.images(bench.ev, cands[k]) for k in names]
    ev_psnr = np.stack([bench.psnr(im, bench.ref_ev) for im in ev_imgs])  # [K, N]
    g = int(fit_psnr.mean(1).argmax())
    per_prompt = np.empty(n, dtype=int)
    oracle = np.empty(n, dtype=int)
    for p in np.unique(bench.ev_ids):
        m = bench.ev_ids == p
        per_prompt[m] = int(fit_psnr[:, bench.fit_ids == p].mean(1).argmax())
        oracle[m] = int(ev_psnr[:, m].mean(1).argmax())
    stack = torch.stack([cands[k] for k in names])
    flows = {"default": stack[names.index("default")].expand(n, -1),
             "best_global": stack[g].expand(n, -1),
             "per_prompt": stack[per_prompt], "per_prompt_oracle": stack[oracle]}
    idx = np.arange(n)
    psnrs = {"default": ev_psnr[names.index("default")], "best_global": ev_psnr[g],
             "per_prompt": ev_psnr[per_prompt, idx], "per_prompt_oracle": ev_psnr[oracle, idx]}
    imgs = {"default": ev_imgs[names.index("default")], "best_global": ev_imgs[g],
            "per_prompt": torch.stack([ev_imgs[k][i] for i, k in enumerate(per_prompt)]),
            "per_prompt_oracle": torch.stack([ev_imgs[k][i] for i, k in enumerate(oracle)])}
    calibrated = load_policy(args.calibrated).policy.stored(L).float()
    flows["calibrated"] = calibrated.expand(n, -1)
    policy_file = MODELS / f"shapes_policy_L{L}.safetensors"
    if policy_file.is_file():
        flows["learned"] = policy_schedules(load_policy(policy_file), b, bench.ev).float()
    for row in ("calibrated", "learned"):
        if row in flows:
            imgs[row] = bench.images(bench.ev, flows[row])
            psnrs[row] = bench.psnr(imgs[row], bench.ref_ev)
    rows = [r for r in ROWS if r in psnrs]
    scores = {r: bench.scores(imgs[r]) for r in rows}
    seconds, cpu = time.monotonic() - t0, time.process_time() - c0
    return {"names": names, "candidates": cands, "best_global": names[g], "rows": rows,
            "cpu_seconds": cpu, "flows": flows, "psnr": psnrs, "scores": scores, "seconds": seconds,
            "per_prompt_choice": {bench.prompts[i]: names[per_prompt[i]]
                                  for i in range(n)},
            "oracle_choice": {bench.prompts[i]: names[oracle[i]] for i in range(n)}}


def summarize(bench: Bench, res: dict) -> dict:
    """The numbers of the tables: per group and row, PSNR, its paired difference from best
    global, gap closed, each exact score and its paired difference, and the spreads."""
    out: dict = {}
    for grp in ("all", *bench.group_names):
        m = np.ones(len(bench.ev), bool) if grp == "all" else bench.groups == grp
        base, top = res["psnr"]["best_global"][m], res["psnr"]["per_prompt_oracle"][m]
        gap = float(top.mean() - base.mean())
        out[grp] = {"n": int(m.sum())}
        for r in res["rows"]:
            p = res["psnr"][r][m]
            d, se, _ = paired(p, base)
            row = {"psnr": float(p.mean()), "vs_best_global": [d, se],
                   "wins": float((p > base).mean()),
                   "gap_closed": d / gap if gap > 0 else float("nan")}
            for k, v in res["scores"][r].items():
                bg = res["scores"]["best_global"][k][m]
                with np.errstate(all="ignore"):
                    value = float(np.nanmean(v[m])) if np.isfinite(v[m]).any() else float("nan")
                row[k] = value
                row[f"{k}_vs_best_global"] = list(paired(v[m], bg)[:2])
            out[grp][r] = row
    ids = bench.ev_ids
    out["spread"] = {r: spread(res["flows"][r].double().numpy(), ids)
                     for r in ("learned", "per_prompt", "per_prompt_oracle")
                     if r in res["flows"]}
    out["group_means"] = {r: {grp: res["flows"][r][torch.from_numpy(bench.groups == grp)]
                              .double().mean(0).tolist() for grp in bench.group_names}
                          for r in ("learned", "per_prompt_oracle") if r in res["flows"]}
    return out


def fmt(value: float, se: float | None = None, places: int = 2, sign: str = "+") -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:{sign}.{places}f}" + ("" if se is None else f" ± {se:.{places}f}")


def markdown(report: dict, args: argparse.Namespace) -> str:
    """The benchmark's tables."""
    lines = ["# Shapes model: default, best global, calibrated, learned per-image and "
             "per-prompt oracle schedules", "",
             f"{report['prompts']} prompts x {args.seeds} held-out seeds (from {args.seed}: "
             f"{report['contexts']} contexts, the L = 4 eval's); best global and per prompt "
             f"chosen on {args.fit_seeds} other held-out seeds per prompt (from "
             f"{args.fit_seed}) among {report['candidates']} sweep candidates; PSNR (dB) to the "
             "30-step default sample from the same noise; Δ = paired with best global, ± "
             "standard error over contexts; gap = share of the best global -> per-prompt "
             f"oracle gap closed. CPU, {args.threads} thread(s); CPU time per L below (wall "
             "time on 2 cores shared with other jobs was about 1.5x that); the last run's total "
             f"(set-up and 30-step references included): {report['cpu_seconds']:.0f} s CPU.",
             ""]
    for L, rep in report["by_steps"].items():
        bg = rep["best_global"]
        lines += [f"## L = {L} ({rep.get('cpu_seconds', float('nan')):.0f} s CPU; best global: "
                  f"{bg} = "
                  + ", ".join(f"{v:.3f}" for v in rep["schedules"]["best_global"])
                  + "; calibrated = " + ", ".join(f"{v:.3f}" for v in rep["schedules"]
                                                 ["calibrated"]) + ")", "",
                  "| group | n | default | best global | calibrated Δ | learned Δ | per prompt Δ "
                  "| per-prompt oracle Δ | learned: gap closed |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for grp, t in rep["table"].items():
            if grp in ("spread", "group_means"):
                continue

            def delta(r: str, t: dict = t) -> str:
                return fmt(*t[r]["vs_best_global"]) if r in t else "–"

            learned_gap = fmt(100 * t["learned"]["gap_closed"], places=0, sign="") + "%" \
                if "learned" in t else "–"
            lines.append(f"| {grp} | {t['n']} | {t['default']['psnr']:.2f} ("
                         f"{fmt(*t['default']['vs_best_global'])}) | "
                         f"{t['best_global']['psnr']:.2f} | {delta('calibrated')} | "
                         f"{delta('learned')} | {delta('per_prompt')} | "
                         f"{delta('per_prompt_oracle')} | {learned_gap} |")
        t = rep["table"]["all"]
        lines += ["", "Exact prompt-following scores, all contexts (value; Δ paired with best "
                  "global over the contexts with the score; colour error: lower is better):", "",
                  "| schedule | checks passed | glyph log-prob | colour error | texture strength |",
                  "|---|---|---|---|---|"]
        for r in rep["rows"]:
            cells = [f"{t[r][k]:.4f}" + ("" if r == "best_global" else
                                          f" ({fmt(*t[r][k + '_vs_best_global'], places=4)})")
                     for k in ("checks", "glyph_logp", "colour_error", "texture_strength")]
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
        sp = rep["table"]["spread"]
        lines += ["", "Schedules' spread over prompts (per-prompt mean schedule vs the row's "
                  "overall mean; flow time, mean / largest absolute deviation): "
                  + "; ".join(f"{r} {v['across_mean']:.3f} / {v['across_max']:.3f}"
                              for r, v in sp.items())
                  + (f". Learned, within a prompt (per image vs its prompt's mean): "
                     f"{sp['learned']['within_mean']:.3f} / {sp['learned']['within_max']:.3f}"
                     if "learned" in sp else "") + ".", ""]
        gm = rep["table"]["group_means"]
        if "learned" in gm:
            lines.append("Learned mean schedule by group: " + "; ".join(
                f"{grp} (" + ", ".join(f"{v:.2f}" for v in s[1:-1]) + ")"
                for grp, s in gm["learned"].items()) + ".")
            lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """The learned schedules of every scored context minus the best global schedule (the
    schedules themselves lie within a few hundredths of each other), coloured by prompt
    group, one panel per L, with the calibrated schedule (dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {L: r for L, r in sorted(report["by_steps"].items(), key=lambda kv: int(kv[0]))
             if "learned" in r["schedules"]}
    if not shown:
        return
    groups = np.array(report["groups"])
    names = list(dict.fromkeys(report["groups"]))
    colours = dict(zip(names, ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"),
                       strict=False))
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.8), squeeze=False)
    for ax, (L, rep) in zip(axes[0], shown.items(), strict=True):
        best = np.array(rep["schedules"]["best_global"])
        flows = np.array(rep["schedules"]["learned"]) - best
        steps = np.arange(flows.shape[1])
        for grp in names:
            m = groups == grp
            for row in flows[m]:
                ax.plot(steps, row, color=colours[grp], alpha=0.12, lw=0.7)
            ax.plot(steps, flows[m].mean(0), color=colours[grp], lw=2.0, label=grp)
        ax.axhline(0, color="k", ls="--", lw=1.0, label="best global")
        ax.plot(steps, np.array(rep["schedules"]["calibrated"]) - best, "k:", lw=1.4,
                label="calibrated")
        ax.set_title(f"L = {L}: learned − best global ({rep['best_global']})", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("flow time t minus best global's")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[3, 4, 6])
    ap.add_argument("--seeds", type=int, default=3, help="scored held-out seeds per prompt")
    ap.add_argument("--seed", type=int, default=10_000, help="first scored seed")
    ap.add_argument("--fit-seeds", type=int, default=2,
                    help="held-out seeds per prompt that choose best global and per prompt")
    ap.add_argument("--fit-seed", type=int, default=50_000, help="first fit seed")
    ap.add_argument("--random", type=int, default=10, help="Dirichlet-random candidates")
    ap.add_argument("--calibrated", type=Path, default=MODELS / "shapes_calibrated.safetensors")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--plot", type=Path, default=REPO / "docs" / "shapes_schedules.png")
    ap.add_argument("--update", action="store_true",
                    help="replace only these --steps in an existing <out>.json (same contexts)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.monotonic()
    bench = Bench(args)
    report = {"prompts": int(len(np.unique(bench.ev_ids))), "contexts": len(bench.ev),
              "seed": args.seed, "seeds": args.seeds, "fit_seed": args.fit_seed,
              "fit_seeds": args.fit_seeds, "threads": args.threads,
              "groups": bench.groups.tolist(), "by_steps": {}}
    old = Path(f"{args.out}.json")
    if args.update and old.is_file():
        previous = json.loads(old.read_text())
        same = ("prompts", "contexts", "seed", "seeds", "fit_seed", "fit_seeds")
        if any(previous[k] != report[k] for k in same):
            raise ValueError(f"{old} was run on other contexts; run without --update.")
        report["by_steps"] = previous["by_steps"]
        report["seconds_earlier"] = previous.get("seconds", 0) + previous.get(
            "seconds_earlier", 0)
    for L in args.steps:
        res = run_steps(bench, L, args)
        log.info("L = %d done in %.0f s (%.0f s CPU)", L, res["seconds"], res["cpu_seconds"])
        schedules = {k: res["flows"][k][0].tolist()
                     for k in ("best_global", "calibrated", "default")}
        if "learned" in res["flows"]:
            schedules["learned"] = res["flows"]["learned"].tolist()
        report["candidates"] = len(res["names"])
        report["by_steps"][str(L)] = {
            "best_global": res["best_global"], "rows": res["rows"],
            "seconds": round(res["seconds"], 1), "cpu_seconds": round(res["cpu_seconds"], 1),
            "schedules": schedules,
            "per_prompt_choice": res["per_prompt_choice"],
            "oracle_choice": res["oracle_choice"], "table": summarize(bench, res)}
    report["by_steps"] = dict(sorted(report["by_steps"].items(), key=lambda kv: int(kv[0])))
    report["seconds"] = round(time.monotonic() - t0, 1)
    report["cpu_seconds"] = round(time.process_time(), 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old.write_text(json.dumps(report, indent=1))
    text = markdown(report, args)
    Path(f"{args.out}.md").write_text(text + "\n")
    plot(report, args.plot)
    print(text)


if __name__ == "__main__":
    main()
