"""AdaGen on the ComfyUI back-end: `train --algo adagen` on a tiny SD3 with the adversarial
reward against the model's own many-step samples, then the trained step-wise policy in the
Learned Sampler node inside SamplerCustomAdvanced."""

from __future__ import annotations

import csv
import shutil

import torch

from comfy_env import import_comfy, write_tiny_sd3_set
from learned_schedules.training import cli

PROMPTS = [f"a photo of a {c} {o}" for c in ("red", "blue", "green") for o in ("cat", "car")]


def test_train_adagen_on_comfy_and_sample_with_the_node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adagen_comfy")
    cui = import_comfy(tmp / "base")
    models = cui.base / "models"
    write_tiny_sd3_set(models, "sd3_adagen.safetensors", "tiny_vae_adagen.safetensors")
    (tmp / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    args = {"backend": "comfy", "algo": "adagen", "diffusion_model": "sd3_adagen.safetensors",
            "text_encoders": "clip_l.safetensors", "vae": "tiny_vae_adagen.safetensors",
            "prompts": str(tmp / "prompts.txt"), "held_out": "2", "reward": "reference",
            "reference_steps": "8", "width": "64", "height": "64", "steps": "3", "batch": "2",
            "rollouts": "2", "iterations": "3", "eval_every": "0", "eval_contexts": "2",
            "checkpoint_every": "2", "sample_every": "3", "encoder_preset": "tiny",
            "cache_dir": str(tmp / "cond"), "out": str(tmp / "runs"), "pool_size": "8",
            "hidden": "16", "run_name": "adagen", "adagen.task": "0.5"}
    argv = ["train", "--no-progress"]
    for k, v in args.items():
        argv += ["--" + k.replace("_", "-"), v]
    assert cli.main(argv) == 0
    run = tmp / "runs" / "adagen"
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and rows[-1]["eval_reward"] != ""
    assert (run / "samples" / "iter_000003.png").is_file()  # the step-wise policy's samples
    for row in rows:  # both rewards were measured and mixed
        assert torch.isfinite(torch.tensor([float(row["adv_reward"]), float(row["task_reward"]),
                                            float(row["disc_loss"])])).all()
    from learned_schedules.policies.policy_file import load_policy

    loaded = load_policy(run / "policy.safetensors")
    assert loaded.metadata["method"] == "adagen" and loaded.policy.stepwise
    # the trained step-wise policy drives a batch in SamplerCustomAdvanced
    from learned_schedules.nodes import extension, sampler_nodes

    extension.register_policy_folder()
    shutil.copy(run / "policy.safetensors", models / "learned_schedules" / "adagen_sd3.safetensors")
    n, ncs = cui.nodes, cui.ncs
    model = n.UNETLoader().load_unet("sd3_adagen.safetensors", "default")[0]
    clip = n.CLIPLoader().load_clip("clip_l.safetensors", type="sd3")[0]
    cond = n.CLIPTextEncode().encode(clip, PROMPTS[0])[0]
    sampler = sampler_nodes.LearnedSampler.execute("adagen_sd3.safetensors", cond).result[0]
    sigmas = ncs.BasicScheduler.execute(model, "simple", 5, 1.0).result[0]  # another length
    out = ncs.SamplerCustomAdvanced.execute(
        ncs.RandomNoise.execute(3).result[0], ncs.BasicGuider.execute(model, cond).result[0],
        sampler, sigmas, {"samples": torch.zeros(2, 16, 8, 8)}).result[0]["samples"]
    assert out.shape == (2, 16, 8, 8) and torch.isfinite(out).all()
    items = torch.tensor(sampler.sampler_function.last["items"])
    assert items.shape == (2, 6) and (items[:, :-1] > items[:, 1:]).all()
    assert (items[:, -1] == 0).all()
