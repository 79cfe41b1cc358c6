"""Registry-ready packaging: the runtime requirements.txt changes nothing in a user's ComfyUI
environment, the LICENSE is there, and [tool.comfy] names an icon that exists."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: A user's ComfyUI environment with other versions than our dev pins (torch 2.14.1 etc.).
USER_ENV = {"torch": "2.3.1", "transformers": "4.38.2", "numpy": "1.26.4",
            "safetensors": "0.4.5", "matplotlib": "3.7.5", "Pillow": "10.2.0",
            "torchvision": "0.18.1"}


def _fake_dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def test_runtime_requirements_change_nothing_in_a_user_env(tmp_path):
    """``pip install --dry-run`` of requirements.txt into an environment that already has other
    torch / transformers / numpy versions: nothing to install, upgrade or downgrade (offline:
    anything pip would have to fetch fails the test)."""
    env = tmp_path / "user_env"
    venv.EnvBuilder(with_pip=False).create(env)
    (site,) = env.glob("lib/python*/site-packages")
    for name, version in USER_ENV.items():
        _fake_dist(site, name, version)
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install",
         "--dry-run", "--no-index", "--report", str(report), "-r", str(REPO / "requirements.txt")],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    would_install = json.loads(report.read_text())["install"]
    assert would_install == [], [i["metadata"]["name"] for i in would_install]


def test_runtime_requirements_are_minimal():
    lines = [ln.split("#")[0].strip() for ln in (REPO / "requirements.txt").read_text()
             .splitlines()]
    names = {ln.split(">")[0].split("=")[0].split("<")[0].strip().lower() for ln in lines if ln}
    assert names == {"torch", "numpy", "safetensors", "matplotlib"}
    torch_line = next(ln for ln in lines if ln.lower().startswith("torch"))
    assert torch_line == "torch"  # unpinned: the nodes use ComfyUI's torch


def test_license_and_comfy_metadata():
    tomllib = pytest.importorskip("tomllib")
    text = (REPO / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a stub
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["license"]["text"] == "GPL-3.0-or-later"
    comfy = meta["tool"]["comfy"]
    icon = comfy["Icon"]  # a URL into this repository's main branch
    assert icon.startswith("https://") and (REPO / icon.split("/main/", 1)[1]).is_file()
    assert "ComfyUI" not in comfy["DisplayName"] and "comfyui" not in meta["project"]["name"]
    for pattern in comfy["includes"]:
        assert list(REPO.glob(pattern)), pattern


@pytest.mark.parametrize("folder", ["web/docs"])
def test_every_node_id_has_a_help_page(folder):
    import re

    ids = set()
    for path in (REPO / "nodes").glob("*.py"):
        ids |= set(re.findall(r'node_id="(LearnedSchedules_\w+)"', path.read_text()))
    assert len(ids) >= 6
    pages = {p.stem for p in (REPO / folder).glob("*.md")}
    assert ids <= pages, ids - pages
