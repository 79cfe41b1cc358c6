"""Grouped James-Stein in the trainer: prompts x seeds batches, group ids from the back-end and
the grouped baselines reaching the update."""

from __future__ import annotations

import pytest
import torch

from learned_schedules.training.rl import baselines
from learned_schedules.training.rl.backend import Backend, grouped_indices
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.engine import draw_batch, train
from learned_schedules.training.testbed.backend import TestbedBackend


def _config(tmp_path, **kw) -> TrainConfig:
    base = dict(steps=3, baseline="js_group_pooled", iterations=4, batch=8, hidden=16, depth=1,
                eval_every=0, checkpoint_every=0, eval_contexts=8, pool_size=256,
                out=str(tmp_path), run_name="r", progress=False)
    base.update(kw)
    return TrainConfig.from_dict(base)


def test_grouped_draw_shape_from_the_config(tmp_path):
    assert _config(tmp_path).grouped_draw() == (2, 4)  # default: 4 seeds per prompt
    assert _config(tmp_path, seeds_per_prompt=2).grouped_draw() == (4, 2)
    assert _config(tmp_path, baseline="rloo").grouped_draw() is None
    assert _config(tmp_path, baseline="rloo", seeds_per_prompt=4).grouped_draw() == (2, 4)
    assert _config(tmp_path, algo="ppo", ppo={"baseline": "js_group"}).grouped_draw() == (2, 4)
    with pytest.raises(ValueError, match="multiple of seeds_per_prompt"):
        _config(tmp_path, seeds_per_prompt=3).validate()
    with pytest.raises(ValueError, match="seeds_per_prompt"):
        _config(tmp_path, seeds_per_prompt=-1).validate()
    with pytest.raises(ValueError, match="2 rollouts"):
        _config(tmp_path, rollouts=1).validate()
    for kind in baselines.EXTRA_BASELINE_KINDS:  # every extra baseline is a config choice
        _config(tmp_path, baseline=kind).validate()


def test_grouped_indices_draw_distinct_prompts_times_seeds():
    groups = torch.arange(60) % 6
    g = torch.Generator().manual_seed(0)
    idx = grouped_indices(groups, 3, 4, g)
    assert idx.shape == (12,)
    per = groups[idx].view(3, 4)
    assert (per == per[:, :1]).all() and len(set(per[:, 0].tolist())) == 3
    idx = grouped_indices(groups, 8, 2, g)  # more prompts than groups: with replacement
    per = groups[idx].view(8, 2)
    assert (per == per[:, :1]).all()


def test_testbed_draws_grouped_batches_and_names_their_groups(tmp_path):
    cfg = _config(tmp_path, batch=16)
    backend = TestbedBackend.from_config(cfg)
    ctx = draw_batch(backend, cfg, torch.Generator().manual_seed(1))
    groups = backend.context_groups(ctx)
    assert torch.equal(groups, ctx.classes)
    per = groups.view(4, 4)
    assert (per == per[:, :1]).all() and len(set(per[:, 0].tolist())) == 4
    assert len(set(ctx.noise[:4, 0].tolist())) > 1  # different seeds within a prompt
    plain = draw_batch(backend, _config(tmp_path, baseline="rloo"),
                       torch.Generator().manual_seed(1))
    torch.testing.assert_close(plain.noise, backend.draw_contexts(
        8, torch.Generator().manual_seed(1)).noise)  # independent draws are unchanged


def test_a_back_end_without_prompts_refuses_grouped_batches():
    assert Backend().context_groups(None) is None
    with pytest.raises(ValueError, match="grouped by prompt"):
        Backend().draw_grouped_contexts(2, 2, torch.Generator())


@pytest.mark.parametrize("kind", ["js_group", "js_group_pooled"])
def test_the_update_gets_the_back_ends_groups(tmp_path, monkeypatch, kind):
    seen = []
    real = baselines.grouped_js_baseline

    def spy(r, groups=None, pooled=False):
        seen.append(None if groups is None else groups.clone())
        return real(r, groups, pooled)

    monkeypatch.setattr(baselines, "grouped_js_baseline", spy)
    logged = []
    train(_config(tmp_path, baseline=kind, batch=8, seeds_per_prompt=4),
          callback=lambda it, m: logged.append(m["js_weight"]))
    assert seen and all(g is not None and g.shape == (8,) for g in seen)
    for g in seen:
        per = g.view(2, 4)
        assert (per == per[:, :1]).all() and per[0, 0] != per[1, 0]
    assert all(0.0 <= w <= 1.0 for w in logged)


def test_grouped_baseline_differs_from_plain_js_on_grouped_rewards():
    """With two prompts far apart, the grouped baseline shrinks within each prompt, plain JS
    toward the whole batch (so the plumbing of groups matters)."""
    g = torch.Generator().manual_seed(0)
    r = torch.cat([torch.randn(4, 2, generator=g), 10 + torch.randn(4, 2, generator=g)])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    grouped = baselines.compute_baseline(r, "js_group_pooled", groups=groups)
    plain = baselines.compute_baseline(r, "js")
    assert float(grouped.js_weight) > float(plain.js_weight)
    adv = baselines.advantages(r, "js_group_pooled", groups=groups)
    torch.testing.assert_close(adv, r - grouped.baseline)


def test_comfy_back_end_groups_by_prompt_index():
    """The ComfyUI back-end's groups are prompt indices (its module imports no ComfyUI)."""
    from learned_schedules.training.comfy.backend import ComfyBackend, PromptContexts

    backend = object.__new__(ComfyBackend)  # only the pool is needed
    backend._pool = PromptContexts(torch.arange(400) % 5, torch.arange(400) + 1000)
    ctx = backend.draw_grouped_contexts(3, 4, torch.Generator().manual_seed(0))
    groups = backend.context_groups(ctx)
    assert torch.equal(groups, ctx.prompt_ids)
    per = groups.view(3, 4)
    assert (per == per[:, :1]).all() and len(set(per[:, 0].tolist())) == 3
