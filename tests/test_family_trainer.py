"""The headless trainer on every supported family's tiny model (``tests/tiny_families.py``),
end to end through the CLI: 3 iterations with the ``reference`` reward, the family's own cfg /
guidance defaults (a negative prompt where cfg > 1), latents of its channel count (Qwen-Image's
5-D ones decoded by a tiny Wan 2.1 VAE), the bridge's per-item step loop.

Models load through the path a user's files take where ComfyUI can size a tiny model
(``--checkpoint``, stock ``UNETLoader`` detection, ``--unet-config``); the ``config_class``
rows (SDXL, SD 2.x, Z-Image: ComfyUI's matching needs real widths) are loaded by their config
class in place of ``load_diffusion_model``. Text: families with a real-small encoder load it
through the trainer's ``--text-encoders`` + ``--text-encoder-options`` (CLIP-L, CLIP-L + G,
Qwen3-4B, Gemma-2, HiDream's four); the ``shaped`` families (Flux.2, Chroma, Qwen-Image,
HunyuanImage 2.1, AuraFlow, and the discrete rows without ``-te``) get CONDITIONING of the real
encoders' shapes pre-filled in the on-disk conditioning cache, and a text encoder that fails
if called: the trainer never encodes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny_families import (
    TINY_FAMILIES,
    load_tiny,
    shaped_conditioning,
    small_text_encoder,
    write_tiny_vae,
)

from learned_schedules.policies.families import FAMILIES, SUPPORTED_IMAGE_FAMILIES
from learned_schedules.training import cli

PROMPTS = [f"a photo of a {c} {o}" for c in ("red", "blue", "green", "golden")
           for o in ("cat", "house")]

FLOW_TRAINER_KEYS = ("flux-schnell", "flux2", "chroma", "qwen-image", "z-image-te",
                     "hidream-te", "lumina2-te", "hunyuan-image-2.1", "auraflow")
"""Every flow family but SD3 / Flux dev (``test_comfy_trainer.py``), with the real-small
text encoder where one exists."""
DISCRETE_TRAINER_KEYS = ("sd1", "sd2", "sdxl", "sdxl-te")
"""SD 1.x (``--checkpoint``), SD 2.x v-prediction, SDXL eps, SDXL v-prediction + zero-terminal
SNR (real-small CLIP-L + CLIP-G)."""


class NoTextEncoder:
    """What the loader returns for a ``shaped`` family: every prompt is in the cache."""

    def tokenize(self, text: str):
        raise AssertionError(f"the trainer encoded {text!r} although the cache holds it")


def _skip_unsupported(family: str) -> None:
    if family not in SUPPORTED_IMAGE_FAMILIES:
        pytest.skip(f"{FAMILIES[family].display} is not marked supported in policies.families "
                    "yet (it waits for the discrete-time schedule mapping).")


@pytest.fixture(scope="module")
def env(tiny_family_models, tmp_path_factory):
    cui, paths = tiny_family_models
    tmp = tmp_path_factory.mktemp("family_trainer")
    (tmp / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return {"cui": cui, "paths": paths, "tmp": tmp, "models": cui.base / "models"}


def _prefill_shaped(env, key: str, cache: Path) -> str:
    """A stand-in text-encoder file, and the cache filled (under the identity the trainer
    computes from that file) with CONDITIONING of the family's real shapes for every prompt
    and the empty negative one; returns the file's path."""
    from learned_schedules.training.comfy.cond_cache import ConditioningCache, file_identity

    spec = TINY_FAMILIES[key]
    path = env["models"] / "text_encoders" / f"shaped_{key}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"shape": torch.tensor(spec.text["tokens"])}, str(path))
    store = ConditioningCache(cache, identity=f"{spec.family}|{file_identity(path)}")
    for i, prompt in enumerate([*PROMPTS, ""]):
        tokens, extra = shaped_conditioning(spec, seed=100 + i)[0]
        store.get(prompt, lambda _p, c=(tokens, extra): c)
    return str(path)


def family_args(env, key: str, monkeypatch, **kw) -> list[str]:
    """The CLI flags of a 3-iteration reference-reward run on the tiny model ``key``."""
    from learned_schedules.training.comfy import models as loaders

    spec, tmp = TINY_FAMILIES[key], env["tmp"]
    path = env["paths"][key]
    cache = tmp / f"cache_{key}"
    args = {"backend": "comfy", "vae": write_tiny_vae(env["models"], spec),
            "prompts": str(tmp / "prompts.txt"), "held_out": "3", "reward": "reference",
            "reference_steps": "6", "width": "64", "height": "64", "steps": "3",
            "batch": "2", "rollouts": "2", "iterations": "3", "eval_every": "0",
            "eval_contexts": "2", "checkpoint_every": "0", "sample_every": "0",
            "encoder_preset": "tiny", "cache_dir": str(cache), "out": str(tmp / "runs"),
            "pool_size": "32", "hidden": "16", "run_name": key}
    if spec.loader == "checkpoint":
        args["checkpoint"] = str(path)
    else:
        args["diffusion_model"] = str(path)
    if spec.loader == "unet_config":
        args["unet_config"] = json.dumps(spec.unet_config)
    elif spec.loader == "config_class":  # ComfyUI's matching needs real sizes (docstring)
        monkeypatch.setattr(loaders, "load_diffusion_model",
                            lambda p, *a, **k: load_tiny(spec, Path(p)))
    if spec.small_te is not None:
        folder = env["models"] / "text_encoders"
        small_text_encoder(spec, folder)  # writes the files once
        te = spec.small_te
        options = {f"{k}_model_config": v for k, v in te["configs"].items()}
        args["text_encoders"] = ",".join(
            str(folder / f"tiny_{spec.family}_{k}.safetensors") for k in te["configs"])
        args["text_encoder_options"] = json.dumps(options | te.get("aliases", {}))
    else:
        args["text_encoders"] = _prefill_shaped(env, key, cache)
        monkeypatch.setattr(loaders, "load_text_encoders", lambda *a, **k: NoTextEncoder())
    args.update({k: str(v) for k, v in kw.items()})
    out = ["train", "--no-progress"]
    for k, v in args.items():
        out += ["--" + k.replace("_", "-"), v]
    return out


def _check_run(env, key: str) -> list[dict]:
    from learned_schedules.policies.policy_file import read_metadata

    run = env["tmp"] / "runs" / key
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(float(r["reward_mean"]))) for r in rows)
    assert rows[-1]["eval_reward"] != ""
    meta = read_metadata(run / "policy.safetensors")
    assert meta["model_family"] == TINY_FAMILIES[key].family
    assert meta["reward"] == "reference" and meta["steps"] == 3
    return rows


@pytest.mark.parametrize("key", FLOW_TRAINER_KEYS + DISCRETE_TRAINER_KEYS)
def test_three_trainer_iterations_on_every_family(env, key, monkeypatch):
    family = FAMILIES[TINY_FAMILIES[key].family]
    _skip_unsupported(family.name)
    assert cli.main(family_args(env, key, monkeypatch)) == 0
    _check_run(env, key)
    config = json.loads((env["tmp"] / "runs" / key / "config.json").read_text())
    assert config["comfy"]["cfg"] is None  # the family's default, read from its row


def test_the_backend_uses_the_family_defaults(env, monkeypatch):
    """cfg / guidance from the family row (Chroma: cfg 4 with a negative; Flux.2: guidance
    4 and no negative), Qwen-Image's 5-D latents from noise to decoded images."""
    from learned_schedules.training.comfy.backend import ComfyBackend
    from learned_schedules.training.comfy.contexts import PromptContexts

    backends = {}
    for key in ("chroma", "flux2", "qwen-image"):
        config, _ = cli.parse_train_args(family_args(env, key, monkeypatch)[1:])
        backends[key] = ComfyBackend.from_config(config)
    chroma, flux2, qwen = backends["chroma"], backends["flux2"], backends["qwen-image"]
    assert (chroma.cfg, chroma.guidance) == (4.0, None)
    assert chroma.inputs.negative(2) is not None
    assert (flux2.cfg, flux2.guidance) == (1.0, 4.0) and flux2.inputs.negative(2) is None
    assert flux2.inputs.batched_cond(PROMPTS[:2])[0][1]["guidance"] == 4.0
    assert qwen.latent_shape == (16, 1, 8, 8)
    ctx = PromptContexts(torch.tensor([0, 1]), torch.tensor([3, 4]))
    assert qwen.noise(ctx).shape == (2, 16, 1, 8, 8)
    sigmas = torch.stack([qwen.default_sigmas(3), qwen.default_sigmas(3) ** 1.5])
    latents = qwen.sample_latents(ctx, sigmas)
    assert latents.shape == (2, 16, 1, 8, 8) and torch.isfinite(latents).all()
    images = qwen.decode(latents)
    assert images.shape == (2, 64, 64, 3)
    assert qwen.cond_cache.encodes == 0


LEARNING_KEYS = ("sdxl", "sdxl-vpred", "qwen-image")
"""SDXL eps, SDXL v-prediction + zero-terminal SNR, and one flow family beyond SD3 / Flux."""


@pytest.mark.parametrize("key", LEARNING_KEYS)
def test_learning_beats_the_family_default_on_held_out_contexts(env, key, monkeypatch):
    """As ``test_comfy_trainer.py``'s learning test: 20 iterations with the reference reward
    (PSNR to the many-step sample of the same prompt and seed) beat the family's default
    schedule on held-out prompts x seeds by more than 3 paired standard errors; the policy
    starts AT the default, so the gain is learned."""
    from learned_schedules.training.eval import evaluate_policy_file

    _skip_unsupported(TINY_FAMILIES[key].family)
    name = f"learn_{key}"
    assert cli.main(family_args(env, key, monkeypatch, run_name=name, iterations=20, batch=4,
                                reference_steps=8, pool_size=128, hidden=32,
                                final_concentration=100)) == 0
    run = env["tmp"] / "runs" / name
    report = evaluate_policy_file(run, seeds=6, out=run / "eval")
    default, learned = report.rows
    assert default["name"] == "simple" and learned["name"] == "learned"
    assert learned["diff_mean"] > 3 * learned["diff_se"] > 0, report.markdown()


@pytest.mark.parametrize("key", ("qwen-image", "chroma", "flux2", "sdxl", "sdxl-vpred"))
def test_per_item_rollouts_equal_comfyuis_own_runs(env, key, monkeypatch):
    """Rollouts with a flow-time schedule each (the bridge's step loop, one batched model call
    per step, as the trainer's rewards run) equal ComfyUI's own ``SamplerCustom`` batch-1 runs
    with the same seed, conditioning, cfg (negative where cfg > 1) and those sigmas: 5-D
    latents, masks, guidance, eps and v + ztsnr. The tolerance is relative to the output's size
    (as ``test_discrete_families.py``'s), and 50x wider on zero-terminal SNR: from its
    sigma_max (~4500) at the family's cfg 7, one batched call of 3 items against 1 moved one
    element in 256 by ~8e-4 of its size (float noise, amplified; at cfg 2 the other test's
    tolerance holds)."""
    from learned_schedules.comfy_bridge.sampling_space import sampling_space
    from learned_schedules.comfy_bridge.sigmas import default_flow
    from learned_schedules.training.comfy.backend import ComfyBackend
    from learned_schedules.training.comfy.contexts import PromptContexts

    _skip_unsupported(TINY_FAMILIES[key].family)
    config, _ = cli.parse_train_args(family_args(env, key, monkeypatch)[1:])
    backend = ComfyBackend.from_config(config)
    scale = 50.0 if sampling_space(backend.model).zero_terminal_snr else 1.0
    ncs = env["cui"].ncs
    ctx = PromptContexts(torch.tensor([0, 1, 2]), torch.tensor([5, 6, 7]))
    # the policy's flow-time schedules, as the trainer's rewards sample them
    default = default_flow(backend.model, 3).float()
    flows = torch.stack([default, default * torch.tensor([1.0, 0.9, 0.7, 1.0]),
                         default * torch.tensor([1.0, 0.97, 0.5, 1.0])])
    sigmas = backend.model_sigmas(flows)
    for sampler in ("euler", "dpmpp_2m", "heun"):
        backend.sampler = sampler
        batched = backend.rollouts.sample_flow(ctx, flows)
        for i in range(3):
            prompt = backend.prompt_texts(ctx)[i]
            ref = ncs.SamplerCustom.execute(
                backend.model, True, int(ctx.seeds[i]), backend.cfg,
                backend.inputs.batched_cond([prompt]), backend.inputs.negative(1) or [],
                ncs.KSamplerSelect.execute(sampler).result[0], sigmas[i],
                {"samples": torch.zeros(1, *backend.latent_shape)}).result[0]["samples"]
            atol = 2e-5 * scale * max(1.0, float(ref.abs().max()))
            torch.testing.assert_close(batched[i:i + 1], ref, atol=atol, rtol=1e-4 * scale,
                                       msg=lambda m, s=sampler, i=i: f"{key} {s} {i}: {m}")
