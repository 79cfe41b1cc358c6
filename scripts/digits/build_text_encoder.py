"""Write the digits model's text encoder: a random full-size CLIP-L (123M parameters, fp16,
~250 MB, too large to commit), bit-identical for a seed, that ComfyUI's stock ``CLIPLoader``
(type ``sd3``) loads. Run it once before opening the digits workflow:

    python scripts/digits/build_text_encoder.py [--out PATH]
    # then link/copy the file into ComfyUI/models/text_encoders/

Stock CLIPLoader sizes CLIP-L from its own config (768 wide, 12 layers), so a smaller CLIP-L
file would not load there; the weights are random, yet "a handwritten digit 3" and "... 7" get
distinct embeddings (the digit token and every later position differ), which is all the
diffusion model needs. Prints the file's SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from digits_lib import CLIP_FILE, build_text_encoder, setup_comfy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=CLIP_FILE)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    setup_comfy()
    path = build_text_encoder(args.out, args.seed)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"{path} sha256 {digest}")


if __name__ == "__main__":
    main()
