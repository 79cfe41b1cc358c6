"""The ComfyUI back-end: rollouts on a real Flux / SD3 model through ComfyUI's own machinery.

A context is a (prompt, seed) pair. Its policy features are the exact initial noise x_T that
ComfyUI draws for that seed and the prompt's text conditioning (computed once per prompt and
cached on disk). A rollout samples the context with one schedule through ``CFGGuider`` and the
chosen ComfyUI sampler (all B*K rollouts batched, see :mod:`training.comfy.sampling`), decodes
with the VAE and scores the image with the reward. No gradient flows through the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...policies.latent_encoder import PRESETS, LatentTextEncoder
from ..rl.backend import Backend
from .cond_cache import ConditioningCache, default_cache_dir, file_identity
from .prompts import load_prompts, split_prompts

if TYPE_CHECKING:
    from ..rl.config import TrainConfig

log = logging.getLogger("learned_schedules.training")

RewardFn = Callable[[torch.Tensor, list[str]], torch.Tensor]
#: per-family defaults a user can override
FAMILY_DEFAULTS = {"flux-dev": {"cfg": 1.0, "guidance": 3.5},
                   "flux-schnell": {"cfg": 1.0, "guidance": None},
                   "sd3": {"cfg": 4.5, "guidance": None}}


@dataclass
class PromptContexts:
    """A batch of contexts: prompt indices (into the back-end's prompt list) and seeds."""

    prompt_ids: torch.Tensor
    seeds: torch.Tensor

    def __len__(self) -> int:
        return int(self.prompt_ids.shape[0])

    def select(self, index: torch.Tensor | Sequence[int]) -> PromptContexts:
        index = torch.as_tensor(index, dtype=torch.long)
        return PromptContexts(self.prompt_ids[index], self.seeds[index])

    def repeat(self, k: int) -> PromptContexts:
        """Each context ``k`` times in a row (rollout order ``[B, K]`` flattened)."""
        return PromptContexts(self.prompt_ids.repeat_interleave(k),
                              self.seeds.repeat_interleave(k))


def noise_for_seed(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """x_T for one seed: exactly ``comfy.sample.prepare_noise`` on an empty latent (without
    touching the global RNG)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(list(shape), generator=g)


class ComfyBackend(Backend):
    """Rollouts on a ComfyUI model (see the module docstring)."""

    __test__ = False

    def __init__(self, models: Any, *, train_prompts: list[str], eval_prompts: list[str],
                 reward: RewardFn | None, reward_name: str, width: int = 1024,
                 height: int = 1024, sampler: str = "euler", cfg: float | None = None,
                 guidance: float | None = None, negative_prompt: str = "",
                 rollout_batch: int = 0, cache_dir: str | Path | None = None,
                 pool_size: int = 16384, pool_seed: int = 0, encoder_preset: str = "auto",
                 reference_steps: int = 40, reference_scheduler: str = "simple"):
        from ...comfy_bridge import features as cf
        from .sampling import check_sampler_name

        check_sampler_name(sampler)
        if width % 16 or height % 16 or min(width, height) < 64:
            raise ValueError(f"width and height must be multiples of 16 and >= 64, got "
                             f"{width}x{height}.")
        if not train_prompts or not eval_prompts:
            raise ValueError("Need at least one training and one held-out prompt.")
        self.models = models
        self.model, self.clip, self.vae = models.model, models.clip, models.vae
        self.model_family = models.family
        defaults = FAMILY_DEFAULTS[self.model_family]
        self.cfg = defaults["cfg"] if cfg is None else float(cfg)
        self.guidance = defaults["guidance"] if guidance is None else guidance
        if self.model_family != "flux-dev":
            self.guidance = None  # only Flux dev has a distilled-guidance input
        self.prompts = list(train_prompts) + list(eval_prompts)
        self.n_train = len(train_prompts)
        self.reward_fn, self.reward_name = reward, reward_name
        self.width, self.height, self.sampler = width, height, sampler
        self.negative_prompt = negative_prompt
        self.rollout_batch = rollout_batch
        self.pool_size, self.pool_seed = pool_size, pool_seed
        self.encoder_preset = encoder_preset
        self.reference_steps, self.reference_scheduler = reference_steps, reference_scheduler
        latent_format = self.model.get_model_object("latent_format")
        ratio = int(getattr(self.vae, "downscale_ratio", 8))
        self.latent_shape = (latent_format.latent_channels, height // ratio, width // ratio)
        identity = "|".join(file_identity(p) for p in models.files.get("text_encoders", []))
        self.cond_cache = ConditioningCache(
            default_cache_dir() if cache_dir is None else cache_dir,
            identity=f"{self.model_family}|{identity}")
        self._cf = cf
        self._pool: PromptContexts | None = None
        self._references: dict[tuple[int, int], torch.Tensor] = {}

    # -- construction from a config ---------------------------------------------------------
    @classmethod
    def from_config(cls, config: TrainConfig) -> ComfyBackend:
        from .models import load_models, parse_json_option
        from .runtime import import_comfyui

        cui = import_comfyui(config.comfyui_path, config.comfyui_base,
                             cpu=True if config.comfyui_cpu else None)
        if not config.prompts:
            raise ValueError("The comfy back-end needs --prompts (a .txt, .jsonl or .csv file).")
        prompts = load_prompts(config.prompts)
        if config.eval_prompts:
            held = load_prompts(config.eval_prompts)
            train_prompts = [p for p in prompts if p not in set(held)]
            if not train_prompts:
                raise ValueError("Every training prompt is also in --eval-prompts.")
        else:
            train_prompts, held = split_prompts(prompts, config.held_out, seed=config.seed)
        models = load_models(
            checkpoint=config.checkpoint, diffusion_model=config.diffusion_model,
            text_encoders=_split_list(config.text_encoders), vae=config.vae,
            clip_type=config.clip_type, weight_dtype=config.weight_dtype,
            unet_config=parse_json_option(config.unet_config, "--unet-config"),
            text_encoder_options=parse_json_option(config.text_encoder_options,
                                                   "--text-encoder-options"))
        reward_name = config.reward or ""
        reward = None
        if reward_name != "reference":
            if not reward_name:
                raise ValueError("Choose a reward with --reward (e.g. pickscore, clip, "
                                 "aesthetic, hpsv2, imagereward, ocr, reference, or a sum "
                                 "like 0.7*pickscore+0.3*aesthetic).")
            from ..rewards import load_reward

            mm = cui.model_management
            reward = load_reward(
                reward_name, paths=_split_pairs(config.reward_paths),
                search_dirs=[Path(p) for p in cui.folder_paths.get_folder_paths("rewards")]
                if "rewards" in cui.folder_paths.folder_names_and_paths
                else [Path(cui.folder_paths.models_dir) / "rewards"],
                device=mm.get_torch_device(), allow_download=config.allow_download)
        return cls(models, train_prompts=train_prompts, eval_prompts=held, reward=reward,
                   reward_name=reward_name, width=config.width, height=config.height,
                   sampler=config.sampler, cfg=config.cfg, guidance=config.guidance,
                   negative_prompt=config.negative_prompt, rollout_batch=config.rollout_batch,
                   cache_dir=config.cache_dir, pool_size=config.pool_size,
                   pool_seed=config.seed + 7_919, encoder_preset=config.encoder_preset,
                   reference_steps=config.reference_steps)

    # -- contexts -------------------------------------------------------------------------------
    @property
    def pool(self) -> PromptContexts:
        """The training (prompt, seed) pairs: ``pool_size`` of them, from ``pool_seed``."""
        if self._pool is None:
            g = torch.Generator().manual_seed(self.pool_seed)
            self._pool = PromptContexts(torch.randint(self.n_train, (self.pool_size,),
                                                      generator=g),
                                        torch.randint(2**31 - 1, (self.pool_size,),
                                                      generator=g))
        return self._pool

    def draw_contexts(self, n: int, generator: torch.Generator) -> PromptContexts:
        return self.pool.select(torch.randint(self.pool_size, (n,), generator=generator))

    def held_out_contexts(self, n: int, seed: int) -> PromptContexts:
        """``n`` held-out contexts: the held-out prompts in turn, seeds ``seed, seed+1, ...``
        per round over the prompts."""
        n_held = len(self.prompts) - self.n_train
        i = torch.arange(n)
        return PromptContexts(self.n_train + i % n_held, seed + i // n_held)

    def prompt_texts(self, contexts: PromptContexts) -> list[str]:
        return [self.prompts[int(i)] for i in contexts.prompt_ids]

    # -- features -------------------------------------------------------------------------------
    def _encode(self, prompt: str) -> tuple[torch.Tensor, dict[str, Any]]:
        tokens = self.clip.tokenize(prompt)
        tokens_out, extra = self.clip.encode_from_tokens_scheduled(tokens)[0]
        return tokens_out.cpu(), {k: (v.cpu() if torch.is_tensor(v) else v)
                                  for k, v in extra.items()}

    def conditioning(self, prompt: str) -> tuple[torch.Tensor, dict[str, Any]]:
        """(tokens ``[1, T, D]``, extras incl. ``pooled_output``) for a prompt, cached."""
        return self.cond_cache.get(prompt, self._encode)

    def noise(self, contexts: PromptContexts) -> torch.Tensor:
        """x_T ``[B, C, h, w]`` of every context."""
        return torch.cat([noise_for_seed(int(s), (1, *self.latent_shape))
                          for s in contexts.seeds])

    def features(self, contexts: PromptContexts) -> dict[str, torch.Tensor]:
        conds = [self.conditioning(p) for p in self.prompt_texts(contexts)]
        lengths = [c[0].shape[1] for c in conds]
        t_max = max(lengths)
        tokens = torch.zeros(len(conds), t_max, conds[0][0].shape[-1])
        for i, (tok, _) in enumerate(conds):
            tokens[i, :tok.shape[1]] = tok[0].float()
        feats = {"noise": self.noise(contexts), "tokens": tokens}
        if len(set(lengths)) > 1:
            feats["token_mask"] = torch.arange(t_max)[None, :] < torch.tensor(lengths)[:, None]
        pooled = [c[1].get("pooled_output") for c in conds]
        if all(p is not None for p in pooled):
            feats["pooled"] = torch.cat([p.float() for p in pooled])
        return feats

    def build_encoder(self, hidden: int, depth: int) -> nn.Module:
        """The paper's latent + text encoder, sized by a family preset and the real features."""
        probe = self.features(self.held_out_contexts(1, 0))
        preset = self.encoder_preset
        if preset == "auto":
            preset = "flux" if self.model_family.startswith("flux") else "sd3"
        if preset not in PRESETS:
            raise ValueError(f"encoder_preset must be 'auto' or one of {sorted(PRESETS)}.")
        return LatentTextEncoder.for_family(
            preset, latent_channels=probe["noise"].shape[1],
            token_dim=probe["tokens"].shape[-1],
            pooled_dim=probe["pooled"].shape[-1] if "pooled" in probe else 0)

    # -- rollouts -------------------------------------------------------------------------------
    def model_sigmas(self, flow: torch.Tensor) -> torch.Tensor:
        """Policy schedules (flow time) -> this model's sigmas."""
        return self._cf.flow_to_model_sigmas(self.model, flow.double()).float()

    def default_sigmas(self, steps: int, scheduler: str = "simple") -> torch.Tensor:
        """ComfyUI's ``BasicScheduler`` sigmas for this model."""
        return self._cf.default_sigmas(self.model, steps, scheduler).float()

    def default_segments(self, steps: int) -> torch.Tensor:
        """Segments ``[L+1]`` whose schedule is the model's default one (the policy's start)."""
        from ...policies.schedule import schedule_to_increments

        _, hi = self._cf.sigma_range(self.model)
        flow = self.default_sigmas(steps).double()
        if not self._cf.is_flow_model(self.model):
            raise ValueError("Only flow models (Flux, SD3) are supported.")
        return schedule_to_increments(flow / hi).float()

    def write_samples(self, policy: nn.Module, path: Path) -> Path:
        """Sample images (default above, learned below) of a few held-out contexts."""
        from .eval import write_sample_grid

        return write_sample_grid(self, policy, path)

    def _batched_cond(self, prompts: list[str]) -> list:
        conds = [self.conditioning(p) for p in prompts]
        extra: dict[str, Any] = {}
        for key, value in conds[0][1].items():
            if torch.is_tensor(value) and value.ndim > 0:
                extra[key] = torch.cat([c[1][key] for c in conds])
            else:
                extra[key] = value
        if self.guidance is not None:
            extra["guidance"] = float(self.guidance)
        return [[torch.cat([c[0] for c in conds]), extra]]

    def _negative(self, n: int) -> list | None:
        if self.cfg == 1.0:
            return None
        tokens, extra = self.conditioning(self.negative_prompt)
        rep = {k: (v.expand(n, *v.shape[1:]) if torch.is_tensor(v) and v.ndim > 0 else v)
               for k, v in extra.items()}
        return [[tokens.expand(n, *tokens.shape[1:]), rep]]

    def _chunk(self, n: int) -> int:
        if self.rollout_batch > 0:
            return self.rollout_batch
        import comfy.model_management as mm

        device = self.model.load_device
        if device.type == "cpu":
            return n
        per = self.model.model.memory_required([2 if self.cfg != 1.0 else 1,
                                                *self.latent_shape])
        free = mm.get_free_memory(device) - self.model.model_size()
        return max(1, min(n, int(0.8 * free / max(per, 1))))

    @torch.inference_mode()
    def sample_latents(self, contexts: PromptContexts, sigmas: torch.Tensor) -> torch.Tensor:
        """Denoised latents ``[N, ...]`` for N contexts, each with its own sigmas
        ``[N, L+1]`` (or one schedule ``[L+1]`` for all)."""
        from .sampling import sample_rollouts

        n = len(contexts)
        if sigmas.ndim == 1:
            sigmas = sigmas.expand(n, -1)
        prompts = self.prompt_texts(contexts)
        noise = self.noise(contexts)
        lengths = torch.tensor([self.conditioning(p)[0].shape[1] for p in prompts])
        out = torch.empty(n, *self.latent_shape)
        chunk = self._chunk(n)
        for length in lengths.unique():  # rollouts whose token counts match share a batch
            rows = torch.nonzero(lengths == length).flatten()
            for start in range(0, len(rows), chunk):
                idx = rows[start:start + chunk]
                sub_prompts = [prompts[int(i)] for i in idx]
                latents = sample_rollouts(
                    self.model, self._batched_cond(sub_prompts), self._negative(len(idx)),
                    noise[idx], sigmas[idx].cpu(), [int(s) for s in contexts.seeds[idx]],
                    self.sampler, self.cfg)
                out[idx] = latents.float().cpu()
        return out

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE decode: images ``[N, H, W, 3]`` in [0, 1] (ComfyUI's IMAGE layout)."""
        return self.vae.decode(latents).float().cpu()[..., :3]

    @torch.inference_mode()
    def images(self, contexts: PromptContexts, sigmas: torch.Tensor) -> torch.Tensor:
        return self.decode(self.sample_latents(contexts, sigmas))

    @torch.inference_mode()
    def score(self, contexts: PromptContexts, images: torch.Tensor) -> torch.Tensor:
        """Rewards ``[N]`` of decoded images."""
        if self.reward_name == "reference":
            refs = self.reference_images(contexts)
            mse = (images - refs).pow(2).flatten(1).mean(1).clamp_min(1e-10)
            return -10.0 * torch.log10(mse)  # PSNR (dB) to the many-step sample
        assert self.reward_fn is not None
        return self.reward_fn(images, self.prompt_texts(contexts)).float().cpu()

    @torch.inference_mode()
    def rewards(self, contexts: PromptContexts, schedules: torch.Tensor) -> torch.Tensor:
        """``schedules [B, K, L+1]`` (flow time) -> rewards ``[B, K]`` (all B*K at once)."""
        b, k, _ = schedules.shape
        flat = contexts.repeat(k)
        sigmas = self.model_sigmas(schedules.reshape(b * k, -1))
        return self.score(flat, self.images(flat, sigmas)).reshape(b, k)

    @torch.inference_mode()
    def reference_images(self, contexts: PromptContexts) -> torch.Tensor:
        """The ``reference_steps``-step sample of every context (computed once each)."""
        keys = [(int(p), int(s)) for p, s in zip(contexts.prompt_ids, contexts.seeds,
                                                 strict=True)]
        missing = [key for key in dict.fromkeys(keys) if key not in self._references]
        if missing:
            todo = PromptContexts(torch.tensor([m[0] for m in missing]),
                                  torch.tensor([m[1] for m in missing]))
            sig = self.default_sigmas(self.reference_steps, self.reference_scheduler)
            for key, img in zip(missing, self.images(todo, sig), strict=True):
                self._references[key] = img
        return torch.stack([self._references[key] for key in keys])


def _split_list(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _split_pairs(value: str | None) -> dict[str, str]:
    """``"kind=path,kind=path"`` -> dict (``ValueError`` for a malformed entry)."""
    out: dict[str, str] = {}
    for item in _split_list(value) or []:
        if "=" not in item:
            raise ValueError(f"--reward-paths entries look like kind=path, got {item!r}.")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out

