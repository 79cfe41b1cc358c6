"""UI-format workflows (what the templates panel and a file open load) for the tests: their
conversion to the API format the server runs, and tiny-model stand-ins for their model files.

The conversion follows the frontend's own rules (``graphToPrompt``), and the browser test
checks that it gives exactly what the frontend gives for every example.
"""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "example_workflows"

#: Tiny stand-ins for the examples' model files: set inputs by node class, cap numbers at a
#: most, or replace a node.
TINY_SD3 = {
    "set": {
        "UNETLoader": {"unet_name": "sd3_tiny.safetensors", "weight_dtype": "default"},
        "VAELoader": {"vae_name": "tiny_vae.safetensors"},
        # small and few images: the examples run in seconds on a CPU in every test
        "EmptySD3LatentImage": {"width": 64, "height": 64, "batch_size": 2},
        "LearnedSchedules_LearnedSchedule": {"policy": "sd3_test.safetensors"},
        "LearnedSchedules_LearnedSampler": {"policy": "sd3_test.safetensors"},
        "CLIPLoader": {"clip_name": "clip_l.safetensors", "type": "sd3"},
        # a small calibration (the example's own runs in under a minute on the digits model)
        "LearnedSchedules_CalibrateSchedule": {"budget": 30, "contexts": 2, "teacher_steps": 6,
                                               "search": "dp"},
    },
    # the 30-step references: 8 steps (still more than the examples' 3 or 4) on a tiny model
    "cap": {"BasicScheduler": {"steps": 8}},
    "replace": {
        "TripleCLIPLoader": {"class_type": "CLIPLoader",
                             "inputs": {"clip_name": "clip_l.safetensors", "type": "sd3"}},
    },
}


def examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.json"))


def _widget_inputs(spec: dict) -> list[tuple[str, bool]]:
    """(name, has a control_after_generate value) for every widget input, in widget order."""
    out = []
    for section in ("required", "optional"):
        for name, entry in (spec.get("input", {}).get(section) or {}).items():
            kind, opts = entry[0], (entry[1] if len(entry) > 1 else {}) or {}
            is_widget = isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN",
                                                           "COMBO")
            if is_widget:
                out.append((name, bool(opts.get("control_after_generate"))))
    return out


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """The API-format prompt of a UI-format workflow (nodes the server does not know, such as
    notes, are left out, as the frontend does; muted and bypassed nodes are not supported)."""
    links = {link[0]: link for link in ui.get("links", [])}
    prompt: dict[str, dict] = {}
    for node in ui["nodes"]:
        spec = object_info.get(node["type"])
        if spec is None:
            continue
        if node.get("mode", 0) != 0:
            raise ValueError(f"node {node['id']} is muted or bypassed")
        values = list(node.get("widgets_values") or [])
        linked = {}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                linked[slot["name"]] = [str(link[1]), link[2]]
        inputs: dict = {}
        pos = 0
        for name, control in _widget_inputs(spec):
            if pos < len(values):
                inputs[name] = values[pos]
            pos += 2 if control else 1
        inputs.update(linked)
        entry = {"inputs": inputs, "class_type": node["type"]}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        prompt[str(node["id"])] = entry
    return prompt


def apply_stand_ins(prompt: dict, stand_ins: dict = TINY_SD3) -> dict:
    """A copy of ``prompt`` with the tiny models swapped in (same node ids, same links)."""
    out = json.loads(json.dumps(prompt))
    for node in out.values():
        kind = node["class_type"]
        if kind in stand_ins["replace"]:
            new = stand_ins["replace"][kind]
            node["class_type"] = new["class_type"]
            node["inputs"] = dict(new["inputs"])
        node["inputs"].update(stand_ins["set"].get(node["class_type"], {}))
        for key, most in stand_ins.get("cap", {}).get(node["class_type"], {}).items():
            if isinstance(node["inputs"].get(key), (int, float)):
                node["inputs"][key] = min(node["inputs"][key], most)
    return out
