"""The ComfyUI back-end: rollouts on a real Flux / SD3 model through ComfyUI's own machinery.

A context is a (prompt, seed) pair. Its policy features are the exact initial noise x_T that
ComfyUI draws for that seed and the prompt's text conditioning (computed once per prompt and
cached on disk), both through the ComfyUI bridge (:mod:`comfy_bridge`) the node uses too. A
rollout samples the context through ``CFGGuider`` with the step-wise sampler of
:mod:`comfy_bridge.sampler` (``euler``, ``heun``, ``dpmpp_2m``: every rollout its own sigmas,
one batched model call per step) or, for other samplers, ComfyUI's own sampler in lockstep
(:mod:`training.comfy.sampling`); then it decodes with the VAE and scores the image with the
reward. No gradient flows through the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...comfy_bridge import features as cf
from ...comfy_bridge import service
from ...comfy_bridge.sampler import RULES, actor_ksampler
from ...comfy_bridge.sigmas import (
    default_flow,
    default_sigmas,
    flow_to_model,
    model_to_flow,
    sampling_of,
)
from ...plots import image_grid
from ...policies.actors import Actor, FixedScheduleActor, Trajectory
from ...policies.contract import is_stepwise
from ...policies.latent_encoder import PRESETS, LatentTextEncoder
from ..rl.backend import Backend, SetMetric, grouped_indices
from ..rl.stepwise import policy_rollout
from .cond_cache import ConditioningCache, default_cache_dir, file_identity
from .prompts import load_prompts, split_prompts

if TYPE_CHECKING:
    from ..rl.config import TrainConfig

log = logging.getLogger("learned_schedules.training")

RewardFn = Callable[[torch.Tensor, list[str]], torch.Tensor]


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


class ComfyBackend(Backend):
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
                 held_out_seeds: bool = False, set_measures: SetMeasures | None = None):

        from .sampling import check_sampler_name

        check_sampler_name(sampler)
        if width % 16 or height % 16 or min(width, height) < 16:
            raise ValueError(f"width and height must be multiples of 16 and >= 16, got "
                             f"{width}x{height}.")
        if held_out_seeds:
            eval_prompts = []  # every prompt trains and evaluates, on disjoint seed streams
        if not train_prompts or (not eval_prompts and not held_out_seeds):
            raise ValueError("Need at least one training and one held-out prompt.")
        check_scheduler_names(comparator_schedulers)
        self.models = models
        self.model, self.clip, self.vae = models.model, models.clip, models.vae
        self.family = cf.model_family_info(self.model)  # ValueError for SDXL, SD 1.5...
        self.model_family = self.family.name
        self.cfg = self.family.cfg if cfg is None else float(cfg)
        self.guidance = self.family.guidance if guidance is None else guidance
        if self.family.guidance is None:
            self.guidance = None  # only Flux dev has a distilled-guidance input
        self.prompts = list(train_prompts) + list(eval_prompts)
        self.n_train = len(train_prompts)
        self.held_out_seeds = held_out_seeds
        self.reward_fn, self.reward_name = reward, reward_name
        self.width, self.height, self.sampler = width, height, sampler
        self.negative_prompt = negative_prompt
        self.rollout_batch = rollout_batch
        self.pool_size, self.pool_seed = pool_size, pool_seed
        self.encoder_preset = encoder_preset
        self.reference_steps, self.reference_scheduler = reference_steps, reference_scheduler
        self.comparator_schedulers = tuple(comparator_schedulers)
        latent_format = self.model.get_model_object("latent_format")
        ratio = int(getattr(self.vae, "downscale_ratio", 8))
        self.latent_shape = (latent_format.latent_channels, height // ratio, width // ratio)
        identity = "|".join(file_identity(p) for p in models.files.get("text_encoders", []))
        self.cond_cache = ConditioningCache(
            default_cache_dir() if cache_dir is None else cache_dir,
            identity=f"{self.model_family}|{identity}")
        self.set_measures = set_measures
        self._image_memo: dict[tuple[int, int, bytes], torch.Tensor] = {}
        self._pool: PromptContexts | None = None
        self._references: dict[tuple[int, int], torch.Tensor] = {}

    # -- construction from a config ---------------------------------------------------------
    @classmethod
    def from_config(cls, config: TrainConfig) -> ComfyBackend:
        from .models import load_models, parse_json_option
        from .runtime import import_comfyui

        cui = import_comfyui(config.comfy.comfyui_path, config.comfy.comfyui_base,
                             cpu=True if config.comfy.comfyui_cpu else None)
        if not config.comfy.prompts:
            raise ValueError("The comfy back-end needs --prompts (a .txt, .jsonl or .csv file).")
        prompts = load_prompts(config.comfy.prompts)
        if config.comfy.eval_prompts:
            held = load_prompts(config.comfy.eval_prompts)
            train_prompts = [p for p in prompts if p not in set(held)]
            if not train_prompts:
                raise ValueError("Every training prompt is also in --eval-prompts.")
        elif config.comfy.held_out == 0:
            train_prompts, held = prompts, []  # held-out seeds, not prompts
        else:
            train_prompts, held = split_prompts(prompts, config.comfy.held_out,
                                                seed=config.seed)
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
        return cls(models, train_prompts=train_prompts, eval_prompts=held, reward=reward,
                   reward_name=reward_name, width=config.comfy.width,
                   height=config.comfy.height, sampler=config.comfy.sampler,
                   cfg=config.comfy.cfg, guidance=config.comfy.guidance,
                   negative_prompt=config.comfy.negative_prompt,
                   rollout_batch=config.comfy.rollout_batch,
                   cache_dir=config.comfy.cache_dir, pool_size=config.pool_size,
                   pool_seed=config.seed + 7_919, encoder_preset=config.policy.encoder_preset,
                   reference_steps=config.comfy.reference_steps,
                   held_out_seeds=config.comfy.held_out == 0 and not config.comfy.eval_prompts,
                   set_measures=set_measures_for(config))

    # -- contexts -------------------------------------------------------------------------------
    @property
    def pool(self) -> PromptContexts:
        """The training (prompt, seed) pairs: ``pool_size`` of them, from ``pool_seed``. With
        held-out seeds, training seeds are drawn from ``[2**30, 2**31 - 1)``, disjoint from the
        held-out seeds (below ``2**30``)."""
        if self._pool is None:
            g = torch.Generator().manual_seed(self.pool_seed)
            low = HELD_OUT_SEED_LIMIT if self.held_out_seeds else 0
            self._pool = PromptContexts(torch.randint(self.n_train, (self.pool_size,),
                                                      generator=g),
                                        torch.randint(low, 2**31 - 1, (self.pool_size,),
                                                      generator=g))
        return self._pool

    def draw_contexts(self, n: int, generator: torch.Generator) -> PromptContexts:
        return self.pool.select(torch.randint(self.pool_size, (n,), generator=generator))

    def context_groups(self, contexts: PromptContexts) -> torch.Tensor:
        """The prompt index of every context."""
        return contexts.prompt_ids.long()

    def draw_grouped_contexts(self, prompts: int, seeds: int,
                              generator: torch.Generator) -> PromptContexts:
        """``prompts`` distinct training prompts x ``seeds`` pool seeds of each."""
        return self.pool.select(grouped_indices(self.pool.prompt_ids, prompts, seeds,
                                                generator))

    def held_out_contexts(self, n: int, seed: int) -> PromptContexts:
        """``n`` held-out contexts: the held-out prompts in turn, seeds ``seed, seed+1, ...``
        per round over the prompts. With held-out seeds: every prompt in turn, with seeds
        ``seed, seed+1, ...`` that must stay below ``2**30`` (training seeds lie above)."""
        if self.held_out_seeds:
            i = torch.arange(n)
            seeds = seed + i // self.n_train
            if n and int(seeds[-1]) >= HELD_OUT_SEED_LIMIT:
                raise ValueError(f"Held-out seeds must stay below {HELD_OUT_SEED_LIMIT} "
                                 f"(training seeds lie above); got seed {seed}.")
            return PromptContexts(i % self.n_train, seeds)
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
        """x_T ``[B, C, h, w]`` of every context (ComfyUI's ``RandomNoise`` for its seed)."""
        return cf.seed_noise(self.model, [int(s) for s in contexts.seeds], self.latent_shape)

    def features(self, contexts: PromptContexts) -> dict[str, torch.Tensor]:
        conds = [self.conditioning(p) for p in self.prompt_texts(contexts)]
        return {"noise": self.noise(contexts), **cf.conditioning_features(conds)}

    def build_encoder(self, hidden: int, depth: int) -> nn.Module:
        """The paper's latent + text encoder, sized by a family preset and the real features."""
        probe = self.features(self.held_out_contexts(1, 0))
        preset = self.encoder_preset
        auto = preset == "auto"
        if auto:
            preset = self.family.encoder_preset
        if preset not in PRESETS:
            raise ValueError(f"encoder_preset must be 'auto' or one of {sorted(PRESETS)}.")
        sizes = {"latent_channels": probe["noise"].shape[1],
                 "token_dim": probe["tokens"].shape[-1],
                 "pooled_dim": probe["pooled"].shape[-1] if "pooled" in probe else 0}
        encoder = LatentTextEncoder.for_family(preset, **sizes)
        h, w = self.latent_shape[1:]
        if auto and not encoder.fits(h, w):  # tiny latents (e.g. the digits model's 4x4)
            encoder = LatentTextEncoder.for_family("small", **sizes)
        return encoder

    # -- rollouts -------------------------------------------------------------------------------
    def model_sigmas(self, flow: torch.Tensor) -> torch.Tensor:
        """Policy schedules (flow time) -> this model's sigmas."""
        return flow_to_model(sampling_of(self.model), flow.double()).float()

    def default_sigmas(self, steps: int, scheduler: str = "simple") -> torch.Tensor:
        """ComfyUI's ``BasicScheduler`` sigmas for this model."""
        return default_sigmas(self.model, steps, scheduler).float()

    def default_segments(self, steps: int) -> torch.Tensor:
        """Segments ``[L+1]`` whose schedule is the model's default one (the policy's start)."""
        from ...policies.schedule import schedule_to_increments

        if not cf.is_flow_model(self.model):
            raise ValueError("Only flow models (Flux, SD3) are supported.")
        return schedule_to_increments(default_flow(self.model, steps)).float()

    def comparators(self, steps: int, contexts: Any = None, *,
                    schedulers: Sequence[str] | None = None,
                    fixed_schedules: dict[str, Sequence[float]] | None = None, **_: Any
                    ) -> dict[str, torch.Tensor]:
        """ComfyUI's schedulers (``schedulers``, default the back-end's
        ``comparator_schedulers``: ``simple``) for ``steps`` steps, plus ``fixed_schedules``
        (name -> L+1 model sigmas, e.g. a fitted best global schedule): name -> flow-time
        schedule ``[L+1]`` (the same for every context)."""
        names = tuple(schedulers) if schedulers else self.comparator_schedulers
        check_scheduler_names(names)
        out = {name: default_flow(self.model, steps, name).float() for name in names}
        for name, values in (fixed_schedules or {}).items():
            sig = torch.tensor([float(v) for v in values], dtype=torch.float64)
            if sig.numel() != steps + 1:
                raise ValueError(f"The schedule {name!r} has {sig.numel()} sigmas; a {steps}-step "
                                 f"policy needs {steps + 1}.")
            if bool((sig[1:] > sig[:-1]).any()) or float(sig[-1]) != 0.0:
                raise ValueError(f"The schedule {name!r} must not increase and must end at 0.")
            out[name] = model_to_flow(sampling_of(self.model), sig).float()
        return out

    def ceiling_schedule(self, steps: int, *, schedulers: Sequence[str] | None = None,
                         **_: Any) -> tuple[str, torch.Tensor]:
        """The first comparator scheduler (the model's default, ``simple``) at ``steps``."""
        name = (tuple(schedulers) if schedulers else self.comparator_schedulers)[0]
        check_scheduler_names((name,))
        return name, default_flow(self.model, steps, name).float()

    def set_metrics(self, contexts: PromptContexts, schedules: dict[str, torch.Tensor]
                    ) -> dict[str, dict[str, SetMetric]]:
        """The back-end's set measures (the digits model: Fréchet distance, coverage,
        accuracy; see :func:`set_measures_for`) of each schedule's images; empty without."""
        if self.set_measures is None:
            return {}
        n = len(contexts)
        images = {name: self._eval_images(contexts, s if s.ndim == 2 else s.expand(n, -1))
                  for name, s in schedules.items()}
        found = self.set_measures(images, self.prompt_texts(contexts))
        return {name: {m: SetMetric(value, reps) for m, (value, reps) in ms.items()}
                for name, ms in found.items()}

    def held_out_count(self) -> int:
        """The number of held-out prompts (``eval`` samples each with several seeds); with
        held-out seeds, every prompt."""
        if self.held_out_seeds:
            return self.n_train
        return len(self.prompts) - self.n_train

    def describe_contexts(self, contexts: PromptContexts) -> list[dict[str, Any]]:
        return [{"prompt": p, "seed": int(s)}
                for p, s in zip(self.prompt_texts(contexts), contexts.seeds, strict=True)]

    def write_eval_artifacts(self, out_dir: Path, contexts: PromptContexts,
                             schedules: dict[str, torch.Tensor],
                             rewards: dict[str, torch.Tensor], *, grid_columns: int = 6,
                             **_: Any) -> list[Path]:
        """``grid.png``: the first ``grid_columns`` contexts, one row per schedule (each image
        with its schedule drawn in the corner, as in the paper's Figure 1)."""
        show = max(1, min(grid_columns, len(contexts)))
        ctx = contexts.select(torch.arange(show))
        rows = []
        for name, flow in schedules.items():
            sigmas = self.model_sigmas(flow[:show])
            rows.append((name, self.images(ctx, sigmas), sigmas))
        path = out_dir / "grid.png"
        image_grid(rows).save(path)
        return [path]

    def policy_sigmas(self, policy: nn.Module, contexts: PromptContexts) -> torch.Tensor:
        """The policy's mean schedules for contexts, in the model's sigma space ``[N, L+1]``
        (the bridge's service, as in the node). A step-wise policy (AdaGen): the sigmas its
        rollout of the contexts used (the same images as with these sigmas)."""
        if is_stepwise(policy):
            flow = policy_rollout(policy, self, contexts).sigmas
            return flow_to_model(sampling_of(self.model), flow.double()).float()
        return service.policy_sigmas(self.model, policy, self.features(contexts), mode="mean")

    def write_samples(self, policy: nn.Module, path: Path, n: int = 4, seed: int = 10_000
                      ) -> Path:
        """Sample images of ``n`` held-out contexts (default schedule above, learned below,
        each with its schedule in the corner) -> PNG."""
        was_training = policy.training
        policy.eval()
        try:
            ctx = self.held_out_contexts(n, seed)
            learned = self.policy_sigmas(policy, ctx)
            default = self.default_sigmas(learned.shape[1] - 1)
            grid = image_grid([("default", self.images(ctx, default), default),
                               ("learned", self.images(ctx, learned), learned)])
        finally:
            policy.train(was_training)
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
        return path

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

    def _batches(self, prompts: list[str]):
        """Index tensors of the rollouts that share one batched sampler run: rollouts whose
        token counts match, in chunks that fit in memory."""
        lengths = torch.tensor([self.conditioning(p)[0].shape[1] for p in prompts])
        chunk = self._chunk(len(prompts))
        for length in lengths.unique():
            rows = torch.nonzero(lengths == length).flatten()
            for start in range(0, len(rows), chunk):
                yield rows[start:start + chunk]

    @torch.inference_mode()
    def sample_latents(self, contexts: PromptContexts, sigmas: torch.Tensor) -> torch.Tensor:
        """Denoised latents ``[N, ...]`` for N contexts, each with its own sigmas
        ``[N, L+1]`` (or one schedule ``[L+1]`` for all), in the model's sigma space.

        One schedule for all: ComfyUI's own batched sampler (what ``SamplerCustom`` does).
        Several: the step-wise sampler for ``euler`` / ``heun`` / ``dpmpp_2m``, ComfyUI's
        sampler in lockstep threads for the others."""
        from .sampling import sample_rollouts

        n = len(contexts)
        if sigmas.ndim == 1:
            sigmas = sigmas.expand(n, -1)
        if self.sampler in RULES and n > 1 and not bool((sigmas == sigmas[:1]).all()):
            actor = FixedScheduleActor(model_to_flow(sampling_of(self.model), sigmas.cpu()))
            return self._sample_actor(contexts, actor, sigmas.shape[1] - 1).final
        prompts = self.prompt_texts(contexts)
        noise = self.noise(contexts)
        out = torch.empty(n, *self.latent_shape)
        for idx in self._batches(prompts):
            latents = sample_rollouts(
                self.model, self._batched_cond([prompts[int(i)] for i in idx]),
                self._negative(len(idx)), noise[idx], sigmas[idx].cpu(),
                [int(s) for s in contexts.seeds[idx]], self.sampler, self.cfg)
            out[idx] = latents.float().cpu()
        return out

    def _sample_actor(self, contexts: PromptContexts, actor: Actor, steps: int) -> Trajectory:
        """Sample every context with the step-wise sampler, the actor choosing each next
        sigma; the trajectory's ``final`` holds the latents (CPU)."""
        from .sampling import make_guider

        n = len(contexts)
        prompts = self.prompt_texts(contexts)
        noise = self.noise(contexts)
        sampling = sampling_of(self.model)
        out = torch.empty(n, *self.latent_shape)
        flow = torch.empty(n, steps + 1)
        info: dict[str, torch.Tensor] = {}
        for idx in self._batches(prompts):
            sub, first = _actor_rows(actor, idx, steps)
            ksampler = actor_ksampler(sub, self.sampler)
            latents = make_guider(self.model, self._batched_cond([prompts[int(i)] for i in idx]),
                                  self._negative(len(idx)), self.cfg).sample(
                noise[idx], torch.zeros_like(noise[idx]), ksampler,
                flow_to_model(sampling, first), disable_pbar=True,
                seed=int(contexts.seeds[idx[0]]))
            out[idx] = latents.float().cpu()
            traj = ksampler.sampler_function.trajectory
            flow[idx] = traj.sigmas.float().cpu()
            for key, value in traj.info.items():
                if key not in info:
                    info[key] = value.new_empty((n, *value.shape[1:]), device="cpu")
                info[key][idx] = value.cpu()
        return Trajectory(sigmas=flow, final=out, info=info)

    def rollout(self, contexts: PromptContexts, actor: Actor, steps: int) -> Trajectory:
        """Sample every context once, ``actor`` choosing the next sigma at every step (flow
        time); the trajectory carries the final latents and the rewards."""
        if self.sampler not in RULES:
            raise ValueError(f"Step-wise rollouts use the samplers {', '.join(RULES)}; the "
                             f"back-end's sampler is {self.sampler}.")
        with torch.inference_mode():
            traj = self._sample_actor(contexts, actor, steps)
            reward = self.score(contexts, self.decode(traj.final))
        # clones outside inference mode: an algorithm may use them with autograd
        return Trajectory(sigmas=traj.sigmas.clone(), final=traj.final.clone(),
                          info={k: v.clone() for k, v in traj.info.items()},
                          reward=reward.clone())

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
        b, k, n1 = schedules.shape
        flat = contexts.repeat(k)
        if self.set_measures is not None:  # small images, measured again by set_metrics
            return self.score(flat, self._eval_images(flat, schedules.reshape(b * k, -1))
                              ).reshape(b, k)
        if self.sampler in RULES:
            actor = FixedScheduleActor(schedules.reshape(b * k, -1).cpu())
            return self.rollout(flat, actor, n1 - 1).reward.reshape(b, k)
        sigmas = self.model_sigmas(schedules.reshape(b * k, -1))
        return self.score(flat, self.images(flat, sigmas)).reshape(b, k)

    @torch.inference_mode()
    def reference_samples(self, contexts: PromptContexts, source: str = "default"
                          ) -> torch.Tensor:
        """``default``: the model's own ``reference_steps``-step latents of every context
        (same prompt and seed; computed once each), what AdaGen's discriminator learns to tell
        the policy's few-step latents from (no data set needed). ``digits`` (the digits model):
        a real digit of the prompted class per context, from the training split the model
        learnt from (the 500 held-out digits stay for the Fréchet distance), VAE-encoded."""
        if source == "digits":
            return self._real_digit_latents(contexts)
        if source != "default":
            raise ValueError(f"Unknown reference source {source!r}; the ComfyUI back-end has "
                             "'default' (the model's many-step samples) and 'digits'.")
        cache = self.__dict__.setdefault("_reference_latents", {})
        keys = [(int(p), int(s)) for p, s in zip(contexts.prompt_ids, contexts.seeds,
                                                 strict=True)]
        missing = [key for key in dict.fromkeys(keys) if key not in cache]
        if missing:
            todo = PromptContexts(torch.tensor([m[0] for m in missing]),
                                  torch.tensor([m[1] for m in missing]))
            sig = self.default_sigmas(self.reference_steps, self.reference_scheduler)
            for key, lat in zip(missing, self.sample_latents(todo, sig), strict=True):
                cache[key] = lat
        return torch.stack([cache[key] for key in keys]).clone()

    def _real_digit_latents(self, contexts: PromptContexts) -> torch.Tensor:
        """One VAE-encoded real training digit of each context's prompted class (drawn from
        torch's global stream, which checkpoints save)."""
        from ..rewards.digits import load_digits_split, prompt_digit, to_canvas

        bank = self.__dict__.get("_digit_latents")
        if bank is None:
            x, y, _, _ = load_digits_split()
            canvas = to_canvas(x, self.width)
            if self.width != self.height:
                raise ValueError("Real-digit references need a square canvas.")
            with torch.inference_mode():
                lat = self.vae.encode(canvas[..., None].expand(-1, -1, -1, 3)).float().cpu()
            bank = self.__dict__["_digit_latents"] = (lat.clone(), y)
        lat, y = bank
        if tuple(lat.shape[1:]) != tuple(self.latent_shape):
            raise ValueError(f"Real digits encode to latents {tuple(lat.shape[1:])}, the model "
                             f"samples {tuple(self.latent_shape)}: is this the digits model?")
        out = []
        for prompt in self.prompt_texts(contexts):
            pool = torch.nonzero(y == prompt_digit(prompt))[:, 0]
            out.append(lat[pool[torch.randint(len(pool), (1,))][0]])
        return torch.stack(out)

    @torch.inference_mode()
    def _eval_images(self, contexts: PromptContexts, flow: torch.Tensor) -> torch.Tensor:
        """Images of contexts under flow schedules ``[N, L+1]`` (the rollout path of
        :meth:`rewards`), remembered per (prompt, seed, schedule) so that ``eval``'s rewards
        and set measures sample each only once (used with set measures: small images)."""
        flow = flow.float().cpu()
        keys = [(int(p), int(s), row.numpy().tobytes())
                for p, s, row in zip(contexts.prompt_ids, contexts.seeds, flow, strict=True)]
        missing = [i for i, key in enumerate(keys) if key not in self._image_memo]
        if missing:
            idx = torch.tensor(missing)
            sub = contexts.select(idx)
            if self.sampler in RULES:
                latents = self._sample_actor(sub, FixedScheduleActor(flow[idx]),
                                             flow.shape[1] - 1).final
                found = self.decode(latents)
            else:
                found = self.images(sub, self.model_sigmas(flow[idx]))
            if len(self._image_memo) + len(missing) > IMAGE_MEMO_LIMIT:
                self._image_memo.clear()
            for i, img in zip(missing, found, strict=True):
                self._image_memo[keys[i]] = img
        return torch.stack([self._image_memo[key] for key in keys])

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

    # -- the flow field (ART's error signal) -------------------------------------------------
    def flow_rollout(self, contexts: PromptContexts,
                     fn: Callable[[Any, torch.Tensor], dict[str, torch.Tensor]]
                     ) -> dict[str, torch.Tensor]:
        """Run ``fn(field, rows)`` on the model's differentiable flow field (through
        ``apply_model`` inside ``CFGGuider.sample``, :mod:`.flow_field`), once per group of
        contexts whose prompts batch together; the results are reassembled in context
        order."""
        from .flow_field import run_flow_field

        prompts = self.prompt_texts(contexts)
        noise = self.noise(contexts)
        out: dict[str, torch.Tensor] = {}
        for idx in self._batches(prompts):
            part = run_flow_field(
                self.model, self._batched_cond([prompts[int(i)] for i in idx]),
                self._negative(len(idx)), self.cfg, noise[idx],
                lambda field, rows=idx: fn(field, rows), seed=int(contexts.seeds[idx[0]]))
            for key, value in part.items():
                if key not in out:
                    out[key] = value.new_empty((len(contexts), *value.shape[1:]), device="cpu")
                out[key][idx] = value.detach().cpu()
        return out


SetMeasures = Callable[[dict[str, torch.Tensor], list[str]],
                       dict[str, dict[str, tuple[float, torch.Tensor]]]]
"""Images by schedule name + prompts -> name -> metric -> (value, bootstrap replicates)."""


def set_measures_for(config: TrainConfig) -> SetMeasures | None:
    """The set measures ``eval`` reports for a config: ``comfy.set_metrics`` = ``digits``
    (Fréchet distance, per-class coverage and accuracy on the digits classifier's features),
    ``none``, or ``auto`` (the default: ``digits`` for the shipped digits model, i.e. a
    diffusion model file named ``digits_*``)."""
    choice = config.comfy.set_metrics
    if choice == "auto":
        name = Path(config.comfy.diffusion_model or "").name
        choice = "digits" if name.startswith("digits_") else "none"
    if choice == "none":
        return None
    from ..rewards.digits import DigitSetMeasures

    return DigitSetMeasures()


IMAGE_MEMO_LIMIT = 12_000
"""Images :meth:`ComfyBackend._eval_images` remembers (32x32 digits: ~12 KB each)."""

HELD_OUT_SEED_LIMIT = 2**30
"""With held-out seeds, held-out contexts use seeds below this and training contexts above."""


def check_scheduler_names(names: Sequence[str]) -> None:
    """``ValueError`` naming ComfyUI's schedulers unless ``names`` are some of them."""
    import comfy.samplers

    unknown = [n for n in names if n not in comfy.samplers.SCHEDULER_NAMES]
    if unknown or not names:
        raise ValueError(f"Unknown scheduler(s) {', '.join(unknown) or '(none given)'}; "
                         f"ComfyUI's are: {', '.join(comfy.samplers.SCHEDULER_NAMES)}.")


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



def _actor_rows(actor: Actor, idx: torch.Tensor, steps: int) -> tuple[Actor, torch.Tensor]:
    """The actor for rollouts ``idx`` of a batch, and the flow schedule ``[L+1]`` whose start,
    end and length the sampler is given: a fixed-schedule actor's rows (their first one; all
    must start at the same time), otherwise the actor itself from t = 1."""
    if isinstance(actor, FixedScheduleActor):
        if actor.steps != steps:
            raise ValueError(f"{actor.steps}-step schedules for a {steps}-step rollout.")
        rows = actor.schedules[idx] if actor.schedules.ndim == 2 else actor.schedules[None]
        if bool((rows[:, 0] != rows[0, 0]).any()):
            raise ValueError("Schedules sampled in one batch must start at the same sigma.")
        return FixedScheduleActor(rows if actor.schedules.ndim == 2 else actor.schedules), \
            rows[0]
    select = getattr(actor, "select", None)  # a batch-bound actor (AdaGen's StepActor)
    if callable(select):
        return select(idx), torch.linspace(1.0, 0.0, steps + 1)
    return actor, torch.linspace(1.0, 0.0, steps + 1)
