"""Prompt files and the held-out split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learned_schedules.training.comfy.prompts import load_prompts, split_prompts


def test_txt_jsonl_csv_give_the_same_prompts(tmp_path):
    prompts = ["a cat on a mat", "a sign that says \"hello\"", "two dogs, running"]
    (tmp_path / "p.txt").write_text("# comment\n" + "\n".join(prompts) + "\n\n" + prompts[0])
    (tmp_path / "p.jsonl").write_text("\n".join(
        [json.dumps({"prompt": prompts[0], "id": 1}), json.dumps(prompts[1]),
         json.dumps({"caption": prompts[2]})]))
    (tmp_path / "p.csv").write_text('id,prompt\n1,a cat on a mat\n2,"a sign that says ""hello"""\n'
                                    '3,"two dogs, running"\n')
    for name in ("p.txt", "p.jsonl", "p.csv"):
        assert load_prompts(tmp_path / name) == prompts, name


@pytest.mark.parametrize("name, text, message", [
    ("missing.txt", None, "not found"),
    ("empty.txt", "\n# only a comment\n", "No prompts"),
    ("bad.jsonl", '{"prompt": "ok"}\n{oops\n', "bad.jsonl:2"),
    ("nofield.jsonl", '{"text2": "x"}\n', "no 'prompt' field"),
    ("nohead.csv", "a,b\n1,2\n", "'prompt' column"),
    ("p.yaml", "- a\n", "use .txt, .jsonl or .csv"),
])
def test_bad_prompt_files_say_why(tmp_path, name, text, message):
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        load_prompts(tmp_path / name)


def test_split_is_disjoint_reproducible_and_sized():
    prompts = [f"prompt {i}" for i in range(50)]
    train, held = split_prompts(prompts, 0.2, seed=3)
    assert len(held) == 10 and len(train) == 40 and not set(train) & set(held)
    assert (train, held) == split_prompts(prompts, 0.2, seed=3)
    assert held != split_prompts(prompts, 0.2, seed=4)[1]
    assert len(split_prompts(prompts, 7, seed=0)[1]) == 7
    with pytest.raises(ValueError, match="no training prompts"):
        split_prompts(prompts, 50)
    with pytest.raises(ValueError, match="at least 2"):
        split_prompts(["only one"], 0.5)


def test_bundled_example_configs_and_prompts_are_valid(tmp_path, monkeypatch):
    from learned_schedules.training.rl.config import TrainConfig

    configs = [p for p in sorted((Path(__file__).parents[1] / "training" / "configs")
                                 .glob("*.json")) if '"backend"' in p.read_text()]
    assert len(configs) >= 2  # trainer configs (the testbed's own config is another format)
    monkeypatch.chdir(tmp_path)  # the bundled prompt file is found from anywhere
    for path in configs:
        config = TrainConfig.load(path)
        config.validate()
        if config.backend == "comfy":
            prompts = load_prompts(config.comfy.prompts)
            if config.comfy.held_out == 0:  # held-out seeds: every prompt trains and evaluates
                assert len(prompts) >= 10 and len(set(prompts)) == len(prompts)
                continue
            train, held = split_prompts(prompts, config.comfy.held_out)
            assert len(prompts) >= 40 and len(held) >= 4
