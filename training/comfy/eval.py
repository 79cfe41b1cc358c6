"""``eval`` for ComfyUI models: default schedules vs a learned policy on held-out prompts.

Outputs (in ``<run>/eval`` or ``--out``): ``eval.md`` / ``eval.json`` (reward mean ± standard
error per schedule, and the paired difference to the first default schedule),
``per_prompt.csv`` (every prompt x seed x schedule) and ``grid.png`` (default schedule above,
learned below, each image with its schedule plotted in the corner, as in the paper's Fig. 1).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...plots import image_grid
from ...policies.policy_file import LoadedPolicy, load_policy
from ..rl.config import TrainConfig
from ..testbed.eval import EvalReport

log = logging.getLogger("learned_schedules.training")


@dataclass
class ComfyEvalReport(EvalReport):
    """Reward per schedule on held-out (prompt, seed) contexts (the testbed report's fields,
    its own table)."""

    def markdown(self) -> str:
        ref = self.rows[0]["name"] if self.rows else ""
        lines = [f"Held-out contexts: {self.contexts} (prompt x seed), L = {self.steps}, reward "
                 f"= {self.reward} (mean ± standard error; difference paired with {ref})\n",
                 "| schedule | reward | difference | wins |", "|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r['name']} | {r['reward_mean']:.4f} ± {r['reward_se']:.4f} | "
                         f"{r['diff_mean']:+.4f} ± {r['diff_se']:.4f} | "
                         f"{100 * r['win_rate']:.0f}% |")
        return "\n".join(lines)


def _mean_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    se = float(x.std() / math.sqrt(x.numel())) if x.numel() > 1 else 0.0
    return float(x.mean()), se


def summarize(rewards: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Rows: mean ± SE, and the paired difference / win rate against the first entry."""
    names = list(rewards)
    base = rewards[names[0]]
    rows = []
    for name in names:
        r = rewards[name]
        mean, se = _mean_se(r)
        dmean, dse = _mean_se(r - base)
        rows.append({"name": name, "reward_mean": mean, "reward_se": se, "diff_mean": dmean,
                     "diff_se": dse, "win_rate": float((r > base).double().mean())})
    return rows


def _policy_path(path: Path) -> Path:
    if path.is_dir():
        path = path / "policy.safetensors"
    if not path.is_file():
        raise ValueError(f"No policy file at {path}.")
    return path


def config_for_eval(loaded: LoadedPolicy, overrides: dict[str, Any]) -> TrainConfig:
    """The training config stored in the policy file, with ``overrides`` (non-None) applied."""
    training = dict(loaded.metadata.get("training") or {})
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    data = {k: v for k, v in training.items() if k in names}
    data.update({k: v for k, v in overrides.items() if v is not None and k in names})
    data["backend"] = "comfy"
    return TrainConfig.from_dict(data)


def evaluate_comfy_policy(policy_path: str | Path, *, overrides: dict[str, Any] | None = None,
                          seeds: int = 4, seed: int = 10_000,
                          schedulers: tuple[str, ...] = ("simple",), grid_columns: int = 6,
                          out: str | Path | None = None, backend: Any = None
                          ) -> ComfyEvalReport:
    """Evaluate a policy against ComfyUI's default schedule(s) on every held-out prompt x
    ``seeds`` seeds; write the report, the per-prompt CSV and the image grid."""
    from .backend import ComfyBackend

    path = _policy_path(Path(policy_path))
    if seeds < 1 or not schedulers:
        raise ValueError("eval needs at least one seed and one default scheduler.")
    loaded = load_policy(path)
    config = config_for_eval(loaded, overrides or {})
    backend = backend or ComfyBackend.from_config(config)
    family = loaded.metadata["model_family"]
    if family != backend.model_family:
        raise ValueError(f"{path.name} was trained for {family}, but the model is "
                         f"{backend.model_family}.")
    import comfy.samplers

    unknown = [n for n in schedulers if n not in comfy.samplers.SCHEDULER_NAMES]
    if unknown:
        raise ValueError(f"Unknown scheduler(s) {', '.join(unknown)}; ComfyUI's are: "
                         f"{', '.join(comfy.samplers.SCHEDULER_NAMES)}.")
    policy = loaded.policy.eval()
    steps = int(loaded.metadata["steps"])
    n_held = len(backend.prompts) - backend.n_train
    ctx = backend.held_out_contexts(n_held * seeds, seed)
    log.info("eval: %d held-out prompts x %d seeds, L=%d", n_held, seeds, steps)
    rewards: dict[str, torch.Tensor] = {}
    sigmas: dict[str, torch.Tensor] = {}
    images: dict[str, torch.Tensor] = {}
    show = min(grid_columns, len(ctx))
    for name in schedulers:
        sig = backend.default_sigmas(steps, name)
        sigmas[name] = sig.expand(len(ctx), -1)
    sigmas["learned"] = backend.policy_sigmas(policy, ctx)
    for name, sig in sigmas.items():
        imgs = backend.images(ctx, sig)
        rewards[name] = backend.score(ctx, imgs)
        images[name] = imgs[:show]
        log.info("eval: %s reward %.4f", name, float(rewards[name].mean()))
    report = ComfyEvalReport(steps=steps, reward=backend.reward_name, contexts=len(ctx),
                             rows=summarize(rewards))
    out_dir = Path(out) if out else path.parent / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.md").write_text(report.markdown() + "\n")
    (out_dir / "eval.json").write_text(json.dumps(
        {"policy": str(path), "steps": steps, "reward": backend.reward_name,
         "contexts": len(ctx), "rows": report.rows,
         "sigmas": {k: v[:show].tolist() for k, v in sigmas.items()}}, indent=2))
    prompts = backend.prompt_texts(ctx)
    with (out_dir / "per_prompt.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "seed", *rewards])
        for i in range(len(ctx)):
            writer.writerow([prompts[i], int(ctx.seeds[i]),
                             *(f"{float(r[i]):.6g}" for r in rewards.values())])
    image_grid([(name, images[name], sigmas[name][:show]) for name in sigmas]).save(
        out_dir / "grid.png")
    report.out_dir = out_dir
    return report
