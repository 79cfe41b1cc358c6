"""Schedules on discrete-time models (SD 1.x, SD 2.x v, SDXL eps, SDXL v + zero-terminal SNR),
on the tiny random-weight models of ``tests/tiny_families.py``.

Flow time on these models is the fraction of the model's own timestep range
(``comfy_bridge/sigmas.py``): the mapping hits the sigma table exactly, inverts to ~1e-12,
reproduces ``BasicScheduler``'s schedules and its denoise rule, and the named scheduler
``learned:<policy>`` in ``KSampler``, the Learned Schedule node, the Learned Sampler and the
per-item step loop all use it; every item of the step loop equals ComfyUI's own
``SamplerCustom`` batch-1 run (euler, heun, dpmpp_2m) on eps and v models.
"""

from __future__ import annotations

import pytest
import torch
from tiny_families import TINY_FAMILIES, load_tiny, shaped_conditioning

from learned_schedules.comfy_bridge.features import initial_noise, text_features
from learned_schedules.comfy_bridge.sigmas import (
    default_flow,
    default_sigmas,
    flow_to_model,
    model_to_flow,
    sampling_of,
    schedule_to_model,
)
from learned_schedules.policies.dirichlet import DirichletPolicy
from learned_schedules.policies.latent_encoder import LatentTextEncoder
from learned_schedules.policies.policy_file import save_policy
from learned_schedules.policies.schedule import schedule_to_increments

KEYS = ("sd1", "sd2", "sdxl", "sdxl-vpred")
"""One tiny model per discrete sampling space: SD 1.5 eps, SD 2.x v, SDXL eps, SDXL v +
zero-terminal SNR."""
FLOWS = torch.tensor([[1.0, 0.8, 0.55, 0.25, 0.0], [1.0, 0.6, 0.35, 0.1, 0.0],
                      [1.0, 0.9, 0.7, 0.4, 0.0]], dtype=torch.float64)
"""Three per-item flow-time schedules (4 steps)."""


@pytest.fixture(scope="module")
def env(tiny_family_models):
    cui, paths = tiny_family_models
    from learned_schedules.nodes import extension, sampler_nodes, schedule_nodes

    extension.register_policy_folder()
    models = {key: load_tiny(TINY_FAMILIES[key], paths[key]) for key in KEYS}
    conds = {key: shaped_conditioning(TINY_FAMILIES[key], seed=1) for key in KEYS}
    negs = {key: shaped_conditioning(TINY_FAMILIES[key], seed=2) for key in KEYS}
    return {"cui": cui, "models": models, "conds": conds, "negs": negs,
            "nodes": schedule_nodes, "sampler_nodes": sampler_nodes,
            "policies": cui.base / "models" / "learned_schedules"}


def _latent(key: str, batch: int = 1) -> dict:
    return {"samples": torch.zeros(batch, *TINY_FAMILIES[key].latent)}


def _policy(env, key: str, name: str, steps: int, mean: torch.Tensor | None = None,
            head_std: float = 0.0, global_schedule: list[float] | None = None
            ) -> DirichletPolicy:
    """A Dirichlet policy sized from the model's features, its mean at ``mean`` (default:
    the model's ``simple`` schedule, as the trainer builds it); ``head_std`` > 0 makes its
    schedule depend on its input."""
    feats = text_features(env["conds"][key])
    torch.manual_seed(0)
    enc = LatentTextEncoder.for_family(
        "tiny", latent_channels=TINY_FAMILIES[key].latent[0],
        token_dim=feats["tokens"].shape[-1], pooled_dim=feats["pooled"].shape[-1])
    pol = DirichletPolicy(enc, steps, head_hidden=16)
    mean = default_flow(env["models"][key], steps) if mean is None else mean
    pol.init_mean(schedule_to_increments(mean))
    if head_std:
        torch.nn.init.normal_(pol.head[2].weight, std=head_std)
    else:
        torch.nn.init.zeros_(pol.head[2].weight)
    extra = {} if global_schedule is None else {"global_schedule": global_schedule}
    save_policy(env["policies"] / name, pol, method="dirichlet-reinforce",
                model_family=TINY_FAMILIES[key].family, extra=extra)
    return pol


@pytest.mark.parametrize("key", KEYS)
def test_flow_time_is_the_fraction_of_the_timestep_range(env, key):
    """``t = k / (N-1)`` is table entry ``k`` exactly, in-between values are
    ``model_sampling.sigma`` (log-sigma interpolation), the inverse is exact to 1e-12, and
    ComfyUI's table-based schedulers are schedules on this axis."""
    model = env["models"][key]
    sampling = sampling_of(model)
    table = sampling.sigmas.double()
    n = len(table)
    t = torch.arange(n, dtype=torch.float64) / (n - 1)
    torch.testing.assert_close(flow_to_model(sampling, t)[1:], table[1:], rtol=1e-12, atol=0)
    assert float(flow_to_model(sampling, t[:1])) == 0.0  # the final 0 stays 0
    steps = torch.tensor([0.3, 12.7, 500.25, 998.9])
    torch.testing.assert_close(flow_to_model(sampling, steps.double() / (n - 1)).float(),
                               sampling.sigma(steps), rtol=1e-5, atol=0)
    grid = torch.linspace(0, 1, 10001, dtype=torch.float64)
    assert (model_to_flow(sampling, flow_to_model(sampling, grid)) - grid).abs().max() < 1e-12
    for count in (4, 9, 30):
        sig = default_sigmas(model, count, "simple")
        flow = model_to_flow(sampling, sig.double())
        assert float(flow[0]) == 1.0
        assert torch.equal(flow_to_model(sampling, flow).float(), sig), count
        for scheduler in ("sgm_uniform", "ddim_uniform", "karras", "exponential"):
            sig = default_sigmas(model, count, scheduler)
            flow = model_to_flow(sampling, sig.double())
            assert (flow[:-1] > flow[1:]).all() and float(flow[-1]) == 0.0, scheduler
            torch.testing.assert_close(flow_to_model(sampling, flow).float(), sig, rtol=1e-6,
                                       atol=0)


@pytest.mark.parametrize("key", KEYS)
def test_denoise_follows_basicscheduler(env, key):
    """A policy at the 8-step default, asked for 4 steps at denoise 0.5 (8 in all, the last 4
    kept) through the node, gives ``BasicScheduler(simple, 4, 0.5)``; a 6-step request at
    denoise 0.75 resamples to 8 and keeps the last 6, as ``schedule_to_model`` does."""
    model = env["models"][key]
    name = f"denoise_{key}.safetensors"
    _policy(env, key, name, 8)
    noise = env["cui"].ncs.RandomNoise.execute(3).result[0]
    node = env["nodes"].LearnedSchedule
    out = node.execute(model, env["conds"][key], noise, _latent(key), name, 4, "mean", 0.5)
    basic = env["cui"].ncs.BasicScheduler.execute(model, "simple", 4, 0.5).result[0]
    torch.testing.assert_close(out.result[0], basic, atol=1e-5, rtol=1e-5)
    out = node.execute(model, env["conds"][key], noise, _latent(key), name, 6, "mean", 0.75)
    want = schedule_to_model(sampling_of(model), default_flow(model, 8), 6, 0.75)
    torch.testing.assert_close(out.result[0], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("key", ["sdxl", "sdxl-vpred"])
def test_named_scheduler_in_ksampler_is_the_nodes_schedule(env, key, monkeypatch):
    """``learned:<policy>`` runs in ComfyUI's ``KSampler``: its sigmas equal the Learned
    Schedule node's for the same schedule (a policy whose mean is its global schedule), also
    at denoise 0.5 under ``BasicScheduler``, and ``KSampler`` with it equals ``SamplerCustom``
    with the node's SIGMAS."""
    import comfy.samplers as cs

    from learned_schedules.nodes import named_schedulers as named

    model, cond, neg = env["models"][key], env["conds"][key], env["negs"][key]
    flow = FLOWS[0]
    stem = f"named_{key.replace('-', '_')}"
    _policy(env, key, f"{stem}.safetensors", 4, mean=flow, global_schedule=flow.tolist())
    monkeypatch.setenv(named.ENV_VAR, "1")
    added = named.register_from_policy_folder("learned_schedules")
    try:
        assert f"learned:{stem}" in added
        noise = env["cui"].ncs.RandomNoise.execute(7).result[0]
        node = env["nodes"].LearnedSchedule.execute(model, cond, noise, _latent(key),
                                                    f"{stem}.safetensors", 4, "mean", 1.0)
        sigmas = node.result[0]
        named_sigmas = cs.calculate_sigmas(sampling_of(model), f"learned:{stem}", 4)
        torch.testing.assert_close(named_sigmas, sigmas, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sigmas, flow_to_model(sampling_of(model), flow).float(),
                                   atol=1e-5, rtol=1e-5)
        basic = env["cui"].ncs.BasicScheduler.execute(model, f"learned:{stem}", 4,
                                                      1.0).result[0]
        assert torch.equal(basic, named_sigmas)
        # BasicScheduler's denoise rule: 8 steps of the schedule, the last 4 kept, as the node
        half = env["cui"].ncs.BasicScheduler.execute(model, f"learned:{stem}", 4,
                                                     0.5).result[0]
        node_half = env["nodes"].LearnedSchedule.execute(
            model, cond, noise, _latent(key), f"{stem}.safetensors", 4, "mean", 0.5).result[0]
        torch.testing.assert_close(half, node_half, atol=1e-5, rtol=1e-5)
        assert torch.equal(half, schedule_to_model(sampling_of(model), flow, 4, 0.5))
        run = env["cui"].nodes.KSampler().sample(model, 7, 4, 2.0, "euler", f"learned:{stem}",
                                                 cond, neg, _latent(key))[0]["samples"]
        euler = env["cui"].ncs.KSamplerSelect.execute("euler").result[0]
        ref = env["cui"].ncs.SamplerCustom.execute(model, True, 7, 2.0, cond, neg, euler,
                                                   named_sigmas, _latent(key)).result[0]
        assert torch.isfinite(run).all()
        torch.testing.assert_close(run, ref["samples"], atol=1e-5, rtol=1e-5)
    finally:
        named.unregister(added)


class _ItemNoise:
    """A NOISE whose item i is what ``RandomNoise(seeds[i])`` draws for a batch-1 latent."""

    def __init__(self, seeds: list[int]):
        self.seeds, self.seed = seeds, seeds[0]

    def generate_noise(self, latent: dict) -> torch.Tensor:
        from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

        one = {**latent, "samples": latent["samples"][:1]}
        return torch.cat([Noise_RandomNoise(s).generate_noise(one) for s in self.seeds])


@pytest.mark.parametrize("key", ["sdxl", "sdxl-vpred", "sd2"])
def test_learned_sampler_gives_each_image_its_own_schedule(env, key):
    """A one-shot policy in the Learned Sampler on a batch of 3: every image gets its own
    schedule, which is the node's mapping of the policy's schedule for that image's noise
    (``service.policy_sigmas``), and image i equals a batch-1 euler run with its sigmas."""
    from learned_schedules.comfy_bridge.service import policy_sigmas

    ncs, model, cond = env["cui"].ncs, env["models"][key], env["conds"][key]
    name = f"oneshot_{key}.safetensors"
    pol = _policy(env, key, name, 4, head_std=1.0)
    sampler = env["sampler_nodes"].LearnedSampler.execute(name, cond).result[0]
    sigmas = ncs.BasicScheduler.execute(model, "simple", 4, 1.0).result[0]
    guider = ncs.BasicGuider.execute(model, cond).result[0]
    noise = ncs.RandomNoise.execute(11).result[0]
    latent = _latent(key, 3)
    out = ncs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent).result[0]
    items = torch.tensor(sampler.sampler_function.last["items"])
    assert items.shape == (3, 5) and (items[:, :-1] > items[:, 1:]).all()
    assert torch.equal(items[:, 0], sigmas[0].expand(3)) and (items[:, -1] == 0).all()
    assert items[:, 1:-1].log().std(0).max() > 1e-3  # one schedule per image
    x_t = initial_noise(model, noise, latent)
    feats = {"noise": x_t.float(), **{k: v.expand(3, *v.shape[1:])
                                       for k, v in text_features(cond).items()}}
    torch.testing.assert_close(items, policy_sigmas(model, pol, feats), atol=1e-5, rtol=1e-5)
    euler = ncs.KSamplerSelect.execute("euler").result[0]
    for i in range(3):
        given = type("Given", (), {"seed": 11, "generate_noise":
                                   lambda self, lat, i=i: x_t[i:i + 1].clone()})()
        single = ncs.SamplerCustomAdvanced.execute(given, guider, euler, items[i],
                                                   _latent(key)).result[0]["samples"]
        torch.testing.assert_close(single[0], out["samples"][i], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("key", ["sdxl", "sdxl-vpred"])
def test_learned_sampler_adagen_decides_every_step_of_every_image(env, key):
    """A step-wise (AdaGen) policy in the Learned Sampler on a batch of 3: per-image sigmas
    between the incoming start and end; at ``scale`` 0 exactly the incoming sigmas (the base
    schedule mapped to flow time and back)."""
    from learned_schedules.policies.stepwise import StepPolicy

    ncs, model, cond = env["cui"].ncs, env["models"][key], env["conds"][key]
    feats = text_features(cond)
    torch.manual_seed(1)
    enc = LatentTextEncoder.for_family(
        "tiny", latent_channels=TINY_FAMILIES[key].latent[0],
        token_dim=feats["tokens"].shape[-1], pooled_dim=feats["pooled"].shape[-1])
    step = StepPolicy(enc, 4, hidden=16)
    torch.nn.init.normal_(step.mu.weight, std=2.0)
    name = f"adagen_{key}.safetensors"
    save_policy(env["policies"] / name, step, method="adagen",
                model_family=TINY_FAMILIES[key].family)
    sigmas = ncs.BasicScheduler.execute(model, "simple", 4, 1.0).result[0]
    guider = ncs.BasicGuider.execute(model, cond).result[0]
    noise = ncs.RandomNoise.execute(5).result[0]
    for scale in (1.0, 0.0):
        sampler = env["sampler_nodes"].LearnedSampler.execute(name, cond,
                                                              scale=scale).result[0]
        out = ncs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas,
                                                _latent(key, 3)).result[0]["samples"]
        assert torch.isfinite(out).all()
        items = torch.tensor(sampler.sampler_function.last["items"])
        assert items.shape == (3, 5) and (items[:, :-1] > items[:, 1:]).all()
        assert torch.equal(items[:, 0], sigmas[0].expand(3)) and (items[:, -1] == 0).all()
        if scale:
            assert items[:, 1:-1].log().std(0).max() > 1e-4
            assert not torch.allclose(items[0], sigmas, rtol=1e-3)
        else:
            torch.testing.assert_close(items, sigmas.expand_as(items), rtol=1e-5, atol=0)


@pytest.mark.parametrize("rule", ["euler", "heun", "dpmpp_2m"])
@pytest.mark.parametrize("key", ["sdxl", "sdxl-vpred", "sd2"])
def test_step_loop_items_equal_comfyuis_batch1_runs(env, key, rule):
    """The per-item step loop (``comfy_bridge/sampler.py``) with three schedules in one batch,
    cfg 2 with a negative prompt, on eps (SDXL; SD 1.5 is the same sampling on a slower tiny
    UNet), v (SD 2.x) and v + zero-terminal SNR (SDXL): item i equals ComfyUI's own
    ``SamplerCustom`` (its sampler ``rule``) run on image i alone with its sigmas.

    All items start at ``sigma_max``, so ``KSAMPLER``'s noise scaling (``sqrt(1 +
    sigma_max^2)`` for eps / v models at full denoise) is the same for the batch and for each
    single run. The tolerance is relative to the output's size: heun's first step from the
    zero-terminal-SNR ``sigma_max`` (4519) gives outputs up to ~2700 whose float noise is
    ~1e-6 of that, as in ComfyUI's own heun on a batch of 3 against batch 1."""
    from comfy.samplers import KSAMPLER

    from learned_schedules.comfy_bridge.sampler import ActorSampler
    from learned_schedules.policies.actors import FixedScheduleActor

    ncs, model = env["cui"].ncs, env["models"][key]
    cond, neg = env["conds"][key], env["negs"][key]
    sampling = sampling_of(model)
    seeds = [3, 40, 2**31 - 5]
    item_sigmas = flow_to_model(sampling, FLOWS.float())  # the loop's flow times: float32
    assert torch.equal(item_sigmas[:, 0], sampling.sigma_max.float().expand(3))
    guider = ncs.CFGGuider.execute(model, cond, neg, 2.0).result[0]
    loop = ActorSampler(FixedScheduleActor(FLOWS), rule)
    batched = ncs.SamplerCustomAdvanced.execute(
        _ItemNoise(seeds), guider, KSAMPLER(loop), item_sigmas[0], _latent(key, 3)
    ).result[0]["samples"]
    assert torch.equal(flow_to_model(sampling, loop.trajectory.sigmas), item_sigmas)
    sampler = ncs.KSamplerSelect.execute(rule).result[0]
    for i, seed in enumerate(seeds):
        ref = ncs.SamplerCustom.execute(model, True, seed, 2.0, cond, neg, sampler,
                                        item_sigmas[i], _latent(key)).result[0]["samples"]
        atol = 2e-5 * max(1.0, float(ref.abs().max()))
        torch.testing.assert_close(batched[i:i + 1], ref, atol=atol, rtol=1e-4,
                                   msg=f"{key} {rule} item {i}")


@pytest.mark.parametrize("key", ["sdxl", "sdxl-vpred"])
def test_step_loop_from_a_partial_start_equals_comfyui(env, key):
    """Image to image: every item starts at the same sigma below ``sigma_max`` (flow time 0.6)
    on a non-empty latent, so ``KSAMPLER`` scales the noise by that sigma and adds the latent
    for the batch and for each single run alike; item i still equals ``SamplerCustom``."""
    from comfy.samplers import KSAMPLER

    from learned_schedules.comfy_bridge.sampler import ActorSampler
    from learned_schedules.policies.actors import FixedScheduleActor

    ncs, model = env["cui"].ncs, env["models"][key]
    cond, neg = env["conds"][key], env["negs"][key]
    flows = FLOWS * 0.6
    item_sigmas = flow_to_model(sampling_of(model), flows.float())
    image = torch.randn(1, *TINY_FAMILIES[key].latent, generator=torch.Generator().manual_seed(9))
    seeds = [8, 9, 10]
    guider = ncs.CFGGuider.execute(model, cond, neg, 2.0).result[0]
    loop = ActorSampler(FixedScheduleActor(flows), "dpmpp_2m")
    batched = ncs.SamplerCustomAdvanced.execute(
        _ItemNoise(seeds), guider, KSAMPLER(loop), item_sigmas[0],
        {"samples": image.expand(3, -1, -1, -1).clone()}).result[0]["samples"]
    sampler = ncs.KSamplerSelect.execute("dpmpp_2m").result[0]
    for i, seed in enumerate(seeds):
        ref = ncs.SamplerCustom.execute(model, True, seed, 2.0, cond, neg, sampler,
                                        item_sigmas[i], {"samples": image.clone()}
                                        ).result[0]["samples"]
        torch.testing.assert_close(batched[i:i + 1], ref, atol=2e-5, rtol=1e-4)
