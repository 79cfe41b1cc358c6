"""Every user mistake: one log line naming the flag, field or file, exit status 2, nothing
written (issue 9). Policy files of the wrong JSON types or with a declared architecture that
does not fit their tensors: a plain ValueError before anything is built."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from learned_schedules.policies.dirichlet import DirichletPolicy
from learned_schedules.policies.encoders import VectorEncoder
from learned_schedules.policies.latent_encoder import LatentTextEncoder
from learned_schedules.policies.policy_file import META_KEY, load_policy, save_policy
from learned_schedules.training.cli import main as cli_main
from learned_schedules.training.comfy.prompts import load_prompts
from learned_schedules.training.rl.config import TrainConfig
from learned_schedules.training.testbed.mixture import Testbed

SMALL = ["--steps", "3", "--iterations", "2", "--batch", "4", "--hidden", "8", "--depth", "1",
         "--eval-contexts", "8", "--pool-size", "32", "--no-progress"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _refused(argv: list[str], root: Path, caplog, names: str) -> str:
    """Run the CLI; check exit 2, exactly one one-line error naming ``names`` and that nothing
    under ``root`` changed. Returns the message."""
    before = _files(root)
    dirs_before = sorted(p for p in root.rglob("*") if p.is_dir())
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc = cli_main(argv)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert rc == 2, (argv, rc, caplog.text)
    assert len(errors) == 1, caplog.text
    message = errors[0].getMessage()
    assert "\n" not in message and "Traceback" not in caplog.text
    assert names.lower() in message.lower(), (names, message)
    assert _files(root) == before, "a refused command wrote files"
    assert sorted(p for p in root.rglob("*") if p.is_dir()) == dirs_before
    return message


# -- numbers: non-finite and out of range, every numeric field ------------------------------
@pytest.mark.parametrize("flag, value", [
    ("--lr", "inf"), ("--lr", "nan"), ("--lr", "0"), ("--lr", "-1e-3"), ("--lr", "1e9"),
    ("--init-concentration", "nan"), ("--init-concentration", "inf"),
    ("--init-concentration", "0.001"), ("--init-concentration", "-5"),
    ("--grad-clip", "nan"), ("--grad-clip", "0"), ("--grad-clip", "-inf"),
    ("--entropy-coef", "nan"), ("--entropy-coef", "-0.1"), ("--reinforce.entropy-coef", "inf"),
    ("--weight-decay", "nan"), ("--weight-decay", "-1"),
    ("--lr-min-frac", "nan"), ("--lr-min-frac", "1.5"), ("--lr-min-frac", "-0.1"),
    ("--pool-size", "0"), ("--pool-size", "-3"), ("--eval-contexts", "0"),
    ("--keep-checkpoints", "0"), ("--steps", "0"), ("--steps", "5000"), ("--hidden", "0"),
    ("--depth", "0"), ("--batch", "0"), ("--rollouts", "0"), ("--iterations", "-1"),
    ("--seed", "-1"), ("--eval-seed", "-2"), ("--eval-every", "-1"),
    ("--checkpoint-every", "-5"), ("--held-out", "nan"), ("--cfg", "inf"), ("--width", "0"),
])
def test_bad_numbers_are_one_line_exit_2_nothing_written(tmp_path, caplog, flag, value):
    argv = ["train", *SMALL, "--out", str(tmp_path / "runs"), f"{flag}={value}"]
    if flag.startswith("--entropy") or flag.startswith("--reinforce"):
        field = "entropy_coef"
    else:
        field = flag.lstrip("-").replace("-", "_")
    _refused(argv, tmp_path, caplog, field)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag, value", [
    ("--ppo.clip", "nan"), ("--ppo.clip", "1.5"), ("--ppo.clip", "0"), ("--ppo.epochs", "0"),
    ("--ppo-clip", "inf"), ("--ppo-epochs", "-2"), ("--ppo.entropy-coef", "nan"),
])
def test_bad_ppo_numbers(tmp_path, caplog, flag, value):
    argv = ["train", *SMALL, "--algo", "ppo", "--out", str(tmp_path), f"{flag}={value}"]
    _refused(argv, tmp_path, caplog, "ppo.")


# -- devices and paths ----------------------------------------------------------------------
@pytest.mark.parametrize("device", ["banana", "cuda:banana", "tpu", "cuda:99"])
def test_bad_device(tmp_path, caplog, device):
    _refused(["train", *SMALL, "--out", str(tmp_path), "--device", device], tmp_path, caplog,
             "device")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu(tmp_path, caplog, device):
    msg = _refused(["train", *SMALL, "--out", str(tmp_path), "--device", device], tmp_path,
                   caplog, "device")
    assert "no CUDA GPU" in msg


def test_bad_paths(tmp_path, caplog):
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    (tmp_path / "empty_dir").mkdir()
    cases = [
        (["--out", str(a_file)], "a_file.txt"),
        (["--out", str(a_file / "below")], "a_file.txt"),
        (["--out", str(tmp_path), "--run-name", "../escape"], "run_name"),
        (["--out", str(tmp_path), "--run-name", "a/b"], "run_name"),
        (["--config", str(tmp_path / "missing.json")], "missing.json"),
        (["--config", str(tmp_path / "empty_dir")], "empty_dir"),
        (["--resume", str(tmp_path / "no_such_run")], "no_such_run"),
        (["--resume", str(tmp_path / "empty_dir")], "empty_dir"),
        (["--resume", str(tmp_path / "empty_dir"), "--config", str(a_file)], "--config"),
    ]
    for extra, names in cases:
        _refused(["train", *SMALL, *extra], tmp_path, caplog, names)


# -- config.json: wrong types, unknown (nested) keys, not JSON ------------------------------
@pytest.mark.parametrize("content, names", [
    ({"steps": "5"}, "steps"), ({"lr": [0.001]}, "lr"), ({"hidden": 1.5}, "hidden"),
    ({"progress": "yes"}, "progress"), ({"iterations": True}, "iterations"),
    ({"reinforce": 3}, "reinforce"), ({"reinforce": {"baselin": "js"}}, "reinforce.baselin"),
    ({"ppo": {"clip": "wide"}}, "ppo.clip"), ({"ppo": ["epochs"]}, "ppo"),
    ({"baseline": 5}, "baseline"), ({"extra": []}, "extra"), ({"out": 7}, "out"),
    ({"stepz": 3}, "stepz"), ({"device": None}, "device"), ([1, 2], "JSON object"),
    ("a string", "JSON object"),
])
def test_wrong_types_in_config_json(tmp_path, caplog, content, names):
    """The file's values, not overridden by flags: the message names the file and the field."""
    cfg = tmp_path / "cfg.json"
    base = {"steps": 3, "iterations": 2, "batch": 4, "hidden": 8, "depth": 1,
            "eval_contexts": 8, "pool_size": 32, "progress": False, "out": str(tmp_path)}
    cfg.write_text(json.dumps({**base, **content} if isinstance(content, dict) else content))
    msg = _refused(["train", "--config", str(cfg)], tmp_path, caplog, names)
    assert "cfg.json" in msg


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe\x00\x81binary\x00",
                                 b'{"steps": 3,}', b"\x80\x04\x95pickle"])
def test_undecodable_or_non_json_config(tmp_path, caplog, raw):
    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(raw)
    _refused(["train", *SMALL, "--config", str(cfg), "--out", str(tmp_path)], tmp_path, caplog,
             "cfg.json")


# -- testbed JSON: classes of the wrong kind, null means, not JSON --------------------------
@pytest.mark.parametrize("content", [
    {"d": 2, "std": 0.1, "classes": ["a class"]},
    {"d": 2, "std": 0.1, "classes": [{"means": None}]},
    {"d": 2, "std": 0.1, "classes": [{"means": [[0.0, None]]}]},
    {"d": 2, "std": 0.1, "classes": [{"means": [[0.0, "1"]]}]},
    {"d": 2, "std": 0.1, "classes": [{"means": [[0.0, 1.0], [1.0]]}]},
    {"d": 2, "std": 0.1, "classes": [{"means": [[0.0, 1.0]], "weights": [-1.0]}]},
    {"d": 2, "std": 0.1, "classes": [{"means": [[0.0, 1.0]], "weigths": [1.0]}]},
    {"d": "2", "std": 0.1, "classes": [{"means": [[0.0, 1.0]]}]},
    {"d": 2, "std": None, "classes": [{"means": [[0.0, 1.0]]}]},
    {"d": 2, "std": 0.1, "classes": {"means": [[0.0, 1.0]]}},
    {"d": 2, "std": 0.1, "classes": [{"means": [[0.0, 1.0]]}], "embeddings": [[1.0], [2, 3]]},
    {"d": 2, "std": 0.1, "classes": [{"means": [[0.0, 1.0]]}], "reference_steps": 0},
    [1, 2, 3],
])
def test_bad_testbed_json(tmp_path, caplog, content):
    tb = tmp_path / "tb.json"
    tb.write_text(json.dumps(content))
    _refused(["train", *SMALL, "--testbed-config", str(tb), "--out", str(tmp_path)], tmp_path,
             caplog, "tb.json")
    with pytest.raises(ValueError, match="tb.json"):
        Testbed.from_json(tb)


@pytest.mark.parametrize("raw", [b"{", b"\xff\xd8\xff\xe0 jpeg", b"NaN-ish", b""])
def test_undecodable_testbed(tmp_path, caplog, raw):
    tb = tmp_path / "tb.json"
    tb.write_bytes(raw)
    _refused(["train", *SMALL, "--testbed-config", str(tb), "--out", str(tmp_path)], tmp_path,
             caplog, "tb.json")


@pytest.mark.parametrize("name, raw", [
    ("p.txt", b"\xff\xfe\x00\x00\x81\x82"), ("p.jsonl", b'{"prompt": "a"}\n{oops\n'),
    ("p.jsonl", b'{"prompt": 5}\n'), ("p.csv", b"prompt\na\x00b\n"),
    ("p.csv", "prompt\n\u00e9".encode("latin-1")), ("p.txt", b"\x00\x00\x00"),
])
def test_bad_prompt_files_name_the_file(tmp_path, name, raw):
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=name.replace(".", r"\.")) as info:
        load_prompts(path)
    assert "\n" not in str(info.value)


# -- eval: counts and paths -------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrun")
    assert cli_main(["train", *SMALL, "--out", str(out), "--run-name", "r"]) == 0
    return out / "r"


@pytest.mark.parametrize("extra, names", [
    (["--contexts", "0"], "--contexts"), (["--contexts", "-4"], "--contexts"),
    (["--seeds", "0"], "--seeds"), (["--train-contexts", "0"], "--train-contexts"),
    (["--fit-iters", "-1"], "--fit-iters"), (["--grid-columns", "0"], "--grid-columns"),
    (["--schedulers", " , "], "--schedulers"), (["--width", "0"], "width"),
])
def test_eval_bad_counts(trained_run, caplog, extra, names):
    _refused(["eval", str(trained_run), *extra], trained_run.parent, caplog, names)


def test_eval_bad_paths(trained_run, tmp_path, caplog):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    _refused(["eval", str(trained_run), "--out", str(a_file)], tmp_path, caplog, "f.txt")
    _refused(["eval", str(tmp_path / "nope")], tmp_path, caplog, "nope")
    bad = tmp_path / "tb.json"
    bad.write_text("{")
    _refused(["eval", str(trained_run), "--testbed-config", str(bad)], tmp_path, caplog,
             "tb.json")


def test_valid_configs_still_pass():
    """The checks refuse mistakes, not the defaults or the bundled configs' kinds of values."""
    TrainConfig().validate()
    TrainConfig.from_dict({"lr": 1, "init_concentration": 40, "algo": "ppo",
                           "ppo": {"clip": 0.1, "epochs": 2}}).validate()
    TrainConfig.from_dict({"device": "cuda"}).validate()  # valid config; checked at train time


# -- policy files (item 7) --------------------------------------------------------------------
def _vector_policy() -> DirichletPolicy:
    torch.manual_seed(0)
    return DirichletPolicy(VectorEncoder(8, 6, hidden=16, depth=1), 5, head_hidden=16)


def _write_raw(path: Path, header: dict, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """A safetensors file written by hand (any __metadata__, any declared shapes)."""
    blobs, offset, full = [], 0, dict(header)
    for name, t in (tensors or {}).items():
        data = t.contiguous().numpy().tobytes()
        full[name] = {"dtype": "F32", "shape": list(t.shape),
                      "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(full).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def _good_meta_and_tensors() -> tuple[dict, dict[str, torch.Tensor]]:
    pol = _vector_policy()
    meta = {"format_version": 1, "method": "dirichlet-reinforce", "model_family": "testbed",
            "steps": 5, "feature_dims": pol.feature_dims(), "architecture": pol.config(),
            "training": {}, "reward": "fidelity"}
    return meta, {k: v.detach().clone() for k, v in pol.state_dict().items()}


@pytest.mark.parametrize("metadata, message", [
    ([1, 2], "__metadata__"), ({META_KEY: 5}, "__metadata__"), ("text", "__metadata__"),
    ({META_KEY: "[1, 2]"}, "unreadable policy metadata"),
])
def test_metadata_of_the_wrong_json_type(tmp_path, metadata, message):
    meta, tensors = _good_meta_and_tensors()
    path = tmp_path / "p.safetensors"
    _write_raw(path, {"__metadata__": metadata}, tensors)
    with pytest.raises(ValueError, match=message):
        load_policy(path)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(steps="5"), "'steps' must be an integer"),
    (lambda m: m.update(format_version="1"), "'format_version' must be an integer"),
    (lambda m: m.update(method=5), "'method' must be a string"),
    (lambda m: m.update(model_family=["sd3"]), "'model_family' must be a string"),
    (lambda m: m.update(architecture=[1]), "'architecture' must be an object"),
    (lambda m: m.update(training=[1]), "'training' must be an object"),
    (lambda m: m.update(reward=3), "'reward' must be a string"),
    (lambda m: m.update(steps=True), "'steps' must be an integer"),
    (lambda m: m.update(feature_dims=[8, 6]), "'feature_dims' must be an object"),
    (lambda m: m.update(feature_dims={"noise": "8", "cond": [6]}), r"feature_dims\['noise'\]"),
    (lambda m: m.update(feature_dims={"noise": [0], "cond": [6]}), r"feature_dims\['noise'\]"),
    (lambda m: m.update(feature_dims={"noise": [9], "cond": [6]}), "do not match"),
    (lambda m: m.update(feature_dims={"noise": [8]}), "do not match"),
    (lambda m: m.update(model_family="flux-dev"), "vector"),
    (lambda m: m.update(model_family="sd3"), "vector"),
    (lambda m: m.update(global_schedule=[1, 0]), "global_schedule"),
    (lambda m: m["architecture"]["encoder"].update(hidden="16"), "hidden must be an integer"),
    (lambda m: m["architecture"]["encoder"].update(depth=1.0), "depth must be an integer"),
    (lambda m: m["architecture"].update(encoder=[1]), "cannot build"),
    (lambda m: m["architecture"].update(min_segment=float("nan")), "min_segment"),
    (lambda m: m["architecture"].update(head_hidden=None), "head_hidden"),
])
def test_bad_metadata_values(tmp_path, edit, message):
    meta, tensors = _good_meta_and_tensors()
    edit(meta)
    path = tmp_path / "p.safetensors"
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})
    with pytest.raises(ValueError, match=message) as info:
        load_policy(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("size", [2**20, 2**24, 10**9])
def test_a_huge_declared_architecture_is_never_built(tmp_path, size):
    """Small tensors, an architecture declaring ``size``-wide layers (Linear(size, size) would
    need 4 TB at 2**20): refused from the header's shapes, before any real allocation (the old
    loader built it first and died allocating)."""
    meta, tensors = _good_meta_and_tensors()
    meta["architecture"]["head_hidden"] = size
    meta["architecture"]["encoder"]["hidden"] = size
    path = tmp_path / "huge.safetensors"
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ValueError, match="shape"):
        load_policy(path)


def test_declared_shapes_that_lie_about_the_data(tmp_path):
    """Header shapes consistent with the architecture but more bytes than the file holds."""
    meta, tensors = _good_meta_and_tensors()
    path = tmp_path / "p.safetensors"
    _write_raw(path, {"__metadata__": {META_KEY: json.dumps(meta)}}, tensors)
    load_policy(path)  # the hand writer makes valid files
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 64])
    with pytest.raises(ValueError, match="truncated"):
        load_policy(path)


def test_latent_too_small_for_the_encoder_names_the_minimum():
    enc = LatentTextEncoder.for_family("tiny")
    side = enc.min_latent_size()
    tokens, pooled = torch.randn(1, 3, 32), torch.randn(1, 16)
    assert enc(torch.randn(1, 16, side, side), tokens, pooled).shape == (1, enc.out_dim)
    for hw in [(2, 2), (side - 1, side - 1), (1, 64), (64, 1)]:
        with pytest.raises(ValueError, match=f"at least {side}x{side}"):
            enc(torch.randn(1, 16, *hw), tokens, pooled)
    big = LatentTextEncoder.for_family("flux")
    with pytest.raises(ValueError, match="too small"):
        big(torch.randn(1, 16, 1, 1), torch.randn(1, 2, 4096), torch.randn(1, 768))


def test_policy_round_trip_still_works(tmp_path):
    path = tmp_path / "ok.safetensors"
    save_policy(path, _vector_policy(), method="dirichlet-reinforce", model_family="testbed")
    loaded = load_policy(path)
    assert loaded.metadata["steps"] == 5


@pytest.mark.parametrize("label", ["$x^", "cost $5", "$\\frac{1}{$", "a$b$c$"])
def test_plot_labels_are_drawn_as_written(label):
    """matplotlib reads $...$ as math and raises on bad math syntax; labels are plain text."""
    import torch

    from learned_schedules.plots import render_schedules_rgb, render_sigma_comparison

    s = torch.tensor([1.0, 0.5, 0.0])
    assert render_schedules_rgb({label: s, "default": s * 0.9}).shape[-1] == 3
    assert render_sigma_comparison({label: s}, title=label).shape[-1] == 3
