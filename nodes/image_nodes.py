"""Distance to Reference: how close few-step images are to a many-step reference of the same
prompt and noise, written on the node (PSNR per image and its mean), so an example shows on the
canvas which schedule gets closer to what the model would draw with many steps."""

from __future__ import annotations

import torch
from comfy_api.latest import io

CATEGORY = "image/analysis"
MAX_SHOWN = 16


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, ``[N]``) of ComfyUI IMAGEs ``[N, H, W, C]`` in [0, 1] to their reference
    (one reference image serves the whole batch). ``ValueError`` for shapes that differ."""
    if not (torch.is_tensor(images) and torch.is_tensor(reference)) or images.ndim != 4 \
            or reference.ndim != 4:
        raise ValueError("Distance to Reference needs IMAGE inputs.")
    if images.shape[1:] != reference.shape[1:]:
        raise ValueError(f"The images are {tuple(images.shape[1:3])} pixels but the reference "
                         f"is {tuple(reference.shape[1:3])}: compare images of the same size "
                         "(score before any upscale).")
    if reference.shape[0] not in (1, images.shape[0]):
        raise ValueError(f"A batch of {images.shape[0]} images needs 1 or {images.shape[0]} "
                         f"references, got {reference.shape[0]}.")
    err = (images.float() - reference.float()).pow(2).flatten(1).mean(1)
    return -10.0 * torch.log10(err.clamp_min(1e-10))


def describe(scores: dict[str, torch.Tensor], reference_label: str) -> str:
    """The text on the node: first the summary (each row's mean PSNR and, for every later
    row, on how many images the first is closer), then the per-image numbers."""
    means = {label: float(s.mean()) for label, s in scores.items()}
    head = " vs ".join(f"{label} {m:.1f} dB" for label, m in means.items())
    lines = [f"{head} PSNR to the {reference_label} (higher = closer)."]
    (a, sa), *others = scores.items()
    for b, sb in others:
        if sa.shape == sb.shape:
            wins = int((sa > sb).sum())
            lines.append(f"{a} is closer than {b} on {wins} of {sa.numel()} images "
                         f"(mean {float((sa - sb).mean()):+.1f} dB).")
    for label, s in scores.items():
        shown = " ".join(f"{v:.1f}" for v in s[:MAX_SHOWN].tolist())
        lines.append(f"{label} per image: {shown}{' ...' if s.numel() > MAX_SHOWN else ''}")
    return "\n".join(lines)


class DistanceToReference(io.ComfyNode):
    """PSNR of one to three image batches to a reference batch, as text on the node."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LearnedSchedules_DistanceToReference",
            display_name="Distance to Reference",
            category=CATEGORY,
            description="Scores images against a reference of the same prompt and noise (PSNR "
                        "per image and its mean) and shows the numbers on the node.",
            inputs=[
                io.Image.Input("reference", tooltip="The reference images (e.g. the same "
                               "prompt and noise sampled with many steps); one image or one "
                               "per image of the batches below."),
                io.Image.Input("images_1", tooltip="The images to score (e.g. the learned "
                               "schedule's), the same size as the reference."),
                io.Image.Input("images_2", optional=True,
                               tooltip="A second batch to score (e.g. the default "
                                       "schedule's), the same size."),
                io.Image.Input("images_3", optional=True,
                               tooltip="A third batch to score (e.g. a fixed schedule's), "
                                       "the same size."),
                io.String.Input("labels", default="learned, default",
                                tooltip="Names of images_1, images_2 and images_3, separated "
                                        "by commas."),
                io.String.Input("reference_label", default="30-step reference",
                                tooltip="What the reference is, for the text."),
            ],
            outputs=[io.String.Output(tooltip="The same text as on the node.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, reference, images_1, images_2=None, images_3=None,
                labels: str = "learned, default",
                reference_label: str = "30-step reference") -> io.NodeOutput:
        names = [n.strip() for n in labels.split(",")]
        scores = {}
        for i, images in enumerate((images_1, images_2, images_3)):
            if images is None:
                continue
            name = names[i] if i < len(names) and names[i] else f"images_{i + 1}"
            scores[f"{name} ({i + 1})" if name in scores else name] = psnr(images, reference)
        text = describe(scores, reference_label.strip() or "reference")
        return io.NodeOutput(text, ui={"text": [text]})


NODES = [DistanceToReference]
