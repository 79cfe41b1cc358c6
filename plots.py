"""Plot rendering, in one place for the nodes and the trainer (matplotlib / PIL, no ComfyUI).

Schedule plots in the paper's style (step on x, timestep on y, a KDE of timesteps on the
right), and image grids with each image's schedule drawn in its corner (the paper's Fig. 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def plain_text(label: str) -> str:
    """A user-given label drawn as written: matplotlib would read ``$...$`` as math (and
    raise on bad math syntax), so dollar signs are escaped."""
    return str(label).replace("$", r"\$")


def timestep_kde(values: np.ndarray, grid: np.ndarray, bandwidth: float | None = None
                 ) -> np.ndarray:
    """Gaussian KDE of timestep values on ``grid`` (Silverman bandwidth by default)."""
    values = np.asarray(values, dtype=float).ravel()
    if values.size == 0:
        return np.zeros_like(grid)
    if bandwidth is None:
        std = values.std() if values.size > 1 else 0.1
        bandwidth = max(1.06 * std * values.size ** (-1 / 5), 0.02)
    z = (grid[:, None] - values[None, :]) / bandwidth
    return np.exp(-0.5 * z**2).sum(1) / (values.size * bandwidth * np.sqrt(2 * np.pi))


def plot_schedules(path: str | Path, comparators: dict[str, torch.Tensor],
                   instances: torch.Tensor | None = None, title: str = "",
                   max_instances: int = 24) -> Path:
    """Save a PNG of schedules.

    ``comparators``: name -> one schedule ``[L+1]`` (drawn as a line with markers).
    ``instances``: optional per-instance learned schedules ``[N, L+1]`` (thin lines; their
    timesteps feed the KDE strip on the right).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, kde_ax) = plt.subplots(1, 2, figsize=(7.5, 4.2), sharey=True,
                                     gridspec_kw={"width_ratios": [5, 1], "wspace": 0.05})
    if instances is not None and len(instances):
        inst = instances.detach().cpu().numpy()
        steps = np.arange(inst.shape[-1])
        for row in inst[:max_instances]:
            ax.plot(steps, row, color="#1f77b4", alpha=0.25, lw=0.8)
        ax.plot(steps, inst.mean(0), color="#1f77b4", lw=2.2, label="learned (per instance)")
        grid = np.linspace(0, 1, 200)
        kde = timestep_kde(inst[:, :-1], grid)
        kde_ax.fill_betweenx(grid, 0, kde, color="#1f77b4", alpha=0.35)
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1))]
    colors = ["#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f"]
    for i, (name, sched) in enumerate(comparators.items()):
        s = sched.detach().cpu().numpy().ravel()
        ax.plot(np.arange(s.size), s, linestyle=styles[i % len(styles)], marker="o", ms=3,
                lw=1.4, label=plain_text(name), color=colors[i % len(colors)])
    ax.set_xlabel("step")
    ax.set_ylabel("timestep t (= sigma for flow models)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    if title:
        ax.set_title(plain_text(title), fontsize=10)
    kde_ax.set_xlabel("density")
    kde_ax.set_xticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def render_schedules_rgb(curves: dict[str, torch.Tensor], width: int = 640,
                         height: int = 400) -> np.ndarray:
    """Render schedules (first solid, others dashed) to an ``[H, W, 3]`` uint8 array."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax, kde_ax = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [6, 1],
                                                               "wspace": 0.05})
    top = max(float(c.max()) for c in curves.values())
    for i, (name, sched) in enumerate(curves.items()):
        s = sched.detach().cpu().float().numpy().ravel()
        ax.plot(np.arange(s.size), s, "-" if i == 0 else "--", marker="o", ms=3,
                label=plain_text(name))
        if i == 0:
            grid = np.linspace(0, top, 200)
            kde_ax.fill_betweenx(grid, 0, timestep_kde(s[:-1] / max(top, 1e-12),
                                                       grid / max(top, 1e-12)), alpha=0.4)
    ax.set_xlabel("step")
    ax.set_ylabel("sigma")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    kde_ax.set_xticks([])
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# ---------------------------------------------------------------------------------------------
# Sigma comparison plots for the ComfyUI nodes (Compare Schedules, Preview Sigmas).
# Kept as one block at the end of the file: several schedules on shared axes, their step counts
# aligned, the legend outside the axes so it never covers a curve.
# ---------------------------------------------------------------------------------------------

COMPARE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                  "#e377c2", "#7f7f7f")
COMPARE_STYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 1)),
                  (0, (6, 2, 1, 2)))
X_AXES = ("fraction", "step")


def aligned_steps(n_points: int, x_axis: str = "fraction") -> np.ndarray:
    """x positions of a schedule's ``n_points`` sigmas: ``step / steps`` (``fraction``, so
    schedules of different step counts share one axis from 0 to 1) or the step index."""
    if x_axis not in X_AXES:
        raise ValueError(f"x_axis must be one of {X_AXES}, got {x_axis!r}.")
    if n_points < 2:
        raise ValueError("A schedule needs at least two sigmas.")
    steps = np.arange(n_points, dtype=float)
    return steps / (n_points - 1) if x_axis == "fraction" else steps


def legend_label(name: str, steps: int, width: int = 26) -> str:
    """A legend entry wrapped to ``width`` characters a line, so the legend beside the axes
    stays inside the picture however long a policy's name is."""
    import textwrap

    return "\n".join(textwrap.wrap(plain_text(f"{name} ({steps} steps)"), width,
                                    break_long_words=True)) or " "


def render_sigma_comparison(curves: dict[str, torch.Tensor], *, x_axis: str = "fraction",
                            normalize: bool = False, title: str = "", width: int = 768,
                            height: int = 448) -> np.ndarray:
    """Several schedules on one plot, as an ``[H, W, 3]`` uint8 array.

    ``curves``: legend name -> SIGMAS (1-D). ``x_axis``: see :func:`aligned_steps`.
    ``normalize`` divides each schedule by its first sigma (compares shapes across model
    families whose sigma ranges differ). Each curve has its own colour, line style and marker
    (equal curves stay distinguishable), the legend sits to the right of the axes (long names
    wrapped, inside the picture), and both axes have titles.
    """
    if not curves:
        raise ValueError("Nothing to plot: connect at least one SIGMAS input.")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.09, 0.13, 0.60, 0.78 if title else 0.83))
    markers = "osD^v<>p"
    for i, (name, sched) in enumerate(curves.items()):
        s = torch.as_tensor(sched).detach().cpu().double().flatten().numpy()
        if normalize and s[0] > 0:
            s = s / s[0]
        x = aligned_steps(s.size, x_axis)
        ax.plot(x, s, linestyle=COMPARE_STYLES[i % len(COMPARE_STYLES)],
                color=COMPARE_COLORS[i % len(COMPARE_COLORS)], marker=markers[i % len(markers)],
                ms=max(2.0, 5.0 - 0.1 * s.size), lw=1.8 if i == 0 else 1.4,
                label=legend_label(name, s.size - 1), zorder=3 + len(curves) - i)
    ax.set_xlabel("fraction of sampling (step / steps)" if x_axis == "fraction" else "step")
    ax.set_ylabel("sigma / first sigma" if normalize else "sigma")
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.legend(loc="upper left", bbox_to_anchor=(1.03, 1.0), fontsize=9, frameon=False,
              borderaxespad=0.0)
    if title:
        ax.set_title(plain_text(title), fontsize=10)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def plot_inset(img: Image.Image, sigmas: torch.Tensor, colour: tuple[int, int, int]) -> None:
    """Draw the schedule (sigma against step) in the image's lower-left corner."""
    w, h = img.size
    box_w, box_h = max(40, w // 3), max(30, h // 4)
    x0, y0 = 4, h - box_h - 4
    draw = ImageDraw.Draw(img, "RGBA")
    draw.rectangle([x0, y0, x0 + box_w, y0 + box_h], fill=(255, 255, 255, 200),
                   outline=(0, 0, 0, 255))
    s = sigmas.double().cpu()
    top = float(s.max()) or 1.0
    pts = [(x0 + 3 + (box_w - 6) * i / max(len(s) - 1, 1),
            y0 + 3 + (box_h - 6) * (1 - float(v) / top)) for i, v in enumerate(s)]
    draw.line(pts, fill=(*colour, 255), width=2)
    for x, y in pts:
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(*colour, 255))


def to_pil(image: torch.Tensor) -> Image.Image:
    """One ComfyUI IMAGE ``[H, W, 3]`` in [0, 1] -> a PIL image."""
    arr = (image.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr)


def image_grid(rows: list[tuple[str, torch.Tensor, torch.Tensor]], max_side: int = 256,
               min_side: int = 128) -> Image.Image:
    """Rows of images ``[N, H, W, 3]`` (videos ``[N, F, H, W, 3]``: their middle frame) with
    their sigmas ``[N, L+1]`` (or one ``[L+1]``) plotted in the corner; each row gets a label
    on its left. Large images are shrunk to ``max_side``; small ones (the 32x32 digits) are
    enlarged to ``min_side`` with nearest pixels, so the schedule inset covers only a
    corner."""
    colours = [(90, 90, 90), (220, 60, 40), (40, 110, 220), (40, 160, 80)]
    rows = [(label, images[:, images.shape[1] // 2] if images.ndim == 5 else images, sigmas)
            for label, images, sigmas in rows]
    n = rows[0][1].shape[0]
    h, w = rows[0][1].shape[1:3]
    scale = min(1.0, max_side / max(h, w))
    if max(h, w) < min_side:
        scale = float(-(-min_side // max(h, w)))  # a whole factor: crisp pixels
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BICUBIC
    cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
    label_w = 110
    grid = Image.new("RGB", (label_w + n * (cw + 4), len(rows) * (ch + 4)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (label, images, sigmas) in enumerate(rows):
        y = r * (ch + 4)
        draw.text((4, y + ch // 2 - 6), label[:18], fill=(0, 0, 0))
        for i in range(n):
            tile = to_pil(images[i]).resize((cw, ch), resample)
            plot_inset(tile, sigmas[i] if sigmas.ndim == 2 else sigmas,
                       colours[r % len(colours)])
            grid.paste(tile, (label_w + i * (cw + 4), y))
    return grid
