"""Write the example workflows (``example_workflows/*.json``, UI format) from the layouts below:
grouped and labelled, opening at a zoom where the frontend draws node text (its default
level-of-detail switch is at zoom 8/14 ~ 0.57), the digits examples with default, learned and a
30-step reference side by side (upscaled without smoothing) and their distance to it.

    python scripts/build_examples.py http://127.0.0.1:8188   # a running ComfyUI with the pack
    python scripts/build_examples.py object_info.json        # or its saved /object_info

The server's ``/object_info`` gives every node's inputs and outputs, so the files are what the
frontend itself would save. Thumbnails: ``tests/browser/run_ui.mjs`` with ``thumbnails_dir``
(see ``scripts/render_thumbnails.py``).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "example_workflows"
ZOOM = 0.66
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
GROUP_COLORS = {"model": "#3f789e", "prompt": "#3f789e", "schedule": "#8A8", "sample": "#444",
                "result": "#b58b2a", "plot": "#a1309b"}

DIGITS_SETUP = (
    "**Setup** (files from the pack's `models/digits/`; ComfyUI/models/…):\n"
    "- diffusion_models/digits_mmdit.safetensors\n"
    "- text_encoders/digits_clip_l.safetensors (build it once: "
    "`python scripts/digits/build_text_encoder.py`)\n"
    "- vae/digits_vae.safetensors\n"
    "- learned_schedules/{policy}\n\n"
    "Prompts the model knows: \"a handwritten digit 0\" .. \"a handwritten digit 9\".")

SHAPES_SETUP = (
    "**Setup** (ComfyUI/models/…):\n"
    "- diffusion_models/shapes_mmdit.safetensors, vae/shapes_vae.safetensors and "
    "learned_schedules/shapes_policy_L4.safetensors from the pack's `models/shapes/`\n"
    "- text_encoders/digits_clip_l.safetensors, the digits model's text encoder (build it "
    "once: `python scripts/digits/build_text_encoder.py`)\n\n"
    "The model's 56 prompts: `training/prompts/shapes.txt`.")

#: The shapes example's prompts (one per group where per-prompt schedules gain most, in the
#: order of the images in every row) and their short names.
SHAPES_PROMPTS = [("a smooth gradient from blue to yellow, top to bottom", "gradient"),
                  ("a red circle left of a blue square", "circle, square"),
                  ("the letter K on a green to blue gradient", "K on gradient")]
#: The best single schedule of docs/shapes.md at 4 steps (flow time = the model's sigmas).
SHAPES_BEST_GLOBAL = "1, 0.75, 0.5, 0.25, 0"

YOUR_MODEL = ("**Needs your own {model} model and a policy trained for it** — nothing here "
              "is bundled, so this example does not run out of the box (the digits examples "
              "do).")


#: One sentence per template: what the user learns (the templates panel shows it on the card;
#: stored in the workflow as extra.learned_schedules.description).
DESCRIPTIONS = {
    "Digits - default vs learned schedule": (
        "See what a learned schedule buys on the bundled digits model: the same 4 euler steps "
        "with the default and the learned schedule beside a 30-step reference, each row's "
        "distance to it written on the canvas (runs in seconds on a CPU)."),
    "Shapes - default vs best fixed vs learned schedule": (
        "See a learned schedule pick each prompt's own sigmas on the bundled shapes model: 4 "
        "euler steps with the default, the best fixed and the learned schedule beside a "
        "30-step reference for three prompts, each image's distance to it on the canvas."),
    "Digits - Learned Sampler (AdaGen)": (
        "See the Learned Sampler let an AdaGen policy pick each image's next sigma while "
        "sampling, beside plain euler and a 30-step reference on the bundled digits model "
        "(runs in seconds on a CPU)."),
    "SD3.5 - text to image with a learned schedule": (
        "Learn where a Learned Schedule goes in an SD3.5 text-to-image graph; needs your own "
        "SD3.5 Medium model and a policy trained for it."),
    "SD3.5 - default vs learned schedule": (
        "Compare a learned schedule with ComfyUI's default on SD3.5, images and sigmas side "
        "by side; needs your own SD3.5 Medium model and a policy trained for it."),
    "Wan 2.2 - two experts with a learned schedule": (
        "Learn how one learned schedule drives Wan 2.2's two experts, split exactly at their "
        "boundary; needs your own Wan 2.2 A14B models and a policy trained for them."),
    "Flux dev - text to image with a learned schedule": (
        "Learn how to schedule Flux dev with a learned policy (guidance in FluxGuidance, no "
        "CFG); needs your own Flux dev model and a policy trained for it."),
}


class Graph:
    """A UI-format workflow built node by node (inputs and outputs from ``/object_info``)."""

    def __init__(self, info: dict):
        self.info = info
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def node(self, kind: str, pos, size, widgets=None, title=None, collapsed=False,
             **extra) -> dict:
        spec = self.info.get(kind)
        inputs, outputs = [], []
        if spec is not None:
            for section in ("required", "optional"):
                for name, entry in (spec["input"].get(section) or {}).items():
                    typ = entry[0]
                    widget = isinstance(typ, list) or typ in WIDGET_KINDS
                    item = {"localized_name": name, "name": name,
                            "type": "COMBO" if isinstance(typ, list) else typ, "link": None}
                    if widget:
                        item["widget"] = {"name": name}
                    elif section == "optional":
                        item["shape"] = 7
                    inputs.append(item)
            for i, typ in enumerate(spec["output"]):
                name = spec["output_name"][i] if spec.get("output_name") else typ
                outputs.append({"localized_name": name, "name": name, "type": typ,
                                "links": None})
        node = {"id": len(self.nodes) + 1, "type": kind, "pos": list(pos), "size": list(size),
                "flags": {"collapsed": True} if collapsed else {}, "order": len(self.nodes),
                "mode": 0, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": kind} if spec else {}}
        if title:
            node["title"] = title
        if widgets is not None:
            node["widgets_values"] = widgets
        node.update(extra)
        self.nodes.append(node)
        return node

    def link(self, src: dict, slot: int, dst: dict, name: str) -> None:
        lid = len(self.links) + 1
        item = next(i for i in dst["inputs"] if i["name"] == name)
        typ = src["outputs"][slot]["type"]
        item["link"] = lid
        src["outputs"][slot]["links"] = [*(src["outputs"][slot]["links"] or []), lid]
        self.links.append([lid, src["id"], slot, dst["id"], dst["inputs"].index(item), typ])

    def group(self, title: str, box, color: str) -> None:
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(box),
                            "color": color, "font_size": 22, "flags": {}})

    def note(self, text: str, pos, size, title="Read me") -> dict:
        return self.node("MarkdownNote", pos, size, [text], title=title, color="#432",
                         bgcolor="#653")

    def ui(self, offset=(80, 120), zoom=ZOOM) -> dict:
        return {"id": "00000000-0000-0000-0000-000000000000", "revision": 0,
                "last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": self.nodes, "links": self.links, "groups": self.groups,
                "config": {}, "extra": {"ds": {"scale": zoom, "offset": list(offset)}},
                "version": 0.4}


def _digits_inputs(g: Graph, batch: int):
    """Column 1-2: the digits model, the prompt and the noise (shared by both examples)."""
    unet = g.node("UNETLoader", (20, 610), (300, 82), ["digits_mmdit.safetensors", "default"],
                  "Load digits model (MMDiT)")
    clip = g.node("CLIPLoader", (20, 740), (300, 106),
                  ["digits_clip_l.safetensors", "sd3", "default"],
                  "Load digits text encoder (CLIP-L, sd3)")
    vae = g.node("VAELoader", (20, 890), (300, 58), ["digits_vae.safetensors"],
                 "Load digits VAE")
    g.group("1 · The digits model", (10, 540, 320, 430), GROUP_COLORS["model"])
    pos = g.node("CLIPTextEncode", (350, 90), (300, 110), ["a handwritten digit 7"], "Prompt")
    neg = g.node("CLIPTextEncode", (350, 250), (300, 90), [""], "Negative prompt")
    size = g.node("EmptySD3LatentImage", (350, 390), (300, 106), [32, 32, batch],
                  f"Image size (32x32, batch of {batch})")
    noise = g.node("RandomNoise", (350, 540), (300, 82), [42, "fixed"], "Noise (fixed seed)")
    g.group("2 · Prompt and noise (every row)", (340, 20, 320, 620), GROUP_COLORS["prompt"])
    g.link(clip, 0, pos, "clip")
    g.link(clip, 0, neg, "clip")
    guider = g.node("CFGGuider", (680, 890), (320, 98), [2.0], "CFG guider (cfg 2)")
    g.link(unet, 0, guider, "model")
    g.link(pos, 0, guider, "positive")
    g.link(neg, 0, guider, "negative")
    return unet, vae, pos, size, noise, guider


def _row(g: Graph, y: int, label: str, short: str, noise, guider, sampler, sigmas, size, vae,
         x=1030, show_x=1250, show_size=(400, 230)):
    """One row: sample, decode, upscale 4x without smoothing (nearest), show."""
    s = g.node("SamplerCustomAdvanced", (x, y), (190, 110), None, f"Sample: {short}",
               collapsed=True)
    d = g.node("VAEDecode", (x, y + 45), (190, 46), None, f"Decode: {short}", collapsed=True)
    up = g.node("ImageScale", (x, y + 90), (190, 130), ["nearest-exact", 128, 128, "disabled"],
                f"Upscale 4x: {short}", collapsed=True)
    show = g.node("PreviewImage", (show_x, y), show_size, None, label)
    for name, (src, slot) in {"noise": (noise, 0), "guider": (guider, 0),
                              "sampler": (sampler, 0), "sigmas": (sigmas, 0),
                              "latent_image": (size, 0)}.items():
        g.link(src, slot, s, name)
    g.link(s, 0, d, "samples")
    g.link(vae, 0, d, "vae")
    g.link(d, 0, up, "image")
    g.link(up, 0, show, "images")
    return d


def _simple_and_reference(g: Graph, unet, steps: int, title: str):
    """BasicScheduler simple at ``steps`` and the 30-step reference, both on the model."""
    few = g.node("BasicScheduler", (680, 590), (320, 106), ["simple", steps, 1],
                 f"{title} (simple, {steps} steps)")
    reference = g.node("BasicScheduler", (680, 740), (320, 106), ["simple", 30, 1],
                       "Reference schedule (simple, 30 steps)")
    for node in (few, reference):
        g.link(unet, 0, node, "model")
    return few, reference


def _rows_and_score(g: Graph, rows: list[tuple], shared: tuple, labels: tuple[str, str],
                    title: str) -> None:
    """The default, learned and reference rows (each: label, short name, sampler, SIGMAS),
    the sample group, and Distance to Reference above the results (learned first)."""
    noise, guider, size, vae = shared
    decoded = [_row(g, y, label, short, noise, guider, sampler, sigmas, size, vae)
               for y, (label, short, sampler, sigmas) in zip((330, 600, 870), rows, strict=True)]
    g.group("4 · Sample", (1020, 260, 210, 840), GROUP_COLORS["sample"])
    score = g.node("LearnedSchedules_DistanceToReference", (1250, 90), (400, 190),
                   [", ".join(labels), "30-step reference"], "Distance to the reference")
    g.link(decoded[2], 0, score, "reference")
    g.link(decoded[1], 0, score, "images_1")
    g.link(decoded[0], 0, score, "images_2")
    g.group(title, (1240, 20, 420, 1100), GROUP_COLORS["result"])


def digits_default_vs_learned(info: dict) -> dict:
    g = Graph(info)
    g.note("## Default vs learned schedule (digits model)\n\n"
           "**What you see:** the same prompt and the same noise (a batch of 8 sevens), the "
           "same euler sampler and 4 steps, with ComfyUI's default **simple** schedule (top "
           "row) and the **learned** schedule (middle row), beside a **30-step reference** "
           "(bottom row). **Distance to Reference** writes each row's PSNR to the reference "
           "above the rows: the learned schedule gets closer to what the model draws with "
           "many steps. The **Learned Schedule** node plots its sigmas against the default.\n\n"
           + DIGITS_SETUP.format(policy="digits_policy_L4.safetensors"),
           (20, 90), (300, 420))
    unet, vae, pos, size, noise, guider = _digits_inputs(g, 8)
    learned = g.node("LearnedSchedules_LearnedSchedule", (680, 90), (320, 440),
                     ["digits_policy_L4.safetensors", 4, "mean", 1], "Learned Schedule")
    g.link(unet, 0, learned, "model")
    g.link(pos, 0, learned, "positive")
    g.link(noise, 0, learned, "noise")
    g.link(size, 0, learned, "latent_image")
    default, reference = _simple_and_reference(g, unet, 4, "Default schedule")
    sampler = g.node("KSamplerSelect", (680, 1040), (320, 58), ["euler"], "Sampler (euler)")
    g.group("3 · Schedules (learned, default, reference)", (670, 20, 340, 1100),
            GROUP_COLORS["schedule"])
    _rows_and_score(g, [("default (simple, 4 steps)", "default", sampler, default),
                        ("learned (4 steps)", "learned", sampler, learned),
                        ("30-step reference", "reference", sampler, reference)],
                    (noise, guider, size, vae), ("learned", "default"),
                    "5 · Results: default, learned, 30-step reference")
    beta = g.node("BasicScheduler", (350, 700), (300, 106), ["beta", 4, 1],
                  "Beta schedule (for the plot)")
    g.link(unet, 0, beta, "model")
    compare = g.node("LearnedSchedules_CompareSchedules", (350, 850), (300, 260),
                     ["learned, simple, beta", "fraction", False, ""], "Compare Schedules")
    g.link(learned, 0, compare, "sigmas_1")
    g.link(default, 0, compare, "sigmas_2")
    g.link(beta, 0, compare, "sigmas_3")
    g.group("6 · The schedules side by side", (340, 660, 320, 460), GROUP_COLORS["plot"])
    text = g.node("LearnedSchedules_ScheduleToText", (20, 1030), (300, 90), [6],
                  "Learned sigmas as text")
    g.link(learned, 0, text, "sigmas")
    return g.ui()


def digits_adagen(info: dict) -> dict:
    g = Graph(info)
    g.note("## Learned Sampler with an AdaGen policy (digits model)\n\n"
           "**What you see:** the same prompt and noise (a batch of 4 sevens) and the same "
           "3-step **simple** SIGMAS, sampled by plain **euler** (top row) and by the "
           "**Learned Sampler** (middle row), whose AdaGen policy looks at each image while "
           "sampling and picks that image's next sigma, beside a **30-step reference** "
           "(bottom row). The node's plot draws each image's sigmas in its own colour; "
           "**Distance to Reference** writes each row's PSNR to the reference above the "
           "rows. `scale` is the strength of the learned change (0 follows the SIGMAS).\n\n"
           + DIGITS_SETUP.format(policy="digits_adagen_L3.safetensors") +
           "\n\n**Read against its ceilings** (docs/adagen.md): on this model the policy gives "
           "every image nearly the same schedule (sigmas within 0.05 of their mean 1, 0.737, "
           "0.342, 0), and ONE fixed schedule is better with no policy call per step: `1, "
           "0.546, 0.333, 0` (fitted on the Fréchet distance) reaches FD 12.9 against the "
           "Learned Sampler's 16.2, coverage 0.57 against 0.53, at equal PSNR (200 held-out "
           "digits). To use it, type those numbers into a **Text to Schedule** node and give "
           "its SIGMAS to plain euler. This example shows how the Learned Sampler works, not a "
           "better sampler for this model.",
           (20, 90), (300, 420))
    unet, vae, pos, size, noise, guider = _digits_inputs(g, 4)
    learned = g.node("LearnedSchedules_LearnedSampler", (680, 90), (320, 440),
                     ["digits_adagen_L3.safetensors", "euler", "mean", 1.0],
                     "Learned Sampler (AdaGen)")
    g.link(pos, 0, learned, "positive")
    sigmas, reference = _simple_and_reference(g, unet, 3, "Schedule")
    euler = g.node("KSamplerSelect", (680, 1040), (320, 58), ["euler"],
                   "Default sampler (euler)")
    g.group("3 · Samplers and SIGMAS", (670, 20, 340, 1100), GROUP_COLORS["schedule"])
    _rows_and_score(g, [("euler (3 steps)", "euler", euler, sigmas),
                        ("Learned Sampler, AdaGen (3 steps)", "AdaGen", learned, sigmas),
                        ("30-step reference", "reference", euler, reference)],
                    (noise, guider, size, vae), ("AdaGen", "euler"),
                    "5 · Results: euler, AdaGen, 30-step reference")
    return g.ui()


def shapes_default_best_learned(info: dict) -> dict:
    """Three prompts of the shapes model, each sampled with 4 euler steps on the model's
    default, the best fixed and its own learned schedule, beside a 30-step reference: rows are
    schedules, columns prompts (each row's prompts joined into one batch)."""
    g = Graph(info)
    rows = ["default", "fixed", "learned", "ref"]  # short: collapsed titles are cut
    prompt_list = "; ".join(f"{i}. *{text}*" for i, (text, _) in
                            enumerate(SHAPES_PROMPTS, start=1))
    g.note("## Default vs best fixed vs learned schedule (shapes model)\n\n"
           f"**What you see:** three prompts ({prompt_list}), the same noise, euler, 4 steps, "
           "cfg 2. Rows: the model's default **simple** schedule; the **best fixed** schedule "
           f"for this model (`{SHAPES_BEST_GLOBAL}`, the best single schedule over its 56 "
           "prompts); the **learned** schedule, which the policy picks for each prompt and "
           "noise (one Learned Schedule node per prompt: a sampler takes one SIGMAS); and "
           "a **30-step reference**. **Distance to Reference** writes every image's PSNR to "
           "the reference; **Compare Schedules** draws the three learned schedules.\n\n"
           "These prompts are from the groups where it gains most: over 168 held-out "
           "prompt × seed pairs the learned schedule is +0.85 dB over the best fixed one and "
           "+4.2 dB over the default (docs/shapes.md); gradients, shapes and compositions "
           "gain, glyphs lose a little.\n\n" + SHAPES_SETUP,
           (20, 90), (300, 470))
    unet = g.node("UNETLoader", (20, 640), (300, 82), ["shapes_mmdit.safetensors", "default"],
                  "Load shapes model (MMDiT)")
    clip = g.node("CLIPLoader", (20, 760), (300, 106),
                  ["digits_clip_l.safetensors", "sd3", "default"],
                  "Load text encoder (digits CLIP-L, sd3)")
    vae = g.node("VAELoader", (20, 910), (300, 58), ["shapes_vae.safetensors"],
                 "Load shapes VAE")
    sampler = g.node("KSamplerSelect", (20, 1030), (300, 58), ["euler"], "Sampler (euler)")
    g.group("1 · The shapes model", (10, 570, 320, 530), GROUP_COLORS["model"])
    prompts = [g.node("CLIPTextEncode", (340, 90 + 105 * i), (300, 70), [text],
                      f"Prompt {i + 1}") for i, (text, _) in enumerate(SHAPES_PROMPTS)]
    neg = g.node("CLIPTextEncode", (340, 405), (300, 60), [""], "Negative prompt")
    size = g.node("EmptySD3LatentImage", (340, 510), (300, 106), [32, 32, 1],
                  "Image size (32x32, one per prompt)")
    noise = g.node("RandomNoise", (340, 660), (300, 82), [42, "fixed"],
                   "Noise (fixed seed, every image)")
    g.group("2 · Prompts and noise", (330, 20, 320, 740), GROUP_COLORS["prompt"])
    for node in (*prompts, neg):
        g.link(clip, 0, node, "clip")
    learned = []
    for i, (pos, (_, short)) in enumerate(zip(prompts, SHAPES_PROMPTS, strict=True)):
        node = g.node("LearnedSchedules_LearnedSchedule", (670, 90 + 40 * i + (0 if i == 0
                      else 430)), (310, 420),
                      ["shapes_policy_L4.safetensors", 4, "mean", 1],
                      f"Learned Schedule: prompt {i + 1} ({short})", collapsed=i > 0)
        g.link(unet, 0, node, "model")
        g.link(pos, 0, node, "positive")
        g.link(noise, 0, node, "noise")
        g.link(size, 0, node, "latent_image")
        learned.append(node)
    default, reference = (g.node("BasicScheduler", (670, y), (310, 106), ["simple", n, 1], t)
                          for y, n, t in ((650, 4, "Default schedule (simple, 4 steps)"),
                                          (930, 30, "Reference schedule (simple, 30 steps)")))
    for node in (default, reference):
        g.link(unet, 0, node, "model")
    fixed = g.node("LearnedSchedules_TextToSchedule", (670, 800), (310, 90),
                   [SHAPES_BEST_GLOBAL], "Best fixed schedule (4 steps)")
    g.group("3 · Schedules (learned per prompt, default, best fixed, reference)",
            (660, 20, 330, 1080), GROUP_COLORS["schedule"])
    guiders = []
    for i, pos in enumerate(prompts):
        guider = g.node("CFGGuider", (1010, 90 + 34 * i), (180, 98), [2.0],
                        f"CFG 2: prompt {i + 1}", collapsed=True)
        g.link(unet, 0, guider, "model")
        g.link(pos, 0, guider, "positive")
        g.link(neg, 0, guider, "negative")
        guiders.append(guider)
    decoded = {}
    labels = {"default": "default (simple, 4 steps)",
              "fixed": f"best fixed ({SHAPES_BEST_GLOBAL})",
              "learned": "learned (each prompt its own, 4 steps)",
              "ref": "30-step reference"}
    for r, row in enumerate(rows):
        y = 210 + 238 * r
        latents = []
        for i, guider in enumerate(guiders):
            sigmas = {"default": default, "fixed": fixed, "learned": learned[i],
                      "ref": reference}[row]
            s = g.node("SamplerCustomAdvanced", (1010, y + 34 * i), (180, 110), None,
                       f"Sample: {row} {i + 1}", collapsed=True)
            for name, src in {"noise": noise, "guider": guider, "sampler": sampler,
                              "sigmas": sigmas, "latent_image": size}.items():
                g.link(src, 0, s, name)
            latents.append(s)
        batch = latents[0]
        for i, nxt in enumerate(latents[1:], start=2):
            join = g.node("LatentBatch", (1010, y + 34 * (i + 1)), (180, 46), None,
                          f"Join: {row} 1-{i}", collapsed=True)
            g.link(batch, 0, join, "samples1")
            g.link(nxt, 0, join, "samples2")
            batch = join
        d = g.node("VAEDecode", (1010, y + 34 * 5), (180, 46), None, f"Decode: {row}",
                   collapsed=True)
        up = g.node("ImageScale", (1010, y + 34 * 6), (180, 130),
                    ["nearest-exact", 128, 128, "disabled"], f"Upscale: {row}",
                    collapsed=True)
        show = g.node("PreviewImage", (1230, 415 + 186 * r), (420, 158), None, labels[row])
        g.link(batch, 0, d, "samples")
        g.link(vae, 0, d, "vae")
        g.link(d, 0, up, "image")
        g.link(up, 0, show, "images")
        decoded[row] = d
    g.group("4 · Sample (3 prompts × 4 schedules)", (1000, 20, 210, 1140),
            GROUP_COLORS["sample"])
    score = g.node("LearnedSchedules_DistanceToReference", (1230, 90), (420, 285),
                   ["learned, best fixed, default", "30-step reference"],
                   "Distance to the reference (every image)")
    g.link(decoded["ref"], 0, score, "reference")
    for slot, row in (("images_1", "learned"), ("images_2", "fixed"),
                      ("images_3", "default")):
        g.link(decoded[row], 0, score, slot)
    g.group("5 · Results: prompts 1, 2, 3 left to right in every row", (1220, 20, 440, 1140),
            GROUP_COLORS["result"])
    compare = g.node("LearnedSchedules_CompareSchedules", (340, 850), (300, 270),
                     [", ".join(f"learned {i}" for i in range(1, 4)) + ", simple, best fixed",
                      "fraction", False, ""], "Compare Schedules")
    for i, node in enumerate([*learned, default, fixed], start=1):
        g.link(node, 0, compare, f"sigmas_{i}")
    g.group("6 · The schedules", (330, 780, 320, 360), GROUP_COLORS["plot"])
    return g.ui()


#: Where the real-model examples' nodes go (node id -> x, y, width, height): five columns
#: within about 1700 x 1150, so a frontend that fits the graph to the view on opening (1.58)
#: still draws node text in a 1400 x 900 window.
REAL_LAYOUT = {
    1: (20, 90, 280, 82), 2: (20, 220, 280, 130), 11: (20, 400, 280, 58),
    14: (20, 530, 300, 420),
    3: (340, 90, 330, 150), 10: (340, 290, 330, 100), 15: (340, 290, 330, 60),
    4: (340, 440, 330, 106), 5: (340, 600, 330, 82),
    6: (700, 90, 340, 440), 8: (700, 590, 340, 98), 7: (700, 740, 340, 58),
    20: (700, 850, 340, 106), 24: (700, 1000, 340, 106),
    9: (1070, 90, 260, 110), 12: (1070, 260, 260, 46), 21: (1070, 560, 260, 110),
    22: (1070, 730, 260, 46),
    13: (1360, 90, 300, 340), 23: (1360, 560, 300, 300),
    25: (1070, 910, 590, 220), 26: (340, 760, 330, 180),
}


#: The Wan 2.2 two-expert example's nodes (its own ids).
WAN_LAYOUT = {
    1: (20, 90, 330, 82), 2: (20, 220, 330, 82), 5: (20, 350, 330, 106), 8: (20, 500, 330, 58),
    3: (380, 90, 300, 58), 4: (380, 200, 300, 58), 6: (380, 310, 300, 160),
    7: (380, 520, 300, 120), 9: (380, 690, 300, 130), 10: (380, 870, 300, 82),
    11: (710, 90, 340, 440), 13: (710, 580, 340, 100), 14: (710, 720, 340, 100),
    15: (710, 860, 340, 58),
    12: (1080, 90, 280, 80), 16: (1080, 230, 280, 110), 17: (1080, 390, 200, 30),
    18: (1080, 470, 280, 110), 19: (1080, 630, 200, 50),
    21: (1390, 90, 300, 420), 20: (1390, 570, 300, 380),
}


def relayout(ui: dict, model: str, groups: list[tuple[str, list[int], str]],
             note: str, layout: dict | None = None) -> dict:
    """An existing (real-model) example laid out by :data:`REAL_LAYOUT`, with labelled groups
    around its node ids, the zoom set, and its note saying plainly what it needs."""
    by_id = {n["id"]: n for n in ui["nodes"]}
    for node in ui["nodes"]:
        x, y, w, h = (layout or REAL_LAYOUT)[node["id"]]
        node["pos"], node["size"] = [x, y], [w, h]
    out_groups = []
    for i, (title, ids, color) in enumerate(groups, start=1):
        xs = [by_id[k]["pos"][0] for k in ids]
        ys = [by_id[k]["pos"][1] for k in ids]
        x1 = [by_id[k]["pos"][0] + by_id[k]["size"][0] for k in ids]
        y1 = [by_id[k]["pos"][1] + by_id[k]["size"][1] for k in ids]
        box = [min(xs) - 10, min(ys) - 70, max(x1) - min(xs) + 20, max(y1) - min(ys) + 80]
        out_groups.append({"id": i, "title": title, "bounding": box, "color": color,
                           "font_size": 22, "flags": {}})
    ui["groups"] = out_groups
    ui["extra"] = {"ds": {"scale": ZOOM, "offset": [80, 120]}}
    for node in ui["nodes"]:
        if node["type"] == "MarkdownNote":
            node["widgets_values"] = [note]
    return ui


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188"
    if Path(url).is_file():  # a saved /object_info
        info = json.loads(Path(url).read_text())
    else:
        with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=60) as r:
            info = json.loads(r.read())
    files = {"Digits - default vs learned schedule.json": digits_default_vs_learned(info),
             "Digits - Learned Sampler (AdaGen).json": digits_adagen(info),
             "Shapes - default vs best fixed vs learned schedule.json":
                 shapes_default_best_learned(info)}
    real = {
        "SD3.5 - text to image with a learned schedule.json": (
            "SD3.5 Medium", [("1 · Model", [1, 2, 11], GROUP_COLORS["model"]),
                             ("2 · Prompt and noise", [3, 10, 4, 5], GROUP_COLORS["prompt"]),
                             ("3 · Learned schedule", [6, 8, 7], GROUP_COLORS["schedule"]),
                             ("4 · Sample and save", [9, 12, 13], GROUP_COLORS["result"])],
            "## SD3.5 with a learned schedule\n\n" + YOUR_MODEL.format(model="SD3.5") +
            "\n\nThe **Learned Schedule** node picks the sampler's sigmas for *this* prompt "
            "and *this* noise (one small policy call before sampling) and feeds them to "
            "SamplerCustomAdvanced.\n\n**Files** (ComfyUI/models/…):\n"
            "- diffusion_models/sd3.5_medium.safetensors\n"
            "- text_encoders/clip_l, clip_g, t5xxl_fp16\n- vae/sd3.5_vae.safetensors\n"
            "- learned_schedules/ — a policy trained for SD3 (train one with `python -m "
            "learned_schedules.training train --config training/configs/sd3_pickscore.json`)"
            "\n\nsteps = 0 uses the policy's own step count; another count resamples its "
            "schedule (the node says so). The seed is fixed: change it in \"Noise\"."),
        "SD3.5 - default vs learned schedule.json": (
            "SD3.5 Medium", [("1 · Model", [1, 2, 11], GROUP_COLORS["model"]),
                             ("2 · Prompt and noise", [3, 10, 4, 5], GROUP_COLORS["prompt"]),
                             ("3 · Schedules", [6, 8, 7, 20, 24], GROUP_COLORS["schedule"]),
                             ("4 · Learned (top) and default (bottom)", [9, 12, 13, 21, 22, 23],
                              GROUP_COLORS["result"]),
                             ("5 · The schedules side by side", [25], GROUP_COLORS["plot"]),
                             ("6 · Learned sigmas as text", [26], GROUP_COLORS["plot"])],
            "## Default vs learned schedule (SD3.5)\n\n" + YOUR_MODEL.format(model="SD3.5") +
            "\n\nSame prompt, same noise, same sampler: the top row samples with the "
            "**learned** schedule, the bottom row with ComfyUI's default (**simple**). "
            "**Compare Schedules** plots learned, simple and beta together; **Schedule to "
            "Text** shows the learned sigmas as numbers you can copy.\n\nFiles as in the "
            "\"SD3.5 - text to image\" example; put an SD3 policy in models/learned_schedules/."
            " Keep the steps of the Learned Schedule and of both BasicScheduler nodes equal."),
        "Flux dev - text to image with a learned schedule.json": (
            "Flux dev", [("1 · Model", [1, 2, 11], GROUP_COLORS["model"]),
                         ("2 · Prompt and noise", [3, 15, 4, 5], GROUP_COLORS["prompt"]),
                         ("3 · Learned schedule", [6, 8, 7], GROUP_COLORS["schedule"]),
                         ("4 · Sample and save", [9, 12, 13], GROUP_COLORS["result"])],
            "## Flux dev with a learned schedule\n\n" + YOUR_MODEL.format(model="Flux dev") +
            "\n\n**Files** (ComfyUI/models/…):\n- diffusion_models/flux1-dev.safetensors\n"
            "- text_encoders/clip_l.safetensors, t5xxl_fp16.safetensors\n"
            "- vae/ae.safetensors\n- learned_schedules/ — a policy trained for Flux dev "
            "(`python -m learned_schedules.training train --config "
            "training/configs/flux_dev_pickscore.json`)\n\nFlux dev takes no CFG: the "
            "guidance is set in FluxGuidance (3.5). steps = 0 uses the policy's own step "
            "count."),
    }
    wan = "Wan 2.2 - two experts with a learned schedule.json"
    ui = json.loads((OUT / wan).read_text())
    old = next(n["widgets_values"][0] for n in ui["nodes"] if n["type"] == "MarkdownNote")
    head, _, rest = old.partition("\n\n")
    if rest.startswith("**Needs your own"):  # written before: keep the rest only
        rest = rest.split("\n\n", 1)[1]
    files[wan] = relayout(ui, "Wan 2.2 A14B", [
        ("1 · Two experts and the text encoder", [1, 2, 5, 8], GROUP_COLORS["model"]),
        ("2 · Shift, prompt, size, noise", [3, 4, 6, 7, 9, 10], GROUP_COLORS["prompt"]),
        ("3 · Learned schedule and guiders", [11, 13, 14, 15], GROUP_COLORS["schedule"]),
        ("4 · Split at the boundary, sample twice", [12, 16, 17, 18, 19],
         GROUP_COLORS["sample"]),
        ("5 · Read me and the video", [21, 20], GROUP_COLORS["result"])],
        f"{head}\n\n" + YOUR_MODEL.format(model="Wan 2.2 A14B (both experts)") +
        f"\n\n{rest}", WAN_LAYOUT)
    for name, (model, groups, note) in real.items():
        ui = json.loads((OUT / name).read_text())
        files[name] = relayout(ui, model, groups, note)
    for name, ui in files.items():
        ui["extra"]["learned_schedules"] = {"description": DESCRIPTIONS[name[:-5]]}
        (OUT / name).write_text(json.dumps(ui, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
