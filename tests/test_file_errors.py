"""Files that cannot be read or written are one line and exit 2 (issue 18, item 10).

JSON nested 100,000 deep (or larger than the cap) in every file the CLI reads: a config
(``--config``), a testbed config, a prompt ``.jsonl``, a policy file's metadata (``eval``) and a
run's ``config.json`` (``--resume``). A write that fails mid-run (a full disk, a lost
permission; simulated by a writer that raises after N writes) names the run folder, leaves the
last checkpoint intact, and ``--resume`` continues from it to the uninterrupted result.
"""

from __future__ import annotations

import csv
import errno
import logging
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from learned_schedules.policies.json_io import MAX_BYTES, nesting_depth, parse_json, read_json
from learned_schedules.policies.policy_file import META_KEY, load_policy
from learned_schedules.training.cli import main as cli_main
from learned_schedules.training.rl import checkpoint, metrics_log, run_folder
from learned_schedules.training.rl.run_folder import plan_resume
from learned_schedules.training.testbed.backend import TestbedBackend

DEEP = 100_000
NESTED_OBJECT = '{"a": ' * DEEP + "1" + "}" * DEEP
NESTED_ARRAY = "[" * DEEP + "]" * DEEP
SMALL = ["--steps", "3", "--batch", "4", "--hidden", "8", "--depth", "1", "--eval-contexts",
         "8", "--pool-size", "32", "--no-progress"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _one_line(argv: list[str], caplog, names: str) -> str:
    """Run the CLI; exit 2, exactly one one-line error naming ``names``, no traceback."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        rc = cli_main(argv)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert rc == 2, (argv, rc, caplog.text[-2000:])
    assert len(errors) == 1, caplog.text[-2000:]
    assert "\n" not in errors[0] and "Traceback" not in caplog.text
    assert names.lower() in errors[0].lower(), (names, errors[0])
    return errors[0]


# -- the capped reader -----------------------------------------------------------------------
def test_depth_is_counted_outside_strings_without_recursion():
    assert nesting_depth('{"a": "[[[[\\"{{", "b": [[1], {"c": []}]}') == 4
    assert nesting_depth("17") == 0 and nesting_depth(NESTED_ARRAY) == DEEP
    assert parse_json('{"a": [1, {"b": "]]}"}]}', "x") == {"a": [1, {"b": "]]}"}]}


@pytest.mark.parametrize("text, message", [
    (NESTED_OBJECT, "nested too deeply"), (NESTED_ARRAY, "nested too deeply"),
    ("[" * 65 + "]" * 65, "nested too deeply"), ("[1, 2", "not valid JSON"),
    (" " * (MAX_BYTES + 1) + "1", "too large"), (b"\xff\xfe{}", "not UTF-8"),
])
def test_parse_json_refuses_in_one_sentence(text, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_json(text, "Config file c.json")
    assert str(info.value).startswith("Config file c.json") and "\n" not in str(info.value)


def test_the_caps_leave_room_for_every_shipped_json_file():
    root = Path(__file__).resolve().parents[1]
    shipped = [*root.glob("training/configs/*.json"), *root.glob("example_workflows/*.json")]
    assert shipped
    for path in shipped:
        read_json(path, "Shipped file")


# -- nested JSON in every file the CLI reads ---------------------------------------------------
@pytest.mark.parametrize("text", [NESTED_OBJECT, NESTED_ARRAY])
def test_nested_config_file(tmp_path, caplog, text):
    path = tmp_path / "nested.json"
    path.write_text(text)
    msg = _one_line(["train", "--config", str(path), "--out", str(tmp_path / "runs")], caplog,
                    "nested.json")
    assert "nested too deeply" in msg
    assert not (tmp_path / "runs").exists()


def test_huge_config_file(tmp_path, caplog):
    path = tmp_path / "huge.json"
    path.write_text('{"description": "' + "x" * MAX_BYTES + '"}')
    assert "too large" in _one_line(["train", "--config", str(path), "--out", str(tmp_path)],
                                    caplog, "huge.json")


def test_nested_testbed_config(tmp_path, caplog):
    path = tmp_path / "tb.json"
    path.write_text('{"d": 2, "std": 0.1, "classes": ' + NESTED_ARRAY + "}")
    before = _files(tmp_path)
    _one_line(["train", *SMALL, "--iterations", "2", "--testbed-config", str(path), "--out",
               str(tmp_path)], caplog, "tb.json")
    assert _files(tmp_path) == before


def test_nested_prompt_jsonl(tmp_path, caplog):
    from comfy_env import comfyui_path, import_comfy

    try:
        comfyui_path()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    cui = import_comfy(tmp_path / "comfy")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a red cube"}\n' + NESTED_OBJECT + "\n")
    msg = _one_line(["train", "--backend", "comfy", "--comfyui-cpu", "--comfyui-base",
                     str(cui.base), "--prompts", str(prompts), "--out", str(tmp_path / "runs"),
                     "--run-name", "r", "--no-progress"], caplog, "prompts.jsonl:2")
    assert "nested too deeply" in msg
    assert not (tmp_path / "runs").exists()


def test_nested_json_model_options(tmp_path):
    """``--unet-config`` / ``--text-encoder-options``: inline JSON or a file."""
    from learned_schedules.training.comfy.models import parse_json_option

    path = tmp_path / "unet.json"
    path.write_text(NESTED_OBJECT)
    for value in (NESTED_OBJECT, str(path)):
        with pytest.raises(ValueError, match="--unet-config is nested too deeply"):
            parse_json_option(value, "--unet-config")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    assert cli_main(["train", *SMALL, "--iterations", "2", "--out", str(out), "--run-name",
                     "r"]) == 0
    return out / "r"


@pytest.mark.parametrize("text", [NESTED_OBJECT, NESTED_ARRAY])
def test_nested_policy_metadata_through_eval(tmp_path, caplog, trained_run, text):
    policy = tmp_path / "nested.safetensors"
    save_file(load_file(str(trained_run / "policy.safetensors")), str(policy),
              metadata={META_KEY: text})
    msg = _one_line(["eval", str(policy), "--contexts", "8", "--out", str(tmp_path / "ev")],
                    caplog, "nested.safetensors")
    assert "nested too deeply" in msg
    with pytest.raises(ValueError, match="policy metadata of nested.safetensors"):
        load_policy(policy)


def test_nested_run_config_on_resume(tmp_path, caplog, trained_run):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(NESTED_OBJECT)
    before = _files(tmp_path)
    msg = _one_line(["train", "--resume", str(run)], caplog, str(run / "config.json"))
    assert "nested too deeply" in msg
    assert _files(tmp_path) == before
    with pytest.raises(ValueError, match="nested too deeply"):
        plan_resume(run)


# -- a write that fails mid-run ----------------------------------------------------------------
RUN = [*SMALL, "--iterations", "12", "--checkpoint-every", "4", "--keep-checkpoints", "2",
       "--eval-every", "6", "--seed", "7"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    assert cli_main(["train", *RUN, "--out", str(out), "--run-name", "ref"]) == 0
    return out / "ref"


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def _same_run(run: Path, reference: Path) -> None:
    assert _rows(run) == _rows(reference)
    got, want = load_file(str(run / "policy.safetensors")), \
        load_file(str(reference / "policy.safetensors"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


def _fail_after(n: int, real, error: Exception | None, partial: int | None = None):
    """``real``, until its ``n + 1``-th call, which raises ``error`` after writing a few bytes
    to argument ``partial``, as a disk that fills mid-file does (``error`` None: a metrics row
    written half, then a full disk)."""
    calls = [0]

    def writer(*args, **kwargs):
        calls[0] += 1
        if calls[0] <= n:
            return real(*args, **kwargs)
        if error is None:
            with args[0].open("a") as f:
                f.write(f"{args[2]['iteration']},0.0")
            raise OSError(errno.ENOSPC, "No space left on device")
        if partial is not None:
            Path(args[partial]).write_bytes(b"half a file")
        raise error
    return writer


DISK_FULL = SafetensorError("Error while serializing: I/O error: No space left on device "
                            "(os error 28)")  # safetensors 0.8's words for a full disk


@pytest.mark.parametrize("case", ["checkpoint", "metrics", "policy", "samples", "final"])
def test_a_failed_write_is_one_line_and_resume_continues(tmp_path, caplog, reference,
                                                         monkeypatch, case):
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        if case == "checkpoint":  # the second checkpoint's state: the disk fills mid-file
            m.setattr(checkpoint, "save_file",
                      _fail_after(1, checkpoint.save_file, DISK_FULL, partial=1))
            reason, last = "No space left on device", 4
        elif case == "metrics":  # row 7 written half
            m.setattr(metrics_log, "append_row", _fail_after(6, metrics_log.append_row, None))
            reason, last = "No space left on device", 4
        elif case == "policy":  # the policy file beside the third checkpoint
            m.setattr(run_folder, "save_policy", _fail_after(
                2, run_folder.save_policy, PermissionError(errno.EACCES, "Permission denied")))
            reason, last = "Permission denied", 12  # its state was written: resumable from 12
        elif case == "samples":  # a read-only file system when the samples are written
            m.setattr(TestbedBackend, "write_samples", _fail_after(
                0, TestbedBackend.write_samples,
                OSError(errno.EROFS, "Read-only file system")), raising=False)
            reason, last = "Read-only file system", 4
        else:  # the final policy.safetensors
            m.setattr(run_folder, "save_policy", _fail_after(
                3, run_folder.save_policy, OSError(errno.ENOSPC, "No space left on device")))
            reason, last = "No space left on device", 12
        extra = ["--sample-every", "5"] if case == "samples" else []
        msg = _one_line(["train", *RUN, *extra, "--out", str(tmp_path), "--run-name", "run"],
                        caplog, str(run))
    assert reason in msg and f"--resume {run}" in msg
    states = sorted((run / "checkpoints").glob("state_*.safetensors"))
    assert states[-1].name == f"state_{last:06d}.safetensors"
    assert f"last complete checkpoint, {states[-1].name}, is intact" in msg
    assert not list(run.rglob("*.tmp"))
    assert not (run / "policy.safetensors").exists()
    assert cli_main(["train", "--resume", str(run)]) == 0
    _same_run(run, reference)


# -- the resume plan, as the CLI uses it -------------------------------------------------------
def test_the_cli_resume_sequence(tmp_path, reference):
    """``plan_resume`` -> ``base_config`` (flags change it) -> ``train(config, resume=plan)``."""
    import shutil

    from learned_schedules.training.rl.engine import train

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    plan = plan_resume(run)
    assert plan.checkpoint == run / "checkpoints" / "state_000012.safetensors"
    assert plan.iteration == 12 and not plan.unreadable
    config = plan.base_config()
    config.iterations = 14
    assert train(config, resume=plan).iterations_done == 14
    assert len(_rows(run)) == 14
    (run / "config.json").unlink()
    with pytest.raises(ValueError, match="no config.json"):
        plan_resume(run).base_config()
