"""The policy file: safetensors weights + JSON metadata. Never pickle.

Layout: a standard safetensors file. Its string metadata holds one key,
``learned_schedules``, whose value is a JSON object:

``format_version`` (int), ``method`` (the name of the algorithm that trained the policy, e.g.
``dirichlet-reinforce`` or ``dirichlet-ppo``: a plain name, :func:`check_method`; the
policy's *kind* in ``architecture`` decides how it is built), ``model_family``
(:data:`KNOWN_FAMILIES`, from :mod:`policies.families`), ``steps`` (L), ``feature_dims``
(trailing shape of every policy input, -1 for free sizes), ``architecture`` (the policy's
``config()``, enough to rebuild it through the registry of policy kinds,
:mod:`policies.kinds`), ``training`` (the training config), ``reward``, ``created`` (UTC ISO
time) and ``package_version``.

Optional: ``global_schedule``, written by the trainer: the policy's mean schedule averaged
over the run's held-out evaluation contexts (flow time, a list of ``L + 1`` floats from 1 down
to 0). It is one prompt-independent schedule that summarises the policy, for use where no
per-prompt features exist (e.g. a named scheduler).

:func:`load_policy` checks the header by hand before any tensor is read, so a truncated,
foreign or pickled file gives a plain-sentence ``ValueError`` and is never unpickled.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .._version import __version__
from .families import KNOWN_FAMILIES
from .json_io import parse_json
from .kinds import policy_from_config

FORMAT_VERSION = 1
META_KEY = "learned_schedules"
METHOD_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
"""A method name: letters, digits and ``. _ + -``, at most 64 characters."""
REQUIRED_FIELDS = ("format_version", "method", "model_family", "steps", "feature_dims",
                   "architecture")
_MAX_HEADER = 100 * 1024 * 1024
MAX_METADATA_BYTES = 1024 * 1024
"""The largest policy metadata read (1 MiB; ours is a few kilobytes)."""


@dataclass
class LoadedPolicy:
    """A validated policy ready for inference."""

    policy: nn.Module
    metadata: dict[str, Any]
    path: Path


def check_method(method: Any) -> bool:
    """Whether ``method`` is a non-empty plain name (:data:`METHOD_PATTERN`)."""
    return isinstance(method, str) and METHOD_PATTERN.fullmatch(method) is not None


def save_policy(path: str | Path, policy: nn.Module, *, method: str, model_family: str,
                training: dict[str, Any] | None = None, reward: str | None = None,
                global_schedule: torch.Tensor | list[float] | None = None,
                extra: dict[str, Any] | None = None) -> None:
    """Write ``policy`` and its metadata to ``path`` atomically (temporary file + rename).

    ``global_schedule``: the policy's prompt-independent summary schedule (flow time,
    ``L + 1`` values; see the module docstring), written when given.
    """
    if not check_method(method):
        raise ValueError(f"Unknown method {method!r}: a method is a non-empty plain name such "
                         "as 'dirichlet-reinforce' (letters, digits, '.', '_', '+', '-').")
    if model_family not in KNOWN_FAMILIES:
        raise ValueError(f"Unknown model family {model_family!r}; expected one of "
                         f"{KNOWN_FAMILIES}.")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"Policy files must end in .safetensors, got {path.name}.")
    meta = {
        "format_version": FORMAT_VERSION, "method": method, "model_family": model_family,
        "steps": int(policy.steps), "feature_dims": policy.feature_dims(),
        "architecture": policy.config(), "training": training or {}, "reward": reward,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__, **(extra or {}),
    }
    if global_schedule is not None:
        values = [float(v) for v in torch.as_tensor(global_schedule).flatten()]
        if len(values) != int(policy.steps) + 1:
            raise ValueError(f"global_schedule needs {int(policy.steps) + 1} values, got "
                             f"{len(values)}.")
        meta["global_schedule"] = values
    tensors = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta, default=str)})
    os.replace(tmp, path)


def _read_header(path: Path) -> dict[str, Any]:
    """The safetensors JSON header, checked by hand (no tensor is read, nothing unpickled)."""
    if not path.exists():
        raise ValueError(f"Policy file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file.")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
        n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
        plausible = 1 < n <= _MAX_HEADER and 8 + n <= size and head[8:9] == b"{"
        # a header length can start with byte 0x80 too: only a bad length means pickle / zip
        if not plausible and (head[:1] == b"\x80" or head[:2] == b"PK"):
            raise ValueError(f"{path.name} is a pickle / torch.save file; policy files must be "
                             "safetensors (it was not loaded).")
        if len(head) < 9:
            raise ValueError(f"{path.name} is truncated or empty: it has no safetensors header.")
        f.seek(8)
        if not plausible:
            raise ValueError(f"{path.name} is not a safetensors file, or it is truncated "
                             "(its header length does not fit the file).")
        raw = f.read(n)
    try:
        header = parse_json(raw, path.name, max_bytes=_MAX_HEADER)
    except ValueError as exc:
        raise ValueError(f"{path.name} is not a safetensors file (unreadable header).") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path.name} is not a safetensors file (unreadable header).")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ValueError(f"{path.name} has a corrupt safetensors header.") from exc
    if 8 + n + end > size:
        raise ValueError(f"{path.name} is truncated: its tensors need {8 + n + end} bytes, "
                         f"the file has {size}.")
    return header


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The policy's metadata (cheap: reads the header only); ``ValueError`` if missing."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path.name} is not a .safetensors policy file.")
    header = _read_header(path)
    strings = header.get("__metadata__") or {}
    if not isinstance(strings, dict) or not all(isinstance(v, str) for v in strings.values()):
        raise ValueError(f"{path.name} has a corrupt safetensors header (its __metadata__ must "
                         "map names to strings).")
    raw = strings.get(META_KEY)
    if raw is None:
        raise ValueError(f"{path.name} has no Learned Schedules metadata; it is not a policy "
                         "file.")
    meta = parse_json(raw, f"The policy metadata of {path.name}",
                      max_bytes=MAX_METADATA_BYTES)
    if not isinstance(meta, dict):
        raise ValueError(f"{path.name} has unreadable policy metadata.")
    return meta


_FIELD_TYPES: dict[str, tuple[type, str]] = {
    "format_version": (int, "an integer"), "method": (str, "a string"),
    "model_family": (str, "a string"), "steps": (int, "an integer"),
    "feature_dims": (dict, "an object"), "architecture": (dict, "an object"),
    "training": (dict, "an object"), "reward": (str, "a string"),
    "created": (str, "a string"), "package_version": (str, "a string"),
    "global_schedule": (list, "a list of numbers")}
"""The JSON type of every known metadata field (``reward`` may also be null)."""


def validate_metadata(meta: dict[str, Any], name: str = "policy file") -> None:
    """Raise ``ValueError`` naming the first problem in a metadata dict (missing fields, wrong
    JSON types, feature sizes, an encoder that does not fit the model family)."""
    if not isinstance(meta, dict):
        raise ValueError(f"{name} has unreadable policy metadata.")
    missing = [k for k in REQUIRED_FIELDS if k not in meta]
    if missing:
        raise ValueError(f"{name} is missing metadata fields: {', '.join(missing)}.")
    for key, (kind, words) in _FIELD_TYPES.items():
        value = meta.get(key)
        if key not in meta or (value is None and key not in REQUIRED_FIELDS):
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{name}: metadata field {key!r} must be {words}, got "
                             f"{json.dumps(value)[:60]}.")
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{name} has format version {meta['format_version']!r}; this version "
                         f"of Learned Schedules reads version {FORMAT_VERSION}.")
    if not check_method(meta["method"]):
        raise ValueError(f"{name} uses unknown method {meta['method']!r} (a method is a "
                         "non-empty plain name).")
    if meta["model_family"] not in KNOWN_FAMILIES:
        raise ValueError(f"{name} is for unknown model family {meta['model_family']!r}.")
    arch = meta["architecture"]
    if not isinstance(arch, dict):
        raise ValueError(f"{name} has an unreadable architecture entry.")
    if arch.get("steps") != meta["steps"]:
        raise ValueError(f"{name} says steps={meta['steps']} but its architecture has "
                         f"steps={arch.get('steps')}.")
    if not 1 <= meta["steps"] <= 1000:
        raise ValueError(f"{name} has steps={meta['steps']}; policies have 1 to 1000 steps.")
    for feature, dims in meta["feature_dims"].items():
        if not (isinstance(dims, list) and dims and all(
                isinstance(d, int) and not isinstance(d, bool) and (d >= 1 or d == -1)
                for d in dims)):
            raise ValueError(f"{name}: feature_dims[{feature!r}] must be a list of sizes (positive "
                             f"integers, or -1 for a free size), got {json.dumps(dims)[:60]}.")
    gs = meta.get("global_schedule")
    if gs is not None and (len(gs) != meta["steps"] + 1 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
            for v in gs)):
        raise ValueError(f"{name}: global_schedule must be {meta['steps'] + 1} numbers in [0, 1].")
    encoder = arch.get("encoder")
    if isinstance(encoder, dict) and encoder.get("type") == "vector" \
            and meta["model_family"] != "testbed":
        raise ValueError(f"{name} has a vector (testbed) encoder but is labelled for model "
                         f"family {meta['model_family']!r}, which needs an image-latent "
                         "encoder; the file is inconsistent.")


def _header_shapes(header: dict[str, Any], name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Tensor name -> (shape, dtype) as the safetensors header declares them."""
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        shape, dtype = info.get("shape") if isinstance(info, dict) else None, \
            info.get("dtype") if isinstance(info, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape) \
                or not isinstance(dtype, str):
            raise ValueError(f"{name} has a corrupt safetensors header (entry {key!r}).")
        out[key] = (tuple(shape), dtype)
    return out


def _check_architecture(meta: dict[str, Any], header: dict[str, Any], name: str) -> None:
    """Build the declared architecture on the ``meta`` device (no memory is allocated) and
    compare its parameter names, shapes and feature sizes with the file's before anything
    real is built."""
    try:
        with torch.device("meta"):
            skeleton = policy_from_config(meta["architecture"])
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as exc:
        raise ValueError(f"{name} describes an architecture this version cannot build: "
                         f"{' '.join(str(exc).split())}") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = _header_shapes(header, name)
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{name} does not match its architecture: missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}.")
    for k, shape in expected.items():
        if stored[k][0] != shape:
            raise ValueError(f"{name}: weight {k} has shape {stored[k][0]}, the architecture "
                             f"needs {shape}.")
        if stored[k][1] not in _FLOAT_DTYPES:
            raise ValueError(f"{name}: weight {k} is stored as {stored[k][1]}, not floating "
                             "point.")
    dims = skeleton.feature_dims()
    if dims != meta["feature_dims"]:
        raise ValueError(f"{name}: feature_dims {json.dumps(meta['feature_dims'])} do not match "
                         f"its architecture, which reads {json.dumps(dims)}.")


_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


def load_policy(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedPolicy:
    """Load and validate a policy file; every problem is a ``ValueError`` with a plain sentence."""
    path = Path(path)
    meta = read_metadata(path)
    validate_metadata(meta, path.name)
    _check_architecture(meta, _read_header(path), path.name)
    try:
        policy = policy_from_config(meta["architecture"])
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as exc:
        raise ValueError(f"{path.name} describes an architecture this version cannot build: "
                         f"{exc}") from exc
    try:
        tensors = load_file(str(path), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path.name} could not be read as safetensors: {exc}") from exc
    # names and shapes were checked against the header above; the values are checked here
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ValueError(f"{path.name}: weight {k} contains NaN or infinite values.")
    policy.load_state_dict(tensors)
    policy.to(map_location).eval()
    return LoadedPolicy(policy=policy, metadata=meta, path=path)


__all__ = ["save_policy", "load_policy", "read_metadata", "validate_metadata", "LoadedPolicy",
           "FORMAT_VERSION", "KNOWN_FAMILIES", "check_method"]
