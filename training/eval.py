"""``eval``: a policy against its back-end's reference schedules, on held-out contexts.

One report for every back-end. The back-end supplies the held-out contexts, the reference
schedules (:meth:`Backend.comparators`: uniform / shifted / best global / per-instance oracle
on the testbed; ComfyUI's schedulers on a ComfyUI model), the rewards, optional extra measures
and its own artefacts (schedule plot, image grid). Every row holds the mean reward ± standard
error, the difference paired with a *reference* row (``best_global`` when the back-end has
one, else the first comparator, e.g. the model's default schedule) and the share of contexts
where the row beats it; with both ``best_global`` and ``oracle`` present, also the share of
the best-global -> oracle gap the row closes (how much of the possible per-instance gain was
taken).

A policy's per-image choices are read against its own mean: the report gives the spread of the
learned schedules over the held-out contexts (largest and mean absolute deviation from their
mean) and, for a step-wise policy (or with ``fixed_at_mean``), the row ``learned_mean``: ONE
fixed schedule equal to the policy's mean schedule, with the policy's paired differences from
it (what the per-image choices buy over their own average).

Outputs (``<run>/eval`` or ``--out``): ``eval.md``, ``eval.csv``, ``eval.json``, and where the
back-end describes its contexts ``per_prompt.csv`` (one row per context, one reward column per
schedule), plus the back-end's artefacts.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..policies.contract import is_stepwise
from ..policies.policy_file import LoadedPolicy, load_policy
from .rl.backend import Backend, SetMetric, make_backend
from .rl.config import TrainConfig
from .rl.config_migration import CONFIG_VERSION, migrate
from .rl.stepwise import policy_schedules as deployed_schedules

log = logging.getLogger("learned_schedules.training")

LEARNED = "learned"
LEARNED_MEAN = "learned_mean"
"""The row of the fixed schedule at the policy's mean schedule over the held-out contexts."""


@dataclass
class EvalReport:
    """The evaluation table: one row per schedule source, and where it was written."""

    steps: int
    reward: str
    contexts: int
    reference: str | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None
    default: str | None = None
    """The model's default schedule row (paired differences and gap shares use it)."""
    ceiling: str | None = None
    """The default schedule at many steps (the ceiling of the gap shares), if evaluated."""
    set_metrics: list[str] = field(default_factory=list)
    """Names of the set-level measures in the rows (e.g. ``fd``, ``coverage``)."""
    spread: dict[str, Any] = field(default_factory=dict)
    """The learned schedules' mean ``mean``, largest and mean absolute deviation from it
    (``max_dev``, ``mean_dev``; flow time) and, with a ``learned_mean`` row, the policy's
    paired differences from that row (``reward_minus_mean`` / ``_se``, ``<m>_minus_mean`` /
    ``_se`` for each set measure)."""

    def markdown(self) -> str:
        """The table in Markdown (what ``eval`` prints and writes to ``eval.md``)."""
        gap = any(r["gap_closed"] is not None for r in self.rows)
        metrics = [k[: -len("_geomean")] for k in (self.rows[0] if self.rows else {})
                   if k.endswith("_geomean")]
        head = ["schedule", "reward", f"difference (paired with {self.reference})", "wins"]
        head += ["gap closed"] * gap + [f"{m.replace('_', ' ')} (geo. mean)" for m in metrics]
        lines = [f"Held-out contexts: {self.contexts}, L = {self.steps}, reward = {self.reward} "
                 "(mean ± standard error"
                 + ("; gap closed = share of best_global -> oracle" if gap else "") + ")\n",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r["name"], f"{r['reward_mean']:.4f} ± {r['reward_se']:.4f}",
                     f"{r['diff_mean']:+.4f} ± {r['diff_se']:.4f}",
                     f"{100 * r['win_rate']:.0f}%"]
            if gap:
                cells.append("" if r["gap_closed"] is None else f"{100 * r['gap_closed']:.0f}%")
            cells += [f"{r[m + '_geomean']:.4g}" for m in metrics]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines + self._default_lines() + self._set_lines()
                         + self._spread_lines())

    def _spread_lines(self) -> list[str]:
        """How much the learned schedules differ per context, and what that buys over one
        fixed schedule at their mean (the ``learned_mean`` row)."""
        sp = self.spread
        if not sp:
            return []
        mean = ", ".join(f"{v:.3f}" for v in sp["mean"])
        lines = ["", f"Per-image choice: the learned schedules over the {self.contexts} "
                 f"contexts have mean ({mean}) and deviate from it by at most "
                 f"{sp['max_dev']:.2g} (mean absolute deviation {sp['mean_dev']:.2g}, flow "
                 "time)."]
        if "reward_minus_mean" in sp:
            parts = [f"{m} {_value_se(sp[m + '_minus_mean'], sp[m + '_minus_mean_se'], '+')}"
                     for m in ["reward", *self.set_metrics] if m + "_minus_mean" in sp]
            lines.append(f"learned − {LEARNED_MEAN} (one fixed schedule at that mean; paired): "
                         + ", ".join(parts) + ".")
        return lines

    def _default_lines(self) -> list[str]:
        """Gains over the model's default (separate from those over the reference row) and
        the share of the default -> ceiling gap closed, reward and set measures."""
        d, c = self.default, self.ceiling
        if d is None or (d == self.reference and c is None):
            return []
        head = ["schedule", f"reward − {d} (paired)", "wins"]
        head += [f"gap closed: {m}" for m in ["reward", *self.set_metrics]] if c else []
        lines = ["", f"Against the model's default `{d}` at L = {self.steps}"
                 + (f"; gap closed = share of the {d} (L = {self.steps}) -> {c} gap" if c else "")
                 + ":", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r["name"], f"{r['default_diff_mean']:+.4f} ± {r['default_diff_se']:.4f}",
                     f"{100 * r['default_win_rate']:.0f}%"]
            if c:
                cells += [_pct(r.get(f"{m}_gap_closed_to_ceiling"))
                          for m in ["reward", *self.set_metrics]]
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def _set_lines(self) -> list[str]:
        """Set-level measures with bootstrap SEs and paired differences."""
        if not self.set_metrics:
            return []
        refs = [x for x in dict.fromkeys([self.default, self.reference]) if x is not None]
        head = ["schedule"]
        for m in self.set_metrics:
            head += [m] + [f"{m} − {x}" for x in refs]
        lines = ["", f"Set-level measures over the {self.contexts} contexts of each schedule "
                 "(± bootstrap standard error over contexts; differences paired on the same "
                 "resamples):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r["name"]]
            for m in self.set_metrics:
                cells.append(_value_se(r[m], r[m + "_se"]))
                cells += [_value_se(r[f"{m}_minus_{x}"], r[f"{m}_minus_{x}_se"], "+")
                          for x in refs]
            lines.append("| " + " | ".join(cells) + " |")
        return lines


def _value_se(value: float, se: float, sign: str = "") -> str:
    """``value ± se`` to the SE's second significant digit (at most 4 decimals)."""
    places = 4 if not se > 0 else min(4, max(0, 1 - math.floor(math.log10(se))))
    return f"{value:{sign}.{places}f} ± {se:.{places}f}"


def _pct(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else f"{round(100 * x) + 0:.0f}%"


def _mean_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    se = float(x.std() / math.sqrt(x.numel())) if x.numel() > 1 else 0.0
    return float(x.mean()), se


def reference_name(names: list[str]) -> str | None:
    """The row others are paired with: ``best_global`` if present, else the first comparator."""
    if "best_global" in names:
        return "best_global"
    others = [n for n in names if n != LEARNED]
    return others[0] if others else None


def summarize(rewards: dict[str, torch.Tensor],
              metrics: dict[str, dict[str, torch.Tensor]] | None = None,
              reference: str | None = None) -> list[dict[str, Any]]:
    """Rows: mean ± SE, paired difference and win rate against ``reference``, gap closed, and
    each extra metric's mean and geometric mean (``metrics``: schedule -> metric -> ``[N]``)."""
    reference = reference if reference is not None else reference_name(list(rewards))
    base = rewards[reference] if reference is not None else None
    lo = float(rewards["best_global"].double().mean()) if "best_global" in rewards else None
    hi = float(rewards["oracle"].double().mean()) if "oracle" in rewards else None
    rows = []
    for name, r in rewards.items():
        mean, se = _mean_se(r)
        diff = r.double() - (base.double() if base is not None else 0.0)
        dmean, dse = _mean_se(diff)
        row: dict[str, Any] = {
            "name": name, "reward_mean": mean, "reward_se": se, "diff_mean": dmean,
            "diff_se": dse,
            "win_rate": float((diff > 0).double().mean()) if base is not None else 0.0,
            "gap_closed": (mean - lo) / (hi - lo)
            if lo is not None and hi is not None and hi > lo else None}
        for metric, values in ((metrics or {}).get(name) or {}).items():
            v = values.double()
            row[f"{metric}_mean"] = float(v.mean())
            row[f"{metric}_geomean"] = float(torch.exp(torch.log(v.clamp_min(1e-300)).mean()))
        rows.append(row)
    return rows


def add_default_columns(rows: list[dict[str, Any]], rewards: dict[str, torch.Tensor],
                        default: str | None, ceiling: str | None = None) -> None:
    """Add to each row its reward difference paired with the ``default`` row
    (``default_diff_mean`` / ``_se``, ``default_win_rate``) and, with a ``ceiling`` row, the
    share of the default -> ceiling reward gap it closes (``reward_gap_closed_to_ceiling``)."""
    if default is None or default not in rewards:
        return
    base = rewards[default].double()
    lo = float(base.mean())
    hi = float(rewards[ceiling].double().mean()) if ceiling in rewards else None
    for row in rows:
        diff = rewards[row["name"]].double() - base
        row["default_diff_mean"], row["default_diff_se"] = _mean_se(diff)
        row["default_win_rate"] = float((diff > 0).double().mean())
        if hi is not None:
            row["reward_gap_closed_to_ceiling"] = _share(row["reward_mean"], lo, hi)


def add_set_metrics(rows: list[dict[str, Any]], sets: dict[str, dict[str, SetMetric]],
                    pair_with: list[str], ceiling: str | None = None) -> list[str]:
    """Add each row's set measures: ``<m>`` and ``<m>_se``, ``<m>_minus_<x>`` and its paired
    SE for each row ``x`` of ``pair_with`` (the default, the reference), and with a
    ``ceiling`` row the share of the default -> ceiling gap closed
    (``<m>_gap_closed_to_ceiling``; the default is ``pair_with[0]``). Returns the names."""
    if not sets:
        return []
    names = list(next(iter(sets.values())))
    pair_with = [x for x in dict.fromkeys(pair_with) if x in sets]
    for row in rows:
        own = sets[row["name"]]
        for m in names:
            row[m], row[f"{m}_se"] = own[m].value, own[m].se
            for x in pair_with:
                row[f"{m}_minus_{x}"] = own[m].value - sets[x][m].value
                row[f"{m}_minus_{x}_se"] = own[m].diff_se(sets[x][m])
            if ceiling in sets and pair_with:
                row[f"{m}_gap_closed_to_ceiling"] = _share(
                    own[m].value, sets[pair_with[0]][m].value, sets[ceiling][m].value)
    return names


def _share(value: float, lo: float, hi: float) -> float:
    return (value - lo) / (hi - lo) if hi != lo else float("nan")


def schedule_spread(schedules: torch.Tensor) -> dict[str, Any]:
    """Mean schedule of ``schedules [N, L+1]`` and their largest and mean absolute deviation
    from it."""
    s = schedules.double()
    mean = s.mean(0)
    dev = (s - mean).abs()
    return {"mean": [float(v) for v in mean], "max_dev": float(dev.max()),
            "mean_dev": float(dev.mean())}


def policy_schedules(loaded: LoadedPolicy, backend: Backend, contexts: Any) -> torch.Tensor:
    """The policy's deterministic (mean-mode) flow-time schedules ``[N, L+1]`` (a step-wise
    policy's: the flow times its rollout used)."""
    return deployed_schedules(loaded.policy.eval(), backend, contexts).cpu()


def backend_for_policy(loaded: LoadedPolicy, overrides: dict[str, Any] | None = None
                       ) -> Backend:
    """The back-end the policy was trained on, from the training config in its file, with
    ``overrides`` (non-None values of config fields) applied."""
    training = dict(loaded.metadata.get("training") or {})
    family = loaded.metadata.get("model_family")
    training.setdefault("backend", "testbed" if family == "testbed" else "comfy")
    extra = training.get("extra")
    if isinstance(extra, dict):  # older files: only set_metrics has a home now
        training["extra"] = {k: v for k, v in extra.items() if k == "set_metrics"}
    data = migrate(training)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    TrainConfig.from_dict(given).validate()  # the overrides' types and ranges, named
    # the overrides are flags of this version (no rule for older configs applies to them)
    for key, value in migrate({**given, "config_version": CONFIG_VERSION}).items():
        data[key] = {**data[key], **value} if isinstance(value, dict) \
            and isinstance(data.get(key), dict) else value
    config = TrainConfig.from_dict(data, strict=False)  # keys of other versions: ignored
    backend = make_backend(config)
    if backend.model_family != family:
        raise ValueError(f"{loaded.path.name} was trained for {family}, but the model is "
                         f"{backend.model_family}.")
    return backend


def policy_file_of(path: str | Path) -> Path:
    """A policy file, or a run folder's final policy."""
    path = Path(path)
    if path.is_dir():
        path = path / "policy.safetensors"
    if not path.is_file():
        raise ValueError(f"No policy file at {path}.")
    return path


def evaluate_policy_file(policy_path: str | Path, *, overrides: dict[str, Any] | None = None,
                         contexts: int = 512, seeds: int = 4, seed: int = 10_000,
                         options: dict[str, Any] | None = None, out: str | Path | None = None,
                         backend: Backend | None = None, ceiling_steps: int = 0,
                         fixed_at_mean: bool | None = None) -> EvalReport:
    """Evaluate a policy file (or run folder) against its back-end's comparators; write the
    report. ``contexts``: held-out contexts where they are unlimited (testbed); ``seeds``:
    seeds per held-out prompt where prompts are held out (ComfyUI models). ``options`` go to
    :meth:`Backend.comparators` (testbed: ``train_contexts``, ``fit_iters``, ``oracle``;
    ComfyUI: ``schedulers``) and to the back-end's artefacts (``grid_columns``).
    ``ceiling_steps`` > 0 adds the model's default schedule at that many steps (ComfyUI
    models: e.g. 30) as the ceiling row; the back-end's set measures (:meth:`Backend.
    set_metrics`, e.g. the digits model's Fréchet distance) are reported for every row.
    ``fixed_at_mean``: add the ``learned_mean`` row (None: for step-wise policies only)."""
    if contexts < 1 or seeds < 1:
        raise ValueError("eval needs at least one held-out context (--contexts) and one seed "
                         "(--seeds).")
    if out is not None:
        for parent in (Path(out), *Path(out).parents):
            if parent.exists():
                if not parent.is_dir():
                    raise ValueError(f"eval --out must be a folder, but {parent} is a file.")
                break
    path = policy_file_of(policy_path)
    loaded = load_policy(path)
    backend = backend or backend_for_policy(loaded, overrides)
    steps = int(loaded.metadata["steps"])
    count = backend.held_out_count()
    n = contexts if count is None else count * seeds
    ctx = backend.held_out_contexts(n, seed)
    options = dict(options or {})
    log.info("eval: %d held-out contexts, L=%d; fitting / building comparators", n, steps)
    comparators = backend.comparators(steps, ctx, seed=seed, **options)
    schedules = {name: (s if s.ndim == 2 else s.expand(n, -1)).float()
                 for name, s in comparators.items()}
    schedules[LEARNED] = policy_schedules(loaded, backend, ctx).float()
    spread = schedule_spread(schedules[LEARNED])
    if fixed_at_mean if fixed_at_mean is not None else is_stepwise(loaded.policy):
        schedules[LEARNED_MEAN] = torch.tensor(spread["mean"]).float().expand(n, -1)
    rewards: dict[str, torch.Tensor] = {}
    metrics: dict[str, dict[str, torch.Tensor]] = {}
    for name, sched in schedules.items():
        rewards[name] = backend.rewards(ctx, sched[:, None, :])[:, 0].cpu()
        metrics[name] = backend.eval_metrics(ctx, sched)
        log.info("eval: %s reward %.4f", name, float(rewards[name].mean()))
    reference = reference_name(list(rewards))
    found = backend.ceiling_schedule(max(ceiling_steps, 1), **options)
    default = found[0] if found is not None and found[0] in rewards else None
    ceiling = None
    if default is not None and ceiling_steps > 0:
        ceiling = f"{default}_{ceiling_steps}"
        flow = backend.ceiling_schedule(ceiling_steps, **options)[1].float()
        rewards[ceiling] = backend.rewards(ctx, flow.expand(n, -1)[:, None, :])[:, 0].cpu()
        metrics[ceiling] = backend.eval_metrics(ctx, flow.expand(n, -1))
        log.info("eval: %s reward %.4f", ceiling, float(rewards[ceiling].mean()))
    rows = summarize(rewards, metrics, reference)
    add_default_columns(rows, rewards, default, ceiling)
    all_schedules = dict(schedules)
    if ceiling is not None:
        all_schedules[ceiling] = flow.expand(n, -1)
    sets = backend.set_metrics(ctx, all_schedules)
    set_names = add_set_metrics(rows, sets, [x for x in (default, reference) if x is not None],
                                ceiling)
    if LEARNED_MEAN in rewards:
        spread["reward_minus_mean"], spread["reward_minus_mean_se"] = _mean_se(
            rewards[LEARNED].double() - rewards[LEARNED_MEAN].double())
        for m in set_names:
            own, fixed = sets[LEARNED][m], sets[LEARNED_MEAN][m]
            spread[f"{m}_minus_mean"] = own.value - fixed.value
            spread[f"{m}_minus_mean_se"] = own.diff_se(fixed)
    report = EvalReport(steps=steps, reward=backend.reward_name, contexts=n,
                        reference=reference, rows=rows, default=default, ceiling=ceiling,
                        set_metrics=set_names, spread=spread)
    out_dir = Path(out) if out else (path.parent.parent if path.parent.name == "checkpoints"
                                     else path.parent) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    report.out_dir = out_dir
    (out_dir / "eval.md").write_text(report.markdown() + "\n")
    with (out_dir / "eval.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(report.rows[0]))
        writer.writeheader()
        writer.writerows(report.rows)
    (out_dir / "eval.json").write_text(json.dumps(
        {"policy": str(path), "model_family": backend.model_family, "steps": steps,
         "reward": backend.reward_name, "contexts": n, "seed": seed, "reference": reference,
         "rows": report.rows, "default": default, "ceiling": ceiling, "spread": spread,
         "schedules": {k: v.tolist() for k, v in comparators.items() if v.ndim == 1},
         "learned_schedules_first": schedules[LEARNED][:8].tolist()}, indent=2))
    described = backend.describe_contexts(ctx)
    if described is not None:
        with (out_dir / "per_prompt.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([*described[0], *rewards])
            for i, info in enumerate(described):
                writer.writerow([*info.values(),
                                 *(f"{float(r[i]):.6g}" for r in rewards.values())])
    backend.write_eval_artifacts(out_dir, ctx, schedules, rewards, **options)
    return report


__all__ = ["EvalReport", "evaluate_policy_file", "summarize", "backend_for_policy",
           "policy_schedules", "reference_name", "add_default_columns", "add_set_metrics",
           "schedule_spread", "LEARNED_MEAN"]
