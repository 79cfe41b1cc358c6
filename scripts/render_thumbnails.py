"""Render the templates' thumbnails (``example_workflows/<name>.jpg``) in the real frontend:
the digits and shapes examples run on the bundled models with the shipped policies (seed 42,
as a user runs them) and the thumbnail shows their results; the SD3.5 / Flux examples, which
need the user's own model, show their note and the Learned Schedule node instead of
random-model images. The shapes example's results are also written larger, as the README's
picture (``docs/images/shapes_side_by_side.png``).

    python scripts/render_thumbnails.py [--clip models/digits/digits_clip_l.safetensors]

Needs ComfyUI (``COMFYUI_PATH``, default ``.cache/comfyui``), Debian Chromium and
playwright-core (``scripts/setup.sh``), and the digits text encoder built once with
``scripts/digits/build_text_encoder.py``. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "models" / "digits"
SHAPES = REPO / "models" / "shapes"
PACK = "learned-schedules"
#: ComfyUI model folder -> the bundled files the examples load from it
FILES = {"diffusion_models": [DIGITS / "digits_mmdit.safetensors",
                              SHAPES / "shapes_mmdit.safetensors"],
         "vae": [DIGITS / "digits_vae.safetensors", SHAPES / "shapes_vae.safetensors"],
         "learned_schedules": [DIGITS / "digits_policy_L4.safetensors",
                               DIGITS / "digits_adagen_L3.safetensors",
                               SHAPES / "shapes_policy_L4.safetensors"]}
BUNDLED = ("Digits", "Shapes")  # the examples that run on the models above
#: example -> the README's picture of its results
PICTURES = {"Shapes - default vs best fixed vs learned schedule":
            REPO / "docs" / "images" / "shapes_side_by_side.png"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def banner(path: Path, model: str) -> None:
    """Write plainly on a thumbnail that the example needs the user's model and a policy."""
    from PIL import Image, ImageDraw, ImageFont

    with Image.open(path) as im:
        image = im.convert("RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=34)
    lines = [f"Needs your own {model} model", "and a policy trained for it"]
    draw.rectangle((0, 0, image.width, 110), fill=(32, 32, 32))
    for i, line in enumerate(lines):
        draw.text((24, 14 + 44 * i), line, fill=(250, 204, 21), font=font)
    image.save(path, quality=85)


def small_png(src: Path, dst: Path, colours: int = 128) -> None:
    """A screenshot as a small PNG (a palette of ``colours``; the images are flat-coloured)."""
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").quantize(colours, dither=Image.Dither.NONE).save(dst, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", type=Path, default=DIGITS / "digits_clip_l.safetensors",
                    help="the digits text encoder (scripts/digits/build_text_encoder.py)")
    ap.add_argument("--out", type=Path, default=REPO / "example_workflows")
    args = ap.parse_args()
    if not args.clip.is_file():
        sys.exit(f"{args.clip} is missing: run scripts/digits/build_text_encoder.py first.")
    comfy = Path(os.environ.get("COMFYUI_PATH", REPO / ".cache" / "comfyui"))
    base = Path(tempfile.mkdtemp(prefix="thumbnails_"))
    for folder, names in {**FILES, "text_encoders": []}.items():
        (base / "models" / folder).mkdir(parents=True)
        for path in names:
            os.symlink(path, base / "models" / folder / path.name)
    os.symlink(args.clip.resolve(), base / "models" / "text_encoders" / "digits_clip_l.safetensors")
    (base / "custom_nodes").mkdir()
    os.symlink(REPO, base / "custom_nodes" / PACK)
    port = _port()
    url = f"http://127.0.0.1:{port}"
    with open(base / "server.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
             "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
             "--disable-auto-launch"], cwd=comfy, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 180
            while True:
                try:
                    urllib.request.urlopen(url + "/object_info/RandomNoise", timeout=3)
                    break
                except OSError:
                    if server.poll() is not None or time.time() > deadline:
                        sys.exit(f"ComfyUI did not start: see {base / 'server.log'}")
                    time.sleep(1)
            stems = sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
            spec = {"module": PACK, "examples": stems,
                    "run": [s for s in stems if s.startswith(BUNDLED)],
                    "pictures": {k: str(base / f"{k}.png") for k in PICTURES},
                    "stand_ins": {"set": {}, "replace": {}}, "keep_seed": True,
                    "thumbnails_dir": str(args.out), "out_dir": str(base / "shots"),
                    "cases": [{"name": "classic", "vue": False, "full": False}]}
            (base / "spec.json").write_text(json.dumps(spec))
            proc = subprocess.run(["node", str(REPO / "tests" / "browser" / "run_ui.mjs"), url,
                                   str(base / "spec.json")], capture_output=True, text=True,
                                  timeout=1200, cwd=REPO)
            head = json.loads([ln for ln in proc.stdout.splitlines()
                               if ln.startswith("{")][-1])
            if not head.get("ok"):
                sys.exit(f"the browser run failed: {head.get('error')}")
            result = json.loads(Path(head["result_file"]).read_text())
            for stem, path in PICTURES.items():
                small_png(base / f"{stem}.png", path)
                print(f"{path}: picture of {stem}")
            for stem in stems:
                status = result["examples"][stem].get("status")
                if status is None:
                    banner(args.out / f"{stem}.jpg", stem.split(" - ")[0])
                    status = "not run: needs the user's model (banner added)"
                print(f"{args.out / (stem + '.jpg')}: {status}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
