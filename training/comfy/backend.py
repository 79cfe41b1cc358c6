"""The ComfyUI back-end: rollouts on any supported model family through ComfyUI's own machinery.

:class:`ComfyBackend` implements :class:`training.rl.backend.Backend` by composing one part
per job:

* :mod:`.contexts`: (prompt, seed) contexts, the training pool, held-out contexts;
* :mod:`.inputs`: the policy's features (ComfyUI's x_T for the seed, the prompt's cached text
  conditioning), the sampler's batched conditioning, the encoder's size;
* :mod:`.rollout`: the rollout strategy, chosen once from the sampler name (the bridge's
  per-item step loop for ``euler`` / ``heun`` / ``dpmpp_2m``, ComfyUI's sampler in lockstep
  threads for the others); with a low-noise expert (Wan 2.2 A14B), :mod:`.experts` runs the
  high-noise expert to the boundary and the low-noise one after;
* :mod:`.references`: the ``reference`` reward's many-step images and AdaGen's references;
* :mod:`.evaluation`: comparators, set-level measures, grids and sample images.

A rollout decodes its latents with the VAE and scores the images with the reward (a video's
frames one by one, averaged; the ``reference`` reward on video compares latents by default).
No gradient flows through the model (except in :meth:`ComfyBackend.flow_rollout`, ART's flow
field).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...comfy_bridge import features as cf
from ...comfy_bridge.sigmas import default_flow, default_sigmas
from ...policies.actors import Actor, Trajectory
from ..rl.backend import Backend, SetMetric
from .cond_cache import ConditioningCache
from .contexts import PromptContextPool, PromptContexts, prompts_from_config
from .evaluation import Evaluation, SetMeasures, set_measures_for, set_metrics_option
from .inputs import ModelInputs, size_encoder
from .references import References, psnr
from .rollout import Rollouts, rollouts_for

if TYPE_CHECKING:
    from ..rl.config import TrainConfig
    from .experts import ExpertRollouts

log = logging.getLogger("learned_schedules.training")

RewardFn = Callable[[torch.Tensor, list[str]], torch.Tensor]


class ComfyBackend(PromptContextPool, Backend):
    """Rollouts on a ComfyUI model (see the module docstring)."""

    __test__ = False

    def __init__(self, models: Any, *, train_prompts: list[str], eval_prompts: list[str],
                 reward: RewardFn | None, reward_name: str, width: int = 1024,
                 height: int = 1024, sampler: str = "euler", cfg: float | None = None,
                 guidance: float | None = None, negative_prompt: str = "",
                 rollout_batch: int = 0, cache_dir: str | Path | None = None,
                 pool_size: int = 16384, pool_seed: int = 0, encoder_preset: str = "auto",
                 reference_steps: int = 40, reference_scheduler: str = "simple",
                 comparator_schedulers: Sequence[str] = ("simple",),
                 held_out_seeds: bool = False, set_measures: SetMeasures | None = None,
                 frames: int = 0, low_model: Any = None, expert_boundary: float | None = None,
                 reward_frames: int = 0, reference_space: str = "auto"):
        from .sampling import check_sampler_name

        check_sampler_name(sampler)
        if width % 16 or height % 16 or min(width, height) < 16:
            raise ValueError(f"width and height must be multiples of 16 and >= 16, got "
                             f"{width}x{height}.")
        self.init_contexts(train_prompts, eval_prompts, held_out_seeds=held_out_seeds,
                           pool_size=pool_size, pool_seed=pool_seed)
        self.evaluation = Evaluation(self, comparator_schedulers, set_measures)
        self.models = models
        self.model, self.clip, self.vae = models.model, models.clip, models.vae
        self.family = cf.model_family_info(self.model)  # ValueError for SDXL, SD 1.5...
        self.model_family = self.family.name
        if self.family.guidance is None:
            guidance = None  # only Flux dev has a distilled-guidance input
        elif guidance is None:
            guidance = self.family.guidance
        self.reward_fn, self.reward_name = reward, reward_name
        self.width, self.height = width, height
        self.encoder_preset = encoder_preset
        self.reward_frames = reward_frames
        if reference_space not in ("auto", "image", "latent"):
            raise ValueError(f"reference_space must be auto, image or latent, got "
                             f"{reference_space!r}.")
        if reference_space == "auto":
            reference_space = "latent" if self.family.video else "image"
        self.reference_space = reference_space
        self.inputs = ModelInputs(
            models, family_name=self.model_family,
            cfg=self.family.cfg if cfg is None else float(cfg), guidance=guidance,
            negative_prompt=negative_prompt,
            latent_shape=latent_shape_for(self.model, self.vae, width, height, frames),
            rollout_batch=rollout_batch, cache_dir=cache_dir)
        self.low_model = low_model
        self.expert_boundary = None
        if low_model is not None:
            low_family = cf.model_family(low_model)
            if low_family != self.model_family:
                raise ValueError(f"The low-noise expert is {low_family}, the high-noise one "
                                 f"{self.model_family}; the two experts must be one family.")
            self.expert_boundary = float(expert_boundary if expert_boundary is not None
                                         else cf.default_expert_boundary(self.model))
        self.sampler = sampler
        self.references = References(self, reference_steps, reference_scheduler)

    # -- construction from a config ---------------------------------------------------------
    @classmethod
    def from_config(cls, config: TrainConfig) -> ComfyBackend:
        """The back-end a config describes: ComfyUI imported, models and reward loaded."""
        from .models import load_models, parse_json_option
        from .runtime import import_comfyui

        cui = import_comfyui(config.comfy.comfyui_path, config.comfy.comfyui_base,
                             cpu=True if config.comfy.comfyui_cpu else None)
        train_prompts, held, held_out_seeds = prompts_from_config(config)
        models = load_models(
            checkpoint=config.comfy.checkpoint, diffusion_model=config.comfy.diffusion_model,
            text_encoders=_split_list(config.comfy.text_encoders), vae=config.comfy.vae,
            clip_type=config.comfy.clip_type, weight_dtype=config.comfy.weight_dtype,
            unet_config=parse_json_option(config.comfy.unet_config, "--unet-config"),
            text_encoder_options=parse_json_option(config.comfy.text_encoder_options,
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
                reward_name, paths=_split_pairs(config.comfy.reward_paths),
                search_dirs=[Path(p) for p in cui.folder_paths.get_folder_paths("rewards")]
                if "rewards" in cui.folder_paths.folder_names_and_paths
                else [Path(cui.folder_paths.models_dir) / "rewards"],
                device=mm.get_torch_device(), allow_download=config.comfy.allow_download)
        c = config.comfy
        low_model = None
        if c.low_noise_model:
            from .models import load_diffusion_model, resolve_file

            low_model = load_diffusion_model(
                resolve_file(c.low_noise_model, ("diffusion_models",), "Low-noise expert"),
                c.weight_dtype, parse_json_option(c.unet_config, "--unet-config"))
        return cls(models, train_prompts=train_prompts, eval_prompts=held, reward=reward,
                   reward_name=reward_name, width=c.width, height=c.height, sampler=c.sampler,
                   cfg=c.cfg, guidance=c.guidance, negative_prompt=c.negative_prompt,
                   rollout_batch=c.rollout_batch, cache_dir=c.cache_dir,
                   pool_size=config.pool_size, pool_seed=config.seed + 7_919,
                   encoder_preset=config.policy.encoder_preset,
                   reference_steps=c.reference_steps, held_out_seeds=held_out_seeds,
                   set_measures=set_measures_for(set_metrics_option(config)),
                   frames=c.frames, low_model=low_model, expert_boundary=c.expert_boundary,
                   reward_frames=c.reward_frames, reference_space=c.reference_space)

    # -- the parts' settings ------------------------------------------------------------------
    @property
    def sampler(self) -> str:
        """The ComfyUI sampler name; setting it chooses the rollout strategy."""
        return self.rollouts.sampler

    @sampler.setter
    def sampler(self, name: str) -> None:
        if self.low_model is not None:
            from .experts import expert_rollouts_for

            assert self.expert_boundary is not None
            self.rollouts: Rollouts | ExpertRollouts = expert_rollouts_for(
                name, self.inputs, self.low_model, self.expert_boundary, self.prompt_texts)
        else:
            self.rollouts = rollouts_for(name, self.inputs, self.prompt_texts)

    @property
    def cfg(self) -> float:
        """Classifier-free guidance scale."""
        return self.inputs.cfg

    @property
    def guidance(self) -> float | None:
        """Flux dev's distilled guidance (None for models without that input)."""
        return self.inputs.guidance

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(C, h, w)`` of one latent (``(C, T, h, w)`` for video models; ``(C, 1, h, w)``
        for video-style image latents such as Qwen-Image's)."""
        return self.inputs.latent_shape

    @property
    def cond_cache(self) -> ConditioningCache:
        """The text-conditioning cache."""
        return self.inputs.cond_cache

    @property
    def set_measures(self) -> SetMeasures | None:
        """The set-level measures ``eval`` reports (None: none)."""
        return self.evaluation.set_measures

    # -- features -------------------------------------------------------------------------------
    def conditioning(self, prompt: str) -> tuple[torch.Tensor, dict[str, Any]]:
        """(tokens ``[1, T, D]``, extras incl. ``pooled_output``) for a prompt, cached."""
        return self.inputs.conditioning(prompt)

    def noise(self, contexts: PromptContexts) -> torch.Tensor:
        """x_T ``[B, *latent_shape]`` of every context (ComfyUI's ``RandomNoise`` for its
        seed)."""
        return self.inputs.noise(contexts.seeds)

    def features(self, contexts: PromptContexts) -> dict[str, torch.Tensor]:
        return self.inputs.features(self.prompt_texts(contexts), contexts.seeds)

    def build_encoder(self, hidden: int, depth: int) -> nn.Module:
        """The paper's latent + text encoder, sized by a family preset and the real features."""
        probe = self.features(self.held_out_contexts(1, 0))
        return size_encoder(probe, self.encoder_preset, self.family.encoder_preset,
                            self.latent_shape[-2:])

    def _batched_cond(self, prompts: list[str]) -> list:
        return self.inputs.batched_cond(prompts)

    def _negative(self, n: int) -> list | None:
        return self.inputs.negative(n)

    # -- schedules ------------------------------------------------------------------------------
    def model_sigmas(self, flow: torch.Tensor) -> torch.Tensor:
        """Policy schedules (flow time) -> this model's sigmas."""
        return self.rollouts.model_sigmas(flow)

    def default_sigmas(self, steps: int, scheduler: str = "simple") -> torch.Tensor:
        """ComfyUI's ``BasicScheduler`` sigmas for this model."""
        return default_sigmas(self.model, steps, scheduler).float()

    def default_segments(self, steps: int) -> torch.Tensor:
        """Segments ``[L+1]`` whose schedule is the model's default one (the policy's start)."""
        from ...policies.schedule import schedule_to_increments

        return schedule_to_increments(default_flow(self.model, steps)).float()

    # -- rollouts -------------------------------------------------------------------------------
    @torch.inference_mode()
    def sample_latents(self, contexts: PromptContexts, sigmas: torch.Tensor) -> torch.Tensor:
        """Denoised latents ``[N, ...]`` for N contexts, each with its own sigmas
        ``[N, L+1]`` (or one schedule ``[L+1]`` for all), in the model's sigma space: one
        schedule for all runs ComfyUI's own batched sampler (what ``SamplerCustom`` does);
        several run the rollout strategy (:mod:`.rollout`)."""
        return self.rollouts.sample_latents(contexts, sigmas)

    def rollout(self, contexts: PromptContexts, actor: Actor, steps: int) -> Trajectory:
        """Sample every context once, ``actor`` choosing the next sigma at every step (flow
        time); the trajectory carries the final latents and the rewards."""
        with torch.inference_mode():
            traj = self.rollouts.sample_actor(contexts, actor, steps)
            reward = self.score_latents(contexts, traj.final)
        # clones outside inference mode: an algorithm may use them with autograd
        return Trajectory(sigmas=traj.sigmas.clone(), final=traj.final.clone(),
                          info={k: v.clone() for k, v in traj.info.items()},
                          reward=reward.clone())

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE decode: images ``[N, H, W, 3]`` in [0, 1] (ComfyUI's IMAGE layout), or a video
        model's frames ``[N, F, H, W, 3]`` (a one-frame video VAE output, Qwen-Image's, is an
        image)."""
        images = self.vae.decode(latents).float().cpu()[..., :3]
        if images.ndim == 5 and images.shape[1] == 1:
            return images[:, 0]
        return images

    @torch.inference_mode()
    def images(self, contexts: PromptContexts, sigmas: torch.Tensor) -> torch.Tensor:
        return self.decode(self.sample_latents(contexts, sigmas))

    @torch.inference_mode()
    def score(self, contexts: PromptContexts, images: torch.Tensor) -> torch.Tensor:
        """Rewards ``[N]`` of decoded images ``[N, H, W, 3]`` or videos ``[N, F, H, W, 3]``
        (an image reward scores ``reward_frames`` evenly spaced frames, 0: all, and
        averages)."""
        if self.reward_name == "reference":
            return psnr(images, self.references.images(contexts))
        assert self.reward_fn is not None
        prompts = self.prompt_texts(contexts)
        if images.ndim == 4:
            return self.reward_fn(images, prompts).float().cpu()
        n, f = images.shape[:2]
        pick = frame_indices(f, self.reward_frames)
        frames = images[:, pick].flatten(0, 1)
        per_frame = self.reward_fn(frames, [p for p in prompts for _ in pick])
        return per_frame.float().cpu().reshape(n, len(pick)).mean(1)

    @torch.inference_mode()
    def score_latents(self, contexts: PromptContexts, latents: torch.Tensor) -> torch.Tensor:
        """Rewards ``[N]`` of sampled latents: the ``reference`` reward in latent space
        (``reference_space``) compares them with the many-step latents, with no decode;
        every other reward decodes and :meth:`score` s."""
        if self.reward_name == "reference" and self.reference_space == "latent":
            return psnr(latents, self.references.model_latents(contexts))
        return self.score(contexts, self.decode(latents))

    @torch.inference_mode()
    def rewards(self, contexts: PromptContexts, schedules: torch.Tensor) -> torch.Tensor:
        """``schedules [B, K, L+1]`` (flow time) -> rewards ``[B, K]`` (all B*K at once)."""
        b, k, _ = schedules.shape
        flat = contexts.repeat(k)
        flow = schedules.reshape(b * k, -1)
        if self.set_measures is not None:  # small images, measured again by set_metrics
            return self.score(flat, self.evaluation.images(flat, flow)).reshape(b, k)
        return self.score_latents(flat, self.rollouts.sample_flow(flat, flow)).reshape(b, k)

    @torch.inference_mode()
    def reference_samples(self, contexts: PromptContexts, source: str = "default"
                          ) -> torch.Tensor:
        """AdaGen's reference latents, one per context, from ``source``
        (:data:`.references.REFERENCE_SOURCES`)."""
        return self.references.samples(contexts, source)

    def flow_rollout(self, contexts: PromptContexts,
                     fn: Callable[[Any, torch.Tensor], dict[str, torch.Tensor]]
                     ) -> dict[str, torch.Tensor]:
        """``fn(field, rows)`` on the model's differentiable flow field (ART), per batch."""
        return self.rollouts.flow_rollout(contexts, fn)

    # -- evaluation -----------------------------------------------------------------------------
    def comparators(self, steps: int, contexts: Any = None, *,
                    schedulers: Sequence[str] | None = None,
                    fixed_schedules: dict[str, Sequence[float]] | None = None, **_: Any
                    ) -> dict[str, torch.Tensor]:
        """ComfyUI's schedulers and fixed schedules (:meth:`.evaluation.Evaluation.
        comparators`): name -> flow schedule ``[L+1]`` (the same for every context)."""
        return self.evaluation.comparators(steps, schedulers=schedulers,
                                           fixed_schedules=fixed_schedules)

    def ceiling_schedule(self, steps: int, *, schedulers: Sequence[str] | None = None,
                         **_: Any) -> tuple[str, torch.Tensor]:
        """The first comparator scheduler (the model's default, ``simple``) at ``steps``."""
        return self.evaluation.ceiling_schedule(steps, schedulers=schedulers)

    def set_metrics(self, contexts: PromptContexts, schedules: dict[str, torch.Tensor]
                    ) -> dict[str, dict[str, SetMetric]]:
        """The ``set_metrics`` option's measures of each schedule's images; empty without."""
        return self.evaluation.set_metrics(contexts, schedules)

    def write_eval_artifacts(self, out_dir: Path, contexts: PromptContexts,
                             schedules: dict[str, torch.Tensor],
                             rewards: dict[str, torch.Tensor], *, grid_columns: int = 6,
                             **_: Any) -> list[Path]:
        """``grid.png``: one row of images per schedule."""
        return self.evaluation.write_eval_artifacts(out_dir, contexts, schedules,
                                                    grid_columns=grid_columns)

    def policy_sigmas(self, policy: nn.Module, contexts: PromptContexts) -> torch.Tensor:
        """The policy's mean schedules for contexts in the model's sigmas ``[N, L+1]``."""
        return self.evaluation.policy_sigmas(policy, contexts)

    def write_samples(self, policy: nn.Module, path: Path, n: int = 4, seed: int = 10_000
                      ) -> Path:
        """Sample images of ``n`` held-out contexts, default and learned schedules -> PNG."""
        return self.evaluation.write_samples(policy, path, n, seed)


DEFAULT_FRAMES = 81
"""A video model's length in frames when ``frames`` is 0 (Wan's default)."""


def latent_shape_for(model: Any, vae: Any, width: int, height: int, frames: int = 0
                     ) -> tuple[int, ...]:
    """One empty latent's shape for a ``width`` x ``height`` image or a video of ``frames``
    frames (0: :data:`DEFAULT_FRAMES`): the model's latent channels at the VAE's spatial
    compression; for a video model the VAE's temporal compression of the frames (Wan,
    HunyuanVideo 1.5: ``(frames - 1) // 4 + 1``; LTX-Video: ``// 8``), as the empty-latent
    video nodes make it; a time axis of 1 for image models whose latents are video-style
    (``latent_dimensions == 3``: Qwen-Image), as ``fix_empty_latent_channels`` makes them."""
    from ...policies.families import family_for_model_config

    latent_format = model.get_model_object("latent_format")
    ratio = getattr(vae, "downscale_ratio", 8)
    time_ratio = ratio[0] if isinstance(ratio, tuple) else None  # video VAEs: (t, h, w)
    ratio = int(ratio[-1] if isinstance(ratio, tuple) else ratio)
    hw = (height // ratio, width // ratio)
    if family_for_model_config(model).video:
        frames = frames or DEFAULT_FRAMES
        length = int(time_ratio(frames)) if callable(time_ratio) else (frames - 1) // 4 + 1
        return (latent_format.latent_channels, max(1, length), *hw)
    if getattr(latent_format, "latent_dimensions", 2) == 3:
        return (latent_format.latent_channels, 1, *hw)
    return (latent_format.latent_channels, *hw)


def frame_indices(frames: int, count: int) -> list[int]:
    """``count`` evenly spaced frame indices of ``frames`` (first and last included; 0 or
    ``count >= frames``: all)."""
    if count <= 0 or count >= frames:
        return list(range(frames))
    if count == 1:
        return [frames // 2]
    return sorted({round(i * (frames - 1) / (count - 1)) for i in range(count)})


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


__all__ = ["ComfyBackend", "PromptContexts", "DEFAULT_FRAMES", "latent_shape_for",
           "frame_indices"]
