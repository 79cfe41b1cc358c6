"""Reward models that score generated images against their prompts (for the RL trainer).

Images are ComfyUI IMAGE tensors ``[N, H, W, 3]`` in [0, 1]; a reward returns ``[N]`` float32
on the CPU, higher is better. Every model loads from a local folder, by default
``<ComfyUI>/models/rewards/<kind>/``; nothing is downloaded unless ``allow_download=True``.

Kinds (see each module for the folder layout and the exact score):

* ``clip``: 100 * cosine of CLIP image/text embeddings (:mod:`.clip_rewards`)
* ``pickscore``: PickScore_v1, ``logit_scale * cosine`` (:mod:`.clip_rewards`)
* ``aesthetic``: LAION aesthetic predictor on CLIP ViT-L/14 (:mod:`.aesthetic`)
* ``hpsv2``: HPSv2 / HPSv2.1 cosine, open_clip (optional extra ``hps``) (:mod:`.hps`)
* ``imagereward``: ImageReward, BLIP-based (:mod:`.image_reward`)
* ``ocr``: TrOCR text match with the prompt's quoted text (:mod:`.ocr`)
* ``digit``, ``realism``: the digits model's classifier (log-probability of the prompted digit;
  typicality of its features), shipped in ``models/digits`` (:mod:`.digits`)

Specs combine kinds: ``"0.7*pickscore+0.3*aesthetic"`` loads a :class:`WeightedSum`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .base import Reward, log
from .ocr import reward_target_text
from .weighted import WeightedSum, format_spec

__all__ = ["REWARD_KINDS", "Reward", "WeightedSum", "find_reward_path", "load_reward",
           "parse_reward_spec", "reward_target_text"]

REWARD_KINDS: tuple[str, ...] = ("clip", "pickscore", "aesthetic", "hpsv2", "imagereward", "ocr",
                                 "digit", "realism", "shapes", "glyph")
SHIPPED = ("digit", "realism", "shapes", "glyph")
"""Kinds whose weights ship with the repository (a path is optional)."""
ALIASES = {"clipscore": "clip", "clip_score": "clip", "pick": "pickscore", "hps": "hpsv2",
           "hpsv21": "hpsv2", "image_reward": "imagereward", "text": "ocr"}
WHAT_GOES_THERE = {
    "clip": "a transformers CLIP model folder (config.json, model.safetensors, tokenizer files)",
    "pickscore": "the PickScore_v1 transformers folder (config.json, model.safetensors, "
                 "tokenizer files from laion/CLIP-ViT-H-14-laion2B-s32B-b79K)",
    "aesthetic": "a transformers CLIP ViT-L/14 folder plus the aesthetic head "
                 "(sac+logos+ava1-l14-linearMSE.pth or a .safetensors)",
    "hpsv2": "HPS_v2.1_compressed.pt (an open_clip ViT-H-14 checkpoint)",
    "imagereward": "ImageReward.pt, med_config.json and bert-base-uncased's vocab.txt",
    "ocr": "a transformers TrOCR folder (e.g. microsoft/trocr-base-printed)",
    "digit": "the digits classifier (models/digits/digits_classifier.safetensors)",
    "realism": "the digits classifier (models/digits/digits_classifier.safetensors)",
    "shapes": "the glyph classifier (models/shapes/shapes_glyph_classifier.safetensors)",
    "glyph": "the glyph classifier (models/shapes/shapes_glyph_classifier.safetensors)",
}

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(rf"\s*(?P<sign>[-+])?\s*(?:(?P<weight>{_NUMBER})\s*\*\s*)?"
                   r"(?P<name>[A-Za-z][A-Za-z0-9_]*)\s*")


def canonical_kind(name: str) -> str:
    """A reward name (any case, or an alias like ``hps``) as one of :data:`REWARD_KINDS`."""
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in REWARD_KINDS:
        raise ValueError(f"Unknown reward {name!r}; choose from {', '.join(REWARD_KINDS)}.")
    return key


def parse_reward_spec(spec: str) -> list[tuple[float, str]]:
    """Parse ``"pickscore"`` or ``"0.7*pickscore+0.3*aesthetic"`` into ``[(weight, kind)]``.

    Terms are ``[weight*]kind`` joined by ``+`` or ``-``; a missing weight is 1.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("The reward spec is empty; name a reward such as 'pickscore' or "
                         "'0.7*pickscore+0.3*aesthetic'.")
    out: list[tuple[float, str]] = []
    pos = 0
    while pos < len(spec):
        m = _TERM.match(spec, pos)
        if m is None or (out and m.group("sign") is None):
            raise ValueError(f"Cannot read the reward spec {spec!r} at {spec[pos:]!r}; write "
                             "terms like '0.7*pickscore' joined by '+'.")
        weight = float(m.group("weight")) if m.group("weight") else 1.0
        if m.group("sign") == "-":
            weight = -weight
        kind = canonical_kind(m.group("name"))
        if any(k == kind for _, k in out):
            raise ValueError(f"The reward spec {spec!r} lists {kind!r} twice.")
        out.append((weight, kind))
        pos = m.end()
    return out


def find_reward_path(kind: str, *, paths: Mapping[str, str | Path] | None = None,
                     search_dirs: Sequence[str | Path] = (),
                     allow_download: bool = False) -> Path | None:
    """Where ``kind``'s weights are: ``paths[kind]``, else the first ``<dir>/<kind>`` that exists.

    Returns None (download from the hub, or the shipped weights of :data:`SHIPPED` kinds) only
    when ``allow_download`` or for a shipped kind; otherwise a ValueError
    names the places it looked and how to fix it.
    """
    kind = canonical_kind(kind)
    given = {canonical_kind(k): v for k, v in (paths or {}).items() if v}
    if kind in given:
        path = Path(given[kind]).expanduser()
        if not path.exists():
            raise ValueError(f"The path given for the {kind!r} reward, {path}, does not exist. "
                             f"Put {WHAT_GOES_THERE[kind]} in models/rewards/{kind} (or another "
                             "folder) and pass that path.")
        return path
    looked = [Path(d).expanduser() / kind for d in search_dirs]
    for candidate in looked:
        if candidate.exists():
            return candidate
    if allow_download or kind in SHIPPED:  # None: download, or the shipped weights
        return None
    where = ", ".join(str(p) for p in looked) if looked else "nowhere (no search folders given)"
    raise ValueError(f"No weights for the {kind!r} reward: looked in {where}. Put "
                     f"{WHAT_GOES_THERE[kind]} in a rewards/{kind} folder of ComfyUI's models "
                     f"directory (models/rewards/{kind}), pass its path, or allow downloads.")


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() in _DTYPES:
        return _DTYPES[str(dtype).lower()]
    raise ValueError(f"Unknown dtype {dtype!r}; use float32, float16 or bfloat16.")


def _load_one(kind: str, source: Path | None, **kw) -> Reward:
    if kind in ("shapes", "glyph"):
        from .shapes import load_shapes_reward

        return load_shapes_reward(kind, source, device=str(kw.get("device", "cpu")))
    if kind in SHIPPED:
        from .digits import load_digits_reward

        return load_digits_reward(kind, source, device=str(kw.get("device", "cpu")))
    if kind in ("clip", "pickscore"):
        from .clip_rewards import load_clip_reward

        return load_clip_reward(kind, source, **kw)
    if kind == "aesthetic":
        from .aesthetic import load_aesthetic_reward

        return load_aesthetic_reward(source, **kw)
    if kind == "hpsv2":
        from .hps import load_hps_reward

        return load_hps_reward(source, **kw)
    if kind == "imagereward":
        from .image_reward import load_image_reward

        return load_image_reward(source, **kw)
    from .ocr import load_ocr_reward

    return load_ocr_reward(source, **kw)


def load_reward(spec: str, *, paths: Mapping[str, str | Path] | None = None,
                search_dirs: Sequence[str | Path] = (), device: torch.device | str = "cpu",
                dtype: torch.dtype | str = torch.float32, allow_download: bool = False,
                batch_size: int = 16) -> Reward:
    """Load the reward(s) named by ``spec`` (see :func:`parse_reward_spec`).

    Each kind's weights come from ``paths[kind]`` or the first ``<dir>/<kind>`` of
    ``search_dirs`` (e.g. ``<ComfyUI>/models/rewards``). One kind with weight 1 returns that
    reward; anything else returns a :class:`WeightedSum`.
    """
    terms = parse_reward_spec(spec)
    dtype = _as_dtype(dtype)
    sources = {kind: find_reward_path(kind, paths=paths, search_dirs=search_dirs,
                                      allow_download=allow_download) for _, kind in terms}
    loaded: list[tuple[float, Reward]] = []
    for weight, kind in terms:
        loaded.append((weight, _load_one(kind, sources[kind], device=device, dtype=dtype,
                                         allow_download=allow_download,
                                         batch_size=batch_size)))
    if len(loaded) == 1 and loaded[0][0] == 1.0:
        return loaded[0][1]
    log.info("reward %s", format_spec(terms))
    return WeightedSum(loaded)
