"""Shared pieces of the digits scripts: ComfyUI import, the text encoder, the VAE, the MMDiT,
conditioning and a differentiable Euler sampler (ComfyUI's samplers run under no_grad).

The model is an SD3-architecture MMDiT (ComfyUI's own class, found by the stock ``UNETLoader``),
a TAESD-architecture VAE with 16 latent channels (stock ``VAELoader``) and a deterministic random
full-size CLIP-L (stock ``CLIPLoader``, type ``sd3``), so the ComfyUI path is the ordinary
SD3 text-to-image one: ``EmptySD3LatentImage`` 32x32 -> a 16x4x4 latent.
"""

from __future__ import annotations

import copy
import math
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "digits"
UNET_FILE = MODEL_DIR / "digits_mmdit.safetensors"
VAE_FILE = MODEL_DIR / "digits_vae.safetensors"
CLIP_FILE = MODEL_DIR / "digits_clip_l.safetensors"  # rebuilt by build_text_encoder.py
CANVAS = 32
LATENT = CANVAS // 8
SD3_SCALE, SD3_SHIFT = 1.5305, 0.0609  # ComfyUI's SD3 latent format
VAE_ALPHA = 0.05  # TAESD decoders start with a soft clamp (3*tanh(x/3)): keep its input small
PROMPT = "a handwritten digit {}"
NEGATIVE = ""


def prompts() -> list[str]:
    return [PROMPT.format(d) for d in range(10)]


def setup_comfy(base_dir: Path | None = None) -> SimpleNamespace:
    """Import ComfyUI (CPU) in the documented order; see ``training/comfy/runtime.py``."""
    from learned_schedules.training.comfy.runtime import import_comfyui

    base = Path(base_dir or REPO / ".cache" / "digits_base")
    (base / "models").mkdir(parents=True, exist_ok=True)
    import_comfyui(None, base, cpu=True)
    import importlib
    for name in ("comfy.ops", "nodes", "comfy_extras.nodes_custom_sampler",
                 "comfy_extras.nodes_sd3"):
        importlib.import_module(name)
    return SimpleNamespace(comfy=sys.modules["comfy"], nodes=sys.modules["nodes"],
                           folder_paths=sys.modules["folder_paths"],
                           ncs=sys.modules["comfy_extras.nodes_custom_sampler"],
                           sd3=sys.modules["comfy_extras.nodes_sd3"])


# ---------------------------------------------------------------- progress that logs well
class _LineWriter:
    """tqdm target: one clean line per refresh when stderr is not a terminal."""

    def write(self, s: str) -> None:
        s = s.replace("\r", "").strip()
        if s:
            sys.stderr.write(s + "\n")

    def flush(self) -> None:
        sys.stderr.flush()


def progress(iterable, **kw):
    from tqdm import tqdm

    if sys.stderr.isatty():
        return tqdm(iterable, ncols=90, **kw)
    return tqdm(iterable, file=_LineWriter(), ncols=90, mininterval=20, **kw)


# ---------------------------------------------------------------- text encoder
def build_text_encoder(path: Path = CLIP_FILE, seed: int = 1) -> Path:
    """A random full-size CLIP-L (123M parameters, fp16), bit-identical for a seed: every tensor
    has its own generator seeded from (seed, key). Token embeddings are large next to the
    positional ones so that prompts differing in one word get clearly different embeddings."""
    from comfy import sd1_clip

    with torch.device("meta"):
        enc = sd1_clip.SDClipModel(device="meta", dtype=torch.float32)
    sd = {}
    for key, v in enc.transformer.state_dict().items():
        g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
        if key.endswith("token_embedding.weight"):
            t = torch.randn(v.shape, generator=g) * 0.5
        elif key.endswith("position_embedding.weight"):
            t = torch.randn(v.shape, generator=g) * 0.05
        elif "layer_norm" in key and key.endswith("weight"):
            t = torch.ones(v.shape)
        elif key.endswith("bias") or v.ndim < 2:
            t = torch.zeros(v.shape)
        else:
            t = torch.randn(v.shape, generator=g) * 0.02
        sd[key] = t.to(torch.float16).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path


def load_clip(c: SimpleNamespace, path: Path = CLIP_FILE):
    """The text encoder through ComfyUI's CLIPLoader code path (type sd3)."""
    if not path.is_file():
        build_text_encoder(path)
    return c.comfy.sd.load_clip(ckpt_paths=[str(path)], clip_type=c.comfy.sd.CLIPType.SD3)


def encode(clip, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(context [N, 77, 4096], pooled [N, 2048])`` as ``CLIPTextEncode`` makes them."""
    ctx, pooled = [], []
    for t in texts:
        out = clip.encode_from_tokens(clip.tokenize(t), return_pooled=True)
        ctx.append(out[0].float())
        pooled.append(out[1].float())
    return torch.cat(ctx), torch.cat(pooled)


# ---------------------------------------------------------------- VAE (linear, TAESD form)
def _conv(cin: int, cout: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class LinearAE(nn.Module):
    """A linear autoencoder shaped like TAESD's encoder/decoder (same convolutions, strides
    and upsamplings), so that its weights map exactly onto a TAESD file: each of its ``k``
    channels becomes a (+, -) pair of TAESD's 64 ReLU channels and TAESD's residual blocks
    become identities. Latents are normalised per channel (running statistics)."""

    def __init__(self, k: int = 24, latent: int = 16) -> None:
        super().__init__()
        assert 2 * k <= 64
        self.k = k
        self.enc = nn.ModuleList([_conv(1, k), _conv(k, k, 2, False), _conv(k, k, 2, False),
                                  _conv(k, k, 2, False), _conv(k, latent)])
        self.dec = nn.ModuleList([_conv(latent, k), _conv(k, k, bias=False),
                                  _conv(k, k, bias=False), _conv(k, k, bias=False),
                                  _conv(k, 1)])
        self.norm = nn.BatchNorm2d(latent, affine=False, momentum=0.02)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 1, 32, 32]`` -> normalised latent ``[N, 16, 4, 4]``."""
        for conv in self.enc:
            x = conv(x)
        return self.norm(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dec[0](z)
        for conv in self.dec[1:4]:
            x = conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        return self.dec[4](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def _pair_in(w: torch.Tensor) -> torch.Tensor:
    """A conv weight on ``k`` signed channels -> on their 2k (+, -) ReLU pairs."""
    return torch.cat([w, -w], 1)


def _pair_out(w: torch.Tensor) -> torch.Tensor:
    return torch.cat([w, -w], 0)


def _pad64(w: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    out_shape = list(w.shape)
    for d in dims:
        out_shape[d] = 64
    out = torch.zeros(out_shape)
    out[tuple(slice(0, s) for s in w.shape)] = w
    return out


def linear_ae_to_taesd(ae: LinearAE, alpha: float = VAE_ALPHA) -> dict[str, torch.Tensor]:
    """The TAESD state dict (``taesd_encoder.*``, ``taesd_decoder.*``, ``vae_scale``,
    ``vae_shift``) that computes the same encode / decode, in ComfyUI's SD3 latent space."""
    from comfy.taesd.taesd import TAESD

    ae = ae.eval()
    ref = TAESD(latent_channels=16).state_dict()
    sd = {k: torch.zeros(v.shape) for k, v in ref.items()}
    e, d = ae.enc, ae.dec
    # encoder: input is the RGB image in [0, 1]; grey = mean of the channels
    w0 = e[0].weight.detach().repeat(1, 3, 1, 1) / 3
    sd["taesd_encoder.0.weight"] = _pad64(_pair_out(w0), (0,))
    sd["taesd_encoder.0.bias"] = _pad64(_pair_out(e[0].bias.detach()[:, None]), (0,))[:, 0]
    for idx, conv in zip((2, 6, 10), e[1:4], strict=True):
        sd[f"taesd_encoder.{idx}.weight"] = _pad64(_pair_out(_pair_in(conv.weight.detach())),
                                                  (0, 1))
    mean, std = ae.norm.running_mean, (ae.norm.running_var + ae.norm.eps).sqrt()
    wz = e[4].weight.detach() / std[:, None, None, None]
    bz = (e[4].bias.detach() - mean) / std
    sd["taesd_encoder.14.weight"] = _pad64(_pair_in(wz), (1,)) * alpha
    sd["taesd_encoder.14.bias"] = bz * alpha
    # decoder: its input is alpha * (normalised latent); the soft clamp is ~identity there
    sd["taesd_decoder.1.weight"] = _pad64(_pair_out(d[0].weight.detach() / alpha), (0,))
    sd["taesd_decoder.1.bias"] = _pad64(_pair_out(d[0].bias.detach()[:, None]), (0,))[:, 0]
    for idx, conv in zip((7, 12, 17), d[1:4], strict=True):
        sd[f"taesd_decoder.{idx}.weight"] = _pad64(_pair_out(_pair_in(conv.weight.detach())),
                                                  (0, 1))
    wf = d[4].weight.detach().repeat(3, 1, 1, 1)
    sd["taesd_decoder.19.weight"] = _pad64(_pair_in(wf), (1,))
    sd["taesd_decoder.19.bias"] = d[4].bias.detach().repeat(3)
    sd["vae_scale"] = torch.tensor(SD3_SCALE * alpha)
    sd["vae_shift"] = torch.tensor(SD3_SHIFT)
    missing = set(ref) - set(sd)
    assert not missing, missing
    return {k: v.contiguous() for k, v in sd.items()}


def vae_latent_to_model(z: torch.Tensor) -> torch.Tensor:
    """ComfyUI's SD3 ``process_in``: VAE latent -> the space the MMDiT works in."""
    return (z - SD3_SHIFT) * SD3_SCALE


def model_to_vae_latent(x: torch.Tensor) -> torch.Tensor:
    return x / SD3_SCALE + SD3_SHIFT


class FastDecoder(nn.Module):
    """The VAE decoder as the small linear network it is (same numbers as ComfyUI's TAESD
    decode up to its soft clamp), differentiable and ~70x cheaper: model-space latent ->
    grey image ``[N, 32, 32]`` in [0, 1]."""

    def __init__(self, ae: LinearAE) -> None:
        super().__init__()
        self.ae = ae.eval()

    def forward(self, x_model: torch.Tensor) -> torch.Tensor:
        return self.ae.decode(x_model)[:, 0].clamp(0, 1)


def load_fast_decoder(path: Path = MODEL_DIR / "digits_vae_linear.safetensors") -> FastDecoder:
    ae = LinearAE(k=int(load_file(str(path))["k"]))
    sd = load_file(str(path))
    sd.pop("k")
    ae.load_state_dict(sd)
    return FastDecoder(ae)


# ---------------------------------------------------------------- MMDiT
MMDIT = dict(patch_size=2, in_channels=16, out_channels=16, depth=2, adm_in_channels=2048,
             context_embedder_config={"target": "torch.nn.Linear",
                                      "params": {"in_features": 4096, "out_features": 128}},
             pos_embed_max_size=4, num_patches=16)


def build_mmdit(depth: int = 2, seed: int = 0) -> nn.Module:
    """ComfyUI's MMDiT (SD3), initialised explicitly (``disable_weight_init`` leaves weights
    uninitialised): normal(0.02) linears, fixed 2D sin-cos positions, zero adaLN and output."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT, get_2d_sincos_pos_embed

    cfg = dict(MMDIT, depth=depth)
    cfg["context_embedder_config"] = {"target": "torch.nn.Linear",
                                      "params": {"in_features": 4096, "out_features": 64 * depth}}
    net = MMDiT(**cfg, operations=comfy.ops.disable_weight_init)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * min(0.02, fan_in ** -0.5))
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
        for name, m in net.named_modules():
            if name.endswith("adaLN_modulation") or name.startswith("final_layer"):
                for p in m.parameters():
                    p.zero_()
        hidden = 64 * depth
        pe = get_2d_sincos_pos_embed(hidden, cfg["pos_embed_max_size"])
        net.pos_embed.copy_(torch.as_tensor(pe, dtype=torch.float32)[None])
    return net


def embed_context(net: nn.Module, ctx: torch.Tensor) -> torch.Tensor:
    """``net.context_embedder`` on CLIP-L contexts: only their first 768 of 4096 columns are
    non-zero (SD3 pads CLIP-L to T5's width), so only those columns are multiplied."""
    w = net.context_embedder.weight
    if ctx.shape[-1] > 768:
        assert not ctx[..., 768:].any(), "context beyond CLIP-L's 768 columns"
    return F.linear(ctx[..., :768], w[:, :768], net.context_embedder.bias)


def velocity(net: nn.Module, x: torch.Tensor, sigma: torch.Tensor, ctx_emb: torch.Tensor,
             pooled: torch.Tensor) -> torch.Tensor:
    """``MMDiT.forward`` with an already embedded context (see :func:`embed_context`): the
    flow velocity (noise - x0) at ``sigma``; SD3's network sees 1000*sigma."""
    hw = x.shape[-2:]
    h = net.x_embedder(x) + net.cropped_pos_embed(hw, device=x.device).to(x.dtype)
    c = net.t_embedder(sigma * 1000.0, dtype=x.dtype) + net.y_embedder(pooled)
    h = net.forward_core_with_concat(h, c, ctx_emb)
    return net.unpatchify(h, hw=hw)[:, :, :hw[-2], :hw[-1]]


def fit_mmdit(net: nn.Module, x0_all: torch.Tensor, labels: torch.Tensor, empty: int,
              ctx: torch.Tensor, pooled: torch.Tensor, args, g: torch.Generator
              ) -> tuple[nn.Module, list[float]]:
    """Train ``net`` on the rectified-flow loss (``args``: steps, batch, lr, drop, ema) with
    prompt dropout to the ``empty`` row of ``ctx`` / ``pooled``; -> (its EMA copy, losses).
    The digits and shapes models' one training loop."""
    ema = copy.deepcopy(net).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    warm = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    losses: list[float] = []
    bar = progress(range(args.steps), desc="mmdit")
    for step in bar:
        idx = torch.randint(0, len(labels), (args.batch,), generator=g)
        x0 = x0_all[idx]
        cls = labels[idx].clone()
        cls[torch.rand(args.batch, generator=g) < args.drop] = empty
        sigma = torch.sigmoid(torch.randn(args.batch, generator=g))
        noise = torch.randn(x0.shape, generator=g)
        s = sigma[:, None, None, None]
        xt = s * noise + (1 - s) * x0
        ctx_emb = embed_context(net, ctx)
        out = velocity(net, xt, sigma, ctx_emb[cls], pooled[cls])
        loss = F.mse_loss(out, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", refresh=False)
    return ema, losses


def load_unet_file(path: Path = UNET_FILE) -> nn.Module:
    """The saved MMDiT as a plain module (fp32), for the differentiable sampler."""
    sd = {k: v.float() for k, v in load_file(str(path)).items()}
    depth = sd["x_embedder.proj.weight"].shape[0] // 64
    net = build_mmdit(depth)
    net.load_state_dict(sd)
    return net.eval()


def euler(net: nn.Module, noise: torch.Tensor, sigmas: torch.Tensor, ctx_emb: torch.Tensor,
          pooled: torch.Tensor, neg_emb: torch.Tensor, neg_pooled: torch.Tensor,
          cfg: float) -> torch.Tensor:
    """Euler sampling with classifier-free guidance (as ComfyUI's ``euler`` + CFG guider),
    differentiable in ``sigmas`` (``[L+1]`` shared or ``[N, L+1]`` per sample); contexts are
    embedded (:func:`embed_context`), one row per sample. Returns the model-space x0."""
    n = noise.shape[0]
    if sigmas.ndim == 1:
        sigmas = sigmas[None].expand(n, -1)
    x = noise * sigmas[:, :1, None, None]
    for i in range(sigmas.shape[1] - 1):
        s, s_next = sigmas[:, i], sigmas[:, i + 1]
        if cfg == 1.0:
            v = velocity(net, x, s, ctx_emb, pooled)
        else:
            v = velocity(net, torch.cat([x, x]), torch.cat([s, s]),
                         torch.cat([ctx_emb, neg_emb]), torch.cat([pooled, neg_pooled]))
            v_c, v_u = v.chunk(2)
            v = v_u + cfg * (v_c - v_u)
        x = x + v * (s_next - s)[:, None, None, None]
    return x


def default_sigmas(model_patcher, steps: int, scheduler: str = "simple") -> torch.Tensor:
    """ComfyUI's own sigmas for a scheduler on this model (SD3 flow, shift 3)."""
    import comfy.samplers

    ms = model_patcher.get_model_object("model_sampling")
    return comfy.samplers.calculate_sigmas(ms, scheduler, steps).float().cpu()


def noise_for(seeds: list[int]) -> torch.Tensor:
    """The initial noise ComfyUI's RandomNoise makes for each seed (one 16x4x4 latent each)."""
    out = []
    for s in seeds:
        g = torch.manual_seed(int(s))
        out.append(torch.randn((1, 16, LATENT, LATENT), generator=g, dtype=torch.float32))
    return torch.cat(out)


# ---------------------------------------------------------------- the stock ComfyUI path
DEFAULT_CFG = 2.0


def stock_models(c: SimpleNamespace, folder: Path = MODEL_DIR):
    """``(model, clip, vae)`` through the stock UNETLoader / CLIPLoader (sd3) / VAELoader
    nodes, with ``folder`` registered as a model folder (as extra_model_paths.yaml would)."""
    fp = c.folder_paths
    for kind in ("diffusion_models", "text_encoders", "vae"):
        fp.add_model_folder_path(kind, str(folder))
    if not (folder / CLIP_FILE.name).is_file():
        build_text_encoder(folder / CLIP_FILE.name)
    n = c.nodes
    model = n.UNETLoader().load_unet(UNET_FILE.name, "default")[0]
    clip = n.CLIPLoader().load_clip(CLIP_FILE.name, type="sd3")[0]
    vae = n.VAELoader().load_vae(VAE_FILE.name)[0]
    return model, clip, vae


@torch.no_grad()
def stock_sample(c: SimpleNamespace, model, clip, vae, digit: int, batch: int, seed: int,
                 steps: int = 30, cfg: float = DEFAULT_CFG, sampler: str = "euler",
                 scheduler: str = "simple") -> torch.Tensor:
    """CLIPTextEncode -> EmptySD3LatentImage 32x32 -> KSampler -> VAEDecode: IMAGE [N,32,32,3]."""
    n = c.nodes
    pos = n.CLIPTextEncode().encode(clip, PROMPT.format(digit))[0]
    neg = n.CLIPTextEncode().encode(clip, NEGATIVE)[0]
    latent = c.sd3.EmptySD3LatentImage.execute(CANVAS, CANVAS, batch).result[0]
    out = n.KSampler().sample(model, seed, steps, cfg, sampler, scheduler, pos, neg, latent,
                              denoise=1.0)[0]
    return n.VAEDecode().decode(vae, out)[0]
