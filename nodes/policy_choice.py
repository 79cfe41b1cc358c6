"""Which policy files a node lists, and the sentence a user sees when the chosen one cannot be
used: a visible placeholder when none is installed, and a message that names the file to
install for *this* node (the starter policies ship in the pack's ``models/digits/``).

Each node lists only the policies it can use (the roles of :mod:`policies.contract`): the
Learned Schedule node and the named schedulers need a one-shot schedule, the Learned Sampler
takes either kind. A file whose metadata cannot be read stays listed, so choosing it gives its
own error sentence instead of a silent gap.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

FOLDER = "learned_schedules"
STARTERS_DIR = Path(__file__).resolve().parents[1] / "models" / "digits"

#: The single combo option shown while ``models/learned_schedules`` holds no usable policy.
NO_POLICY = "(no policy installed: see the tooltip)"

#: The pack's starter policy per node role: what a user copies to try that node.
STARTER = {"schedule": "digits_policy_L4.safetensors",
           "sampler": "digits_adagen_L3.safetensors"}
WHAT = {"schedule": "a one-shot policy (Dirichlet or ART)",
        "sampler": "a policy (AdaGen step-wise, or one-shot)"}
TRAIN = "`python -m learned_schedules.training train ...`"


def no_policy_message(role: str = "schedule") -> str:
    """The sentence for an empty policy folder (or the placeholder chosen)."""
    return (f"No learned-schedule policy is installed for this node: it needs {WHAT[role]} "
            f"in ComfyUI/models/{FOLDER}/. To try the pack, copy the starter policy "
            f"models/digits/{STARTER[role]} from the pack's folder there and press R "
            "(refresh) in the browser (it schedules the bundled digits model: see "
            "models/digits/MODEL_CARD.md); for your own Flux or SD3 model, train one with "
            f"{TRAIN}.")


NO_POLICY_MESSAGE = no_policy_message("schedule")

POLICY_TOOLTIP = f"A policy file from models/{FOLDER}."


def no_policy_tooltip(role: str = "schedule") -> str:
    return (f"No usable policy file found in models/{FOLDER}/. Copy the pack's starter "
            f"policy (models/digits/{STARTER[role]}, for the bundled digits model) there or "
            f"train one with {TRAIN}, then press R.")


NO_POLICY_TOOLTIP = no_policy_tooltip("schedule")


def policy_options(files: list[str]) -> list[str]:
    """The combo's options: the policy files, or the single placeholder when there are none."""
    return list(files) if files else [NO_POLICY]


def policy_tooltip(files: list[str], role: str = "schedule") -> str:
    return POLICY_TOOLTIP if files else no_policy_tooltip(role)


def missing_file_message(name: str, installed: list[str], role: str = "schedule") -> str:
    """The sentence for a policy name that is not in the policy folder: a starter the pack
    ships says which file to copy from where; another name lists what is installed."""
    if (STARTERS_DIR / name).is_file():
        return (f"The policy {name} is not installed. It ships with the pack: copy "
                f"models/digits/{name} from the pack's folder (ComfyUI/custom_nodes/<this "
                f"pack>/) to ComfyUI/models/{FOLDER}/ and press R (refresh) in the browser.")
    shown = ", ".join(installed[:6]) + (", ..." if len(installed) > 6 else "")
    return (f"The policy {name} is not in ComfyUI/models/{FOLDER}/ (installed there: "
            f"{shown}). Choose one of those, put {name} there and press R, or train one with "
            f"{TRAIN}.")


def missing_policy_message(name: str | None, installed: list[str],
                           role: str = "schedule") -> str | None:
    """The friendly message when the chosen policy is not installed (none at all, the
    placeholder, an empty choice, or a name not in the folder); None when it is."""
    if not name or name == NO_POLICY:
        return no_policy_message(role)
    if name in installed:
        return None
    if not installed:
        if (STARTERS_DIR / name).is_file():
            return missing_file_message(name, installed, role)
        return no_policy_message(role)
    return missing_file_message(name, installed, role)


_KIND_CACHE: dict[str, tuple[float, str | None]] = {}
_LOCK = threading.Lock()


def policy_kind(path: str) -> str | None:
    """The policy kind written in a file's metadata (``None`` when unreadable; cached by
    modification time, so listing the folder stays cheap on every ``/object_info``)."""
    from ..policies.policy_file import read_metadata

    try:
        mtime = os.path.getmtime(path)
    except OSError:
        return None
    with _LOCK:
        hit = _KIND_CACHE.get(path)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    try:
        meta = read_metadata(path)
        kind = (meta.get("architecture") or {}).get("policy")
        kind = kind if isinstance(kind, str) else None
        if meta.get("model_family") == "testbed":
            kind = "testbed"
    except (ValueError, OSError):
        kind = None
    with _LOCK:
        if len(_KIND_CACHE) > 256:
            _KIND_CACHE.clear()
        _KIND_CACHE[path] = (mtime, kind)
    return kind


def usable_by(kind: str | None, role: str) -> bool:
    """Whether a node of ``role`` (``schedule``: one-shot only; ``sampler``: any deployable
    kind) can use a policy of ``kind``. Unreadable files (``None``) stay listed; testbed
    policies schedule no image model and are never listed."""
    from ..policies import kinds  # noqa: F401 - fills the registry of kinds
    from ..policies.contract import POLICY_KINDS, is_stepwise

    if kind is None:
        return True
    if kind == "testbed":
        return False
    cls = POLICY_KINDS.get(kind)
    if cls is None:
        return True  # an unknown kind: loading it gives the sentence
    return role == "sampler" or not is_stepwise(cls)


def filter_files(files: list[tuple[str, str | None]], role: str) -> list[str]:
    """The names (of ``(name, full path)``) a node of ``role`` lists."""
    return [name for name, path in files if path is None or usable_by(policy_kind(path), role)]
