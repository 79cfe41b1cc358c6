"""Parts of the ComfyUI back-end that need no model: the set_metrics option and its migration
rule for older configs, and the per-context sample memo."""

from __future__ import annotations

import pytest
import torch

from learned_schedules.training.comfy.evaluation import set_measures_for, set_metrics_option
from learned_schedules.training.comfy.memo import SampleMemo
from learned_schedules.training.rl.config import TrainConfig

DIGITS_MODEL = "models/digits/digits_mmdit.safetensors"


@pytest.mark.parametrize(("given", "want"), [
    ({"set_metrics": "digits"}, "digits"),
    ({"set_metrics": "digits", "diffusion_model": "sd3.safetensors"}, "digits"),
    ({"set_metrics": "shapes", "diffusion_model": "shapes_mmdit.safetensors"}, "shapes"),
    ({"set_metrics": "none", "diffusion_model": DIGITS_MODEL}, None),
    ({"diffusion_model": "sd3.safetensors"}, None),
    # configs from before the option (no set_metrics): what they got then
    ({"diffusion_model": DIGITS_MODEL}, "digits"),
    ({"diffusion_model": DIGITS_MODEL, "extra": {"set_metrics": "none"}}, None),
    ({"diffusion_model": "sd3.safetensors", "extra": {"set_metrics": "digits"}}, "digits"),
    # a current (nested) config chooses: no file-name rule
    ({"config_version": 2, "comfy": {"diffusion_model": DIGITS_MODEL}}, None),
])
def test_set_metrics_is_a_declared_option_and_old_configs_keep_theirs(given, want):
    assert set_metrics_option(TrainConfig.from_dict({"backend": "comfy", **given})) == want


def test_unknown_set_metrics_are_refused():
    with pytest.raises(ValueError, match="set_metrics must be one of"):
        TrainConfig.from_dict({"set_metrics": "fid"}).validate()
    with pytest.raises(ValueError, match="set_metrics"):
        set_measures_for("fid")
    assert set_measures_for(None) is None
    assert set_measures_for("shapes").names == ("checks", "glyph_logp", "colour_error",
                                                "texture_strength")


def test_sample_memo_computes_each_missing_key_once_in_one_batch():
    calls = []

    def compute(rows):
        calls.append(list(rows))
        return torch.tensor([float(keys[i]) for i in rows])

    memo = SampleMemo()
    keys = [3, 1, 3, 2]
    assert memo.get(keys, compute).tolist() == [3.0, 1.0, 3.0, 2.0]
    assert calls == [[0, 1, 3]]  # the first row of each key
    keys = [2, 5, 5]
    assert memo.get(keys, compute).tolist() == [2.0, 5.0, 5.0]
    assert calls[-1] == [1]
    assert memo.get(keys, compute, once_per_key=False).tolist() == [2.0, 5.0, 5.0]
    assert len(calls) == 2  # all known
    keys = [7, 7]
    memo.get(keys, compute, once_per_key=False)
    assert calls[-1] == [0, 1]  # every row


def test_sample_memo_forgets_everything_past_its_limit():
    memo = SampleMemo(limit=3)
    memo.get([1, 2], lambda rows: torch.zeros(len(rows)))
    memo.get([3, 4], lambda rows: torch.ones(len(rows)))
    assert len(memo) == 2  # emptied before holding 4
