"""Server level: the real ComfyUI server loads the pack, lists the nodes, runs the UI-format
example workflows (converted as the frontend does, tiny models swapped in), reports errors in
plain sentences, shows a friendly message when no policy is installed, and (opt-in) lists the
named schedulers; the browser test drives the real frontend. Servers are stopped by PID.

Only 127.0.0.1 is contacted; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
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

import comfy_env
from comfy_env import REPO, build_clip_l, build_tiny_sd3, build_tiny_vae, digits_clip, import_comfy
from ui_workflow import TINY_SD3, apply_stand_ins, examples, ui_to_api

PACK = "learned-schedules"  # the folder name under custom_nodes/ (the templates' module)
CALIBRATE = "LearnedSchedules_CalibrateSchedule"
# Flux and Wan 2.2 (two 14B experts) have no tiny stand-ins here; the browser test opens them
SD3_EXAMPLES = [p for p in examples() if not any(k in p.name for k in ("Flux", "Wan"))]
# the browser test reloads and re-runs the first one run: one with a Learned Schedule
RUN_ORDER = sorted(SD3_EXAMPLES, key=lambda p: "LearnedSchedules_LearnedSchedule\"" not in
                   p.read_text())
# the browser runs these; the calibrate example is only opened there (template, thumbnail,
# conversion): its run costs ~30 s a case and its plot is the Learned Schedule's (checked once
# in both renderers when it was added; its run is tested by test_example_workflow_runs)
BROWSER_RUN = [p for p in RUN_ORDER if CALIBRATE not in p.read_text()]
# one sampler, one output: a bad Learned Schedule leaves nothing to run (HTTP 400)
SD3_SINGLE = next(p for p in SD3_EXAMPLES if "text to image" in p.name)
ADAGEN = "Digits - Learned Sampler (AdaGen)"
# the examples that run out of the box on a model the pack ships
BUNDLED = ("Digits", "Shapes")


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


STEPWISE = "sd3_step_test.safetensors"


def _stepwise_policy():
    from learned_schedules.policies.latent_encoder import LatentTextEncoder
    from learned_schedules.policies.stepwise import StepPolicy

    torch.manual_seed(3)
    enc = LatentTextEncoder(latent_channels=16, token_dim=4096, pooled_dim=2048, width=32,
                            levels=2, heads=2, grid=2)
    return StepPolicy(enc, 3, hidden=16)


def prepare_base(base: Path, policies: bool = True) -> Path:
    """A ComfyUI base directory: tiny models, the pack under custom_nodes/, and (optionally)
    test policies, one of them with a global schedule for the named scheduler."""
    import_comfy(base)  # only to build the tiny models with ComfyUI's classes
    models = base / "models"
    for sub in ("diffusion_models", "text_encoders", "vae", "learned_schedules"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    build_tiny_sd3(models / "diffusion_models" / "sd3_tiny.safetensors")
    build_clip_l(models / "text_encoders" / "clip_l.safetensors")
    build_tiny_vae(models / "vae" / "tiny_vae.safetensors")
    if policies:
        from test_nodes_sd3 import _sd3_policy

        from learned_schedules.policies.policy_file import save_policy

        pol = models / "learned_schedules"
        save_policy(pol / "sd3_test.safetensors", _sd3_policy(0), method="dirichlet-reinforce",
                    model_family="sd3", extra={"global_schedule": [1.0, 0.8, 0.55, 0.3, 0.0]})
        save_policy(pol / "flux_test.safetensors", _sd3_policy(1),
                    method="dirichlet-reinforce", model_family="flux-dev")
        # a step-wise (AdaGen) policy: listed by the Learned Sampler only, never a named
        # scheduler even with a global schedule
        save_policy(pol / STEPWISE, _stepwise_policy(), method="adagen", model_family="sd3",
                    extra={"global_schedule": [1.0, 0.7, 0.3, 0.0]})
    (base / "custom_nodes").mkdir(exist_ok=True)
    link = base / "custom_nodes" / PACK
    if not link.exists():
        os.symlink(REPO, link)
    return base


def start_server(base: Path, port: int | None = None, env: dict | None = None,
                 args: tuple[str, ...] = (), log_name: str = "server.log") -> dict:
    return wait_ready(launch_server(base, port, env, args, log_name))


def launch_server(base: Path, port: int | None = None, env: dict | None = None,
                  args: tuple[str, ...] = (), log_name: str = "server.log") -> dict:
    """A ComfyUI server process started, not yet waited for (:func:`wait_ready`)."""
    port = port or _free_port()
    log = open(base / log_name, "w")
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
         "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
         "--disable-auto-launch", *args],
        cwd=comfy_env.comfyui_path(), stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    return {"url": f"http://127.0.0.1:{port}", "base": base, "proc": proc, "log": log,
            "log_name": log_name}


def wait_ready(server: dict) -> dict:
    """The launched server once it answers (its log's end in the error if it stopped)."""
    url, proc, log, base, log_name = (server[k] for k in ("url", "proc", "log", "base",
                                                           "log_name"))
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
        raise RuntimeError("ComfyUI server did not start:\n"
                           + (base / log_name).read_text()[-3000:])
    return server


def stop_server(server: dict) -> None:
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    server["log"].close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The module's server; beside it, on the same base, the newest frontend's (``newest``:
    None without that frontend or a browser), which boots while the tests before the browser
    test run."""
    base = prepare_base(tmp_path_factory.mktemp("server_base"))
    main = launch_server(base, env={"LEARNED_SCHEDULES_NAMED_SCHEDULERS": "1"})
    newest = _launch_newest_frontend(base)
    try:
        srv = wait_ready(main)
        srv["object_info"] = _get(srv["url"] + "/object_info")
        srv["newest"] = newest
        yield srv
    finally:
        for one in (main, newest):
            if one is not None and one["proc"].poll() is None:
                stop_server(one)


def _run(server, graph, timeout=240) -> dict:
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


def tiny_graph(server, path: Path, **policy) -> dict:
    graph = apply_stand_ins(ui_to_api(json.loads(path.read_text()), server["object_info"]))
    for node in graph.values():
        if node["class_type"] == "LearnedSchedules_LearnedSchedule":
            node["inputs"].update(policy)
    return graph


def test_object_info_lists_our_nodes(server):
    info = server["object_info"]
    node = info["LearnedSchedules_LearnedSchedule"]
    assert node["display_name"] == "Learned Schedule"
    assert node["category"] == "sampling/custom_sampling/schedulers"
    required = node["input"]["required"]
    assert set(required) == {"model", "positive", "noise", "latent_image", "policy", "steps",
                             "mode", "denoise"}
    assert "sd3_test.safetensors" in json.dumps(required["policy"])
    # each node lists the policies it can use: no step-wise one in the one-shot node
    assert STEPWISE not in json.dumps(required["policy"])
    sampler = info["LearnedSchedules_LearnedSampler"]["input"]["required"]["policy"]
    assert STEPWISE in json.dumps(sampler) and "sd3_test.safetensors" in json.dumps(sampler)
    for nid in ("LearnedSchedules_SchedulePlot", "LearnedSchedules_ScheduleToText",
                "LearnedSchedules_TextToSchedule"):
        assert nid in info
    for nid in ("LearnedSchedules_CompareSchedules", "LearnedSchedules_PreviewSigmas"):
        assert info[nid]["category"] == "sampling/custom_sampling/sigmas"
        assert info[nid]["output_node"] is True
    assert info["LearnedSchedules_ScheduleToText"]["output_node"] is True
    assert any("learned_schedules.js" in e for e in _get(server["url"] + "/extensions"))


def test_every_node_has_a_help_page_and_tooltips(server):
    import re

    ours = {k: v for k, v in server["object_info"].items() if k.startswith("LearnedSchedules_")}
    declared = set()  # every node id the pack declares is served (and nothing else)
    for path in (REPO / "nodes").glob("*.py"):
        declared |= set(re.findall(r'node_id="(LearnedSchedules_\w+)"', path.read_text()))
    assert set(ours) == declared and len(ours) >= 7
    for nid, spec in ours.items():
        page = REPO / "web" / "docs" / nid / "en.md"
        assert page.is_file() and spec["display_name"] in page.read_text(), nid
        # served where the frontend asks first (<node>/<locale>.md: no 404) and as the
        # fallback for other locales (<node>.md)
        for path in (f"{nid}/en.md", f"{nid}.md"):
            with urllib.request.urlopen(f"{server['url']}/extensions/{PACK}/docs/{path}",
                                        timeout=10) as r:
                assert r.status == 200 and spec["display_name"] in r.read().decode(), path
        assert spec["description"]
        for section in ("required", "optional"):
            for name, entry in (spec["input"].get(section) or {}).items():
                assert (entry[1] if len(entry) > 1 else {}).get("tooltip"), (nid, name)


def test_templates_are_listed_with_thumbnails(server):
    listed = _get(server["url"] + "/workflow_templates")[PACK]
    assert sorted(listed) == sorted(p.stem for p in examples())
    assert len(listed) >= 3
    for name in listed:
        quoted = urllib.request.quote(name)
        ui = _get(f"{server['url']}/api/workflow_templates/{PACK}/{quoted}.json")
        assert isinstance(ui.get("version"), (int, float)) and ui["nodes"] and "links" in ui
        with urllib.request.urlopen(
                f"{server['url']}/api/workflow_templates/{PACK}/{quoted}.jpg", timeout=10) as r:
            assert r.headers["Content-Type"] == "image/jpeg" and len(r.read()) > 5_000


def test_examples_are_human_made_ui_graphs(server):
    for path in examples():
        ui = json.loads(path.read_text())
        # readable when opened: above the frontend's default level-of-detail zoom (its
        # MinFontSizeForLOD 8 px over a 14 px node font), grouped, with a one-sentence
        # description that is not the title
        assert ui["extra"]["ds"]["scale"] >= 8 / 14 + 0.05, path.name
        assert len(ui["groups"]) >= 3 and all(g["title"] for g in ui["groups"]), path.name
        text = ui["extra"]["learned_schedules"]["description"]
        assert text.count(". ") == 0 and text.endswith(".") and len(text) > 60, path.name
        if not path.name.startswith(BUNDLED):  # says plainly what the user must bring
            notes = " ".join(n["widgets_values"][0] for n in ui["nodes"]
                             if n["type"] == "MarkdownNote")
            assert "Needs your own" in notes and "needs your own" in text, path.name
        types = [n["type"] for n in ui["nodes"]]
        assert {"LearnedSchedules_LearnedSchedule", "LearnedSchedules_LearnedSampler",
                CALIBRATE} & set(types), path.name
        assert any(t in ("Note", "MarkdownNote") for t in types), path.name  # explains setup
        ids = {n["id"] for n in ui["nodes"]}
        for link in ui["links"]:
            assert link[1] in ids and link[3] in ids, (path.name, link)
        for node in ui["nodes"]:
            assert len(node["pos"]) == 2 and node.get("size"), (path.name, node["id"])
            if node["type"] == "RandomNoise":
                assert node["widgets_values"][1] == "fixed", path.name  # a fixed seed
        prompt = ui_to_api(ui, server["object_info"])
        assert all(v["class_type"] in server["object_info"] for v in prompt.values())


@pytest.mark.parametrize("path", SD3_EXAMPLES, ids=lambda p: p.stem)
def test_example_workflow_runs(server, path):
    graph = tiny_graph(server, path)
    result = _run(server, graph)
    assert result["status"]["status_str"] == "success", result["status"]
    outputs = result["outputs"]
    sched_id = next((k for k, v in graph.items()
                     if v["class_type"] == "LearnedSchedules_LearnedSchedule"), None)
    if sched_id is not None:
        payload = outputs[sched_id]["learned_schedule"][0]
        sig = torch.tensor(payload["sigmas"])
        assert float(sig[0]) == pytest.approx(1.0) and float(sig[-1]) == 0.0
        assert torch.all(sig[:-1] > sig[1:])
        assert payload["policy"] == "sd3_test.safetensors" and payload["family"] == "sd3"
        assert payload["trained_steps"] == 4
        steps = graph[sched_id]["inputs"]["steps"]
        if steps not in (0, 4):
            assert payload["resampling"] == f"resampled from 4 to {steps} steps"
        batch = next(v["inputs"]["batch_size"] for v in graph.values()
                     if v["class_type"] == "EmptySD3LatentImage")
        assert payload["notice"].startswith(f"Batch of {batch}: ") if batch > 1 \
            else payload["notice"] == ""
    elif (cal_id := next((k for k, v in graph.items() if v["class_type"] == CALIBRATE),
                         None)) is not None:
        payload = outputs[cal_id]["learned_schedule"][0]
        sig = torch.tensor(payload["sigmas"])
        assert len(sig) == graph[cal_id]["inputs"]["steps"] + 1 and float(sig[-1]) == 0.0
        assert torch.all(sig[:-1] > sig[1:]) and "calibrated" in payload["summary"]
        assert (server["base"] / "models" / "learned_schedules" / payload["policy"]).is_file()
    else:  # a Learned Sampler example (its plot is checked by the browser test)
        assert any(v["class_type"] == "LearnedSchedules_LearnedSampler" for v in graph.values())
    saved = [k for k, v in graph.items() if v["class_type"] in ("SaveImage", "PreviewImage")]
    assert saved and all(outputs[k]["images"] for k in saved)
    for k, v in graph.items():
        if v["class_type"] in ("LearnedSchedules_CompareSchedules",
                               "LearnedSchedules_PreviewSigmas"):
            curves = outputs[k]["compare_schedules"][0]["curves"]
            assert curves and all(len(c["sigmas"]) >= 2 for c in curves), v["class_type"]
        if v["class_type"] == "LearnedSchedules_DistanceToReference":
            # each row's PSNR to the 30-step reference (a tiny random model: no ranking)
            text = outputs[k]["text"][0]
            assert "PSNR to the 30-step reference" in text and " of " in text, text
        if v["class_type"] == "LearnedSchedules_ScheduleToText":
            assert outputs[k]["text"][0].startswith("1")


def _error_of(server, graph) -> str:
    """The message of a run that fails in execution (what the frontend's dialog shows)."""
    result = _run(server, graph)
    assert result["status"]["status_str"] == "error", result["status"]
    (err,) = [m[1] for m in result["status"]["messages"] if m[0] == "execution_error"]
    assert "Traceback" not in err["exception_message"]
    return err["exception_message"]


def test_broken_workflows_report_errors(server):
    """A policy that cannot be used stops the run with one plain sentence from execute (the
    frontend shows execution errors in a dialog, also when another branch could run; a
    validation error would only outline the node), naming the file to install."""
    sd3 = SD3_SINGLE
    message = _error_of(server, tiny_graph(server, sd3, policy="missing.safetensors"))
    assert "missing.safetensors is not in ComfyUI/models/learned_schedules/" in message
    assert "sd3_test.safetensors" in message  # what is installed
    # a starter the pack ships: which file to copy from where
    message = _error_of(server, tiny_graph(server, sd3, policy="digits_policy_L4.safetensors"))
    assert "copy models/digits/digits_policy_L4.safetensors" in message
    # a step-wise policy in the one-shot node: where it belongs
    message = _error_of(server, tiny_graph(server, sd3, policy=STEPWISE))
    assert "step-wise" in message and "Learned Sampler" in message
    # ComfyUI's own range check still runs on the other inputs
    graph = tiny_graph(server, sd3, steps=5000)
    status, body = _post(server["url"] + "/prompt", {"prompt": graph})
    assert status == 400 and "steps" in json.dumps(body.get("node_errors")), body
    assert "trained for flux-dev" in _error_of(server, tiny_graph(
        server, sd3, policy="flux_test.safetensors"))
    # the server keeps running
    assert _get(server["url"] + "/object_info/RandomNoise")
    assert server["proc"].poll() is None


def test_named_scheduler_in_core_nodes(server):
    """Opted in: ``learned:<policy>`` is in KSampler's and BasicScheduler's lists, after every
    core name, and a core KSampler graph runs with it."""
    info = server["object_info"]
    names = info["KSampler"]["input"]["required"]["scheduler"][0]
    basic = json.dumps(info["BasicScheduler"]["input"]["required"]["scheduler"])
    assert "learned:sd3_test" in names and "learned:sd3_test" in basic
    assert "learned:flux_test" not in names  # no global schedule in that file
    assert "learned:sd3_step_test" not in names  # step-wise: the Learned Sampler's
    assert names.index("learned:sd3_test") > names.index("simple")
    graph = {
        "1": {"class_type": "UNETLoader",
              "inputs": {"unet_name": "sd3_tiny.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors",
                                                     "type": "sd3"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["2", 0]}},
        "4": {"class_type": "EmptySD3LatentImage",
              "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 7, "steps": 6, "cfg": 2.0, "sampler_name": "euler",
            "scheduler": "learned:sd3_test", "positive": ["3", 0], "negative": ["3", 0],
            "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0],
                                                     "filename_prefix": "named"}},
        "7": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0],
                                                         "scheduler": "beta", "steps": 4,
                                                         "denoise": 1.0}},
        "8": {"class_type": "LearnedSchedules_PreviewSigmas",
              "inputs": {"sigmas": ["7", 0], "label": "beta"}},
    }
    result = _run(server, graph)
    assert result["status"]["status_str"] == "success", result["status"]
    assert list((server["base"] / "output").glob("named*.latent"))


def test_empty_policy_folder_gives_a_friendly_message(tmp_path_factory):
    """A fresh server with no policy: the combo shows the placeholder, and running an example
    gives one plain sentence naming the folder and how to get a policy, no traceback."""
    base = prepare_base(tmp_path_factory.mktemp("empty_base"), policies=False)
    srv = start_server(base)
    try:
        info = _get(srv["url"] + "/object_info/LearnedSchedules_LearnedSchedule")
        policy = info["LearnedSchedules_LearnedSchedule"]["input"]["required"]["policy"]
        from learned_schedules.nodes.policy_choice import NO_POLICY

        assert NO_POLICY in json.dumps(policy) and "undefined" not in json.dumps(policy)
        assert "models/learned_schedules" in policy[1]["tooltip"]
        srv["object_info"] = _get(srv["url"] + "/object_info")
        for policy in (NO_POLICY, "as_named_in_a_shared_workflow.safetensors"):
            message = _error_of(srv, tiny_graph(srv, SD3_SINGLE, policy=policy))
            assert "models/learned_schedules" in message and "training train" in message
            assert "digits_policy_L4.safetensors" in message  # the one-shot node's starter
            assert "missing 1 required" not in message
        if _browser_ready():  # the same in the real frontend: the sentence after pressing Run
            spec = base / "spec.json"
            spec.write_text(json.dumps({"module": PACK, "stand_ins": TINY_SD3, "examples": [],
                                        "run": [], "no_policy": [SD3_SINGLE.stem, ADAGEN],
                                        "out_dir": str(REPO / "test-output")}))
            proc = subprocess.run(["node", str(REPO / "tests" / "browser" / "run_ui.mjs"),
                                   srv["url"], str(spec)],
                                  capture_output=True, text=True, timeout=600, cwd=REPO)
            result = _browser_result(proc)
            assert result["new_node_policy"] == NO_POLICY  # not "undefined"
            shown = result["dialog_text"]  # on screen, with the frontend's default settings
            assert "models/learned_schedules" in shown[SD3_SINGLE.stem]
            assert "training train" in shown[SD3_SINGLE.stem]
            # the AdaGen example names the file IT needs
            assert "copy models/digits/digits_adagen_L3.safetensors" in shown[ADAGEN]
            assert all("Traceback" not in t for t in shown.values())
    finally:
        stop_server(srv)
    # no traceback from the pack (core logs its own, e.g. API nodes without pydantic, and the
    # stack of every ValueError a node raises for the user: those are the sentences above)
    ours = [tb for tb in _tracebacks((base / "server.log").read_text())
            if "learned" in tb.lower() and not tb.splitlines()[-1].startswith("ValueError: ")]
    assert not ours, ours[0]


def _tracebacks(log: str) -> list[str]:
    """Each traceback in a log, from "Traceback" to its exception line."""
    out = []
    for chunk in log.split("Traceback (most recent call last):")[1:]:
        lines = chunk.splitlines()[1:]
        end = next((i for i, ln in enumerate(lines) if ln and not ln[0].isspace()), len(lines))
        out.append("\n".join(lines[:end + 1]))
    return out


def _browser_ready() -> bool:
    chromium = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    return Path(chromium).exists() and shutil.which("node") is not None and \
        (REPO / "node_modules" / "playwright-core").exists()


# The frontends the browser test runs: the one the bundled ComfyUI asks for (requirements-dev.txt)
# and the newest one scripts/setup.sh installs into .cache/frontend-newest (FRONTEND_NEWEST there),
# served with --front-end-root. Each in both renderers, one case after the other.
FRONTEND_NEWEST_DIR = REPO / ".cache" / "frontend-newest"
CASES = [{"name": "classic", "vue": False}, {"name": "vue", "vue": True}]


def _newest_frontend() -> tuple[str, Path] | None:
    """(version, static folder) of the newest frontend set up, or None."""
    static = FRONTEND_NEWEST_DIR / "comfyui_frontend_package" / "static"
    infos = sorted(FRONTEND_NEWEST_DIR.glob("comfyui_frontend_package-*.dist-info"))
    if not (static / "index.html").is_file() or not infos:
        return None
    return infos[-1].name.split("-")[1].removesuffix(".dist-info"), static


def _run_browser(url: str, spec: dict, tmp_path: Path) -> dict:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run(["node", str(REPO / "tests" / "browser" / "run_ui.mjs"), url,
                           str(path)], capture_output=True, text=True, timeout=900, cwd=REPO)
    return _browser_result(proc)


def _browser_result(proc: subprocess.CompletedProcess) -> dict:
    """run_ui.mjs's result: its last stdout line names the file that holds it."""
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    head = json.loads(lines[-1])
    assert head["ok"], head.get("error")
    return json.loads(Path(head["result_file"]).read_text())


def _launch_newest_frontend(base: Path) -> dict | None:
    """The newest frontend's server on ``base``, launched (not waited for), or None."""
    newest = _newest_frontend()
    if newest is None or not _browser_ready():
        return None
    # its own temp folder: a server empties its temp folder when it starts and stops, and
    # the other server shows its previews from the base's
    return launch_server(base, args=("--front-end-root", str(newest[1]), "--temp-directory",
                                     str(base / "newest_frontend")),
                         log_name="server_newest_frontend.log")


@pytest.mark.parametrize("frontend", ["pinned", "newest"])
def test_browser_every_example_in_each_frontend_and_renderer(server, tmp_path, frontend):
    """Headless Chromium on the real frontend, the pinned and the newest, each in the classic
    and the Vue node renderer: every example opens from the templates panel (thumbnail shown)
    and converts as ``ui_to_api`` does; the SD3 ones run (tiny models swapped into the
    frontend's own prompt); on screen, inside its node, the plot shows the learned curve and
    Schedule to Text shows the sigmas, and both are back after a page reload; our JS causes no
    console warning or error. In the pinned classic case the first example run also stays
    after a cached re-run, is sharp when zoomed, follows the palette and survives a tab switch.
    """
    if not _browser_ready():
        pytest.skip("Chromium, node or playwright-core missing: run scripts/setup.sh")
    out_dir = REPO / "test-output" / frontend
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = [{**c, "full": frontend == "pinned" and not c["vue"]} for c in CASES]
    spec = {"module": PACK, "stand_ins": TINY_SD3, "examples": [p.stem for p in examples()],
            "run": [p.stem for p in BROWSER_RUN], "out_dir": str(out_dir), "cases": cases,
            "stepwise": STEPWISE}
    if frontend == "pinned":
        result = _run_browser(server["url"], spec, tmp_path)
    else:
        if server["newest"] is None:
            pytest.skip(f"the newest ComfyUI frontend is not in {FRONTEND_NEWEST_DIR} "
                        "(scripts/setup.sh could not fetch comfyui-frontend-package)")
        result = _run_browser(wait_ready(server["newest"])["url"], spec, tmp_path)
    for case in cases:
        _check_case(server, result["cases"][case["name"]], case)
    for shot in result["screenshots"]:
        assert Path(shot).stat().st_size > 10_000


def _check_case(server, got: dict, case: dict) -> None:
    from PIL import Image

    where = case["name"]
    assert not got["ours"], (where, got["ours"])  # no warning or error from our JS
    for path in examples():
        ex = got["examples"][path.stem]
        with Image.open(path.with_suffix(".jpg")) as jpg:  # the .jpg shown in the panel
            assert ex["thumbnail_width"] == jpg.width, (where, path.stem)
        ui = json.loads(path.read_text())
        assert ex["loaded_nodes"] == len(ui["nodes"]), path.stem
        assert not ex["alerts"], (where, ex["alerts"])
        # opened readable under the frontend's default settings: node text is drawn
        opened = ex["opened"]
        assert not opened["low_quality"], (where, path.stem, opened)
        if opened["threshold"] is not None:
            assert opened["scale"] >= opened["threshold"], (where, path.stem, opened)
        # the card says what the user will learn, not the file name again
        assert ex["description"] == ui["extra"]["learned_schedules"]["description"], \
            (where, path.stem, ex["description"])
        # the frontend's own conversion equals ours (so the server tests run what users run)
        mine = ui_to_api(json.loads(path.read_text()), server["object_info"])
        theirs = {k: {"class_type": v["class_type"], "inputs": v["inputs"]}
                  for k, v in ex["prompt"].items()}
        assert theirs == {k: {"class_type": v["class_type"], "inputs": v["inputs"]}
                          for k, v in mine.items()}, (where, path.stem)
    for path in BROWSER_RUN:
        ex = got["examples"][path.stem]
        assert ex["status"] == "success", (where, ex)
        has_text = "LearnedSchedules_ScheduleToText" in path.read_text()
        for state in ("screen", "screen_after_reload"):
            seen = ex[state]
            # the plot inside its node, not hidden or covered, showing the learned curve
            assert seen["plot"]["plot_seen"] and seen["payload"], (where, path.stem, state, seen)
            assert seen["curve"] > 300, (where, path.stem, state, seen)
            assert seen["plot"]["vue_element"] == case["vue"], (where, state)
            if has_text:  # Schedule to Text shows the sigmas on screen
                assert seen["text_seen"].startswith("1, ") and seen["text_seen"] == ex["text"], \
                    (where, path.stem, state, seen.get("text_seen"))
        if has_text:
            assert ex["text"].startswith("1"), (where, ex)
        ui = json.loads(path.read_text())
        compares = [n for n in ui["nodes"] if n["type"] == "LearnedSchedules_CompareSchedules"]
        if compares:  # Compare Schedules on the node: every legend entry inside the plot
            compare = ex["compare"]
            connected = sum(i["link"] is not None for i in compares[0]["inputs"])
            assert len(compare["legend"]) == connected >= 3, (where, compare)
            assert all(0 <= e["x"] and e["right"] <= compare["width"] + 1
                       for e in compare["legend"]), (where, compare)
        distances = [n for n in ui["nodes"]
                     if n["type"] == "LearnedSchedules_DistanceToReference"]
        if distances:  # each row's distance to the reference, on the canvas
            assert "PSNR to the 30-step reference" in ex["distance"], (where, ex)
            rows = sum(i["link"] is not None and i["name"].startswith("images_")
                       for i in distances[0]["inputs"])
            assert ex["distance"].count(" per image: ") == rows, (where, ex["distance"])
        if "AdaGen" in path.stem:  # per-image schedules: counted and told apart
            plot = ex["sampler_plot"]
            batch = TINY_SD3["set"]["EmptySD3LatentImage"]["batch_size"]  # as run
            assert plot["items"] == batch, (where, plot)
            assert f"{batch} images, each its own schedule" in plot["texts"], (where, plot)
            assert any(t.startswith("per-image schedules differ by at most")
                       for t in plot["texts"]), (where, plot)
    if not case["full"]:
        return
    first = got["examples"][RUN_ORDER[0].stem]  # the first one run
    assert first["after_reload"]["payload"] and first["after_reload"]["curve"] > 30, first
    assert first["after_cached_run"]["status"] == "success"
    assert first["after_cached_run"]["curve"] > 30, first
    assert first["sharp_at_zoom"]["backing_over_css"] >= 2.4, first  # zoom 2.5 x dpr 1
    # inside the node (screen pixels, 1 px of rounding), redrawn on a palette change, back
    # after a tab switch
    node, plot = first["bounds"]["node"], first["bounds"]["plot"]
    assert plot[0] >= node[0] - 1 and plot[2] <= node[2] + 1 and plot[3] <= node[3] + 1, first
    palette = first["palette"]
    assert sum(palette["light"]) > sum(palette["before"]) + 200, palette  # light background
    assert palette["after"] == palette["before"], palette
    # Compare Schedules follows the palette too
    assert sum(palette["compare_light"]) > sum(palette["compare_dark"]) + 200, palette
    # a step-wise policy in Learned Schedule: the sentence on screen, the message on the node
    # in place of the old plot, the earlier run's images downstream cleared
    err = first["error_on_screen"]
    assert err["status"] == "error", err
    assert "step-wise" in err["shown"] and "Learned Sampler" in err["shown"], err
    assert err["plot"]["error"] and "step-wise" in err["plot"]["error"], err
    assert any("Not run this time" in t for t in err["plot"]["texts"]), err
    assert sum(err["images_before"]) > 0 and sum(err["images_after"]) == 0, err
    tab = first["after_tab_switch"]
    assert tab["blank_nodes"] == 0 and tab["payload"] and tab["curve"] > 30, tab


# -- Calibrate Schedule on the digits model (the session server, digits files linked in) -------

DIGITS = REPO / "models" / "digits"


@pytest.fixture(scope="module")
def digits_server(server):
    """The session server with the digits model's files linked into its model folders (the
    CLIP file is git-ignored: rebuilt bit-identically from its seed when missing)."""
    digits_clip()
    models = server["base"] / "models"
    for sub, name in (("diffusion_models", "digits_mmdit.safetensors"),
                      ("text_encoders", "digits_clip_l.safetensors"),
                      ("vae", "digits_vae.safetensors")):
        link = models / sub / name
        if not link.exists():
            os.symlink(DIGITS / name, link)
    return server


def calibrate_graph(name: str, budget: int = 48, seed: int = 0, **inputs) -> dict:
    """Digits model -> Calibrate Schedule (3 steps, 4 contexts, a 10-step teacher, cfg 2)."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "digits_mmdit.safetensors",
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "digits_clip_l.safetensors",
                                                     "type": "sd3"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a handwritten digit 3",
                                                         "clip": ["2", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "5": {"class_type": "EmptySD3LatentImage",
              "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "6": {"class_type": CALIBRATE, "inputs": {
            "model": ["1", 0], "latent_image": ["5", 0], "positive": ["3", 0],
            "negative": ["4", 0], "steps": 3, "cfg": 2.0, "budget": budget, "contexts": 4,
            "first_seed": seed, "search": "dp+gradient", "teacher_steps": 10, "name": name,
            "overwrite": False, **inputs}},
    }


def _run_ws(server, graph: dict, interrupt_on_progress: str | None = None,
            timeout: float = 240) -> tuple[dict, list[dict]]:
    """Run a prompt while listening on the websocket as the frontend does: (its history entry,
    the messages of that prompt). ``interrupt_on_progress``: POST /interrupt at the first
    progress event of that node."""
    import asyncio
    import uuid

    import aiohttp

    client = uuid.uuid4().hex
    url = server["url"]

    async def go() -> list[dict]:
        got: list[dict] = []
        async with aiohttp.ClientSession() as s, \
                s.ws_connect(f"{url}/ws?clientId={client}") as ws:
            async with s.post(f"{url}/prompt", json={"prompt": graph, "client_id": client}) as r:
                body = await r.json()
                assert r.status == 200, body
            pid = body["prompt_id"]
            deadline = time.time() + timeout
            interrupted = False
            while time.time() < deadline:
                msg = await ws.receive(timeout=max(1.0, deadline - time.time()))
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                m = json.loads(msg.data)
                data = m.get("data") or {}
                if data.get("prompt_id") != pid:
                    continue
                got.append(m)
                if (interrupt_on_progress and not interrupted and m["type"] == "progress"
                        and data.get("node") == interrupt_on_progress):
                    interrupted = True
                    async with s.post(f"{url}/interrupt", json={}) as r:
                        assert r.status == 200
                if m["type"] in ("execution_success", "execution_error",
                                 "execution_interrupted"):
                    return got
            pytest.fail("the prompt did not finish in time")
        return got

    messages = asyncio.run(go())
    pid = messages[0]["data"]["prompt_id"]
    deadline = time.time() + 30  # the history is written just after the last message
    while time.time() < deadline:
        hist = _get(f"{url}/history/{pid}").get(pid, {})
        if hist.get("status", {}).get("completed") is not None:
            return hist, messages
        time.sleep(0.2)
    pytest.fail("the prompt's history did not appear")


def _progress(messages: list[dict], node: str) -> list[tuple[int, int]]:
    return [(m["data"]["value"], m["data"]["max"]) for m in messages
            if m["type"] == "progress" and m["data"].get("node") == node]


def test_calibrate_node_progress_file_cache_and_learned_schedule(digits_server):
    """The node reports progress over the websocket, writes a node-loadable policy file and
    shows the schedule and its summary; the same prompt again is ComfyUI's cache hit (the
    node does not run), another name is the adapter's (no model call: one (1, 1) progress);
    the Learned Schedule node gives the same sigmas from the file."""
    from learned_schedules.policies.policy_file import read_metadata

    srv = digits_server
    folder = srv["base"] / "models" / "learned_schedules"
    graph = calibrate_graph("digits_cal")
    hist, messages = _run_ws(srv, graph)
    assert hist["status"]["status_str"] == "success", hist["status"]
    steps = _progress(messages, "6")
    assert len(steps) >= 3 and all(t == 48 for _, t in steps), steps
    assert [v for v, _ in steps] == sorted(v for v, _ in steps)
    payload = hist["outputs"]["6"]["learned_schedule"][0]
    sig = torch.tensor(payload["sigmas"])
    assert len(sig) == 4 and float(sig[0]) == pytest.approx(1.0) and float(sig[-1]) == 0.0
    assert torch.all(sig[:-1] > sig[1:]) and payload["default_sigmas"] != payload["sigmas"]
    assert payload["summary"].startswith("latent PSNR to 10-step: calibrated")
    assert payload["summary"].endswith("on 4 contexts")
    meta = read_metadata(folder / "digits_cal.safetensors")
    assert meta["method"] == "calibrate-teacher" and meta["model_family"] == "sd3"
    assert meta["calibration"]["origin"] == "Calibrate Schedule node"
    assert meta["calibration"]["calls_per_context"] <= 48
    assert not list(folder.glob("*.tmp"))
    # ComfyUI's own cache: the node does not run again
    hist2, messages2 = _run_ws(srv, graph)
    assert hist2["status"]["status_str"] == "success"
    cached = [m for m in messages2 if m["type"] == "execution_cached"]
    assert cached and "6" in cached[0]["data"]["nodes"] and not _progress(messages2, "6")
    # another name: the node runs, the calibration is remembered (no model call)
    hist3, messages3 = _run_ws(srv, calibrate_graph("digits_cal_copy"))
    assert _progress(messages3, "6") == [(1, 1)]
    assert hist3["outputs"]["6"]["learned_schedule"][0]["sigmas"] == payload["sigmas"]
    assert (folder / "digits_cal_copy.safetensors").is_file()
    # the file in the Learned Schedule node: the same sigmas
    graph = {k: v for k, v in graph.items() if k != "6"}
    graph["7"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 1}}
    graph["8"] = {"class_type": "LearnedSchedules_LearnedSchedule", "inputs": {
        "model": ["1", 0], "positive": ["3", 0], "noise": ["7", 0], "latent_image": ["5", 0],
        "policy": "digits_cal.safetensors", "steps": 0, "mode": "mean", "denoise": 1.0}}
    graph["9"] = {"class_type": "LearnedSchedules_ScheduleToText",
                  "inputs": {"sigmas": ["8", 0], "decimals": 6}}
    hist4 = _run(srv, graph)
    assert hist4["status"]["status_str"] == "success", hist4["status"]
    assert hist4["outputs"]["8"]["learned_schedule"][0]["sigmas"] == payload["sigmas"]


def test_calibrate_node_interrupt_and_overwrite(digits_server):
    """POST /interrupt while it calibrates: the prompt ends interrupted and no file (nor a
    temporary one) is written; CLIP + the bundled prompts calibrate too; a name taken by a
    file of another origin is refused with one sentence unless overwrite is on."""
    from learned_schedules.policies.policy_file import read_metadata

    srv = digits_server
    folder = srv["base"] / "models" / "learned_schedules"
    hist, messages = _run_ws(srv, calibrate_graph("digits_stopped", budget=5000, seed=100),
                             interrupt_on_progress="6")
    kinds = [m["type"] for m in messages]
    assert "execution_interrupted" in kinds and "execution_success" not in kinds, kinds
    assert _progress(messages, "6")
    assert not list(folder.glob("digits_stopped*"))
    # CLIP + the bundled calibration prompts instead of a conditioning
    graph = calibrate_graph("digits_bundled", budget=30, search="dp", contexts=3)
    del graph["6"]["inputs"]["positive"], graph["6"]["inputs"]["negative"]
    graph["6"]["inputs"]["clip"] = ["2", 0]
    result = _run(srv, graph)
    assert result["status"]["status_str"] == "success", result["status"]
    assert result["outputs"]["6"]["learned_schedule"][0]["summary"].endswith("on 3 contexts")
    meta = read_metadata(folder / "digits_bundled.safetensors")
    assert meta["training"]["calibrate"]["prompts"] == "bundled"
    shutil.copy(folder / "sd3_test.safetensors", folder / "taken.safetensors")
    before = (folder / "taken.safetensors").read_bytes()
    result = _run(srv, calibrate_graph("taken"))
    assert result["status"]["status_str"] == "error"
    text = json.dumps(result["status"]["messages"])
    assert "taken.safetensors already exists" in text and "overwrite" in text
    assert (folder / "taken.safetensors").read_bytes() == before
    result = _run(srv, calibrate_graph("taken", budget=30, search="dp", overwrite=True))
    assert result["status"]["status_str"] == "success", result["status"]
    assert read_metadata(folder / "taken.safetensors")["method"] == "calibrate-teacher"
