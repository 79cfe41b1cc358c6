"""The ``eval`` report's default / ceiling columns and set-level measures (training/eval.py), on
made-up numbers whose answers are known."""

from __future__ import annotations

import torch

from learned_schedules.training.eval import (
    EvalReport,
    add_default_columns,
    add_set_metrics,
    summarize,
)
from learned_schedules.training.rl.backend import SetMetric


def test_gain_over_the_default_gap_closed_and_paired_set_errors():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(200, generator=g)
    rewards = {"simple": 20.0 + noise, "best_global": 24.0 + noise,
               "learned": 25.0 + noise + 0.1 * torch.randn(200, generator=g),
               "simple_30": 30.0 + noise}
    rows = summarize(rewards, None, "best_global")
    add_default_columns(rows, rewards, "simple", "simple_30")
    by = {r["name"]: r for r in rows}
    learned = by["learned"]
    assert abs(learned["default_diff_mean"] - 5.0) < 0.05  # paired: the shared noise cancels
    assert learned["default_diff_se"] < 0.02 and learned["default_win_rate"] == 1.0
    assert abs(learned["diff_mean"] - 1.0) < 0.05  # the reference column is unchanged
    assert abs(learned["reward_gap_closed_to_ceiling"] - 0.5) < 0.01
    assert by["simple_30"]["reward_gap_closed_to_ceiling"] == 1.0

    boots = torch.randn(50, generator=g)  # the same resamples for every schedule
    sets = {name: {"fd": SetMetric(fd, fd + boots * (1 + shift))}
            for name, fd, shift in (("simple", 20.0, 0.0), ("best_global", 14.0, 0.0),
                                    ("learned", 14.0, 0.1), ("simple_30", 12.0, 0.0))}
    assert add_set_metrics(rows, {}, ["simple"], "simple_30") == []  # a back-end without any
    names = add_set_metrics(rows, sets, ["simple", "best_global"], "simple_30")
    assert names == ["fd"]
    assert abs(learned["fd_minus_simple"] + 6.0) < 1e-9
    assert abs(learned["fd_minus_simple_se"] - 0.1 * float(boots.std())) < 1e-6
    assert by["best_global"]["fd_minus_simple_se"] < 1e-5  # equal replicates pair to ~0
    assert abs(by["best_global"]["fd_gap_closed_to_ceiling"] - 0.75) < 1e-9
    report = EvalReport(steps=4, reward="reference", contexts=200, reference="best_global",
                        rows=rows, default="simple", ceiling="simple_30", set_metrics=names)
    text = report.markdown()
    assert "reward − simple (paired)" in text and "gap closed: fd" in text
    assert "| fd − simple | fd − best_global |" in text
    assert "| learned | +4.99" in text and "| 100% | 50% | 75% |" in text
