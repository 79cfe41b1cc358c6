"""Write the extra analytic-testbed configurations of the learning-quality study (issue 11).

Reproducible: every file is a pure function of the seeds below. Run from the repository root::

    python scripts/make_testbed_configs.py            # writes training/configs/*.json

* ``wide_d16.json``: d = 16, 10 classes x 3 components, std 0.05 (``generate_config``, seed 1);
* ``sharp_d4.json``: d = 4, 4 classes x 8 components, std 0.01, means x1.5 (seed 2): many
  sharp, crowded modes in a small space (curved flows, heavy-tailed rewards);
* ``hetero_prompts.json``: d = 8, 8 classes x 4 components, std 0.03, whose "prompts" differ a
  lot in difficulty, like real prompts: class ``c``'s means are scaled by 0.1 .. 10
  (geometric), so its flows travel further and its modes separate more (harder) with ``c``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from learned_schedules.training.testbed.mixture import DTYPE, generate_config

OUT = Path(__file__).resolve().parents[1] / "training" / "configs"


def hetero_config(seed: int = 3, d: int = 8, classes: int = 8, components: int = 4,
                  std: float = 0.03, lo: float = 0.1, hi: float = 10.0) -> dict:
    """Classes of graded difficulty: class ``c``'s means (standard normal draws) are scaled
    by ``s_c``, geometric from ``lo`` to ``hi``. The Euler error grows with the distance the
    flow travels and with the mode separation relative to ``std``, so the classes' reward
    levels differ by several units, as real prompts' rewards do."""
    g = torch.Generator().manual_seed(seed)
    scales = lo * (hi / lo) ** (torch.arange(classes, dtype=DTYPE) / (classes - 1))
    means = torch.randn(classes, components, d, generator=g, dtype=DTYPE)
    means = means * scales[:, None, None]
    weights = torch.rand(classes, components, generator=g, dtype=DTYPE) + 0.5
    weights = weights / weights.sum(1, keepdim=True)
    return {
        "description": "Prompts of graded difficulty (issue 11): class c's means are standard "
                       "normal draws scaled by 0.1 .. 10 (geometric in c), so the classes' "
                       "reward levels differ by several units. Written by "
                       "scripts/make_testbed_configs.py.",
        "d": d, "std": std, "reward": "fidelity",
        "generator": {"script": "scripts/make_testbed_configs.py", "seed": seed,
                      "class_scales": [round(float(s), 4) for s in scales]},
        "classes": [{"means": [[round(float(v), 6) for v in m] for m in means[c]],
                     "weights": [round(float(w), 6) for w in weights[c]]}
                    for c in range(classes)],
    }


def configs() -> dict[str, dict]:
    wide = generate_config(seed=1, d=16, classes=10, components=3, std=0.05)
    wide["description"] = ("d = 16, 10 classes x 3 components, std 0.05: "
                           "generate_config(seed=1). Written by scripts/make_testbed_configs.py.")
    sharp = generate_config(seed=2, d=4, classes=4, components=8, std=0.01, mean_scale=1.5)
    sharp["description"] = ("d = 4, 4 classes x 8 components, std 0.01, mean_scale 1.5: "
                            "generate_config(seed=2). Written by scripts/make_testbed_configs.py.")
    return {"wide_d16": wide, "sharp_d4": sharp, "hetero_prompts": hetero_config()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, cfg in configs().items():
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(cfg, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
