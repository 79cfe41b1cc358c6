"""``eval`` on the analytic testbed: a policy against every comparator, on held-out contexts."""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...plots import plot_schedules
from ...policies.policy_file import load_policy
from .comparators import comparator_schedules
from .mixture import DTYPE, Contexts, Testbed

log = logging.getLogger("learned_schedules.training")


@dataclass
class EvalReport:
    """Evaluation table: one row per schedule source, plus where it was written."""

    steps: int
    reward: str
    contexts: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None

    def markdown(self) -> str:
        head = (f"Held-out contexts: {self.contexts}, L = {self.steps}, reward = {self.reward} "
                "(mean ± standard error; gap closed = share of best_global -> oracle)\n\n"
                "| schedule | reward | sq. error (geo. mean) | gap closed |\n|---|---|---|---|")
        lines = [head]
        for r in self.rows:
            gap = "" if r["gap_closed"] is None else f"{100 * r['gap_closed']:.0f}%"
            lines.append(f"| {r['name']} | {r['reward_mean']:.3f} ± {r['reward_se']:.3f} | "
                         f"{r['sq_error_geomean']:.4g} | {gap} |")
        return "\n".join(lines)


def summarize(rewards: dict[str, torch.Tensor], sq_errors: dict[str, torch.Tensor]
              ) -> list[dict[str, Any]]:
    """Rows with mean ± standard error and the share of the best_global -> oracle gap."""
    lo = float(rewards["best_global"].mean()) if "best_global" in rewards else None
    hi = float(rewards["oracle"].mean()) if "oracle" in rewards else None
    rows = []
    for name, r in rewards.items():
        r = r.to(DTYPE)
        mean = float(r.mean())
        se = float(r.std() / math.sqrt(r.numel())) if r.numel() > 1 else 0.0
        gap = (mean - lo) / (hi - lo) if lo is not None and hi is not None and hi > lo else None
        err = sq_errors[name].to(DTYPE)
        rows.append({"name": name, "reward_mean": mean, "reward_se": se,
                     "sq_error_mean": float(err.mean()),
                     "sq_error_geomean": float(torch.exp(torch.log(err + 1e-12).mean())),
                     "gap_closed": gap})
    return rows


def evaluate_schedules(testbed: Testbed, contexts: Contexts, schedules: dict[str, torch.Tensor]
                       ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-context rewards and squared errors for each named schedule (shared or per context)."""
    rewards, errors = {}, {}
    with torch.no_grad():
        for name, sched in schedules.items():
            sched = sched.to(DTYPE)
            rewards[name] = testbed.sample_and_score(contexts, sched)
            errors[name] = testbed.squared_error(contexts, sched)
    return rewards, errors


def evaluate_policy_file(policy_path: str | Path, *, testbed_config: str | None = None,
                         contexts: int = 512, train_contexts: int = 512, seed: int = 10_000,
                         oracle: bool = True, out: str | Path | None = None,
                         fit_iters: int = 400) -> EvalReport:
    """Evaluate a testbed policy (file or run folder) against the comparators; write outputs.

    Writes ``eval.md``, ``eval.csv``, ``eval.json`` and ``schedules.png`` to ``out``
    (default: ``<run folder>/eval`` or next to the policy file).
    """
    path = Path(policy_path)
    if path.is_dir():
        path = path / "policy.safetensors"
    loaded = load_policy(path)
    meta = loaded.metadata
    if meta.get("model_family") != "testbed":
        raise ValueError(f"{path.name} was trained for {meta.get('model_family')!r}; this "
                         "evaluation runs on the analytic testbed only.")
    training = meta.get("training") or {}
    cfg_path = testbed_config or training.get("testbed_config")
    reward = training.get("reward")
    testbed = Testbed.from_json(cfg_path, reward=reward) if cfg_path else Testbed.default(reward)
    steps = int(meta["steps"])
    policy = loaded.policy.double()
    held = testbed.contexts_from_seed(contexts, seed)
    train_ctx = testbed.contexts_from_seed(train_contexts, seed + 1)
    log.info("fitting comparators (best global on %d training contexts%s)", train_contexts,
             ", per-instance oracle" if oracle else "")
    schedules = comparator_schedules(testbed, held, train_ctx, steps, oracle=oracle,
                                     iters=fit_iters)
    with torch.no_grad():
        learned = policy.schedule(mode="mean", noise=held.noise, cond=held.cond)
    schedules = {"learned": learned, **schedules}
    rewards, errors = evaluate_schedules(testbed, held, schedules)
    report = EvalReport(steps=steps, reward=testbed.reward_name, contexts=contexts,
                        rows=summarize(rewards, errors))
    # paired comparison learned vs best global (same contexts)
    diff = (rewards["learned"] - rewards["best_global"]).to(DTYPE)
    paired = {"learned_minus_best_global": float(diff.mean()),
              "se": float(diff.std() / math.sqrt(diff.numel()))}
    out_dir = Path(out) if out else (path.parent / "eval" if path.parent.name != "checkpoints"
                                     else path.parent.parent / "eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    report.out_dir = out_dir
    (out_dir / "eval.md").write_text(report.markdown() + "\n")
    with (out_dir / "eval.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(report.rows[0]))
        writer.writeheader()
        writer.writerows(report.rows)
    (out_dir / "eval.json").write_text(json.dumps(
        {"policy": str(path), "steps": steps, "reward": testbed.reward_name,
         "contexts": contexts, "seed": seed, "rows": report.rows, "paired": paired,
         "schedules": {k: v.tolist() for k, v in schedules.items() if v.ndim == 1}},
        indent=2))
    plot_schedules(out_dir / "schedules.png",
                   {k: v for k, v in schedules.items() if v.ndim == 1}, instances=learned,
                   title=f"L = {steps}: learned per-instance schedules vs comparators")
    return report
