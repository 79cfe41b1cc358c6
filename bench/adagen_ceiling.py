"""AdaGen read against its ceilings: the step-wise policy beside the default schedule, the best
global schedule (fitted on the distribution distance FD and on the many-step result), ONE
fixed schedule equal to the policy's mean schedule, and the spread of its per-image schedules,
on held-out contexts with paired standard errors.

    OMP_NUM_THREADS=1 nice python bench/adagen_ceiling.py testbed --steps 3 4 8
    OMP_NUM_THREADS=1 nice python bench/adagen_ceiling.py digits --steps 3 \\
        --policy models/digits/digits_adagen_L3.safetensors
    OMP_NUM_THREADS=1 nice python bench/adagen_ceiling.py digits --steps 4 --variants base_default

**Testbed** (1,024 held-out contexts; AdaGen as ``bench/adagen_hacking.py`` trains it: the
adversarial reward, 250 iterations): fd (Fréchet distance to true samples, the testbed's FID)
and tv (component frequencies) with paired bootstrap SEs (200 resamples of the contexts),
fidelity (``-log`` squared error to the exact ODE solution: the testbed's PSNR to the many-step
result) and loglik with paired SEs over contexts. Best global schedules: fitted by Adam through
the exact Euler sampler on 1,024 training contexts, on the fidelity reward and on fd.

**Digits** (10 digits x 20 held-out seeds, through ``eval``): PSNR to the 40-step sample, FD
and per-class coverage (paired bootstrap SEs, 200 resamples). Best global schedules: the
PSNR-fitted ones of ``scripts/digits/benchmark.py`` and one fitted on FD here by a coordinate
search on 200 other contexts (seeds 30000+; cached in ``--fits``).

Variants (``--variants``): ``base_default`` (the base schedule is the model's default, as
shipped), ``base_global`` (the residual starts at the FD-fitted best global schedule),
``critic`` (+ 20% of the iterations training only the critic first), ``long`` (2x
iterations); ``--best-of`` N adds best-of-N with the discriminator (sampled actions).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "digits_reference.json"
FITS = REPO / "bench" / "results" / "adagen_ceiling_fits.json"
PSNR_GLOBAL = {3: [1.0, 0.591, 0.288, 0.0], 4: [1.0, 0.716, 0.504, 0.217, 0.0]}
"""The PSNR-fitted best global schedules of the digits benchmark (docs/digits.md)."""
VARIANTS = ("base_default", "base_global", "critic", "long")


def mean_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    return float(x.mean()), float(x.std() / math.sqrt(len(x)))


def spread_of(sched: torch.Tensor) -> tuple[list[float], float, float]:
    s = sched.double()
    m = s.mean(0)
    dev = (s - m).abs()
    return [float(v) for v in m], float(dev.max()), float(dev.mean())


def fmt(v: float, se: float, sign: str = "") -> str:
    places = 4 if not se > 0 else min(4, max(0, 1 - math.floor(math.log10(se))))
    return f"{v:{sign}.{places}f} ± {se:.{places}f}"


def diff(row: dict, key: str) -> str:
    """``row[key] ± row[key_se]`` with a sign."""
    return fmt(row[key], row[f"{key}_se"], "+")


def _fits() -> dict:
    return json.loads(FITS.read_text()) if FITS.is_file() else {}


def _save_fit(key: str, value: list[float]) -> None:
    fits = _fits()
    fits[key] = value
    FITS.parent.mkdir(parents=True, exist_ok=True)
    FITS.write_text(json.dumps(fits, indent=1) + "\n")


# -- the testbed ----------------------------------------------------------------------------
def testbed_fd_fit(testbed, ctx, steps: int, inits: list[torch.Tensor], iters: int = 200,
                   lr: float = 0.05) -> torch.Tensor:
    """One schedule minimising the (differentiable) per-class Fréchet distance of the final
    samples of ``ctx`` to true samples of their classes; Adam through the exact Euler sampler
    from each start, the best iterate kept."""
    from learned_schedules.policies.schedule import increments_to_schedule, schedule_to_increments
    from learned_schedules.training.testbed.mixture import DTYPE

    truth, _ = testbed.sample_data(ctx.classes, torch.Generator().manual_seed(5))
    masks = [ctx.classes == c for c in range(testbed.num_classes)]
    roots = []
    for m in masks:
        ev, vec = torch.linalg.eigh(torch.cov(truth[m].T))
        roots.append(vec @ torch.diag(ev.clamp_min(0).sqrt()) @ vec.T)

    def fd(x: torch.Tensor) -> torch.Tensor:
        out = []
        for m, root in zip(masks, roots, strict=True):
            a, b = x[m], truth[m]
            ca, cb = torch.cov(a.T), torch.cov(b.T)
            cross = torch.linalg.eigvalsh(root @ ca @ root).clamp_min(1e-12).sqrt().sum()
            out.append((a.mean(0) - b.mean(0)).pow(2).sum() + ca.trace() + cb.trace() - 2 * cross)
        return torch.stack(out).mean()

    best, best_val = None, float("inf")
    for init in inits:
        logits = torch.log(schedule_to_increments(init.to(DTYPE)).clamp_min(1e-6))
        logits = logits.clone().requires_grad_(True)
        opt = torch.optim.Adam([logits], lr=lr)
        for _ in range(iters + 1):
            seg = torch.softmax(logits, -1).clamp_min(1e-4)
            sched = increments_to_schedule(seg / seg.sum())
            loss = fd(testbed.euler(ctx.noise, ctx.classes, sched))
            if float(loss) < best_val:
                best, best_val = sched.detach().clone(), float(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return best


def discriminator_trace(metrics: Path, window: int = 25) -> str:
    """The discriminator's accuracy and the policy's adversarial reward over the first and the
    last ``window`` iterations of a run (from its ``metrics.csv``)."""
    import csv

    with metrics.open() as f:
        rows = list(csv.DictReader(f))

    def avg(key: str, part: list[dict]) -> float:
        return sum(float(r[key]) for r in part) / len(part)

    first, last = rows[:window], rows[-window:]
    return (f"disc_acc {avg('disc_acc', first):.3f} -> {avg('disc_acc', last):.3f}, "
            f"adv_reward {avg('adv_reward', first):+.3f} -> {avg('adv_reward', last):+.3f}, "
            f"action_std {avg('action_std', first):.3f} -> {avg('action_std', last):.3f}")


def testbed_main(args) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from adagen_hacking import run

    from learned_schedules.policies.schedule import uniform_schedule
    from learned_schedules.training.rl.stepwise import policy_rollout
    from learned_schedules.training.testbed.backend import TestbedBackend
    from learned_schedules.training.testbed.comparators import best_global_schedule
    from learned_schedules.training.testbed.diversity import mixture_set_measures
    from learned_schedules.training.testbed.mixture import DTYPE, Testbed

    backend = TestbedBackend(Testbed.default(reward="likelihood"))
    tb = backend.testbed
    fid = Testbed.default(reward="fidelity")
    ctx = fid.contexts_from_seed(args.contexts, 10_000)  # with exact targets
    train_ctx = fid.contexts_from_seed(1024, 20_000)
    lines = []
    for steps in args.steps:
        t0 = time.perf_counter()
        uniform = uniform_schedule(steps, DTYPE)
        g_fid = best_global_schedule(fid, train_ctx, steps)
        g_fd = testbed_fd_fit(tb, train_ctx, steps, [uniform, g_fid])
        scheds = {"default (uniform)": uniform, "best global (fidelity)": g_fid,
                  "best global (fd)": g_fd}
        spreads, training = {}, {}
        with tempfile.TemporaryDirectory() as out:
            for variant in args.variants:
                kw, iters = {}, args.iterations
                if variant == "base_global":
                    kw["base"] = ",".join(f"{v:.6f}" for v in g_fd.tolist()[:-1]) + ",0"
                elif variant == "critic":
                    kw["critic_warmup"] = iters // 5
                    iters += kw["critic_warmup"]
                elif variant == "long":
                    iters *= 2
                for seed in args.seeds:
                    policy, _ = run(steps, iters, 1.0, 0.0, f"{out}/{variant}", seed, **kw)
                    name = f"AdaGen {variant}" + (f" s{seed}" if len(args.seeds) > 1 else "")
                    training[name] = discriminator_trace(
                        Path(out) / variant / f"a1.0-t0.0-L{steps}-s{seed}" / "metrics.csv")
                    sched = policy_rollout(policy, backend, ctx).sigmas.double()
                    mean, mx, md = spread_of(sched)
                    scheds[name] = sched
                    scheds[f"{name}: fixed at its mean"] = torch.tensor(mean, dtype=DTYPE)
                    spreads[name] = (mean, mx, md)
        finals = {k: tb.euler(ctx.noise, ctx.classes, s) for k, s in scheds.items()}
        sets = mixture_set_measures(tb, ctx, finals, resamples=200)
        ref = "best global (fd)"
        per = {k: {"fidelity": fid.reward(x, ctx.classes, ctx.target),
                   "loglik": tb.log_density(x, ctx.classes).clamp_min(tb.likelihood_floor)}
               for k, x in finals.items()}
        lines += [f"\n### Testbed, L = {steps} ({args.iterations} iterations, "
                  f"{len(ctx)} held-out contexts; {time.perf_counter() - t0:.0f} s)\n",
                  "| sampler | fd | fd − best global (fd) | tv | fidelity | fidelity − best "
                  "global (fd) | loglik |", "|---|---|---|---|---|---|---|"]
        for k in scheds:
            fd, rep = sets[k]["fd"]
            d = rep - sets[ref]["fd"][1]
            tv, tv_rep = sets[k]["tv"]
            f, fse = mean_se(per[k]["fidelity"])
            df, dfse = mean_se(per[k]["fidelity"] - per[ref]["fidelity"])
            ll, llse = mean_se(per[k]["loglik"])
            lines.append(f"| {k} | {fmt(fd, float(rep.std()))} | "
                         f"{fmt(fd - sets[ref]['fd'][0], float(d.std()), '+')} | "
                         f"{fmt(tv, float(tv_rep.std()))} | {fmt(f, fse)} | {fmt(df, dfse, '+')} | "
                         f"{fmt(ll, llse)} |")
        for k, (mean, mx, md) in spreads.items():
            fixed = f"{k}: fixed at its mean"
            d = sets[k]["fd"][1] - sets[fixed]["fd"][1]
            lines.append(f"\n{k}: mean schedule ({', '.join(f'{v:.3f}' for v in mean)}), "
                         f"spread max |dev| {mx:.3g}, mean |dev| {md:.3g}; policy − its mean: "
                         f"fd {fmt(sets[k]['fd'][0] - sets[fixed]['fd'][0], float(d.std()), '+')}")
        for k, trace in training.items():
            lines.append(f"\n{k} training: {trace}")
        lines.append("\nSchedules: " + "; ".join(
            f"{k} ({', '.join(f'{v:.3f}' for v in s.tolist())})" for k, s in scheds.items()
            if s.ndim == 1 and "fixed at" not in k))
        print("\n".join(lines[-(len(scheds) + len(spreads) + 6):]), flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


# -- the digits model -----------------------------------------------------------------------
def digits_backend(tmp: str, reward: str, steps: int):
    from learned_schedules.training.rl.backend import make_backend
    from learned_schedules.training.rl.config import TrainConfig

    base = json.loads(CONFIG.read_text())
    for key in ("diffusion_model", "text_encoders", "vae", "prompts"):
        base[key] = str(REPO / base[key])
    base.pop("baseline", None)
    base.update(steps=steps, iterations=60, algo="adagen", reward=reward, out=tmp,
                eval_every=0, checkpoint_every=0, sample_every=0, batch=16, rollouts=2,
                lr=1e-3, progress=False, hidden=64, threads=1,
                comfyui_base=str(Path(tmp) / "base"), cache_dir=str(Path(tmp) / "cond"))
    return make_backend(TrainConfig.from_dict(base)), base


def digits_fd_fit(backend, steps: int, start: list[float], contexts: int = 200,
                  sizes: tuple[float, ...] = (0.06, 0.03, 0.015)) -> list[float]:
    """A coordinate search for the global schedule with the lowest FD on ``contexts`` fit
    contexts (seeds 30000+, none of the evaluation's), from ``start`` (model sigmas)."""
    from learned_schedules.training.rewards.digits import DigitMeasures, frechet_distance

    m = DigitMeasures()
    real, _ = m.held_out_features()
    ctx = backend.held_out_contexts(contexts, 30_000)
    seen: dict[tuple, float] = {}

    def fd(s: list[float]) -> float:
        key = tuple(round(v, 4) for v in s)
        if key not in seen:
            flow = torch.tensor(s).float().expand(len(ctx), -1)
            seen[key] = frechet_distance(m.features(backend.evaluation.images(ctx, flow)),
                                         real)
        return seen[key]

    best = list(start)
    for size in sizes:
        improved = True
        while improved:
            improved = False
            for i in range(1, steps):
                for sign in (1, -1):
                    cand = list(best)
                    cand[i] = round(cand[i] + sign * size, 4)
                    if not cand[i - 1] > cand[i] > cand[i + 1]:
                        continue
                    if fd(cand) < fd(best) - 1e-9:
                        best, improved = cand, True
        print(f"fd fit, step {size}: {best} fd {fd(best):.3f} ({len(seen)} schedules)",
              flush=True)
    return best


def candidate_grid(steps: int, center: list[float], width: float = 0.08, points: int = 3
                   ) -> list[list[float]]:
    """Global schedules around ``center``: each inner sigma moved by up to ``width`` in
    ``points`` steps (strictly decreasing ones only)."""
    offsets = torch.linspace(-width, width, points).tolist()
    grid = [[]]
    for i in range(1, steps):
        grid = [g + [center[i] + o] for g in grid for o in offsets]
    out = [[1.0, *g, 0.0] for g in grid]
    return [s for s in out if all(a > b for a, b in zip(s[:-1], s[1:], strict=True))]


def per_image_oracle(feats: torch.Tensor, real: torch.Tensor, groups: torch.Tensor | None = None,
                     passes: int = 3) -> tuple[torch.Tensor, float]:
    """A per-context choice among K candidates (``feats [K, N, e]``: each context's features
    under each candidate schedule) that lowers the Fréchet distance of the set to ``real``:
    greedy coordinate passes from the best single candidate, each context (or each group of
    ``groups``: one choice per group) switched to the candidate that lowers the FD most.
    Returns the choices ``[N]`` and their FD (an in-sample oracle: an upper bound of what
    choosing among these schedules per image can buy on this set)."""
    from learned_schedules.training.rewards.digits import frechet_distance

    k, n, _ = feats.shape
    rows = torch.arange(n)
    fds = [frechet_distance(feats[j], real) for j in range(k)]
    choice = torch.full((n,), int(torch.tensor(fds).argmin()))
    best = min(fds)
    units = [rows[groups == g] for g in groups.unique()] if groups is not None \
        else [rows[i:i + 1] for i in range(n)]
    for _ in range(passes):
        changed = False
        for unit in units:
            for j in range(k):
                if bool((choice[unit] == j).all()):
                    continue
                trial = choice.clone()
                trial[unit] = j
                fd = frechet_distance(feats[trial, rows], real)
                if fd < best - 1e-9:
                    best, choice, changed = fd, trial, True
        if not changed:
            break
    return choice, best


def digits_oracle(backend, steps: int, center: list[float], contexts: int, width: float
                  ) -> list[str]:
    """The per-image headroom on FD: per-context (and per-class) oracle choices among a grid of
    global schedules around ``center``, against the best single one, on ``contexts`` held-out
    contexts; also chosen against one half of the real digits and measured on the other (the
    oracle's overfit to the real set)."""
    from learned_schedules.training.rewards.digits import DigitMeasures, frechet_distance

    m = DigitMeasures()
    real, _ = m.held_out_features()
    ctx = backend.held_out_contexts(contexts, 10_000)
    grid = candidate_grid(steps, center, width)
    t0 = time.perf_counter()
    feats = torch.stack([m.features(backend.evaluation.images(
        ctx, torch.tensor(s).float().expand(len(ctx), -1))).double() for s in grid])
    real = real.double()
    rows = torch.arange(len(ctx))
    single = [frechet_distance(f, real) for f in feats]
    j = int(torch.tensor(single).argmin())
    lines = [f"\n### Digits, L = {steps}: per-image headroom on FD ({len(ctx)} held-out "
             f"contexts, {len(grid)} global schedules within ±{width} of "
             f"({', '.join(f'{v:.3f}' for v in center)}))\n",
             "| choice | FD (in-sample) | FD on the other half of the real digits |",
             "|---|---|---|"]
    half = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    a, b = real[half[: len(real) // 2]], real[half[len(real) // 2:]]
    single_a = [frechet_distance(f, a) for f in feats]
    ja = int(torch.tensor(single_a).argmin())
    lines.append(f"| best single schedule of the grid ({', '.join(f'{v:.3f}' for v in grid[j])}) "
                 f"| {single[j]:.2f} | {frechet_distance(feats[ja], b):.2f} |")
    lines.append(f"| centre schedule | {frechet_distance(feats[len(grid) // 2], real):.2f} | "
                 f"{frechet_distance(feats[len(grid) // 2], b):.2f} |")
    labels = ctx.prompt_ids % 10
    for name, groups in (("per class (one schedule per digit)", labels),
                         ("per image (one schedule per context)", None)):
        choice, fd = per_image_oracle(feats, real, groups)
        choice_a, _ = per_image_oracle(feats, a, groups)
        lines.append(f"| oracle {name} | {fd:.2f} | "
                     f"{frechet_distance(feats[choice_a, rows], b):.2f} |")
    lines.append(f"\n({time.perf_counter() - t0:.0f} s)")
    print("\n".join(lines), flush=True)
    return lines


def digits_scales(backend, policy_path: Path, steps: int, scales: list[float],
                  fixed: list[float], seeds: int) -> list[str]:
    """The residual-scale lever at inference: the policy's rollouts with each residual scale,
    FD and coverage paired with the fixed schedule ``fixed`` (model sigmas) on the same
    held-out contexts (bootstrap SEs on the same resamples), and each one's spread."""
    from learned_schedules.policies.policy_file import load_policy
    from learned_schedules.training.rewards.digits import DigitSetMeasures
    from learned_schedules.training.rl.stepwise import policy_rollout

    policy = load_policy(policy_path).policy.eval()
    ctx = backend.held_out_contexts(10 * seeds, 10_000)
    n = len(ctx)
    images = {"fixed": backend.evaluation.images(ctx, torch.tensor(fixed).float().expand(n, -1))}
    spreads = {}
    for scale in scales:
        traj = policy_rollout(policy, backend, ctx, scale=scale)
        images[scale] = backend.decode(traj.final)
        spreads[scale] = spread_of(traj.sigmas)
    found = DigitSetMeasures()(images, backend.prompt_texts(ctx))
    lines = [f"\n### Digits, L = {steps}: residual scale of `{policy_path.name}` ({n} held-out "
             f"contexts; paired with the fixed schedule {fixed})\n",
             "| scale | mean schedule | max / mean dev | FD | FD − fixed | coverage − fixed |",
             "|---|---|---|---|---|---|"]
    ref = found["fixed"]
    lines.append(f"| fixed | {fixed} | 0 | {ref['fd'][0]:.2f} | 0 | 0 |")
    for scale in scales:
        got = found[scale]
        d_fd, d_cov = got["fd"][1] - ref["fd"][1], got["coverage"][1] - ref["coverage"][1]
        mean, mx, md = spreads[scale]
        lines.append(f"| {scale:g} | {', '.join(f'{v:.3f}' for v in mean)} | {mx:.3f} / "
                     f"{md:.4f} | {got['fd'][0]:.2f} | "
                     f"{fmt(got['fd'][0] - ref['fd'][0], float(d_fd.std()), '+')} | "
                     f"{fmt(got['coverage'][0] - ref['coverage'][0], float(d_cov.std()), '+')} |")
    print("\n".join(lines), flush=True)
    return lines


def digits_main(args) -> None:
    from learned_schedules.training.eval import LEARNED, LEARNED_MEAN, evaluate_policy_file
    from learned_schedules.training.rl.config import TrainConfig
    from learned_schedules.training.rl.engine import train

    tmp = tempfile.mkdtemp()
    lines = []
    for steps in args.steps:
        ev, _ = digits_backend(tmp, "reference", steps)
        key = f"digits_L{steps}_fd"
        g_fd = _fits().get(key)
        if g_fd is None:
            t0 = time.perf_counter()
            g_fd = digits_fd_fit(ev, steps, PSNR_GLOBAL[steps], sizes=tuple(args.fit_sizes))
            _save_fit(key, g_fd)
            print(f"FD fit L={steps}: {time.perf_counter() - t0:.0f} s", flush=True)
        if args.oracle:
            lines += digits_oracle(ev, steps, PSNR_GLOBAL[steps] if args.oracle == "psnr"
                                   else g_fd, args.digit_seeds * 10, args.oracle_width)
        if args.scales:
            lines += digits_scales(ev, Path(args.policy), steps, args.scales, g_fd,
                                   args.digit_seeds)
            continue
        policies = {}
        if args.policy:
            policies["shipped"] = Path(args.policy)
        tr, base = digits_backend(tmp, "digit", steps) if args.variants else (None, None)
        for variant in args.variants:
            adagen = {"adversarial": 1.0, "task": 0.0, "reference": "digits"}
            iters = args.iterations
            if variant == "base_global":
                adagen["base"] = ",".join(str(v) for v in g_fd)
            elif variant == "critic":
                adagen["critic_warmup"] = iters // 5
                iters += adagen["critic_warmup"]
            elif variant == "long":
                iters *= 2
            cfg = TrainConfig.from_dict({**base, "steps": steps, "iterations": iters,
                                         "run_name": f"{variant}_L{steps}", "adagen": adagen,
                                         "seed": args.seeds[0]})
            t0 = time.perf_counter()
            result = train(cfg, backend=tr)
            print(f"trained {variant} L={steps}: {time.perf_counter() - t0:.0f} s", flush=True)
            policies[variant] = result.run_dir / "policy.safetensors"
        for name, path in policies.items():
            t0 = time.perf_counter()
            report = evaluate_policy_file(
                path, backend=ev, seeds=args.digit_seeds, seed=10_000,
                options={"schedulers": ("simple",), "grid_columns": 2,
                         "fixed_schedules": {"best_global": PSNR_GLOBAL[steps],
                                             "best_global_fd": g_fd}},
                out=Path(tmp) / f"eval_{name}_L{steps}", fixed_at_mean=True)
            rows = {r["name"]: r for r in report.rows}
            lines += [f"\n### Digits, L = {steps}, AdaGen `{name}` ({report.contexts} held-out "
                      f"contexts; eval {time.perf_counter() - t0:.0f} s)\n",
                      "| sampler | PSNR (dB) | PSNR − best global | FD | FD − best global | "
                      "coverage | coverage − best global |", "|---|---|---|---|---|---|---|"]
            label = {LEARNED: f"AdaGen ({name})", LEARNED_MEAN: "fixed at the policy's mean",
                     "best_global": "best global (PSNR)", "best_global_fd": "best global (FD)",
                     "simple": "default (simple)"}
            for k, r in rows.items():
                lines.append(
                    f"| {label.get(k, k)} | {fmt(r['reward_mean'], r['reward_se'])} | "
                    f"{fmt(r['diff_mean'], r['diff_se'], '+')} | {fmt(r['fd'], r['fd_se'])} | "
                    f"{diff(r, 'fd_minus_best_global')} | "
                    f"{fmt(r['coverage'], r['coverage_se'])} | "
                    f"{diff(r, 'coverage_minus_best_global')} |")
            sp = report.spread
            lines.append(f"\nspread: mean ({', '.join(f'{v:.3f}' for v in sp['mean'])}), max "
                         f"|dev| {sp['max_dev']:.3g}, mean |dev| {sp['mean_dev']:.3g}; policy − "
                         f"its mean: PSNR {diff(sp, 'reward_minus_mean')}, "
                         f"FD {diff(sp, 'fd_minus_mean')}, coverage "
                         f"{diff(sp, 'coverage_minus_mean')}. "
                         f"FD-fitted global: {g_fd}")
            print("\n".join(lines[-(len(rows) + 5):]), flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", choices=("testbed", "digits"))
    parser.add_argument("--steps", type=int, nargs="+", default=[3])
    parser.add_argument("--variants", nargs="*", default=None, choices=VARIANTS,
                        help="AdaGen runs to train (default: base_default on the testbed, none "
                             "on digits)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="default 250 (testbed), 60 (digits)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    parser.add_argument("--contexts", type=int, default=1024, help="testbed held-out contexts")
    parser.add_argument("--digit-seeds", type=int, default=20, help="held-out seeds per digit")
    parser.add_argument("--policy", default=None, help="digits: an AdaGen policy file to read")
    parser.add_argument("--oracle", choices=("psnr", "fd"), default=None,
                        help="digits: the per-image FD headroom around the PSNR- or FD-fitted "
                             "best global schedule")
    parser.add_argument("--oracle-width", type=float, default=0.08)
    parser.add_argument("--scales", type=float, nargs="*", default=None,
                        help="digits: only the residual-scale lever of --policy at these scales")
    parser.add_argument("--fit-sizes", type=float, nargs="+", default=[0.06, 0.03, 0.015],
                        help="digits: the FD coordinate search's step sizes")
    parser.add_argument("--out", default=None, help="write the tables (Markdown) here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.variants is None:
        args.variants = ["base_default"] if args.model == "testbed" else []
    if args.iterations is None:
        args.iterations = 250 if args.model == "testbed" else 60
    (testbed_main if args.model == "testbed" else digits_main)(args)


if __name__ == "__main__":
    main()
