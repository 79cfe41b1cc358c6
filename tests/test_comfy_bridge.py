"""The ComfyUI bridge (``comfy_bridge/``) inside a real ComfyUI runtime, on the tiny SD3.

The step-wise sampler against ComfyUI's own ``SamplerCustom``, the family table's plain errors
for unsupported models, ``BasicScheduler``'s denoise arithmetic, and the node and the trainer
computing the same features and noise through the bridge.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from comfy_env import import_comfy, write_tiny_sd3_set
from learned_schedules.policies.actors import ActorStep, FixedScheduleActor, StepState
from learned_schedules.policies.dirichlet import DirichletPolicy
from learned_schedules.policies.latent_encoder import LatentTextEncoder
from learned_schedules.policies.policy_file import save_policy

PROMPTS = ["a photo of a red cat", "a blue car at night", "a green house", "a golden boat",
           "a white horse"]
#: three different 4-step schedules (flow time = SD3's sigmas, sigma_max = 1)
SCHEDULES = torch.tensor([[1.0, 0.8, 0.5, 0.2, 0.0], [1.0, 0.6, 0.3, 0.1, 0.0],
                          [1.0, 0.9, 0.7, 0.3, 0.0]])
SEEDS = (5, 6, 7)
CFG = 2.0
LATENT = (1, 16, 8, 8)


def mean_reward(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    return images.flatten(1).mean(1)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cui = import_comfy(tmp_path_factory.mktemp("bridge"))
    models = cui.base / "models"
    write_tiny_sd3_set(models, "sd3_bridge.safetensors", "vae_bridge.safetensors")
    from learned_schedules.nodes import extension, schedule_nodes

    extension.register_policy_folder()
    torch.manual_seed(0)
    policy = DirichletPolicy(LatentTextEncoder(latent_channels=16, token_dim=4096,
                                               pooled_dim=2048, width=32, levels=2, heads=2,
                                               grid=2), 4, head_hidden=32)
    torch.nn.init.normal_(policy.head[2].weight, std=1.0)
    save_policy(models / "learned_schedules" / "bridge_sd3.safetensors", policy,
                method="dirichlet-reinforce", model_family="sd3")
    model = cui.nodes.UNETLoader().load_unet("sd3_bridge.safetensors", "default")[0]
    clip = cui.nodes.CLIPLoader().load_clip("clip_l.safetensors", type="sd3")[0]
    vae = cui.nodes.VAELoader().load_vae("vae_bridge.safetensors")[0]
    encode = cui.nodes.CLIPTextEncode().encode
    return SimpleNamespace(cui=cui, ncs=cui.ncs, nodes=schedule_nodes, model=model, clip=clip,
                           vae=vae, conds=[encode(clip, p)[0] for p in PROMPTS],
                           negative=encode(clip, "")[0], tmp=tmp_path_factory.mktemp("cache"))


def _batch(conds: list) -> list:
    """One CONDITIONING whose rows are the given single-prompt conditionings."""
    extra = {"pooled_output": torch.cat([c[0][1]["pooled_output"] for c in conds])}
    return [[torch.cat([c[0][0] for c in conds]), extra]]


def _samplercustom(env, rule: str, i: int, sigmas: torch.Tensor) -> torch.Tensor:
    ncs = env.ncs
    return ncs.SamplerCustom.execute(
        env.model, True, SEEDS[i], CFG, env.conds[i], env.negative,
        ncs.KSamplerSelect.execute(rule).result[0], sigmas,
        {"samples": torch.zeros(LATENT)}).result[0]["samples"]


def _stepwise(env, actor, n: int, first: torch.Tensor, rule: str):
    """A batch of ``n`` rollouts through ``KSAMPLER(ActorSampler(actor))`` and ``CFGGuider``."""
    import comfy.sample
    import comfy.samplers

    from learned_schedules.comfy_bridge.sampler import actor_ksampler

    guider = comfy.samplers.CFGGuider(env.model)
    neg = env.negative[0]
    guider.set_conds(_batch(env.conds[:n]),
                     [[neg[0].expand(n, -1, -1), {"pooled_output":
                                                  neg[1]["pooled_output"].expand(n, -1)}]])
    guider.set_cfg(CFG)
    noise = torch.cat([comfy.sample.prepare_noise(torch.zeros(LATENT), s) for s in SEEDS[:n]])
    ksampler = actor_ksampler(actor, rule)
    out = guider.sample(noise, torch.zeros_like(noise), ksampler, first, disable_pbar=True,
                        seed=SEEDS[0])
    return out, ksampler.sampler_function.trajectory


@pytest.mark.parametrize("rule", ["euler", "heun", "dpmpp_2m"])
def test_stepwise_sampler_equals_samplercustom_per_item(env, rule):
    """Three items with different schedules in ONE batch, each equal to a batch-1
    ``SamplerCustom`` run with ComfyUI's own sampler and that item's schedule."""
    out, traj = _stepwise(env, FixedScheduleActor(SCHEDULES), 3, SCHEDULES[0], rule)
    assert torch.equal(traj.sigmas.cpu(), SCHEDULES)
    for i in range(3):
        ref = _samplercustom(env, rule, i, SCHEDULES[i])
        torch.testing.assert_close(out[i:i + 1], ref, atol=2e-5, rtol=1e-4,
                                   msg=f"{rule} item {i}")
    assert not torch.allclose(out[0], out[1], atol=1e-3)  # the schedules matter


class HalvingActor:
    """A state-dependent actor: each next time is a fraction of the current one that depends
    on the denoised estimate; records that estimate's norm."""

    def next_sigma(self, state: StepState) -> ActorStep:
        norm = state.denoised.flatten(1).norm(dim=1)
        frac = 0.35 + 0.3 * torch.sigmoid(norm - norm.mean())
        nxt = torch.zeros_like(state.sigma) if state.step == state.steps - 1 \
            else state.sigma * frac
        return ActorStep(nxt, {"norm": norm})


def test_a_stepwise_actor_sees_the_denoised_estimate_and_its_trajectory_replays(env):
    out, traj = _stepwise(env, HalvingActor(), 3, SCHEDULES[0], "euler")
    assert traj.sigmas.shape == (3, 5) and traj.info["norm"].shape == (3, 4)
    assert len({tuple(row.tolist()) for row in traj.sigmas}) == 3  # per-item decisions
    for i in range(3):
        ref = _samplercustom(env, "euler", i, traj.sigmas[i].cpu())
        torch.testing.assert_close(out[i:i + 1], ref, atol=2e-5, rtol=1e-4)


def _fake_model(kind: str):
    import comfy.supported_models as sm

    config_class = getattr(sm, kind)
    return SimpleNamespace(model=SimpleNamespace(model_config=config_class(
        dict(config_class.unet_config))))


@pytest.mark.parametrize("kind, name", [("HunyuanVideo", "a video model"),
                                        ("Stable_Cascade_C", "two-stage Stable Cascade")])
def test_unsupported_models_give_a_plain_error_in_the_node_and_the_trainer(env, kind, name,
                                                                           monkeypatch):
    from learned_schedules.training.comfy import models as models_mod
    from learned_schedules.training.comfy.backend import ComfyBackend

    fake = _fake_model(kind)
    message = fr"does not support {name} \({kind}\) yet; supported models: Flux dev, .*SDXL"
    noise = env.ncs.RandomNoise.execute(1).result[0]
    with pytest.raises(ValueError, match=message):
        env.nodes.LearnedSchedule.execute(fake, env.conds[0], noise,
                                          {"samples": torch.zeros(LATENT)},
                                          "bridge_sd3.safetensors", 0, "mean", 1.0)
    loaded = models_mod.LoadedModels(model=fake, clip=env.clip, vae=env.vae, family=kind)
    with pytest.raises(ValueError, match=message):
        ComfyBackend(loaded, train_prompts=PROMPTS[:3], eval_prompts=PROMPTS[3:],
                     reward=mean_reward, reward_name="mean", width=64, height=64)
    monkeypatch.setattr(models_mod, "load_diffusion_model", lambda *a, **k: fake)
    with pytest.raises(ValueError, match=message):
        models_mod.load_models(diffusion_model="sd3_bridge.safetensors",
                               text_encoders=["clip_l.safetensors"], vae="vae_bridge.safetensors")


def test_denoise_follows_basicscheduler(env):
    """``int(steps / denoise)`` steps, the last ``steps`` kept: 10 steps at 0.6 is the tail of
    a 16-step schedule (``round`` would make it 17)."""
    from learned_schedules.comfy_bridge.sigmas import step_counts

    assert step_counts(10, 0.6) == 16 and step_counts(7, 1.0) == 7

    def run(steps, denoise):
        out = env.nodes.LearnedSchedule.execute(
            env.model, env.conds[0], env.ncs.RandomNoise.execute(3).result[0],
            {"samples": torch.zeros(LATENT)}, "bridge_sd3.safetensors", steps, "mean", denoise)
        return out.result[0], out.ui["learned_schedule"][0]

    full, _ = run(16, 1.0)
    part, payload = run(10, 0.6)
    assert part.shape == (11,)
    torch.testing.assert_close(part, full[-11:], rtol=0, atol=0)
    for steps, denoise in ((10, 0.6), (7, 0.3), (20, 0.77), (3, 0.45)):
        _, payload = run(steps, denoise)
        basic = env.ncs.BasicScheduler.execute(env.model, "simple", steps, denoise).result[0]
        assert payload["default_sigmas"] == pytest.approx(basic.tolist(), abs=0)


def _backend(env, **kw):
    from learned_schedules.training.comfy.backend import ComfyBackend
    from learned_schedules.training.comfy.models import LoadedModels

    loaded = LoadedModels(model=env.model, clip=env.clip, vae=env.vae, family="sd3")
    return ComfyBackend(loaded, train_prompts=PROMPTS[:3], eval_prompts=PROMPTS[3:],
                        reward=mean_reward, reward_name="mean", width=64, height=64, cfg=CFG,
                        cache_dir=env.tmp, **kw)


def test_node_and_trainer_compute_the_same_features(env):
    """The trainer's features of (prompt, seed) contexts are, row by row, the node's features
    of that prompt's CONDITIONING and ``RandomNoise(seed)``; x_T is ComfyUI's own."""
    from learned_schedules.comfy_bridge.features import initial_noise, text_features
    from learned_schedules.training.comfy.backend import PromptContexts

    backend = _backend(env)
    ctx = PromptContexts(torch.tensor([0, 2, 1]), torch.tensor([11, 12, 2**31 - 2]))
    feats = backend.features(ctx)
    assert set(feats) == {"noise", "tokens", "pooled"}
    for row, (p, s) in enumerate(zip(ctx.prompt_ids.tolist(), ctx.seeds.tolist(), strict=True)):
        noise = env.ncs.RandomNoise.execute(s).result[0]
        node = {"noise": initial_noise(env.model, noise, {"samples": torch.zeros(LATENT)}),
                **text_features(env.conds[p])}
        for key in feats:
            assert torch.equal(feats[key][row:row + 1], node[key]), key


def test_rollout_equals_rewards_and_comparators_are_comfyuis_schedulers(env):
    from learned_schedules.training.comfy.backend import PromptContexts

    backend = _backend(env, comparator_schedulers=("simple", "beta"))
    ctx = PromptContexts(torch.tensor([0, 1, 2]), torch.tensor(SEEDS))
    traj = backend.rollout(ctx, FixedScheduleActor(SCHEDULES), 4)
    assert torch.equal(traj.sigmas, SCHEDULES) and traj.final.shape == (3, *LATENT[1:])
    rewards = backend.rewards(ctx.select([0]), SCHEDULES[None, :1])
    assert torch.equal(rewards[0], traj.reward[:1])
    for i in range(3):  # the rollout's latents are SamplerCustom's
        torch.testing.assert_close(traj.final[i:i + 1], _samplercustom(env, "euler", i,
                                                                       SCHEDULES[i]),
                                   atol=2e-5, rtol=1e-4)
    comps = backend.comparators(4, ctx)
    assert list(comps) == ["simple", "beta"]
    for name, flow in comps.items():
        basic = env.ncs.BasicScheduler.execute(env.model, name, 4, 1.0).result[0]
        torch.testing.assert_close(backend.model_sigmas(flow), basic, rtol=0, atol=1e-7)
    backend.sampler = "euler_ancestral"
    with pytest.raises(ValueError, match="Step-wise rollouts use the samplers"):
        backend.rollout(ctx, FixedScheduleActor(SCHEDULES), 4)


@pytest.mark.parametrize("rule", ["euler", "heun", "dpmpp_2m"])
def test_stepwise_path_equals_the_lockstep_path(env, rule):
    """The step-wise sampler (now the back-end's path for these samplers) gives the latents
    the lockstep threads (the old path, kept for other samplers) give, bit for bit on the
    CPU."""
    from learned_schedules.training.comfy.backend import PromptContexts
    from learned_schedules.training.comfy.sampling import sample_rollouts

    backend = _backend(env, sampler=rule)
    ctx = PromptContexts(torch.tensor([0, 1, 2]), torch.tensor(SEEDS))
    new = backend.sample_latents(ctx, SCHEDULES)
    with torch.inference_mode():
        old = sample_rollouts(env.model, backend._batched_cond(backend.prompt_texts(ctx)),
                              backend._negative(3), backend.noise(ctx), SCHEDULES, SEEDS, rule,
                              CFG)
    assert torch.equal(new, old.float())
