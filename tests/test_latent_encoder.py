"""The latent + text encoder: shapes, masks, pooled input, gradients, valid schedules."""

from __future__ import annotations

import pytest
import torch

from learned_schedules.policies.contract import policy_from_config
from learned_schedules.policies.dirichlet import DirichletPolicy, parameter_count
from learned_schedules.policies.latent_encoder import LatentTextEncoder
from learned_schedules.policies.schedule import validate_schedule


def _policy(steps=4, **kw) -> DirichletPolicy:
    return DirichletPolicy(LatentTextEncoder.for_family("tiny", **kw), steps, head_hidden=32)


@pytest.mark.parametrize("hw, tokens", [((8, 8), 1), ((16, 24), 7), ((64, 64), 77)])
def test_shapes_and_valid_schedules(hw, tokens):
    torch.manual_seed(0)
    pol = _policy()
    feats = {"noise": torch.randn(3, 16, *hw), "tokens": torch.randn(3, tokens, 32),
             "pooled": torch.randn(3, 16)}
    assert pol.encoder(**feats).shape == (3, pol.encoder.out_dim)
    for mode in ("mean", "sample"):
        sched = pol.schedule(feats, mode=mode)
        assert sched.shape == (3, 5)
        for row in sched:
            validate_schedule(row.detach())


def test_token_mask_ignores_padding():
    torch.manual_seed(0)
    enc = LatentTextEncoder.for_family("tiny").eval()
    noise, pooled = torch.randn(1, 16, 16, 16), torch.randn(1, 16)
    tok = torch.randn(1, 5, 32)
    padded = torch.cat([tok, 100 * torch.randn(1, 3, 32)], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    a = enc(noise, tok, pooled)
    b = enc(noise, padded, pooled, token_mask=mask)
    c = enc(noise, padded, pooled)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)


def test_pooled_is_optional_and_required_when_configured():
    enc = LatentTextEncoder.for_family("tiny", pooled_dim=0)
    out = enc(torch.randn(2, 16, 8, 8), torch.randn(2, 4, 32))
    assert out.shape == (2, enc.out_dim)
    assert "pooled" not in enc.feature_dims()
    with pytest.raises(ValueError, match="pooled"):
        LatentTextEncoder.for_family("tiny")(torch.randn(2, 16, 8, 8), torch.randn(2, 4, 32))


def test_bad_inputs_give_clear_errors():
    enc = LatentTextEncoder.for_family("tiny")
    with pytest.raises(ValueError, match="noise latent"):
        enc(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 32), torch.randn(1, 16))
    with pytest.raises(ValueError, match="text tokens"):
        enc(torch.randn(1, 16, 8, 8), torch.randn(1, 4, 31), torch.randn(1, 16))
    with pytest.raises(ValueError, match="No encoder preset"):
        LatentTextEncoder.for_family("sdxl-turbo")


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    pol = _policy()
    feats = {"noise": torch.randn(2, 16, 16, 16), "tokens": torch.randn(2, 6, 32),
             "pooled": torch.randn(2, 16)}
    tau, _ = pol.sample(feats, 2)
    pol.log_prob(feats, tau).sum().backward()
    missing = [n for n, p in pol.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, missing


def test_output_depends_on_noise_and_prompt():
    torch.manual_seed(0)
    pol = _policy()
    for p in pol.head.parameters():  # make the head sensitive for the check
        torch.nn.init.normal_(p, std=0.5)
    n1, n2 = torch.randn(1, 16, 16, 16), torch.randn(1, 16, 16, 16)
    t1, t2 = torch.randn(1, 6, 32), torch.randn(1, 6, 32)
    pooled = torch.randn(1, 16)
    s = lambda n, t: pol.schedule({"noise": n, "tokens": t, "pooled": pooled})  # noqa: E731
    assert not torch.allclose(s(n1, t1), s(n2, t1))
    assert not torch.allclose(s(n1, t1), s(n1, t2))
    assert torch.equal(s(n1, t1), s(n1, t1))  # mean mode is deterministic


def test_rebuild_from_config_and_size_budget():
    pol = _policy()
    clone = policy_from_config(pol.config())
    assert parameter_count(clone) == parameter_count(pol)
    # about 1% of the sampler or less: Flux-dev has 12B parameters, SD3-medium 2B
    flux = DirichletPolicy(LatentTextEncoder.for_family("flux"), 20, head_hidden=256)
    sd3 = DirichletPolicy(LatentTextEncoder.for_family("sd3"), 20, head_hidden=256)
    assert parameter_count(flux) < 0.01 * 12e9
    assert parameter_count(sd3) < 0.01 * 2e9
