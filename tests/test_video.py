"""Video models: 5-D latents through the policy's readers, Wan 2.2 A14B's two experts (the
boundary split, the two-sampler graph, the trainer's two-expert rollouts) and the trainer on
every tiny video model (``tests/tiny_families.py``: Wan 2.1, two Wan 2.2 A14B experts, Wan 2.2
image-to-video, Wan 2.2 5B, HunyuanVideo 1.5, LTX-Video), with the ``reference`` reward on
latents. Text: CONDITIONING of the real encoders' shapes (umT5-XXL, Qwen2.5-VL + byT5, T5-XXL
cannot be built small), pre-filled in the trainer's conditioning cache.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from test_family_trainer import PROMPTS, family_args
from tiny_families import TINY_FAMILIES, load_tiny, shaped_conditioning

from learned_schedules.policies.experts import snap_to_boundary, split_at_boundary
from learned_schedules.policies.latent_encoder import LatentTextEncoder
from learned_schedules.training import cli

FRAMES = 9
"""Video frames of the trainer's tiny runs (3 latent frames at Wan's 4x)."""


# -- 5-D latents in the policy's readers ----------------------------------------------------
def test_the_encoder_pools_a_video_over_time_and_reads_one_frame_as_an_image():
    torch.manual_seed(0)
    enc = LatentTextEncoder.for_family("tiny", latent_channels=16, token_dim=32, pooled_dim=0)
    tokens = torch.randn(2, 5, 32)
    video = torch.randn(2, 16, 3, 8, 8)
    out = enc(noise=video, tokens=tokens)
    assert out.shape == (2, enc.out_dim) and torch.isfinite(out).all()
    torch.testing.assert_close(enc(noise=video[:, :, :1], tokens=tokens),
                               enc(noise=video[:, :, 0], tokens=tokens))
    # the frames' order does not matter (pooled over time); their content does
    torch.testing.assert_close(enc(noise=video.flip(2), tokens=tokens), out)
    assert not torch.allclose(enc(noise=video[:, :, :2], tokens=tokens), out)
    # any frame count, any channel count (Wan 2.2 5B's 48, LTX-Video's 128)
    for c, t in ((48, 5), (128, 2), (32, 1)):
        e = LatentTextEncoder.for_family("tiny", latent_channels=c, token_dim=32, pooled_dim=0)
        assert e(noise=torch.randn(1, c, t, 8, 8), tokens=tokens[:1]).shape == (1, e.out_dim)


def test_adagen_reads_video_states_and_its_discriminator_video_samples():
    from learned_schedules.policies.actors import StepState
    from learned_schedules.policies.stepwise import StepPolicy
    from learned_schedules.training.rl.algorithms.adagen import Discriminator

    torch.manual_seed(0)
    enc = LatentTextEncoder.for_family("tiny", latent_channels=16, token_dim=32, pooled_dim=0)
    policy = StepPolicy(enc, 4, hidden=16)
    feats = {"noise": torch.randn(3, 16, 3, 8, 8), "tokens": torch.randn(3, 5, 32)}
    actor = policy.actor(feats, mode="sample", generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, 16, 3, 8, 8)
    one = torch.ones(3, dtype=torch.float64)
    step = actor.next_sigma(StepState(step=0, steps=4, x=x, sigma=one, denoised=0.5 * x))
    assert step.info["x"].shape == (3, 16, 3, 8, 8)
    assert bool((step.sigma_next < 1).all() and (step.sigma_next > 0).all())
    info = {k: v[:, None] for k, v in step.info.items()}  # one recorded step per rollout
    logp, _, value = policy.evaluate_steps(feats, info)
    assert logp.shape == value.shape == (3, 1) and torch.isfinite(logp).all()
    logp.sum().backward()  # differentiable through the per-frame state net
    disc = Discriminator((16, 3, 8, 8), cond_dim=32, hidden=16)
    logits = disc(torch.randn(4, 16, 3, 8, 8), torch.randn(4, 32))
    assert logits.shape == (4,) and torch.isfinite(logits).all()
    with pytest.raises(RuntimeError):  # another channel count is not this discriminator's
        disc(torch.randn(4, 48, 3, 8, 8), torch.randn(4, 32))


# -- the boundary split ---------------------------------------------------------------------
def test_one_step_lands_exactly_on_the_boundary():
    sigmas = torch.tensor([1.0, 0.97, 0.93, 0.85, 0.6, 0.2, 0.0])
    snapped, index = snap_to_boundary(sigmas, 0.875)
    assert int(index) == 3 and float(snapped[3]) == 0.875  # 0.85 was nearest
    assert torch.equal(snapped[torch.arange(7) != 3], sigmas[torch.arange(7) != 3])
    high, low = split_at_boundary(sigmas, 0.875)
    assert torch.equal(high, snapped[:4]) and torch.equal(low, snapped[3:])
    assert torch.equal(torch.cat([high[:-1], low]), snapped)
    # per row, strictly decreasing, wherever the boundary falls (first or last interior step)
    rows = torch.tensor([[1.0, 0.5, 0.3, 0.0], [1.0, 0.95, 0.92, 0.0], [1.0, 0.9, 0.88, 0.0]])
    snapped, index = snap_to_boundary(rows, 0.875)
    assert index.tolist() == [1, 2, 2]
    assert bool((snapped[:, 1:] < snapped[:, :-1]).all())
    assert bool((snapped.gather(1, index[:, None]) == 0.875).all())
    for bad, message in ((torch.tensor([0.8, 0.5, 0.0]), "must lie inside"),
                         (torch.tensor([1.0, 0.0]), "at least 2 steps")):
        with pytest.raises(ValueError, match=message):
            snap_to_boundary(bad, 0.875)


# -- tiny models ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tiny_family_models, tmp_path_factory):
    cui, paths = tiny_family_models
    tmp = tmp_path_factory.mktemp("video")
    (tmp / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    models = {k: load_tiny(TINY_FAMILIES[k], paths[k]) for k in ("wan", "wan-low", "wan-i2v")}
    return {"cui": cui, "paths": paths, "tmp": tmp, "models_dir": cui.base / "models",
            "models": models}


def _graph_args(env):
    return {"cui": env["cui"], "paths": env["paths"], "tmp": env["tmp"],
            "models": env["models_dir"]}


def _two_sampler_graph(env, high_model, low_model, cond, sigmas, boundary, seed=5,
                       latent=None, cfg=1.0, negative=None):
    """What the two-expert workflow runs: the split node, then SamplerCustomAdvanced with the
    high-noise expert and the noise, then SamplerCustomAdvanced with the low-noise expert,
    DisableNoise and the first sampler's output."""
    from learned_schedules.nodes.sigma_nodes import SplitAtExpertBoundary

    ncs = env["cui"].ncs
    high_sigmas, low_sigmas = SplitAtExpertBoundary.execute(sigmas, boundary).result
    sampler = ncs.KSamplerSelect.execute("euler").result[0]
    latent = latent if latent is not None else {"samples": torch.zeros(1, 16, 3, 8, 8)}

    def guider(model):
        if negative is None:
            return ncs.BasicGuider.execute(model, cond).result[0]
        return ncs.CFGGuider.execute(model, cond, negative, cfg).result[0]

    first = ncs.SamplerCustomAdvanced.execute(ncs.RandomNoise.execute(seed).result[0],
                                              guider(high_model), sampler, high_sigmas,
                                              latent).result[0]
    return ncs.SamplerCustomAdvanced.execute(ncs.DisableNoise.execute().result[0],
                                             guider(low_model), sampler, low_sigmas,
                                             first).result[0]["samples"]


def test_the_split_graph_with_one_model_twice_matches_a_single_model_run(env, monkeypatch):
    """Both experts the same weights: the two-sampler graph equals one SamplerCustomAdvanced
    over the snapped schedule bit for bit, apart from what ComfyUI itself does between two
    samplers: the latent format's scaling out of the first and back into the second (Wan's
    per-channel mean / std, a float32 round trip; the flow scaling by 1 - 0.875 = 2^-3 is
    exact). With that scaling the identity, the outputs are identical; with it, within a few
    float32 ulps of the output's size."""
    from learned_schedules.comfy_bridge.sigmas import default_sigmas

    ncs, wan = env["cui"].ncs, env["models"]["wan"]
    cond = shaped_conditioning(TINY_FAMILIES["wan"])
    sigmas = default_sigmas(wan, 6)
    snapped, _ = snap_to_boundary(sigmas, 0.875)

    def single():
        return ncs.SamplerCustomAdvanced.execute(
            ncs.RandomNoise.execute(5).result[0], ncs.BasicGuider.execute(wan, cond).result[0],
            ncs.KSamplerSelect.execute("euler").result[0], snapped,
            {"samples": torch.zeros(1, 16, 3, 8, 8)}).result[0]["samples"]

    one, split = single(), _two_sampler_graph(env, wan, wan, cond, sigmas, 0.875)
    assert torch.isfinite(one).all() and not torch.equal(split, one)  # ComfyUI's round trip
    torch.testing.assert_close(split, one, rtol=0, atol=1e-6 * float(one.abs().max()))
    fmt = wan.model.latent_format
    monkeypatch.setattr(fmt, "process_in", lambda x: x)
    monkeypatch.setattr(fmt, "process_out", lambda x: x)
    assert torch.equal(_two_sampler_graph(env, wan, wan, cond, sigmas, 0.875), single())
    # two different experts do differ
    assert not torch.allclose(_two_sampler_graph(env, wan, env["models"]["wan-low"], cond,
                                                 sigmas, 0.875), single(), atol=1e-3)


def test_the_trainers_two_expert_rollouts_are_the_two_sampler_graph(env, monkeypatch):
    """The back-end with a low-noise expert samples every rollout (its own schedule, cfg 6
    with a negative) exactly as the graph does with the split node's SIGMAS."""
    from learned_schedules.comfy_bridge.sigmas import default_flow
    from learned_schedules.training.comfy.backend import ComfyBackend
    from learned_schedules.training.comfy.contexts import PromptContexts

    args = family_args(_graph_args(env), "wan", monkeypatch, frames=FRAMES,
                       low_noise_model=env["paths"]["wan-low"], width=64, height=64)
    config, _ = cli.parse_train_args(args[1:])
    backend = ComfyBackend.from_config(config)
    assert backend.expert_boundary == 0.875 and backend.latent_shape == (16, 3, 8, 8)
    ctx = PromptContexts(torch.tensor([0, 1]), torch.tensor([5, 6]))
    default = default_flow(backend.model, 4).float()
    flows = torch.stack([default, default * torch.tensor([1.0, 1.0, 0.4, 0.9, 1.0])])
    latents = backend.rollouts.sample_flow(ctx, flows)
    sigmas = backend.model_sigmas(flows)
    for i in range(2):
        prompt = backend.prompt_texts(ctx)[i]
        ref = _two_sampler_graph(env, backend.model, backend.low_model,
                                 backend.inputs.batched_cond([prompt]), sigmas[i], 0.875,
                                 seed=int(ctx.seeds[i]), cfg=backend.cfg,
                                 negative=backend.inputs.negative(1))
        atol = 2e-5 * max(1.0, float(ref.abs().max()))
        torch.testing.assert_close(latents[i:i + 1], ref, atol=atol, rtol=1e-4)


def _run(env, key, monkeypatch, **kw):
    name = kw.pop("run_name", key)
    kw = {"frames": FRAMES, **kw}
    args = family_args(_graph_args(env), key, monkeypatch, run_name=name, **kw)
    assert cli.main(args) == 0
    run = env["tmp"] / "runs" / name
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(float(r["reward_mean"]))) for r in rows)
    assert rows[-1]["eval_reward"] != ""
    return run


@pytest.mark.parametrize("key", ("wan", "wan2.2-5b", "hunyuan-video-1.5", "ltxv"))
def test_three_trainer_iterations_on_every_video_family(env, key, monkeypatch):
    from learned_schedules.policies.policy_file import read_metadata

    side = 128 if key in ("wan2.2-5b", "hunyuan-video-1.5") else 64  # their 16x VAEs: 8x8
    run = _run(env, key, monkeypatch, width=side, height=side)
    meta = read_metadata(run / "policy.safetensors")
    assert meta["model_family"] == TINY_FAMILIES[key].family
    assert meta["feature_dims"]["noise"][0] == TINY_FAMILIES[key].latent[0]
    config = json.loads((run / "config.json").read_text())
    assert config["comfy"]["frames"] == FRAMES and config["comfy"]["reference_space"] == "auto"


def test_three_trainer_iterations_through_two_experts(env, monkeypatch):
    run = _run(env, "wan", monkeypatch, run_name="wan-experts",
               low_noise_model=env["paths"]["wan-low"])
    config = json.loads((run / "config.json").read_text())
    assert config["comfy"]["low_noise_model"] == str(env["paths"]["wan-low"])


def test_learning_on_the_tiny_wan_beats_its_default_on_held_out_contexts(env, monkeypatch):
    """40 iterations with the ``reference`` reward (PSNR of the latents to the many-step
    latents of the same prompt and seed) beat Wan's default schedule on held-out prompts x
    seeds by more than 3 paired standard errors; the policy starts AT the default. cfg 1: at
    Wan's cfg 6 the random-weight model's few-step and many-step samples are nearly unrelated
    (9.6 dB), too little signal for 40 iterations (measured: +0.09 +- 0.20 dB)."""
    from learned_schedules.training.eval import evaluate_policy_file

    run = _run_learning(env, monkeypatch)
    report = evaluate_policy_file(run, seeds=6, out=run / "eval")
    default, learned = report.rows
    assert default["name"] == "simple" and learned["name"] == "learned"
    assert learned["diff_mean"] > 3 * learned["diff_se"] > 0, report.markdown()


def _run_learning(env, monkeypatch):
    name = "learn_wan"
    args = family_args(_graph_args(env), "wan", monkeypatch, run_name=name, frames=FRAMES,
                       iterations=40, batch=4, reference_steps=8, pool_size=128, hidden=32,
                       final_concentration=100, cfg=1)
    assert cli.main(args) == 0
    return env["tmp"] / "runs" / name


def _prefill_i2v(env, cache, start: torch.Tensor, mask: torch.Tensor) -> str:
    """The tiny image-to-video model's conditioning cache: the shaped umT5 tokens of every
    prompt (and the empty negative) with the start image's latent and mask, as
    ``WanImageToVideo`` adds them to both conditionings; returns the text-encoder stand-in."""
    from safetensors.torch import save_file

    from learned_schedules.training.comfy.cond_cache import ConditioningCache, file_identity

    spec = TINY_FAMILIES["wan-i2v"]
    path = env["models_dir"] / "text_encoders" / "shaped_wan-i2v.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"shape": torch.tensor(spec.text["tokens"])}, str(path))
    store = ConditioningCache(cache, identity=f"wan|{file_identity(path)}")
    for i, prompt in enumerate([*PROMPTS, ""]):
        tokens, extra = shaped_conditioning(spec, seed=100 + i)[0]
        cond = (tokens, {**extra, "concat_latent_image": start, "concat_mask": mask})
        store.get(prompt, lambda _p, c=cond: c)
    return str(path)


def test_image_to_video_conditioning_passes_through_unchanged(env, monkeypatch):
    """Wan image-to-video (input = noise + mask + start image): the start image's latent and
    mask in the cached conditioning reach the model unchanged, so the trainer's rollouts equal
    ComfyUI's own ``SamplerCustom`` runs with that conditioning (and differ without the
    image); 3 trainer iterations run on it."""
    from learned_schedules.comfy_bridge.sigmas import default_sigmas
    from learned_schedules.training.comfy.backend import ComfyBackend
    from learned_schedules.training.comfy.contexts import PromptContexts

    g = torch.Generator().manual_seed(9)
    start = torch.randn(1, 16, 3, 8, 8, generator=g)
    mask = torch.ones(1, 1, 3, 8, 8)
    mask[:, :, 0] = 0.0  # the first latent frame is the given image
    cache = env["tmp"] / "cache_i2v"
    te = _prefill_i2v(env, cache, start, mask)
    kw = {"cache_dir": cache, "text_encoders": te, "frames": FRAMES}
    config, _ = cli.parse_train_args(family_args(_graph_args(env), "wan-i2v", monkeypatch,
                                                 **kw)[1:])
    backend = ComfyBackend.from_config(config)
    from learned_schedules.comfy_bridge.features import takes_image

    assert takes_image(backend.model) and backend.latent_shape == (16, 3, 8, 8)
    ctx = PromptContexts(torch.tensor([0, 1]), torch.tensor([5, 6]))
    sigmas = default_sigmas(backend.model, 3)
    flows = torch.stack([sigmas, sigmas * torch.tensor([1.0, 0.9, 0.8, 1.0])]).double()
    latents = backend.rollouts.sample_flow(ctx, flows.float())
    ncs = env["cui"].ncs
    for i in range(2):
        positive = backend.inputs.batched_cond([backend.prompt_texts(ctx)[i]])
        assert torch.equal(positive[0][1]["concat_latent_image"], start)

        def comfy_run(pos, neg, i=i):
            return ncs.SamplerCustom.execute(
                backend.model, True, int(ctx.seeds[i]), backend.cfg, pos, neg,
                ncs.KSamplerSelect.execute("euler").result[0], flows[i].float(),
                {"samples": torch.zeros(1, 16, 3, 8, 8)}).result[0]["samples"]

        ref = comfy_run(positive, backend.inputs.negative(1))
        atol = 2e-5 * max(1.0, float(ref.abs().max()))
        torch.testing.assert_close(latents[i:i + 1], ref, atol=atol, rtol=1e-4)
        plain = [[positive[0][0], {k: v for k, v in positive[0][1].items()
                                   if not k.startswith("concat")}]]
        assert not torch.allclose(comfy_run(plain, backend.inputs.negative(1)), ref, atol=1e-3)
    _run(env, "wan-i2v", monkeypatch, run_name="wan-i2v", **kw)


def test_image_rewards_score_video_frames_and_average(env, monkeypatch):
    """An image reward on a video scores its frames (all, or ``reward_frames`` evenly spaced
    ones) with each video's prompt, and averages."""
    from learned_schedules.training.comfy.backend import ComfyBackend, frame_indices
    from learned_schedules.training.comfy.contexts import PromptContexts

    assert frame_indices(9, 0) == list(range(9)) and frame_indices(9, 3) == [0, 4, 8]
    assert frame_indices(9, 1) == [4] and frame_indices(2, 5) == [0, 1]
    config, _ = cli.parse_train_args(family_args(_graph_args(env), "wan", monkeypatch,
                                                 frames=FRAMES)[1:])
    backend = ComfyBackend.from_config(config)
    seen: list[str] = []

    def reward(images, prompts):
        seen.extend(prompts)
        return images.mean((1, 2, 3))

    backend.reward_name, backend.reward_fn = "mean", reward
    ctx = PromptContexts(torch.tensor([0, 1]), torch.tensor([5, 6]))
    video = torch.rand(2, 9, 16, 16, 3)
    torch.testing.assert_close(backend.score(ctx, video), video.mean((2, 3, 4)).mean(1))
    assert seen == [p for p in backend.prompt_texts(ctx) for _ in range(9)]
    backend.reward_frames = 3
    torch.testing.assert_close(backend.score(ctx, video),
                               video[:, [0, 4, 8]].mean((2, 3, 4)).mean(1))
    images = backend.decode(torch.randn(2, 16, 3, 8, 8))  # the tiny Wan VAE: 9 frames
    assert images.shape == (2, 9, 64, 64, 3)


def test_the_two_expert_example_wires_the_split_into_two_samplers():
    """The example workflow: the Learned Schedule on the high-noise expert feeds the split
    node; its high SIGMAS go to a sampler with the high-noise guider and the noise, its low
    SIGMAS to a sampler with the low-noise guider, DisableNoise and the first one's output."""
    from ui_workflow import EXAMPLES

    ui = json.loads((EXAMPLES / "Wan 2.2 - two experts with a learned schedule.json")
                    .read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = {link[0]: link for link in ui["links"]}

    def source(node_id: int, name: str) -> tuple[dict, int]:
        slot = next(i for i in nodes[node_id]["inputs"] if i["name"] == name)
        link = links[slot["link"]]
        assert link[5] == slot["type"]
        return nodes[link[1]], link[2]

    split = next(n for n in nodes.values()
                 if n["type"] == "LearnedSchedules_SplitAtExpertBoundary")
    assert split["widgets_values"] == [0.875]
    assert source(split["id"], "sigmas")[0]["type"] == "LearnedSchedules_LearnedSchedule"
    samplers = [n for n in nodes.values() if n["type"] == "SamplerCustomAdvanced"]
    by_part = {source(n["id"], "sigmas")[1]: n for n in samplers}
    high, low = by_part[0], by_part[1]
    assert source(high["id"], "noise")[0]["type"] == "RandomNoise"
    assert source(low["id"], "noise")[0]["type"] == "DisableNoise"
    assert source(low["id"], "latent_image") == (high, 0)
    experts = {}
    for part, sampler in (("high", high), ("low", low)):
        guider = source(sampler["id"], "guider")[0]
        model = source(guider["id"], "model")[0]
        experts[part] = source(model["id"], "model")[0]["widgets_values"][0]
    assert "high_noise" in experts["high"] and "low_noise" in experts["low"]


def test_adagen_trains_on_a_video_model_and_samples_through_the_learned_sampler(env,
                                                                               monkeypatch):
    """AdaGen end to end on the tiny Wan: 3 iterations (step policy on 5-D states, the
    discriminator on 5-D latents against the many-step ones, plus the reference reward), then
    the policy file as the Learned Sampler of a SamplerCustomAdvanced video run."""
    import shutil

    from learned_schedules.comfy_bridge.sigmas import default_sigmas
    from learned_schedules.nodes import extension, sampler_nodes

    run = _run(env, "wan", monkeypatch, run_name="wan-adagen", algo="adagen",
               **{"adagen.task": "0.5"})
    extension.register_policy_folder()
    folder = env["models_dir"] / "learned_schedules"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "policy.safetensors", folder / "wan_adagen.safetensors")
    ncs, wan = env["cui"].ncs, env["models"]["wan"]
    cond = shaped_conditioning(TINY_FAMILIES["wan"])
    sampler = sampler_nodes.LearnedSampler.execute("wan_adagen.safetensors", cond).result[0]
    out = ncs.SamplerCustomAdvanced.execute(
        ncs.RandomNoise.execute(3).result[0], ncs.BasicGuider.execute(wan, cond).result[0],
        sampler, default_sigmas(wan, 3), {"samples": torch.zeros(2, 16, 3, 8, 8)}
    ).result[0]["samples"]
    assert out.shape == (2, 16, 3, 8, 8) and torch.isfinite(out).all()
