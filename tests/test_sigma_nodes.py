"""The sigma utilities (Compare Schedules, Preview Sigmas), the no-policy state of the Learned
Schedule node and the opt-in named schedulers ``learned:<policy>``, in a real ComfyUI runtime
with a tiny SD3 (MMDiT) and a random CLIP-L."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from comfy_env import build_clip_l, build_tiny_sd3, import_comfy
from learned_schedules.policies.policy_file import save_policy
from learned_schedules.policies.schedule import resample_schedule


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cui = import_comfy(tmp_path_factory.mktemp("comfy_base"))
    models = cui.base / "models"
    for sub in ("diffusion_models", "text_encoders"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    if not (models / "diffusion_models" / "sd3_tiny.safetensors").exists():
        build_tiny_sd3(models / "diffusion_models" / "sd3_tiny.safetensors")
    if not (models / "text_encoders" / "clip_l.safetensors").exists():
        build_clip_l(models / "text_encoders" / "clip_l.safetensors")
    from learned_schedules.nodes import extension, named_schedulers, schedule_nodes, sigma_nodes

    extension.register_policy_folder()
    model = cui.nodes.UNETLoader().load_unet("sd3_tiny.safetensors", "default")[0]
    clip = cui.nodes.CLIPLoader().load_clip("clip_l.safetensors", type="sd3")[0]
    cond = cui.nodes.CLIPTextEncode().encode(clip, "a photo of a cat")[0]
    return {"cui": cui, "model": model, "cond": cond, "sigma_nodes": sigma_nodes,
            "schedule_nodes": schedule_nodes, "named": named_schedulers,
            "policies": models / "learned_schedules"}


def _policy_with_global(path, flow: list[float] | None, steps: int = 4):
    from test_nodes_sd3 import _sd3_policy

    extra = {} if flow is None else {"global_schedule": flow}
    save_policy(path, _sd3_policy(0, steps), method="dirichlet-reinforce", model_family="sd3",
                extra=extra)


def test_compare_schedules_plots_every_connected_input(env):
    node = env["sigma_nodes"].CompareSchedules
    a = torch.tensor([1.0, 0.8, 0.5, 0.2, 0.0])
    b = torch.tensor([1.0, 0.9, 0.75, 0.6, 0.45, 0.3, 0.15, 0.0])  # another step count
    out = node.execute(a, b, None, a * 0.5, labels="learned, simple", x_axis="fraction")
    image = out.result[0]
    assert image.shape == (1, 448, 768, 3) and float(image.std()) > 0
    # the plot on the node is drawn by the frontend from the curves (palette-aware)
    curves = out.ui["compare_schedules"][0]["curves"]
    assert [c["label"] for c in curves] == ["learned (4 steps)", "simple (7 steps)",
                                            "sigmas_4 (4 steps)"]
    assert curves[1]["sigmas"] == pytest.approx(b.tolist())
    names = list(env["sigma_nodes"].comparison_curves([a, b, None, a * 0.5], "learned, simple"))
    assert names == ["learned", "simple", "sigmas_4"]
    # one more curve changes the picture
    fewer = node.execute(a, b, labels="learned, simple").result[0]
    assert not torch.equal(fewer, image)
    with pytest.raises(ValueError, match="not a schedule"):
        node.execute(torch.tensor([1.0]))


def test_aligned_steps_put_every_schedule_on_zero_to_one():
    from learned_schedules.plots import aligned_steps

    assert aligned_steps(5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert aligned_steps(3, "step").tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError):
        aligned_steps(3, "time")


def test_preview_sigmas_passes_through(env):
    sig = torch.tensor([1.0, 0.6, 0.3, 0.0])
    out = env["sigma_nodes"].PreviewSigmas.execute(sig, "mine")
    assert out.result[0] is sig
    assert out.result[1].shape[-1] == 3 and float(out.result[1].std()) > 0
    assert out.ui is not None


def test_no_policy_installed_is_a_friendly_state(env):
    from learned_schedules.nodes.policy_choice import NO_POLICY, policy_options

    assert policy_options([]) == [NO_POLICY]
    assert policy_options(["a.safetensors"]) == ["a.safetensors"]
    from learned_schedules.nodes.policy_choice import missing_policy_message

    for choice in (NO_POLICY, "", None, "from_a_shared_workflow.safetensors"):
        message = missing_policy_message(choice, [])  # an empty policy folder
        assert "models/learned_schedules" in message and "learned_schedules.training train" \
            in message
    assert missing_policy_message("a.safetensors", ["a.safetensors"]) is None
    # the sentence comes from execute (the frontend's error dialog shows it); validation only
    # checks the type, so ComfyUI's combo check does not hide it
    nodes = env["schedule_nodes"]
    _policy_with_global(env["policies"] / "present.safetensors", None)
    assert nodes.LearnedSchedule.validate_inputs(policy="missing.safetensors") is True
    assert "must be the name" in nodes.LearnedSchedule.validate_inputs(policy=3)
    with pytest.raises(ValueError, match="training train"):
        nodes.check_policy(NO_POLICY, "schedule")
    # the sentence lists what is installed (the folder is shared with other test files, so
    # the list may be cut after its first names: "present" is then behind the "...")
    with pytest.raises(ValueError, match=r"missing\.safetensors is not in "
                                         r"ComfyUI/models/learned_schedules/ \(installed "
                                         r"there: .*(present|\.\.\.)"):
        nodes.check_policy("missing.safetensors", "schedule")
    with pytest.raises(ValueError, match="copy models/digits/digits_adagen_L3.safetensors"):
        nodes.check_policy("digits_adagen_L3.safetensors", "sampler")
    nodes.check_policy("present.safetensors", "schedule")
    # the message for an empty folder names the starter of the node that asks
    assert "digits_adagen_L3" in missing_policy_message(None, [], "sampler")
    assert "digits_policy_L4" in missing_policy_message(None, [], "schedule")


def test_each_node_lists_the_policies_it_can_use(env):
    """Learned Schedule lists one-shot policies only, the Learned Sampler step-wise ones too,
    and the pack's starter AdaGen policy is never a named scheduler."""
    import shutil

    from learned_schedules.nodes.policy_choice import STARTERS_DIR

    nodes = env["schedule_nodes"]
    for name in ("digits_adagen_L3.safetensors", "digits_policy_L4.safetensors"):
        shutil.copy(STARTERS_DIR / name, env["policies"] / name)
    try:
        assert "digits_policy_L4.safetensors" in nodes.policy_files("schedule")
        assert "digits_adagen_L3.safetensors" not in nodes.policy_files("schedule")
        assert {"digits_policy_L4.safetensors", "digits_adagen_L3.safetensors"} <= set(
            nodes.policy_files("sampler"))
        with pytest.raises(ValueError, match="step-wise policy.*Learned Sampler"):
            nodes.check_policy("digits_adagen_L3.safetensors", "schedule")
        found = env["named"].discover([(n, str(env["policies"] / n)) for n in (
            "digits_adagen_L3.safetensors", "digits_policy_L4.safetensors")])
        assert list(found) == ["learned:digits_policy_L4"]
    finally:
        for name in ("digits_adagen_L3.safetensors", "digits_policy_L4.safetensors"):
            (env["policies"] / name).unlink()


def test_distance_to_reference_scores_each_image(env):
    from learned_schedules.nodes.image_nodes import DistanceToReference, psnr

    ref = torch.rand(3, 8, 8, 3)
    close = (ref + 0.01).clamp(0, 1)
    far = (ref + 0.2 * torch.randn_like(ref)).clamp(0, 1)
    scores = psnr(close, ref)
    assert scores.shape == (3,) and bool((scores > psnr(far, ref)).all())
    assert float(psnr(ref, ref[:1])[0]) == pytest.approx(100.0)  # one reference serves all
    out = DistanceToReference.execute(ref, close, far, labels="learned, default")
    text = out.result[0]
    assert out.ui["text"] == [text]
    assert text.startswith("learned ") and " vs default " in text
    assert "learned is closer than default on 3 of 3 images" in text
    assert "default per image: " in text
    # a third batch: the first row is compared with each later one
    mid = (ref + 0.05).clamp(0, 1)
    text = DistanceToReference.execute(ref, close, far, mid,
                                       labels="learned, default, global").result[0]
    assert " vs default " in text and " vs global " in text
    assert "learned is closer than global on 3 of 3 images" in text
    assert "global per image: " in text
    with pytest.raises(ValueError, match="same size"):
        psnr(close, torch.rand(3, 16, 16, 3))


def test_comparison_legend_stays_inside_the_picture():
    """A long policy name is wrapped: the picture's right edge stays background."""
    from learned_schedules.plots import render_sigma_comparison

    s = torch.tensor([1.0, 0.7, 0.4, 0.1, 0.0])
    rgb = render_sigma_comparison({"learned:digits_policy_L4_with_a_long_name": s,
                                   "simple": s * 0.9}, title="t")
    edge = rgb[:, -6:, :]
    assert (edge > 240).all(), "legend text reaches the right edge"


def test_named_schedulers_are_opt_in(env, monkeypatch, tmp_path):
    named = env["named"]
    monkeypatch.delenv(named.ENV_VAR, raising=False)
    assert not named.enabled(tmp_path)
    (tmp_path / named.SETTINGS_FILE).write_text(json.dumps({"named_schedulers": True}))
    assert named.enabled(tmp_path)
    monkeypatch.setenv(named.ENV_VAR, "0")
    assert not named.enabled(tmp_path)
    monkeypatch.setenv(named.ENV_VAR, "1")
    assert named.enabled(None)


def test_named_scheduler_in_ksampler(env, monkeypatch):
    import comfy.samplers as cs
    import execution

    named = env["named"]
    flow = [1.0, 0.7, 0.45, 0.2, 0.0]
    _policy_with_global(env["policies"] / "gs_policy.safetensors", flow)
    _policy_with_global(env["policies"] / "no_global.safetensors", None)
    core = list(cs.SCHEDULER_NAMES)
    monkeypatch.setenv(named.ENV_VAR, "1")
    added = named.register_from_policy_folder("learned_schedules")
    try:
        assert "learned:gs_policy" in added
        assert "learned:no_global" not in added  # no global schedule in that file: skipped
        assert cs.KSampler.SCHEDULERS[:len(core)] == core  # core names untouched, in order
        listed = env["cui"].nodes.KSampler.INPUT_TYPES()["required"]["scheduler"][0]
        assert "learned:gs_policy" in listed
        sampling = env["model"].get_model_object("model_sampling")
        sig = cs.calculate_sigmas(sampling, "learned:gs_policy", 7)
        want = resample_schedule(torch.tensor(flow, dtype=torch.float64), 7).float()
        assert torch.allclose(sig, want, atol=1e-6)
        assert sig.shape == (8,) and float(sig[-1]) == 0.0
        latent = {"samples": torch.zeros(1, 16, 16, 16)}
        ks = env["cui"].nodes.KSampler()
        run = ks.sample(env["model"], 3, 4, 1.0, "euler", "learned:gs_policy", env["cond"],
                        env["cond"], latent)[0]["samples"]
        simple = ks.sample(env["model"], 3, 4, 1.0, "euler", "simple", env["cond"],
                           env["cond"], latent)[0]["samples"]
        assert torch.isfinite(run).all() and not torch.allclose(run, simple)
        # ComfyUI's own validation accepts both the new and the core names
        for scheduler in ("learned:gs_policy", "karras", "simple"):
            prompt = {
                "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "sd3_tiny.safetensors",
                                                             "weight_dtype": "default"}},
                "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "clip_l.safetensors",
                                                             "type": "sd3"}},
                "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["2", 0]}},
                "4": {"class_type": "EmptyLatentImage",
                      "inputs": {"width": 64, "height": 64, "batch_size": 1}},
                "5": {"class_type": "KSampler", "inputs": {
                    "model": ["1", 0], "seed": 1, "steps": 4, "cfg": 1.0,
                    "sampler_name": "euler", "scheduler": scheduler, "positive": ["3", 0],
                    "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
                "6": {"class_type": "SaveLatent",
                      "inputs": {"samples": ["5", 0], "filename_prefix": "t"}},
            }
            valid = asyncio.run(execution.validate_prompt("p", prompt, None))
            assert valid[0], (scheduler, valid)
        prompt["5"]["inputs"]["scheduler"] = "learned:missing"
        assert not asyncio.run(execution.validate_prompt("p", prompt, None))[0]
    finally:
        named.unregister(added)
    assert cs.SCHEDULER_NAMES == core and "learned:gs_policy" not in cs.SCHEDULER_HANDLERS


def test_a_bad_global_schedule_is_skipped(env, caplog):
    named = env["named"]
    path = env["policies"] / "bad_global.safetensors"
    _policy_with_global(path, [1.0, 0.4, 0.6, 0.0])
    found = named.discover([("bad_global.safetensors", str(path))])
    assert found == {}
    assert "not strictly decreasing" in caplog.text


def test_named_scheduler_sigmas_are_the_nodes_for_the_same_schedule(env):
    """A named scheduler ``learned:<policy>`` outputs exactly what the Learned Schedule node's
    mapping (the bridge's) outputs for the same flow schedule, at the policy's own step count
    and resampled, on a flow model, a discrete (SD 1.x) one (its sigma table at fraction t of
    its timestep range) and an EDM one (log-linear)."""
    import comfy.model_sampling as ms

    from learned_schedules.comfy_bridge.service import schedule_sigmas
    from learned_schedules.comfy_bridge.sigmas import flow_to_sigmas, schedule_to_model

    named = env["named"]
    flow = torch.tensor([1.0, 0.7, 0.45, 0.2, 0.0], dtype=torch.float64)
    handler = named.make_handler(flow)
    sampling = env["model"].get_model_object("model_sampling")
    for steps in (4, 7, 2):
        node = schedule_sigmas(env["model"], flow, steps)
        assert torch.equal(handler(sampling, steps), node), steps

    class Discrete(ms.ModelSamplingDiscrete, ms.EPS):  # SD 1.x's model_sampling
        pass

    class EDM(ms.ModelSamplingContinuousEDM, ms.EDM):
        pass

    discrete, edm = Discrete(), EDM()
    for steps in (4, 6):
        resampled = resample_schedule(flow, steps)
        mapped = schedule_to_model(discrete, flow, steps)
        assert torch.equal(handler(discrete, steps), mapped)
        want = discrete.sigma(resampled[:-1] * (len(discrete.sigmas) - 1))
        torch.testing.assert_close(mapped[:-1], want, rtol=1e-6, atol=0)
        assert float(mapped[-1]) == 0.0
        lo, hi = float(edm.sigma_min), float(edm.sigma_max)
        mapped = schedule_to_model(edm, flow, steps)
        assert torch.equal(handler(edm, steps), mapped)
        assert torch.equal(mapped, flow_to_sigmas(resampled, "loglinear", lo, hi).float())


def test_inputs_comfyui_lets_through_get_a_sentence(env):
    """NaN passes a FLOAT's range check and an API prompt may name undeclared inputs: each
    gets a plain sentence, not a run or a TypeError."""
    sig = torch.linspace(1.0, 0.0, 5)
    nodes = env["sigma_nodes"]
    with pytest.raises(ValueError, match="Compare Schedules has no input sigmas_7; its inputs "
                                         "are sigmas_1"):
        nodes.CompareSchedules.execute(sig, sigmas_7=sig)
    with pytest.raises(ValueError, match="boundary must be a number from 0.001 to 0.999"):
        nodes.SplitAtExpertBoundary.execute(sig, float("nan"))
    with pytest.raises(ValueError, match="denoise must be a number from 0 to 1"):
        env["schedule_nodes"].LearnedSchedule.execute(
            env["model"], env["cond"], None, None, "x.safetensors", denoise=float("nan"))
