"""Prompt files (.txt / .jsonl / .csv) and a reproducible held-out split."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from ...policies.json_io import parse_json

PROMPT_KEYS = ("prompt", "text", "caption")
PACKAGE = Path(__file__).resolve().parents[2]


def load_prompts(path: str | Path) -> list[str]:
    """Prompts from a file, in order, duplicates and blanks dropped.

    * ``.txt``: one prompt per line; lines starting with ``#`` are comments;
    * ``.jsonl``: one JSON object per line with a ``prompt`` (or ``text`` / ``caption``) field,
      or one JSON string per line;
    * ``.csv``: a header row with a ``prompt`` (or ``text`` / ``caption``) column.
    """
    path = Path(path)
    if not path.is_file() and not path.is_absolute() and (PACKAGE / path).is_file():
        path = PACKAGE / path  # the bundled examples, from any working directory
    if not path.is_file():
        raise ValueError(f"Prompt file not found: {path}.")
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl", ".csv"):
        raise ValueError(f"Unsupported prompt file {path.name}: use .txt, .jsonl or .csv.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"Prompt file {path} is not UTF-8 text (undecodable byte at offset "
                         f"{exc.start}; is it a binary file?).") from None
    except OSError as exc:
        raise ValueError(f"Prompt file {path} cannot be read: {exc.strerror}.") from None
    if "\x00" in text:
        raise ValueError(f"Prompt file {path} holds NUL bytes: it is not a text file.")
    if suffix == ".txt":
        raw = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    elif suffix == ".jsonl":
        raw = [_jsonl_prompt(line, i + 1, path) for i, line in enumerate(text.splitlines())
               if line.strip()]
    else:
        raw = _csv_prompts(text, path)
    seen: set[str] = set()
    prompts = []
    for p in raw:
        p = " ".join(p.split())
        if p and p not in seen:
            seen.add(p)
            prompts.append(p)
    if not prompts:
        raise ValueError(f"No prompts in {path}.")
    return prompts


def _jsonl_prompt(line: str, lineno: int, path: Path) -> str:
    item = parse_json(line, f"{path}:{lineno}")
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in PROMPT_KEYS:
            if isinstance(item.get(key), str):
                return item[key]
    raise ValueError(f"{path}:{lineno} has no 'prompt' field (a JSON object with a string "
                     "'prompt', or a JSON string, per line).")


def _csv_prompts(text: str, path: Path) -> list[str]:
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as exc:
        raise ValueError(f"Prompt file {path} is not a readable CSV file ({exc}).") from None
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    for key in PROMPT_KEYS:
        if key in header:
            col = header.index(key)
            return [r[col] for r in rows[1:] if len(r) > col]
    raise ValueError(f"{path} needs a header row with a 'prompt' column (found: "
                     f"{', '.join(header) or 'nothing'}).")


def split_prompts(prompts: list[str], held_out: float, seed: int = 0
                  ) -> tuple[list[str], list[str]]:
    """(training, held-out) prompts: a seeded shuffle, ``held_out`` as a fraction (< 1) or a
    count (>= 1). Both parts are non-empty; they never share a prompt."""
    if held_out <= 0:
        raise ValueError("held_out must be a positive fraction or count.")
    if len(prompts) < 2:
        raise ValueError("A held-out split needs at least 2 distinct prompts (or give "
                         "--eval-prompts).")
    n_held = int(held_out) if held_out >= 1 else max(1, round(held_out * len(prompts)))
    if n_held >= len(prompts):
        raise ValueError(f"held_out={held_out} leaves no training prompts out of "
                         f"{len(prompts)}.")
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return [prompts[i] for i in train], [prompts[i] for i in held]
