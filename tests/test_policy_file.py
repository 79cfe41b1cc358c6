"""Policy files: round trips, and a plain ValueError for every kind of bad file."""

from __future__ import annotations

import json
import os
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from learned_schedules.policies.dirichlet import DirichletPolicy
from learned_schedules.policies.encoders import VectorEncoder
from learned_schedules.policies.latent_encoder import LatentTextEncoder
from learned_schedules.policies.policy_file import (
    META_KEY,
    load_policy,
    read_metadata,
    save_policy,
)


def _vector_policy() -> DirichletPolicy:
    torch.manual_seed(0)
    pol = DirichletPolicy(VectorEncoder(8, 6, hidden=16, depth=1), 5, head_hidden=16)
    torch.nn.init.normal_(pol.head[2].weight, std=0.3)
    return pol


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "policy.safetensors"
    save_policy(path, _vector_policy(), method="dirichlet-reinforce", model_family="testbed",
                training={"lr": 1e-3}, reward="fidelity")
    return path


def _rewrite_meta(path, fn):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()[META_KEY])
    fn(meta, tensors)
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})


def test_round_trip_vector_policy(good_file):
    loaded = load_policy(good_file)
    meta = loaded.metadata
    assert meta["format_version"] == 1 and meta["method"] == "dirichlet-reinforce"
    assert meta["steps"] == 5 and meta["feature_dims"] == {"noise": [8], "cond": [6]}
    assert meta["training"] == {"lr": 1e-3} and meta["reward"] == "fidelity"
    assert meta["created"] and meta["package_version"]
    feats = {"noise": torch.randn(4, 8), "cond": torch.eye(6)[:4]}
    assert torch.equal(loaded.policy.schedule(feats), _vector_policy().eval().schedule(feats))
    assert read_metadata(good_file) == meta
    assert not list(good_file.parent.glob("*.tmp"))  # atomic write left nothing behind


def test_round_trip_latent_policy(tmp_path):
    torch.manual_seed(1)
    pol = DirichletPolicy(LatentTextEncoder.for_family("tiny"), 8, head_hidden=16).eval()
    path = tmp_path / "flux.safetensors"
    save_policy(path, pol, method="dirichlet-reinforce", model_family="flux-dev")
    loaded = load_policy(path)
    feats = {"noise": torch.randn(1, 16, 16, 16), "tokens": torch.randn(1, 5, 32),
             "pooled": torch.randn(1, 16)}
    assert torch.equal(loaded.policy.schedule(feats), pol.schedule(feats))
    assert loaded.metadata["feature_dims"]["noise"] == [16, -1, -1]


def test_save_rejects_unknown_method_family_and_extension(tmp_path):
    pol = _vector_policy()
    with pytest.raises(ValueError, match="Unknown method"):
        save_policy(tmp_path / "a.safetensors", pol, method="", model_family="testbed")
    with pytest.raises(ValueError, match="Unknown model family"):
        save_policy(tmp_path / "a.safetensors", pol, method="art", model_family="dalle")
    with pytest.raises(ValueError, match="must end in .safetensors"):
        save_policy(tmp_path / "a.pt", pol, method="art", model_family="testbed")


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_policy(tmp_path / "nope.safetensors")


def test_wrong_extension(tmp_path):
    p = tmp_path / "policy.pt"
    p.write_bytes(b"whatever")
    with pytest.raises(ValueError, match="not a .safetensors"):
        load_policy(p)


def test_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name, payload in [("evil.safetensors", pickle.dumps(Evil())),
                          ("torchsave.safetensors", None)]:
        p = tmp_path / name
        if payload is None:
            torch.save({"w": torch.zeros(2)}, p)  # a zip archive
        else:
            p.write_bytes(payload)
        with pytest.raises(ValueError, match="pickle"):
            load_policy(p)
    assert not marker.exists()


def test_not_safetensors(tmp_path):
    p = tmp_path / "text.safetensors"
    p.write_bytes(b"hello world, this is not a tensor file at all")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_policy(p)
    p.write_bytes(struct.pack("<Q", 5) + b"{{{{{")
    with pytest.raises(ValueError, match="unreadable header"):
        load_policy(p)


@pytest.mark.parametrize("keep", [0, 4, 20, -7])
def test_truncated(good_file, keep):
    data = good_file.read_bytes()
    good_file.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(ValueError, match="truncated|empty"):
        load_policy(good_file)


def test_missing_metadata(tmp_path):
    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(p))
    with pytest.raises(ValueError, match="no Learned Schedules metadata"):
        load_policy(p)


@pytest.mark.parametrize("edit, message", [
    (lambda m, t: m.pop("method"), "missing metadata fields: method"),
    (lambda m, t: m.update(format_version=99), "format version 99"),
    (lambda m, t: m.update(method="diffusion dpo\n"), "unknown method"),
    (lambda m, t: m.update(model_family="dalle"), "unknown model family"),
    (lambda m, t: m.update(steps=7), "steps=7"),
    (lambda m, t: m["architecture"].update(policy="gflownet"), "cannot build"),
    (lambda m, t: m["architecture"]["encoder"].update(type="rnn"), "cannot build"),
])
def test_bad_metadata(good_file, edit, message):
    _rewrite_meta(good_file, edit)
    with pytest.raises(ValueError, match=message):
        load_policy(good_file)


def test_shape_mismatch_and_missing_weights(good_file):
    _rewrite_meta(good_file, lambda m, t: m["architecture"]["encoder"].update(noise_dim=9))
    with pytest.raises(ValueError, match="has shape"):
        load_policy(good_file)


def test_missing_and_unexpected_weights(good_file):
    def edit(m, t):
        t.pop("head.2.bias")
        t["extra.weight"] = torch.zeros(1)

    _rewrite_meta(good_file, edit)
    with pytest.raises(ValueError, match="does not match its architecture"):
        load_policy(good_file)


def test_non_finite_weights(good_file):
    _rewrite_meta(good_file, lambda m, t: t["head.2.weight"].view(-1).__setitem__(0, float("nan")))
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_policy(good_file)


def test_header_length_starting_with_the_pickle_byte_is_still_safetensors(tmp_path):
    """A header of 0x..80 bytes starts the file with 0x80, pickle's first byte: such a file
    is a valid policy, not a pickle (a real trained policy hit this)."""
    pol = _vector_policy()
    path = tmp_path / "p.safetensors"
    for pad in range(300):
        save_policy(path, pol, method="dirichlet-reinforce", model_family="testbed",
                    extra={"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    loaded = load_policy(path)
    assert loaded.metadata["pad"] == "x" * pad


def test_the_version_has_one_home(tmp_path):
    """``_version.py`` holds it; the package root re-exports it, pyproject.toml repeats it
    (the Comfy Registry reads it statically) and policy files record it."""
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")
    import learned_schedules
    from learned_schedules._version import __version__

    root = Path(learned_schedules.__file__).parent
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert learned_schedules.__version__ == __version__ == pyproject["project"]["version"]
    path = tmp_path / "p.safetensors"
    save_policy(path, _vector_policy(), method="dirichlet-reinforce", model_family="testbed")
    assert read_metadata(path)["package_version"] == __version__


def test_policies_import_nothing_from_the_package_root():
    """``policies/`` is the leaf of the pack: the only module above it that it may read is the
    leaf ``_version.py``."""
    import ast
    from pathlib import Path

    import learned_schedules.policies as policies

    for path in sorted(Path(policies.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                assert node.module == "_version" and node.level == 2, \
                    f"{path.name} imports {'.' * node.level}{node.module or ''}"
