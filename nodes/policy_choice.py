"""The policy combo when no policy is installed: a visible placeholder and a message that says
where policies go and how to get one (instead of an empty combo the frontend shows as
"undefined" and a raw validation traceback)."""

from __future__ import annotations

FOLDER = "learned_schedules"

#: The single combo option shown while ``models/learned_schedules`` holds no policy file.
NO_POLICY = "(no policy installed: see the tooltip)"

NO_POLICY_MESSAGE = (
    f"No learned-schedule policy is installed. Put a policy file (.safetensors) in "
    f"ComfyUI/models/{FOLDER}/ and press R (refresh) in the browser. To try the pack, copy "
    "the starter policy models/digits/digits_policy_L4.safetensors from the pack's folder (it "
    "schedules the bundled digits model: see models/digits/MODEL_CARD.md); for your own Flux "
    "or SD3 model, train one with `python -m learned_schedules.training train ...`."
)

POLICY_TOOLTIP = f"A policy file from models/{FOLDER}."
NO_POLICY_TOOLTIP = (
    f"No policy file found in models/{FOLDER}/. Copy the pack's starter policy "
    "(models/digits/digits_policy_L4.safetensors, for the bundled digits model) there or "
    "train one with `python -m learned_schedules.training train ...`, then press R."
)


def policy_options(files: list[str]) -> list[str]:
    """The combo's options: the policy files, or the single placeholder when there are none."""
    return list(files) if files else [NO_POLICY]


def policy_tooltip(files: list[str]) -> str:
    return POLICY_TOOLTIP if files else NO_POLICY_TOOLTIP


def missing_policy_message(name: str | None, installed: list[str]) -> str | None:
    """The friendly message when no policy is installed at all (whatever a loaded workflow
    names) or for the placeholder / an empty choice; None otherwise."""
    if not installed or not name or name == NO_POLICY:
        return NO_POLICY_MESSAGE
    return None
