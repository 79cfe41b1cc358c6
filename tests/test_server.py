"""Server level: the real ComfyUI server loads the pack, lists the nodes, runs an example
workflow (with tiny models swapped in) and reports errors; stopped by its PID.

Only 127.0.0.1 is contacted; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from comfy_env import REPO, build_clip_l, build_tiny_sd3, comfyui_path, import_comfy

EXAMPLES = REPO / "example_workflows"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url: str, payload: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def tiny_sd3_graph(name: str, policy: str = "sd3_test.safetensors") -> dict:
    """An example workflow with the tiny models swapped in (no VAE: latents are saved)."""
    original = json.loads((EXAMPLES / name).read_text())
    graph = {}
    for nid, node in original.items():
        node = json.loads(json.dumps(node))
        kind = node["class_type"]
        if kind in ("VAELoader", "VAEDecode"):
            continue
        if kind == "SaveImage":  # save the sampler's latent that the VAE decoded
            decode = original[node["inputs"]["images"][0]]
            node = {"class_type": "SaveLatent",
                    "inputs": {"samples": decode["inputs"]["samples"], "filename_prefix": "t"}}
        elif kind == "UNETLoader":
            node["inputs"]["unet_name"] = "sd3_tiny.safetensors"
        elif kind == "TripleCLIPLoader":
            node = {"class_type": "CLIPLoader",
                    "inputs": {"clip_name": "clip_l.safetensors", "type": "sd3"}}
        elif kind == "EmptySD3LatentImage":
            node["inputs"].update(width=128, height=128)
        elif kind == "LearnedSchedules_LearnedSchedule":
            node["inputs"]["policy"] = policy
        graph[nid] = node
    return graph


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("server_base")
    import_comfy(base)  # only to build the tiny models with ComfyUI's classes
    models = base / "models"
    for sub in ("diffusion_models", "text_encoders", "learned_schedules"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    build_tiny_sd3(models / "diffusion_models" / "sd3_tiny.safetensors")
    build_clip_l(models / "text_encoders" / "clip_l.safetensors")
    from test_nodes_sd3 import _sd3_policy

    from learned_schedules.policies.policy_file import save_policy

    save_policy(models / "learned_schedules" / "sd3_test.safetensors", _sd3_policy(0),
                method="dirichlet-reinforce", model_family="sd3")
    save_policy(models / "learned_schedules" / "flux_test.safetensors", _sd3_policy(1),
                method="dirichlet-reinforce", model_family="flux-dev")
    (base / "custom_nodes").mkdir()
    os.symlink(REPO, base / "custom_nodes" / "learned-schedules")
    port = _free_port()
    log = open(base / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
         "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
         "--disable-auto-launch"],
        cwd=comfyui_path(), stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            _get(url + "/object_info/RandomNoise", timeout=3)
            break
        except Exception:
            if proc.poll() is not None:
                break
            time.sleep(1)
    else:
        proc.kill()
    if proc.poll() is not None:
        log.close()
        pytest.fail("ComfyUI server did not start:\n" + (base / "server.log").read_text()[-3000:])
    yield {"url": url, "base": base, "proc": proc}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _run(server, graph, timeout=180) -> dict:
    status, body = _post(server["url"] + "/prompt", {"prompt": graph, "client_id": "pytest"})
    assert status == 200, body
    pid = body["prompt_id"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        hist = _get(f"{server['url']}/history/{pid}")
        if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
            if hist[pid]["status"].get("status_str") in ("success", "error"):
                return hist[pid]
        time.sleep(0.5)
    pytest.fail("the prompt did not finish in time")


def test_object_info_lists_our_nodes(server):
    info = _get(server["url"] + "/object_info")
    node = info["LearnedSchedules_LearnedSchedule"]
    assert node["display_name"] == "Learned Schedule"
    assert node["category"] == "sampling/custom_sampling/schedulers"
    required = node["input"]["required"]
    assert set(required) == {"model", "positive", "noise", "latent_image", "policy", "steps",
                             "mode", "denoise"}
    assert "sd3_test.safetensors" in json.dumps(required["policy"])
    for nid in ("LearnedSchedules_SchedulePlot", "LearnedSchedules_ScheduleToText",
                "LearnedSchedules_TextToSchedule"):
        assert nid in info
    assert any("learned_schedules.js" in e for e in _get(server["url"] + "/extensions"))


@pytest.mark.parametrize("name", ["sd3_learned_schedule_api.json",
                                  "sd3_compare_default_vs_learned_api.json"])
def test_example_workflow_runs(server, name):
    graph = tiny_sd3_graph(name)
    result = _run(server, graph)
    assert result["status"]["status_str"] == "success", result["status"]
    outputs = result["outputs"]
    sched_id = next(k for k, v in graph.items()
                    if v["class_type"] == "LearnedSchedules_LearnedSchedule")
    payload = outputs[sched_id]["learned_schedule"][0]
    sig = torch.tensor(payload["sigmas"])
    assert float(sig[0]) == pytest.approx(1.0) and float(sig[-1]) == 0.0
    assert torch.all(sig[:-1] > sig[1:])
    plot_id = next(k for k, v in graph.items() if v["class_type"] == "PreviewImage")
    assert outputs[plot_id]["images"]
    saved = list((server["base"] / "output").rglob("*.latent"))
    assert saved


def test_broken_workflows_report_errors(server):
    graph = tiny_sd3_graph("sd3_learned_schedule_api.json", policy="missing.safetensors")
    status, body = _post(server["url"] + "/prompt", {"prompt": graph})
    assert status == 400 and body.get("node_errors"), body
    wrong = tiny_sd3_graph("sd3_learned_schedule_api.json", policy="flux_test.safetensors")
    result = _run(server, wrong)
    assert result["status"]["status_str"] == "error"
    assert "trained for flux-dev" in json.dumps(result["status"]["messages"])
    # the server keeps running
    assert _get(server["url"] + "/object_info/RandomNoise")
    assert server["proc"].poll() is None


def test_examples_are_valid_json_graphs():
    for path in EXAMPLES.glob("*.json"):
        graph = json.loads(path.read_text())
        assert any(v["class_type"] == "LearnedSchedules_LearnedSchedule" for v in graph.values())
        for node in graph.values():
            for value in node["inputs"].values():
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                    assert value[0] in graph, (path.name, value)



def test_browser_draws_the_schedule_plot(server, tmp_path):
    """Headless Chromium: load the example in the real frontend, run it, check the canvas."""
    import shutil

    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    if not Path(chromium).exists() or shutil.which("node") is None or \
            not (REPO / "node_modules" / "playwright-core").exists():
        pytest.skip("Chromium, node or playwright-core missing: run scripts/setup.sh")
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(tiny_sd3_graph("sd3_learned_schedule_api.json")))
    out_dir = REPO / "test-output"
    out_dir.mkdir(exist_ok=True)
    shot = out_dir / "learned_schedule_node.png"
    proc = subprocess.run(["node", str(REPO / "tests" / "browser" / "run_ui.mjs"),
                           server["url"], str(graph), str(shot)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(lines[-1])
    assert result["ok"], result.get("error")
    assert result["width"] > 50 and result["height"] > 50
    assert result["curve"] > 30, result  # pixels of the learned curve's colour
    assert result["sigmas"][-1] == 0.0
    assert shot.exists() and shot.stat().st_size > 10_000
