"""Reward models on tiny random-weight models of the real classes, laid out as a user would.

Every model lives in ``<tmp>/rewards/<kind>/`` and is loaded through ``load_reward(kind,
search_dirs=[<tmp>/rewards])`` with the hub switched off (``HF_HUB_OFFLINE=1``) and sockets
refused, so nothing can be downloaded.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch

from learned_schedules.training.rewards import (
    REWARD_KINDS,
    WeightedSum,
    find_reward_path,
    load_reward,
    parse_reward_spec,
    reward_target_text,
)
from learned_schedules.training.rewards.base import ImageTransform, check_inputs
from learned_schedules.training.rewards.ocr import levenshtein, text_match
from tiny_rewards import save_clip_tokenizer, tiny_clip

PROMPTS = ['a cat holding a sign that says "hello world"', "a red car in the rain",
           "a wall painted with the word 'OCR'"]
OTHER_PROMPTS = ["a bowl of ramen", 'a neon sign reading "open late"', "a snowy mountain"]
VOCAB_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 .,!?'\""


@pytest.fixture(autouse=True, scope="module")
def offline_single_thread() -> object:
    """The hub switched off for this module, and one torch thread (tiny models gain nothing
    from more; on a busy 2-core machine they spin and run 50x slower). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading with ``allow_download=False`` must never open a connection."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a reward test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def images(seed: int, n: int = 3, h: int = 40, w: int = 56) -> torch.Tensor:
    """A ComfyUI IMAGE batch [n, h, w, 3] in [0, 1] with some structure (not just noise)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 5, 7, generator=g)
    big = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return (0.7 * big + 0.3 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1).movedim(1, -1)


# ---------------------------------------------------------------------------------------------
# tiny models, saved exactly as users would lay them out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/rewards`` (a stand-in for ``<ComfyUI>/models/rewards``)."""
    path = tmp_path_factory.mktemp("models") / "rewards"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def clip_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ComfyUI's bundled CLIP BPE tokenizer, saved once as a fast tokenizer."""
    return save_clip_tokenizer(tmp_path_factory.mktemp("clip_tokenizer"))


@pytest.fixture(scope="module")
def clip_dir(root: Path, clip_tokenizer: Path) -> Path:
    tiny_clip(root / "clip", clip_tokenizer, seed=1)
    return root / "clip"


@pytest.fixture(scope="module")
def pickscore_dir(root: Path, clip_tokenizer: Path) -> Path:
    model = tiny_clip(root / "pickscore", clip_tokenizer, seed=2)
    assert abs(model.logit_scale.exp().item() - 100.0) > 1  # the two scales differ
    return root / "pickscore"


def mlp_head_state(in_dim: int, seed: int) -> dict[str, torch.Tensor]:
    from learned_schedules.training.rewards.aesthetic import AestheticMLP

    torch.manual_seed(seed)
    head = AestheticMLP([in_dim, 1024, 128, 64, 16])
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return head.state_dict()


@pytest.fixture(scope="module")
def aesthetic_dir(root: Path, clip_tokenizer: Path) -> Path:
    folder = root / "aesthetic"
    tiny_clip(folder, clip_tokenizer, seed=3)
    # the upstream MLP head as a .pth beside the CLIP (as sac+logos+ava1-l14-linearMSE.pth)
    torch.save(mlp_head_state(16, seed=4), folder / "sac+logos+ava1-l14-linearMSE.pth")
    return folder


TINY_OPEN_CLIP = {"embed_dim": 16,
                  "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16,
                                 "patch_size": 8},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32,
                               "heads": 2, "layers": 2}}


@pytest.fixture(scope="module")
def hps_dir(root: Path) -> Path:
    from open_clip.model import CLIP

    folder = root / "hpsv2"
    folder.mkdir()
    torch.manual_seed(5)
    model = CLIP(**TINY_OPEN_CLIP)
    torch.save({"state_dict": model.state_dict()}, folder / "HPS_v2.1_compressed.pt")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP}))
    return folder


def write_bert_vocab(folder: Path) -> None:
    from transformers import BertTokenizerFast

    words = ["a", "the", "cat", "red", "car", "in", "rain", "wall", "sign", "word", "bowl",
             "of", "says", "hello", "world", "painted", "with", "holding", "that", "ocr"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *list(VOCAB_CHARS.strip()),
             *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]]
    tmp = folder / "vocab.txt"
    tmp.write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    BertTokenizerFast(vocab_file=str(tmp), do_lower_case=True).save_pretrained(folder)


def blip_vit_state(width: int, depth: int, patch: int, grid: int,
                   seed: int) -> dict[str, torch.Tensor]:
    """Random weights named like BLIP's (timm) ViT: ``cls_token``, ``blocks.0.attn.qkv`` ..."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, mean: float = 0.0) -> torch.Tensor:
        return mean + 0.2 * torch.randn(*shape, generator=g)

    sd = {"cls_token": rnd(1, 1, width), "pos_embed": rnd(1, 1 + grid * grid, width),
          "patch_embed.proj.weight": rnd(width, 3, patch, patch),
          "patch_embed.proj.bias": rnd(width), "norm.weight": rnd(width, mean=1.0),
          "norm.bias": rnd(width)}
    for i in range(depth):
        b = f"blocks.{i}."
        sd |= {b + "norm1.weight": rnd(width, mean=1.0), b + "norm1.bias": rnd(width),
               b + "attn.qkv.weight": rnd(3 * width, width), b + "attn.qkv.bias": rnd(3 * width),
               b + "attn.proj.weight": rnd(width, width), b + "attn.proj.bias": rnd(width),
               b + "norm2.weight": rnd(width, mean=1.0), b + "norm2.bias": rnd(width),
               b + "mlp.fc1.weight": rnd(4 * width, width), b + "mlp.fc1.bias": rnd(4 * width),
               b + "mlp.fc2.weight": rnd(width, 4 * width), b + "mlp.fc2.bias": rnd(width)}
    return sd


@pytest.fixture(scope="module")
def imagereward_dir(root: Path) -> Path:
    """Upstream ImageReward.pt naming: blip.visual_encoder.* (timm ViT), blip.text_encoder.*."""
    from transformers import BlipTextConfig, BlipTextModel

    from learned_schedules.training.rewards.aesthetic import AestheticMLP

    folder = root / "imagereward"
    folder.mkdir()
    write_bert_vocab(folder)
    vocab = len((folder / "vocab.txt").read_text().split())
    torch.manual_seed(6)
    text = BlipTextModel(BlipTextConfig(vocab_size=vocab, hidden_size=32, encoder_hidden_size=32,
                                        intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=40,
                                        initializer_range=0.2), add_pooling_layer=False)
    head = AestheticMLP([32, 1024, 128, 64, 16])
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.2)
    vit = blip_vit_state(width=32, depth=2, patch=8, grid=4, seed=6)
    sd = {f"blip.visual_encoder.{k}": v for k, v in vit.items()}
    sd |= {f"blip.text_encoder.{k}": v for k, v in text.state_dict().items()}
    sd |= {f"mlp.{k}": v for k, v in head.state_dict().items()}
    sd["blip.vision_proj.weight"] = torch.zeros(8, 32)  # unused upstream parts are ignored
    torch.save(sd, folder / "ImageReward.pt")
    (folder / "med_config.json").write_text(json.dumps(
        {"hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 2,
         "vision_num_attention_heads": 2, "layer_norm_eps": 1e-12, "encoder_width": 32,
         "add_cross_attention": True}))
    return folder


def write_char_tokenizer(folder: Path) -> int:
    """A byte-level BPE (RoBERTa, TrOCR's tokenizer class) with one token per character."""
    from transformers import RobertaTokenizerFast
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    byte_chars = bytes_to_unicode()
    chars = [byte_chars[b] for b in VOCAB_CHARS.encode()]
    vocab = {t: i for i, t in enumerate(specials + list(dict.fromkeys(chars)))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = RobertaTokenizerFast(vocab_file=str(folder / "vocab.json"),
                               merges_file=str(folder / "merges.txt"))
    tok.save_pretrained(folder)
    return len(vocab)


@pytest.fixture(scope="module")
def ocr_dir(root: Path) -> Path:
    from transformers import (
        TrOCRConfig,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    folder = root / "ocr"
    folder.mkdir()
    vocab = write_char_tokenizer(folder)
    enc = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=64, initializer_range=0.5)
    dec = TrOCRConfig(vocab_size=vocab, d_model=32, decoder_layers=1, decoder_attention_heads=2,
                      decoder_ffn_dim=64, max_position_embeddings=64, init_std=0.5,
                      pad_token_id=1, bos_token_id=0, eos_token_id=2,
                      decoder_start_token_id=2, cross_attention_hidden_size=32)
    cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 2, 1, 2
    torch.manual_seed(7)
    VisionEncoderDecoderModel(cfg).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3, resample=2).save_pretrained(folder)
    return folder


FOLDERS = {"clip": "clip_dir", "pickscore": "pickscore_dir", "aesthetic": "aesthetic_dir",
           "hpsv2": "hps_dir", "imagereward": "imagereward_dir", "ocr": "ocr_dir"}


# ---------------------------------------------------------------------------------------------
# every reward: shape, determinism, image and prompt dependence


def test_digits_rewards_are_registered_and_need_no_folder() -> None:
    """``digit`` and ``realism`` load from the shipped classifier (no search folder)."""
    prompts = ["a handwritten digit 3", "a handwritten digit 7", "a handwritten digit 0"]
    for kind in ("digit", "realism"):
        reward = load_reward(kind)
        assert reward.name == kind
        a = reward(images(0), prompts)
        assert a.shape == (3,) and a.dtype == torch.float32 and torch.isfinite(a).all()
        assert not torch.allclose(a, reward(images(1), prompts)), "the score ignores the image"
        assert not torch.allclose(a, reward(images(0), prompts[::-1]))


@pytest.mark.parametrize("kind", [k for k in REWARD_KINDS if k in FOLDERS])
def test_reward_scores(kind: str, root: Path, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue(FOLDERS[kind])
    reward = load_reward(kind, search_dirs=[root], batch_size=2)  # 3 images: chunks of 2 + 1
    assert reward.name == kind
    x = images(0)
    a = reward(x, PROMPTS)
    assert a.shape == (3,) and a.dtype == torch.float32 and a.device.type == "cpu"
    assert torch.isfinite(a).all()
    assert torch.equal(a, reward(x, PROMPTS)), "not deterministic"
    if kind == "ocr":  # text match: in [0, 1], the prompt's quoted text is the target
        assert ((a >= 0) & (a <= 1)).all()
        texts = reward.last_texts
        expected = [text_match(t, reward_target_text(p)) for t, p in zip(texts, PROMPTS,
                                                                           strict=True)]
        assert a.tolist() == pytest.approx(expected)
    b = reward(images(1), PROMPTS)
    assert not torch.allclose(a, b), "the score ignores the image"
    if kind != "aesthetic":
        c = reward(x, OTHER_PROMPTS)
        assert not torch.allclose(a, c), "the score ignores the prompt"
    else:
        assert torch.equal(a, reward(x, OTHER_PROMPTS))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(root: Path, request: pytest.FixtureRequest) -> None:
    """On the GPU (fp32 and bf16) the scores match the CPU ones; the output stays on the CPU."""
    x = images(0)
    for kind in REWARD_KINDS:
        request.getfixturevalue(FOLDERS[kind])
        cpu = load_reward(kind, search_dirs=[root])(x, PROMPTS)
        gpu = load_reward(kind, search_dirs=[root], device="cuda")(x.cuda(), PROMPTS)
        assert gpu.device.type == "cpu" and gpu.dtype == torch.float32, kind
        if kind != "ocr":  # greedy text can flip on a near tie; the other scores are smooth
            torch.testing.assert_close(gpu, cpu, rtol=1e-2, atol=1e-2 * cpu.abs().max().item(),
                                       msg=kind)
        half = load_reward(kind, search_dirs=[root], device="cuda", dtype="bf16")(x, PROMPTS)
        assert half.dtype == torch.float32 and torch.isfinite(half).all(), kind
        if kind != "ocr":
            assert (half - cpu).abs().max() <= 0.1 * cpu.abs().max() + 0.05, (kind, half, cpu)


def test_batching_does_not_change_scores(clip_dir: Path, root: Path) -> None:
    x = images(2, n=5)
    prompts = [PROMPTS[i % 3] for i in range(5)]
    one = load_reward("clip", search_dirs=[root], batch_size=1)(x, prompts)
    many = load_reward("clip", search_dirs=[root], batch_size=16)(x, prompts)
    torch.testing.assert_close(one, many, rtol=1e-4, atol=1e-4)
    rgba = torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)  # alpha is dropped
    torch.testing.assert_close(load_reward("clip", search_dirs=[root])(rgba, prompts), many,
                               rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# reference checks against the upstream computations


def test_clip_score_matches_transformers(clip_dir: Path, pickscore_dir: Path,
                                         root: Path) -> None:
    """The in-torch resize/crop/normalise matches CLIPProcessor (PIL) on the same images."""
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    x = (images(3) * 255).round() / 255  # uint8-exact so PIL sees the same pixels
    pil = [Image.fromarray((im * 255).round().byte().numpy()) for im in x]
    for kind, folder in (("clip", clip_dir), ("pickscore", pickscore_dir)):
        model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
        proc = CLIPProcessor.from_pretrained(folder, local_files_only=True)
        inputs = proc(text=PROMPTS, images=pil, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model(**inputs)
        img = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
        txt = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
        scale = 100.0 if kind == "clip" else model.logit_scale.exp().item()
        expected = scale * (img * txt).sum(-1)
        got = load_reward(kind, search_dirs=[root])(x, PROMPTS)
        torch.testing.assert_close(got, expected, rtol=2e-3, atol=1e-3)


def test_transform_matches_clip_image_processor(clip_dir: Path) -> None:
    from PIL import Image
    from transformers import CLIPImageProcessor

    x = (images(4, n=2, h=37, w=61) * 255).round() / 255
    proc = CLIPImageProcessor.from_pretrained(clip_dir, local_files_only=True)
    ref = proc(images=[Image.fromarray((im * 255).round().byte().numpy()) for im in x],
               return_tensors="pt")["pixel_values"]
    got = ImageTransform(crop=(32, 32), resize=32)(x, "cpu", torch.float32)
    assert got.shape == ref.shape == (2, 3, 32, 32)
    assert (got - ref).abs().mean() < 0.02  # PIL rounds to uint8 after resizing


def test_hps_matches_open_clip(hps_dir: Path, root: Path) -> None:
    """HPSv2 = cosine of open_clip's normalised embeddings (its own tokenizer and weights)."""
    import open_clip
    from open_clip.model import CLIP

    model = CLIP(**TINY_OPEN_CLIP).eval()
    open_clip.factory.load_checkpoint(model, str(hps_dir / "HPS_v2.1_compressed.pt"))
    x = images(5)
    pixels = ImageTransform(crop=(32, 32), resize=32)(x, "cpu", torch.float32)
    with torch.no_grad():
        img = model.encode_image(pixels, normalize=True)
        txt = model.encode_text(open_clip.tokenizer.tokenize(PROMPTS), normalize=True)
    expected = (img * txt).sum(-1)
    torch.testing.assert_close(load_reward("hpsv2", search_dirs=[root])(x, PROMPTS), expected)


def test_imagereward_vision_matches_timm_vit(imagereward_dir: Path, root: Path) -> None:
    """The converted BLIP ViT gives the same tokens as timm's ViT (BLIP's ViT is timm's)."""
    import timm
    reward = load_reward("imagereward", search_dirs=[root])
    sd = torch.load(imagereward_dir / "ImageReward.pt", weights_only=True)
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0).eval()
    vit.load_state_dict({k[len("blip.visual_encoder."):]: v for k, v in sd.items()
                         if k.startswith("blip.visual_encoder.")}, strict=True)
    pixels = reward.transform(images(6), "cpu", torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(reward.vision(pixel_values=pixels).last_hidden_state,
                                   vit.forward_features(pixels), rtol=1e-4, atol=1e-4)


def test_aesthetic_linear_head_safetensors(root: Path, clip_tokenizer: Path,
                                           tmp_path: Path) -> None:
    """The simple linear head (weight/bias) in a .safetensors file, by an explicit path."""
    from safetensors.torch import save_file
    from transformers import CLIPModel

    folder = tmp_path / "my_aesthetic"
    tiny_clip(folder, clip_tokenizer, seed=8)
    torch.manual_seed(9)
    lin = torch.nn.Linear(16, 1)
    save_file({k: v.contiguous() for k, v in lin.state_dict().items()},
              str(folder / "aesthetic_head.safetensors"))
    reward = load_reward("aesthetic", paths={"aesthetic": str(folder)})
    x = images(7)
    clip = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        emb = clip.get_image_features(pixel_values=reward.transform(x, "cpu", torch.float32))
        expected = lin(emb / emb.norm(dim=-1, keepdim=True)).squeeze(-1)
    torch.testing.assert_close(reward(x, PROMPTS), expected)


# ---------------------------------------------------------------------------------------------
# weighted sums and specs


def test_weighted_sum(clip_dir: Path, aesthetic_dir: Path, ocr_dir: Path, root: Path) -> None:
    reward = load_reward("0.7*clip + 0.3*aesthetic - 0.5*ocr", search_dirs=[root])
    assert isinstance(reward, WeightedSum)
    assert reward.name == "0.7*clip+0.3*aesthetic-0.5*ocr"
    x = images(8)
    total = reward(x, PROMPTS)
    parts = reward.last_components
    assert set(parts) == {"clip", "aesthetic", "ocr"}
    for _, component in reward.components:
        torch.testing.assert_close(parts[component.name], component(x, PROMPTS))
    expected = 0.7 * parts["clip"] + 0.3 * parts["aesthetic"] - 0.5 * parts["ocr"]
    torch.testing.assert_close(total, expected)
    assert total.shape == (3,) and total.dtype == torch.float32
    assert isinstance(load_reward("2*clip", search_dirs=[root]), WeightedSum)


def test_parse_reward_spec() -> None:
    assert parse_reward_spec("pickscore") == [(1.0, "pickscore")]
    assert parse_reward_spec("0.7*pickscore+0.3*aesthetic") == [(0.7, "pickscore"),
                                                                (0.3, "aesthetic")]
    assert parse_reward_spec(" 2 * CLIP - .5*hps + 1e-1*image_reward ") == [
        (2.0, "clip"), (-0.5, "hpsv2"), (0.1, "imagereward")]
    for bad in ("", "   ", "pickscore+", "0.7*", "0.7 pickscore", "pickscore aesthetic",
                "0.7*pickscore+0.3*nope", "clip+clip", "clip*0.5", "*clip"):
        with pytest.raises(ValueError):
            parse_reward_spec(bad)
    with pytest.raises(ValueError, match="Unknown reward 'nope'; choose from clip"):
        parse_reward_spec("nope")


def test_reward_target_text() -> None:
    assert reward_target_text('a sign that says "Hello World" and "bye"') == "Hello World"
    assert reward_target_text("a dog's sign saying 'open'") == "open"
    assert reward_target_text("a poster “Grand Opening” in red") == "Grand Opening"
    assert reward_target_text("no quotes here ") == "no quotes here"
    assert reward_target_text('empty "" quotes') == 'empty "" quotes'
    assert reward_target_text("it's 'first' then \"second\"") == "first"


def test_text_match() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3 and levenshtein("abc", "abc") == 0
    assert text_match("HELLO   world", "hello world") == 1.0
    assert text_match("", "") == 1.0 and text_match("", "abc") == 0.0
    assert text_match("hallo", "hello") == pytest.approx(0.8)


# ---------------------------------------------------------------------------------------------
# errors


def test_missing_folder_message(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        load_reward("pickscore", search_dirs=[tmp_path / "models" / "rewards"])
    msg = str(err.value)
    assert str(tmp_path / "models" / "rewards" / "pickscore") in msg
    assert "rewards/pickscore" in msg and "allow downloads" in msg
    with pytest.raises(ValueError, match="no search folders"):
        load_reward("clip")
    with pytest.raises(ValueError, match="does not exist"):
        load_reward("clip", paths={"clip": str(tmp_path / "nope")})
    assert find_reward_path("clip", search_dirs=[tmp_path], allow_download=True) is None


@pytest.mark.parametrize("kind", REWARD_KINDS)
def test_empty_folder(kind: str, tmp_path: Path) -> None:
    (tmp_path / kind).mkdir()
    with pytest.raises(ValueError, match=str(tmp_path / kind)):
        load_reward(kind, search_dirs=[tmp_path])


def test_wrong_model_type(ocr_dir: Path, clip_dir: Path, hps_dir: Path, aesthetic_dir: Path,
                          tmp_path: Path) -> None:
    for kind in ("clip", "pickscore", "aesthetic"):
        with pytest.raises(ValueError, match="needs a CLIP"):
            load_reward(kind, paths={kind: str(ocr_dir)})
    with pytest.raises(ValueError, match="needs a TrOCR"):
        load_reward("ocr", paths={"ocr": str(clip_dir)})
    with pytest.raises(ValueError, match="not an open_clip"):  # a CLIP-H checkpoint expected
        load_reward("hpsv2", paths={"hpsv2": str(aesthetic_dir / "sac+logos+ava1-l14-linearMSE"
                                                                   ".pth")})
    with pytest.raises(ValueError, match="not an ImageReward checkpoint"):
        folder = tmp_path / "ir"
        folder.mkdir()
        shutil.copy(hps_dir / "HPS_v2.1_compressed.pt", folder / "ImageReward.pt")
        write_bert_vocab(folder)
        load_reward("imagereward", paths={"imagereward": str(folder)})
    with pytest.raises(ValueError, match="not an aesthetic predictor head"):
        folder = tmp_path / "aes"
        shutil.copytree(aesthetic_dir, folder)
        (folder / "sac+logos+ava1-l14-linearMSE.pth").unlink()
        torch.save({"foo": torch.zeros(3)}, folder / "head.pth")
        load_reward("aesthetic", paths={"aesthetic": str(folder)})


def test_bad_inputs(clip_dir: Path, root: Path) -> None:
    reward = load_reward("clip", search_dirs=[root])
    with pytest.raises(ValueError, match="prompts"):
        reward(images(0), PROMPTS[:2])
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        reward(images(0)[0], PROMPTS)
    shared = reward(images(0), ["a red car in the rain"])  # one prompt for the whole batch
    torch.testing.assert_close(shared, reward(images(0), [PROMPTS[1]] * 3))
    assert check_inputs(images(0, n=0), [])[0].shape[0] == 0
    assert reward(images(0, n=0), []).shape == (0,)


def test_unknown_kind_and_dtype() -> None:
    with pytest.raises(ValueError, match="Unknown reward"):
        load_reward("sharpness")
    with pytest.raises(ValueError, match="Unknown reward"):
        load_reward("clip", paths={"sharpness": "/x"})
    with pytest.raises(ValueError, match="dtype"):
        load_reward("clip", dtype="float8")


def test_clip_features_from_transformers_4_and_5() -> None:
    """transformers 5 returns ``BaseModelOutputWithPooling`` from ``get_*_features`` (seen on
    the GPU box with 5.17); both forms give the projected embedding."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from learned_schedules.training.rewards.clip_rewards import embedding

    t = torch.randn(2, 4)
    assert embedding(t) is t
    assert embedding(BaseModelOutputWithPooling(pooler_output=t)) is t
    with pytest.raises(TypeError):
        embedding(BaseModelOutputWithPooling())
