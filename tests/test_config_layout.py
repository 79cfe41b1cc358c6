"""The nested config layout: its migration from the old flat one (every shipped config, an
old run folder's config.json), every old CLI flag landing in its section, and the CLI's
one-line refusals and warnings (issue 18)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from learned_schedules.training.cli import main as cli_main
from learned_schedules.training.cli import parse_eval_args, parse_train_args
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.rl.config_migration import CONFIG_VERSION, migrate

CONFIGS = Path(__file__).parents[1] / "training" / "configs"

OLD_RUN_CONFIG = {  # a config.json as the trainer wrote it before config_version 2 (abridged)
    "backend": "comfy", "testbed_config": None, "pool_size": 64, "reward": "reference",
    "comfyui_path": None, "comfyui_base": None, "comfyui_cpu": True, "checkpoint": None,
    "diffusion_model": "digits_mmdit.safetensors", "unet_config": None,
    "weight_dtype": "default", "text_encoders": "clip_l.safetensors", "clip_type": "sd3",
    "text_encoder_options": None, "vae": "vae.safetensors", "prompts": "p.txt",
    "eval_prompts": None, "held_out": 0, "width": 32, "height": 32, "sampler": "heun",
    "cfg": 2.0, "guidance": None, "negative_prompt": "", "rollout_batch": 0, "cache_dir": None,
    "reward_paths": None, "allow_download": False, "reference_steps": 8,
    "encoder_preset": "small", "sample_every": 0, "steps": 3, "algo": "ppo",
    "rollouts": 2, "batch": 4, "iterations": 6, "lr": 0.003, "lr_schedule": "cosine",
    "lr_min_frac": 0.1, "weight_decay": 0.0001, "grad_clip": 1.0, "hidden": 32, "depth": 2,
    "init_schedule": "default", "init_concentration": None, "seeds_per_prompt": 0, "seed": 0,
    "eval_every": 50, "eval_contexts": 3, "eval_seed": 10000, "checkpoint_every": 100,
    "keep_checkpoints": 3, "out": "runs", "run_name": None, "device": "cpu", "threads": 0,
    "progress": True, "extra": {"set_metrics": "digits"},
    "baseline": "rloo", "normalize_advantages": True, "entropy_coef": 0.01, "ppo_epochs": 3,
    "ppo_clip": 0.1,
}


# -- the migration ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_config_migrates(path):
    raw = json.loads(path.read_text())
    if "backend" not in raw:  # a testbed config, another format
        return
    config = TrainConfig.load(path)
    config.validate()
    for key, value in raw.items():  # every flat key landed in its section
        if key in config.comfy.__dataclass_fields__:
            assert getattr(config.comfy, key) == value, key
        elif key in config.policy.__dataclass_fields__:
            assert getattr(config.policy, key) == value, key
        elif key in TrainConfig.run_fields():
            assert getattr(config, key) == value, key
    again = TrainConfig.from_dict(json.loads(config.to_json()))  # the nested layout round-trips
    assert again == config


def test_an_old_run_config_migrates(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(OLD_RUN_CONFIG))
    config = TrainConfig.load(path)
    assert config.comfy.cfg == 2.0 and config.comfy.sampler == "heun"
    assert config.comfy.set_metrics == "digits" and config.comfy.comfyui_cpu
    assert config.policy.hidden == 32 and config.policy.encoder_preset == "small"
    assert config.policy.concentration == "softplus"  # saved before the option: softplus
    assert config.ppo.baseline == "rloo" and config.ppo.normalize_advantages
    assert config.ppo.entropy_coef == 0.01 and config.ppo.epochs == 3 and config.ppo.clip == 0.1
    assert config.reinforce.baseline == "js"  # the legacy keys go to the active section only
    saved = json.loads(config.to_json())
    assert saved["config_version"] == CONFIG_VERSION and "cfg" not in saved
    assert saved["comfy"]["cfg"] == 2.0 and saved["policy"]["hidden"] == 32
    assert TrainConfig.from_dict(saved) == config
    newer = {**OLD_RUN_CONFIG, "concentration": "scheduled"}
    assert TrainConfig.from_dict(newer).policy.concentration == "scheduled"


@pytest.mark.parametrize("data, message", [
    ({"extra": {"foo": 1}}, "extra is no longer read"),
    ({"extra": []}, "extra"),
    ({"config_version": 99}, "config_version 99 is newer"),
    ({"config_version": "2"}, "config_version must be"),
    ({"comfy": 3}, "comfy must be a JSON object"),
    ({"comfy": {"cfgg": 1}}, r"Unknown config fields: comfy\.cfgg"),
    ({"policy": {"hidden": "8"}}, "hidden must be an integer"),
])
def test_migration_refusals(data, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(data).check_types()


def test_empty_extra_is_dropped_and_flat_keys_win():
    assert "extra" not in migrate({"extra": {}})
    config = TrainConfig.from_dict({"cfg": 3.0, "comfy": {"cfg": 1.0, "width": 64}})
    assert config.comfy.cfg == 3.0 and config.comfy.width == 64


# -- every old flag lands in its section --------------------------------------------------------
RUN_FLAGS = {
    "--backend": "comfy", "--testbed-config": "tb.json", "--pool-size": "32",
    "--reward": "clip", "--steps": "4", "--rollouts": "3", "--batch": "6",
    "--iterations": "7", "--lr": "0.01", "--lr-schedule": "constant", "--lr-min-frac": "0.2",
    "--weight-decay": "0.001", "--grad-clip": "2.0", "--seeds-per-prompt": "2", "--seed": "5",
    "--eval-every": "3", "--eval-contexts": "9", "--eval-seed": "11",
    "--checkpoint-every": "4", "--keep-checkpoints": "2", "--out": "o", "--run-name": "r",
    "--device": "cpu", "--threads": "1",
}
COMFY_FLAGS = {
    "--comfyui-path": "c", "--comfyui-base": "b", "--checkpoint": "m.safetensors",
    "--diffusion-model": "d.safetensors", "--unet-config": "u.json",
    "--weight-dtype": "fp8_e4m3fn", "--text-encoders": "a,b", "--clip-type": "sd3",
    "--text-encoder-options": "{}", "--vae": "v", "--prompts": "p.txt",
    "--eval-prompts": "e.txt", "--held-out": "3.0", "--width": "64", "--height": "32",
    "--sampler": "heun", "--cfg": "2.5", "--guidance": "3.0", "--negative-prompt": "ugly",
    "--rollout-batch": "2", "--cache-dir": "cache", "--reward-paths": "clip=x",
    "--reference-steps": "8", "--sample-every": "0",
}
POLICY_FLAGS = {
    "--hidden": "8", "--depth": "1", "--encoder-preset": "tiny", "--init-schedule": "uniform",
    "--init-concentration": "30.0", "--concentration": "softplus",
    "--final-concentration": "300.0",
}
SECTION_FLAGS = {
    "--reinforce.baseline": "rloo", "--reinforce.entropy-coef": "0.5", "--ppo.epochs": "3",
    "--ppo.clip": "0.3", "--ppo.baseline": "xctx", "--art.solver": "direct",
    "--art.grid": "20", "--art.critic-lr": "0.001", "--adagen.reference": "digits",
    "--adagen.task": "1.0",
}


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _attr(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_old_flag_lands_in_its_section():
    argv = [x for flags in (RUN_FLAGS, COMFY_FLAGS, POLICY_FLAGS, SECTION_FLAGS)
            for kv in flags.items() for x in kv]
    config, resume = parse_train_args([*argv, "--algo", "ppo", "--comfyui-cpu",
                                       "--allow-download", "--no-progress",
                                       "--ppo.normalize-advantages", "--no-art.features",
                                       "--art.no-natural-gradient"])
    assert resume is None
    for flags, where in ((RUN_FLAGS, ""), (COMFY_FLAGS, "comfy."), (POLICY_FLAGS, "policy."),
                         (SECTION_FLAGS, "")):
        for flag, value in flags.items():
            path = where + flag[2:].replace("-", "_")
            assert _attr(config, path) == _value(value), flag
    assert config.algo == "ppo" and config.comfy.comfyui_cpu and config.comfy.allow_download
    assert not config.progress and config.ppo.normalize_advantages and not config.art.features
    assert not config.art.natural_gradient


@pytest.mark.parametrize("argv, checks", [
    (["--baseline", "rloo", "--entropy-coef", "0.1", "--normalize-advantages"],
     {"reinforce.baseline": "rloo", "reinforce.entropy_coef": 0.1,
      "reinforce.normalize_advantages": True, "ppo.baseline": "js"}),
    (["--algo", "ppo", "--baseline=xctx", "--no-normalize-advantages", "--ppo-epochs", "2",
      "--ppo-clip=0.25"],
     {"ppo.baseline": "xctx", "ppo.normalize_advantages": False, "ppo.epochs": 2,
      "ppo.clip": 0.25, "reinforce.baseline": "js"}),
    (["--method", "dirichlet-ppo", "--baseline", "none"], {"algo": "ppo", "ppo.baseline": "none"}),
    (["--method", "art"], {"algo": "art"}),
    (["--method=dirichlet-reinforce"], {"algo": "reinforce"}),
    (["--algo", "dirichlet-ppo"], {"algo": "ppo"}),
    (["--ppo-epochs", "5"], {"algo": "reinforce", "ppo.epochs": 5}),
])
def test_shorthands_and_method(argv, checks):
    config, _ = parse_train_args(argv)
    for path, value in checks.items():
        assert _attr(config, path) == value, path


def test_config_file_and_resume_are_the_base(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"algo": "ppo", "baseline": "rloo", "hidden": 12}))
    config, _ = parse_train_args(["--config", str(path), "--entropy-coef", "0.2"])
    assert config.ppo.baseline == "rloo" and config.ppo.entropy_coef == 0.2
    assert config.policy.hidden == 12
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(TrainConfig.from_dict({"steps": 4}).to_json())
    config, resume = parse_train_args(["--resume", str(run), "--iterations", "9"])
    assert resume.run_dir == run and config.steps == 4 and config.iterations == 9


def test_eval_flags():
    args, overrides = parse_eval_args(
        ["run", "--contexts", "8", "--no-oracle", "--schedule", "a=1,0", "--schedule", "b=1,0",
         "--cfg", "2.0", "--width", "64", "--no-comfyui-cpu", "--reward", "clip",
         "--testbed-config", "tb.json", "--seeds", "2", "--schedulers", "simple,beta",
         "--grid-columns", "3", "--ceiling-steps", "30", "--train-contexts", "16",
         "--fit-iters", "5", "--seed", "7", "--out", "o"])
    assert args.policy == "run" and args.contexts == 8 and args.no_oracle
    assert args.schedule == ("a=1,0", "b=1,0") and args.seeds == 2 and args.seed == 7
    assert (args.grid_columns, args.ceiling_steps, args.train_contexts, args.fit_iters) == \
        (3, 30, 16, 5)
    assert overrides == {"cfg": 2.0, "width": 64, "comfyui_cpu": False, "reward": "clip",
                         "testbed_config": "tb.json"}


# -- one-line refusals and warnings -----------------------------------------------------------
SMALL = ["--steps", "3", "--iterations", "2", "--batch", "4", "--hidden", "8", "--depth", "1",
         "--eval-contexts", "8", "--pool-size", "32", "--no-progress"]


def _error(argv: list[str], caplog) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert cli_main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], caplog.text
    return errors[0]


@pytest.mark.parametrize("argv, words", [
    (["--steps", "abc"], ["--steps", "'abc'", "see", "--help"]),
    (["--cfg=x"], ["--cfg", "'x'", "--help"]),
    (["--bogus", "1"], ["--bogus", "--help"]),
    (["--eval-every", "-1"], ["eval_every"]),
    (["--encoder-preset", "foo"], ["encoder_preset", "foo"]),
    (["--device", "cpu:5"], ["cpu:5"]),
    (["--algo", "sac"], ["sac", "reinforce", "dirichlet-ppo"]),
])
def test_bad_flags_are_one_line(tmp_path, caplog, argv, words):
    message = _error(["train", *SMALL, "--out", str(tmp_path), *argv], caplog)
    for word in words:
        assert word in message, (word, message)
    assert "usage" not in message and not any(tmp_path.iterdir())


@pytest.mark.parametrize("flag", ["--out", "--run-name"])
def test_resume_refuses_out_and_run_name(tmp_path, caplog, flag):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(TrainConfig().to_json())
    message = _error(["train", "--resume", str(run), flag, "x"], caplog)
    assert "--resume" in message and flag in message


def test_options_that_cannot_apply_are_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        parse_train_args(["--cfg", "2", "--sampler", "heun", "--ppo.epochs", "2"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert all(f in warnings[0] for f in ("--cfg", "--sampler", "--ppo.epochs"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        parse_train_args(["--backend", "comfy", "--cfg", "2", "--algo", "ppo",
                          "--ppo.epochs", "2"])
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_a_policy_file_holds_the_nested_training_config(tmp_path):
    from learned_schedules.policies.policy_file import load_policy

    assert cli_main(["train", *SMALL, "--algo", "ppo", "--ppo.epochs", "2", "--out",
                     str(tmp_path), "--run-name", "r"]) == 0
    training = load_policy(tmp_path / "r" / "policy.safetensors").metadata["training"]
    assert training["config_version"] == CONFIG_VERSION and training["ppo"]["epochs"] == 2
    assert training["policy"]["hidden"] == 8 and "sections" not in training
    saved = TrainConfig.load(tmp_path / "r" / "config.json")
    assert TrainConfig.from_dict(training, strict=False) == TrainConfig.from_dict(
        {**json.loads(saved.to_json()), "progress": True})


def test_demo_and_top_level_flags(capsys):
    from learned_schedules.training import cli

    args = cli._tyro(cli.DemoArgs, ["--out", "o", "--iterations", "3", "--seed", "2"], None,
                     "demo", "")
    assert (args.out, args.iterations, args.seed) == ("o", 3, 2)
    with pytest.raises(SystemExit) as info:
        cli_main(["-v", "train", "--help"])
    assert info.value.code == 0 and "--ppo.epochs" in capsys.readouterr().out
