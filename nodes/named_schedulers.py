"""Opt-in named schedulers ``learned:<policy>`` in ComfyUI's scheduler list (KSampler,
BasicScheduler and every node that reads ``comfy.samplers.SCHEDULER_NAMES``).

A per-image policy needs the prompt and the noise, so it cannot be a scheduler handler (those
receive only ``(model_sampling, steps)``). A policy's *prompt-independent* schedule can: the
trainer writes it into the policy file's metadata as ``global_schedule`` (flow time, ``L + 1``
numbers from 1 down to 0). Policies without it are skipped.

Opt-in, because packs that copy the scheduler list into their own nodes have broken when
another pack extended it: set the environment variable ``LEARNED_SCHEDULES_NAMED_SCHEDULERS=1``
or write ``{"named_schedulers": true}`` into ``ComfyUI/user/learned_schedules.json``. The list
is built when ComfyUI starts: restart it after adding a policy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..comfy_bridge.sigmas import schedule_to_model
from ..policies.json_io import parse_json
from ..policies.policy_file import read_metadata
from ..policies.schedule import validate_schedule

log = logging.getLogger("learned_schedules")

ENV_VAR = "LEARNED_SCHEDULES_NAMED_SCHEDULERS"
SETTINGS_FILE = "learned_schedules.json"
PREFIX = "learned:"
_TRUE = ("1", "true", "yes", "on")


def enabled(settings_dir: str | os.PathLike | None = None) -> bool:
    """True when the user opted in (environment variable, else the settings file)."""
    env = os.environ.get(ENV_VAR)
    if env is not None:
        return env.strip().lower() in _TRUE
    if settings_dir is None:
        return False
    path = Path(settings_dir) / SETTINGS_FILE
    if not path.is_file():
        return False
    try:
        return bool(parse_json(path.read_text(), f"Settings file {path}")
                    .get("named_schedulers", False))
    except (OSError, ValueError, AttributeError):
        log.warning("Learned Schedules: %s is not a JSON object; named schedulers stay off",
                    path)
        return False


def global_schedule(meta: dict) -> torch.Tensor | None:
    """The policy's prompt-independent flow schedule ``[L+1]`` from its metadata, or None."""
    raw = meta.get("global_schedule")
    if raw is None:
        return None
    try:
        flow = torch.tensor([float(v) for v in raw], dtype=torch.float64)
        validate_schedule(flow, sigma_max=1.0)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"its global_schedule is not a valid schedule ({exc})") from exc
    return flow


def schedule_sigmas(flow: torch.Tensor, model_sampling, steps: int) -> torch.Tensor:
    """The flow schedule resampled to ``steps`` and mapped into the model's sigma space: the
    bridge's mapping (:func:`comfy_bridge.sigmas.schedule_to_model`), as the Learned Schedule
    node does."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"The number of steps must be a positive integer, got {steps!r}.")
    return schedule_to_model(model_sampling, flow, steps)


def make_handler(flow: torch.Tensor) -> Callable[[object, int], torch.Tensor]:
    """A ComfyUI scheduler handler ``(model_sampling, steps) -> sigmas`` for a flow schedule."""
    def handler(model_sampling, steps: int) -> torch.Tensor:
        return schedule_sigmas(flow, model_sampling, int(steps))

    return handler


def _stepwise(meta: dict) -> bool:
    from ..policies import kinds  # noqa: F401 - fills the registry of kinds
    from ..policies.contract import POLICY_KINDS, is_stepwise

    kind = (meta.get("architecture") or {}).get("policy")
    return isinstance(kind, str) and is_stepwise(POLICY_KINDS.get(kind))


def discover(folder_files: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """``learned:<stem>`` -> flow schedule for every (name, path) whose metadata has one."""
    found: dict[str, torch.Tensor] = {}
    for name, path in folder_files:
        try:
            meta = read_metadata(path)
            if _stepwise(meta):  # chooses its steps while sampling: the Learned Sampler's
                log.info("Learned Schedules: %s is step-wise; not a named scheduler", name)
                continue
            flow = global_schedule(meta)
        except ValueError as exc:
            log.warning("Learned Schedules: %s skipped as a named scheduler: %s", name, exc)
            continue
        if flow is not None:
            found[PREFIX + os.path.splitext(name)[0]] = flow
    return found


def register(schedules: dict[str, torch.Tensor]) -> list[str]:
    """Add the schedules to ComfyUI's handler table and, in place, to its name list (which
    ``KSampler.SCHEDULERS`` shares). Names already present are left alone."""
    import comfy.samplers as cs

    added = []
    for name, flow in schedules.items():
        if name in cs.SCHEDULER_HANDLERS:
            continue
        cs.SCHEDULER_HANDLERS[name] = cs.SchedulerHandler(make_handler(flow))
        for names in {id(cs.SCHEDULER_NAMES): cs.SCHEDULER_NAMES,
                      id(cs.KSampler.SCHEDULERS): cs.KSampler.SCHEDULERS}.values():
            if name not in names:
                names.append(name)
        added.append(name)
    return added


def unregister(names: list[str]) -> None:
    """Remove names added by :func:`register` (tests)."""
    import comfy.samplers as cs

    for name in names:
        cs.SCHEDULER_HANDLERS.pop(name, None)
        for names_list in (cs.SCHEDULER_NAMES, cs.KSampler.SCHEDULERS):
            while name in names_list:
                names_list.remove(name)


def register_from_policy_folder(folder: str) -> list[str]:
    """When opted in, register every policy in ComfyUI's ``folder`` that has a global
    schedule; returns the added names (empty when not opted in)."""
    import folder_paths

    if not enabled(folder_paths.get_user_directory()):
        return []
    files = [(name, folder_paths.get_full_path(folder, name))
             for name in folder_paths.get_filename_list(folder)]
    added = register(discover([(n, p) for n, p in files if p]))
    if added:
        log.info("Learned Schedules: named schedulers %s", ", ".join(added))
    else:
        log.info("Learned Schedules: named schedulers are on, but no policy in models/%s has "
                 "a global schedule", folder)
    return added
