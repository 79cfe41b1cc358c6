"""The trainer's configuration: one dataclass, every field documented (CleanRL style)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASELINES = ("none", "rloo", "xctx", "js", "js_winsor", "js_rank", "js_group",
             "js_group_pooled")
"""The paper's four baselines, then the robust and grouped James-Stein variants
(:data:`training.rl.baselines.EXTRA_BASELINE_KINDS`)."""
GROUPED_BASELINES = ("js_group", "js_group_pooled")
"""Baselines that shrink toward each context's prompt group (batches drawn as prompts x seeds)."""
DEFAULT_SEEDS_PER_PROMPT = 4
"""Seeds per prompt in a batch when a grouped baseline is chosen and ``seeds_per_prompt=0``."""
CONCENTRATION_FORMS = ("softplus", "scheduled")
"""``TrainConfig.concentration`` values (:data:`policies.dirichlet.CONCENTRATIONS`)."""
ALGOS = ("reinforce", "ppo", "art", "adagen")
"""Algorithm names; each has a config section (a field of :class:`TrainConfig`) of that name."""

LEGACY_KEYS: dict[str, tuple[str | None, str]] = {
    "baseline": (None, "baseline"), "normalize_advantages": (None, "normalize_advantages"),
    "entropy_coef": (None, "entropy_coef"), "ppo_epochs": ("ppo", "epochs"),
    "ppo_clip": ("ppo", "clip")}
"""Flat keys of configs written before the algorithm sections -> (section, field); section
``None`` is the active algorithm's (``algo``). :meth:`TrainConfig.from_dict` maps them."""

RESUME_FIXED = ("backend", "algo", "steps", "hidden", "depth", "encoder_preset",
                "init_schedule", "init_concentration", "seed", "pool_size", "concentration",
                "seeds_per_prompt")
"""Fields a ``--resume`` may not change: they fix the policy's architecture, its algorithm or
the training stream (every other field, e.g. iterations, lr, eval cadence, may change)."""

SAVED_BEFORE_CONCENTRATION = frozenset({"init_concentration", "init_schedule",
                                        "keep_checkpoints", "pool_size", "extra"})
"""Keys every saved ``config.json`` holds: a saved config without ``concentration`` was
written before that option existed, by a run that trained the ``softplus`` form (so resuming
it, or reading its policy's training config, keeps that form)."""

_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string",
               "bool": "true or false", "dict": "a JSON object"}


def _json_type(value: Any) -> str:
    """How JSON (or Python) calls ``value``'s type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def check_type(name: str, value: Any, annotation: str) -> None:
    """``ValueError`` naming ``name`` unless ``value`` fits the field's ``annotation`` (a string
    such as ``"int"`` or ``"float | None"``; ints pass as floats, booleans never as numbers)."""
    allowed = [t.strip() for t in str(annotation).split("|")]
    if value is None and "None" in allowed:
        return
    for t in allowed:
        base = t.split("[")[0]
        if base == "bool" and isinstance(value, bool):
            return
        if base == "int" and isinstance(value, int) and not isinstance(value, bool):
            return
        if base == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if base == "str" and isinstance(value, str):
            return
        if base == "dict" and isinstance(value, dict):
            return
        if base in SECTIONS_BY_CLASS and isinstance(value, SECTIONS_BY_CLASS[base]):
            return
    words = [_TYPE_WORDS.get(t.split("[")[0], "a JSON object") for t in allowed if t != "None"]
    if "None" in allowed:
        words.append("null")
    raise ValueError(f"{name} must be {' or '.join(words)}, got {value!r} ({_json_type(value)}).")


def check_number(name: str, value: float | None, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False,
                 high_open: bool = False) -> None:
    """``ValueError`` naming ``name`` unless ``value`` (None passes) is finite and in range."""
    if value is None:
        return
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        rule = " and ".join(bounds)
        raise ValueError(f"{name} must be a finite number{' ' + rule if rule else ''}, "
                         f"got {value!r}.")


def check_fields(obj: Any, prefix: str = "") -> None:
    """Type-check every field of a config dataclass against its annotation."""
    for f in dataclasses.fields(obj):
        check_type(prefix + f.name, getattr(obj, f.name), str(f.type))


WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
CLIP_TYPES = ("auto", "flux", "sd3")


def check_device(device: str, available: bool = True) -> None:
    """``ValueError`` for a device name torch does not know, or (``available``) one this
    machine lacks (the trainer checks that before it starts; a config file naming ``cuda``
    is still valid on a machine without one)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got "
                         f"{device!r}.") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'mps', got {device!r}.")
    if dev.type == "cpu" or not available:
        return
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} is not available: this machine has no CUDA "
                             "GPU (use --device cpu).")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} is not available: this machine has "
                             f"{torch.cuda.device_count()} CUDA GPU(s).")
        return
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r} is not available on this machine.")
        return
    raise ValueError(f"device must be 'cpu', 'cuda' or 'mps', got {device!r}.")


@dataclass
class ReinforceConfig:
    """REINFORCE with a reward baseline (the paper)."""

    baseline: str = "js"
    """Reward baseline: ``none``, ``rloo``, ``xctx`` (cross-context) or ``js`` (James-Stein,
    the paper's); robust JS: ``js_winsor`` (JS on winsorised rewards, for heavy tails) or
    ``js_rank`` (weight from rank scores); grouped JS: ``js_group`` (each context shrunk
    toward its own prompt's other seeds, one weight per prompt) or ``js_group_pooled`` (one
    weight pooled over the prompts). Grouped baselines draw batches as prompts x seeds
    (``seeds_per_prompt``); the back-end says which prompt each context has."""
    normalize_advantages: bool = False
    """Divide advantages by the batch's reward std (off in the paper)."""
    entropy_coef: float = 0.0
    """Weight of an entropy bonus on the policy's distribution (0: none, as in the paper)."""

    def check(self, prefix: str) -> None:
        """Types and ranges of the section's own fields (``prefix``: ``"reinforce."``...)."""
        check_fields(self, prefix)
        check_number(prefix + "entropy_coef", self.entropy_coef, low=0)

    def validate(self, config: TrainConfig) -> None:
        """Raise ``ValueError`` for options the run cannot use."""
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}.")
        if self.baseline not in ("none", "xctx") and config.rollouts < 2:
            raise ValueError(f"The {self.baseline} baseline needs at least 2 rollouts per context.")
        if self.baseline in ("xctx", "js") and config.batch * config.rollouts < 2:
            raise ValueError(f"The {self.baseline} baseline needs at least 2 rollouts in a batch.")


@dataclass
class PPOConfig(ReinforceConfig):
    """TPDM-style PPO: several epochs of the clipped-ratio objective on each batch."""

    epochs: int = 4
    """Optimisation epochs over each batch of rollouts."""
    clip: float = 0.2
    """Ratio clip range."""

    def check(self, prefix: str) -> None:
        super().check(prefix)
        if not 1 <= self.epochs <= 1000:
            raise ValueError(f"{prefix}epochs must be >= 1 (and <= 1000), got {self.epochs}.")
        check_number(prefix + "clip", self.clip, low=0, high=1, low_open=True, high_open=True)

    def validate(self, config: TrainConfig) -> None:
        super().validate(config)


@dataclass
class AdaGenConfig:
    """AdaGen: PPO over whole step-wise trajectories with an adversarial reward."""

    epochs: int = 4
    """PPO epochs over each batch of trajectories."""
    clip: float = 0.2
    """Ratio clip range."""
    value_coef: float = 0.5
    """Weight of the value head's squared error."""
    entropy_coef: float = 0.01
    """Weight of the Gaussian's entropy bonus."""
    init_std: float = 0.6
    """Initial standard deviation of the Gaussian actions."""
    ema: float = 0.3
    """EMA weight on the previous step's residual (schedule smoothing)."""
    adversarial: float = 1.0
    """Weight of the discriminator's reward (its logit: log p_ref / p_policy); 0: none."""
    task: float = 0.0
    """Weight of the trainer's reward (``reward``) in the mix; 0: adversarial only."""
    reference: str = "default"
    """What the discriminator compares with: ``default`` (testbed: true mixture samples;
    ComfyUI: the model's own reference_steps-step samples of the same prompts) or ``digits``
    (the digits model: real digits of the prompted class)."""
    disc_lr: float = 1e-3
    """Discriminator learning rate (Adam)."""
    disc_steps: int = 2
    """Discriminator updates per policy update (the two alternate)."""
    disc_hidden: int = 128
    """Discriminator width."""

    def check(self, prefix: str) -> None:
        check_fields(self, prefix)
        for name, low in (("epochs", 1), ("disc_steps", 1), ("disc_hidden", 1)):
            if not low <= getattr(self, name) <= 100_000:
                raise ValueError(f"{prefix}{name} must be >= {low}, got {getattr(self, name)}.")
        check_number(prefix + "clip", self.clip, low=0, high=1, low_open=True, high_open=True)
        for name in ("value_coef", "entropy_coef", "adversarial", "task"):
            check_number(prefix + name, getattr(self, name), low=0)
        check_number(prefix + "init_std", self.init_std, low=1e-3, high=10)
        check_number(prefix + "ema", self.ema, low=0, high=0.99)
        check_number(prefix + "disc_lr", self.disc_lr, low=0, high=10, low_open=True)

    def validate(self, config: TrainConfig) -> None:
        if self.reference not in ("default", "digits"):
            raise ValueError(f"adagen.reference must be 'default' or 'digits', got "
                             f"{self.reference!r}.")
        if self.adversarial == 0 and self.task == 0:
            raise ValueError("adagen needs a reward: adagen.adversarial or adagen.task must be "
                             "> 0.")


@dataclass
class ARTConfig:
    """ART: continuous-time actor-critic over the clock speed (no reward model; REFERENCE.md
    section 2). ``batch`` contexts give one trajectory each per iteration (the paper: 1)."""

    solver: str = "actor_critic"
    """``actor_critic``: the paper's ART-RL. ``direct``: no RL; trajectories on the uniform
    clock measure the mean |Q| on each grid cell of psi, and the deployed clock is the exact
    minimiser of ART's objective for a global clock (the schedule ART-RL converges to in
    theory; policies.art.equidistributed_schedule)."""
    grid: int = 100
    """K: points of the training time grid (dt = horizon / grid)."""
    horizon: float = 1.0
    """T: the clock's total time; the constraint is psi(T) = T."""
    lam: float = 0.1
    """lambda: exploration temperature; the speed's variance is lam / max(|Q|, eps) and the
    critic is V = NN + lam * t."""
    eps: float = 1e-6
    """Floor on |Q| in the policy variance."""
    lr: float = 1e-4
    """Adam learning rate of actor and critic (the engine's schedule scales it as it scales
    lr)."""
    critic_lr: float | None = None
    """Adam learning rate of the critic (None: ``lr``)."""
    gamma_lr: float = 0.1
    """Step of the Lagrange multiplier: gamma += gamma_lr * mean(psi(T) - T)."""
    penalty: float = 10.0
    """rho of the augmented Lagrangian: a terminal reward -rho/2 (psi(T) - T)^2 (0: the
    paper's plain Lagrangian, which oscillates between a racing and a stalled clock)."""
    natural_gradient: bool = True
    """Scale each step's actor score by the policy variance (the natural gradient of the
    Gaussian mean: same fixed point, far less variance from the high-|Q| steps whose score
    ``(theta - mu) |Q| / lam`` is large). Off: the paper's plain score."""
    trace: float = 0.0
    """Eligibility trace of the advantage that drives actor and critic: ``A_k = sum_j
    trace^(j-k) delta_j`` (0: the paper's one-step TD error; 1: the Monte Carlo return to go
    minus the critic, which needs no accurate value slope dV/dpsi from the critic)."""
    project: bool = False
    """Project the actor's step onto speed changes that keep the clock's total (the constraint
    psi(T) = T): the per-step gradient on the mean speed minus its mean over the batch's active
    steps. This is the Lagrange multiplier taken to its fast-time-scale limit (the value that
    makes every actor step constraint-neutral) instead of a dual step that lags the actor."""
    restore: float = 10.0
    """With ``project``: the (normalised) projected step is pulled back towards psi(T) = T
    by ``restore * (psi(T) - T)`` on every step of the trajectory."""
    trapezoid: bool = False
    """Charge each step the mean |Q| of its two ends (trapezoid rule) instead of the |Q| at
    its start: on a coarse grid a fast step otherwise jumps over a high-|Q| stretch for free."""
    critic_warmup: int = 0
    """Iterations at the start in which only the critic learns (actor and gamma frozen), so
    that the actor's first steps follow a fitted value slope dV/dpsi."""
    width: int = 128
    """Width of the actor's and the critic's MLPs."""
    layers: int = 3
    """Linear layers of each MLP (Softplus between them)."""
    features: bool = True
    """Actor and critic read the context features (initial noise, prompt) through an
    encoder: an instance-level clock. Off: a clock of (t, psi) only."""
    deploy: str = "global"
    """What the policy file holds: ``global`` (the distilled clock, one schedule; the paper)
    or ``instance`` (the clock of each context's features)."""
    distill_contexts: int = 256
    """Training-pool contexts the global clock is distilled over (mean speed)."""
    sigma_floor: float = 1e-3
    """Smallest flow time at which the field is evaluated (an exploring clock may overshoot)."""
    q_method: str = "auto"
    """How Q's JVP is taken: ``auto`` (the back-end's choice), ``forward_ad`` (dual tensors),
    ``func`` (torch.func.jvp) or ``double_backward`` (two reverse-mode passes)."""
    min_speed: float = 1e-3
    """Floor on the deployed clock's speed (every step moves forward)."""

    def check(self, prefix: str) -> None:
        """Types and ranges of the section's own fields."""
        check_fields(self, prefix)
        for name, low, high in (("grid", 2, 100_000), ("width", 1, 16_384), ("layers", 1, 64),
                                ("distill_contexts", 1, 1_000_000),
                                ("critic_warmup", 0, 10_000_000)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{prefix}{name} must be between {low} and {high}, got "
                                 f"{value}.")
        check_number(prefix + "horizon", self.horizon, low=0, low_open=True)
        check_number(prefix + "lam", self.lam, low=0, low_open=True)
        check_number(prefix + "eps", self.eps, low=0, low_open=True)
        check_number(prefix + "lr", self.lr, low=0, high=10, low_open=True)
        check_number(prefix + "gamma_lr", self.gamma_lr, low=0)
        check_number(prefix + "penalty", self.penalty, low=0)
        check_number(prefix + "trace", self.trace, low=0, high=1)
        check_number(prefix + "critic_lr", self.critic_lr, low=0, high=10, low_open=True)
        check_number(prefix + "sigma_floor", self.sigma_floor, low=0, high=1, low_open=True,
                     high_open=True)
        check_number(prefix + "min_speed", self.min_speed, low=0, high=1, low_open=True,
                     high_open=True)
        if self.deploy not in ("global", "instance"):
            raise ValueError(f"{prefix}deploy must be 'global' or 'instance', got "
                             f"{self.deploy!r}.")
        if self.solver not in ("actor_critic", "direct"):
            raise ValueError(f"{prefix}solver must be 'actor_critic' or 'direct', got "
                             f"{self.solver!r}.")
        if self.q_method not in ("auto", "forward_ad", "func", "double_backward"):
            raise ValueError(f"{prefix}q_method must be auto, forward_ad, func or "
                             f"double_backward, got {self.q_method!r}.")

    def validate(self, config: TrainConfig) -> None:
        """Raise ``ValueError`` for options the run cannot use."""
        if self.deploy == "instance" and not self.features:
            raise ValueError("art.deploy 'instance' needs art.features (a clock of the "
                             "context's features).")
        if self.deploy == "instance" and self.solver == "direct":
            raise ValueError("art.solver 'direct' gives one global clock; use art.deploy "
                             "'global'.")


SECTIONS: dict[str, type] = {"reinforce": ReinforceConfig, "ppo": PPOConfig, "art": ARTConfig}
"""Config section class of each algorithm (the :class:`TrainConfig` field of that name)."""
SECTIONS["adagen"] = AdaGenConfig
SECTIONS_BY_CLASS: dict[str, type] = {cls.__name__: cls for cls in SECTIONS.values()}


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` in the run folder."""

    backend: str = "testbed"
    """Where rollouts come from: ``testbed`` (the exact analytic testbed, no weights) or
    ``comfy`` (a Flux / SD3 model loaded with ComfyUI's loaders)."""
    testbed_config: str | None = None
    """Path to a testbed JSON config; ``None`` uses the embedded default."""
    pool_size: int = 16384
    """Training contexts in the pool: testbed (noise, class) pairs whose reference solutions
    are solved once; comfy (prompt, seed) pairs drawn from the training prompts."""
    reward: str | None = None
    """Reward. Testbed: ``fidelity`` or ``likelihood`` (``None``: the testbed config's).
    Comfy: ``pickscore``, ``clip``, ``aesthetic``, ``hpsv2``, ``imagereward``, ``ocr``,
    ``reference`` (PSNR to the reference_steps-step sample of the same prompt and seed), or a
    weighted sum such as ``0.7*pickscore+0.3*aesthetic``."""
    # -- the ComfyUI back-end -----------------------------------------------------------------
    comfyui_path: str | None = None
    """ComfyUI folder (default: $COMFYUI_PATH, else the copy scripts/setup.sh fetched)."""
    comfyui_base: str | None = None
    """ComfyUI base directory whose models/ holds the weights (default: the ComfyUI folder)."""
    comfyui_cpu: bool = False
    """Run ComfyUI on the CPU even when a GPU is available."""
    checkpoint: str | None = None
    """Full checkpoint (name in models/checkpoints, or a path) holding model, text encoders
    and VAE; or give diffusion_model + text_encoders + vae."""
    diffusion_model: str | None = None
    """Diffusion model (name in models/diffusion_models, or a path), as UNETLoader loads it."""
    unet_config: str | None = None
    """Advanced: the diffusion model's architecture config (JSON object or .json file) for
    sizes ComfyUI's detection does not know."""
    weight_dtype: str = "default"
    """Diffusion model weight dtype: default, fp8_e4m3fn, fp8_e4m3fn_fast or fp8_e5m2."""
    text_encoders: str | None = None
    """Comma-separated text encoder files (names in models/text_encoders, or paths), e.g.
    ``clip_l.safetensors,t5xxl_fp16.safetensors`` for Flux."""
    clip_type: str = "auto"
    """Text encoder type: auto (from the model), flux or sd3."""
    text_encoder_options: str | None = None
    """Advanced: ComfyUI model_options for the text encoders (JSON object or .json file)."""
    vae: str | None = None
    """VAE (name in models/vae, or a path); default: the checkpoint's."""
    prompts: str | None = None
    """Prompt file: .txt (one per line), .jsonl (a "prompt" field) or .csv (a prompt column)."""
    eval_prompts: str | None = None
    """Separate held-out prompt file (default: a held_out split of prompts)."""
    held_out: float = 0.1
    """Prompts held out for evaluation: a fraction (< 1) or a count (>= 1); 0 holds out seeds
    instead (every prompt is trained on and evaluated, on disjoint seed streams: for a few
    prompts, e.g. the digits model's ten)."""
    width: int = 1024
    """Image width in pixels."""
    height: int = 1024
    """Image height in pixels."""
    sampler: str = "euler"
    """ComfyUI sampler name (any of KSamplerSelect's)."""
    cfg: float | None = None
    """Classifier-free guidance scale (None: 1.0 for Flux, 4.5 for SD3)."""
    guidance: float | None = None
    """Flux dev distilled guidance (None: 3.5)."""
    negative_prompt: str = ""
    """Negative prompt (used when cfg > 1)."""
    rollout_batch: int = 0
    """Rollouts per model call (0: as many as memory allows)."""
    cache_dir: str | None = None
    """Conditioning cache folder (default: ~/.cache/learned_schedules/conditioning)."""
    reward_paths: str | None = None
    """Reward weights as kind=path pairs, comma-separated (default: models/rewards/<kind>)."""
    allow_download: bool = False
    """Let reward models download from the hub when not found locally (off: never)."""
    reference_steps: int = 40
    """Steps of the reference sample for the ``reference`` reward."""
    encoder_preset: str = "auto"
    """Policy encoder size preset: auto (flux / sd3 by model family), tiny, or small (one
    stride-2 level: latents down to 4x4, e.g. the digits model at 32x32)."""
    set_metrics: str | None = None
    """Set-level measures ``eval`` reports beside the reward: ``digits`` (the digits model:
    Fréchet distance, per-class coverage and accuracy on the digits classifier's features) or
    ``none``. None (not chosen, as in configs written before this option): what those got,
    ``digits`` for the digits model and none otherwise
    (:func:`training.comfy.evaluation.set_metrics_option`)."""
    sample_every: int = 100
    """Comfy: save sample images (default vs learned schedule) every N iterations (0: off)."""
    steps: int = 5
    """Sampler budget L (number of sampler steps; the policy outputs L + 1 segments)."""
    algo: str = "reinforce"
    """Training algorithm: ``reinforce`` (the paper), ``ppo`` (TPDM-style clipped), ``art``
    (continuous-time actor-critic on the clock) or ``adagen`` (step-wise PPO, adversarial
    reward); its options are in the config section of the same name (``--reinforce.*``,
    ``--ppo.*``, ``--art.*``, ``--adagen.*``)."""
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)
    """Options of ``algo=reinforce``."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """Options of ``algo=ppo``."""
    adagen: AdaGenConfig = field(default_factory=AdaGenConfig)
    """Options of ``algo=adagen``."""
    art: ARTConfig = field(default_factory=ARTConfig)
    """Options of ``algo=art``."""
    rollouts: int = 2
    """K: sampled schedules per context (the paper uses 2)."""
    batch: int = 16
    """B: contexts (prompt, initial noise) per iteration."""
    iterations: int = 2000
    """Number of policy updates."""
    lr: float = 3e-3
    """AdamW learning rate."""
    lr_schedule: str = "cosine"
    """Learning-rate schedule over the run: ``constant`` or ``cosine`` (decays to lr_min_frac)."""
    lr_min_frac: float = 0.1
    """Final learning rate as a fraction of lr for the cosine schedule."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    hidden: int = 128
    """Width of the policy's encoder and head."""
    depth: int = 2
    """Number of FiLM blocks in the vector encoder."""
    init_schedule: str = "default"
    """Where the policy's mean schedule starts: ``default`` (the model's own schedule, on
    back-ends that have one: comfy) or ``uniform`` (uniform in flow time)."""
    init_concentration: float | None = None
    """Total Dirichlet concentration at initialisation (None: 40 with the ``scheduled``
    concentration, 8 * (L + 1) with ``softplus``)."""
    concentration: str = "scheduled"
    """How the Dirichlet policy parameterises its concentrations: ``scheduled`` (separate
    mean and total concentration; the concentration is not learned but moves geometrically
    from init_concentration to final_concentration over the run) or ``softplus`` (the
    paper's ``alpha = softplus(head)``: its concentration runs away under REINFORCE and can
    collapse the policy to one context-independent schedule, bench/results/
    learning_quality.md; runs before this option used it)."""
    final_concentration: float | None = None
    """Total concentration at the last iteration with ``concentration=scheduled`` (None: 10 x
    the initial one, i.e. 40 -> 400)."""
    seeds_per_prompt: int = 0
    """Draw each batch as ``batch / seeds_per_prompt`` distinct prompts (testbed: classes) x
    ``seeds_per_prompt`` noises each; 0: independent contexts, or 4 seeds per prompt when the
    baseline is grouped (``js_group``, ``js_group_pooled``)."""
    seed: int = 0
    """Seed for torch, numpy and python's random; also the training-context stream."""
    eval_every: int = 50
    """Evaluate the mean schedule on held-out contexts every N iterations (0: only at the end)."""
    eval_contexts: int = 256
    """Number of held-out contexts used by periodic evaluation."""
    eval_seed: int = 10_000
    """Seed of the held-out contexts (disjoint stream from training)."""
    checkpoint_every: int = 100
    """Save a resumable checkpoint every N iterations (and on Ctrl-C and at the end)."""
    keep_checkpoints: int = 3
    """How many periodic checkpoints to keep (the final policy is always kept)."""
    out: str = "runs"
    """Parent folder of run folders."""
    run_name: str | None = None
    """Run folder name; default ``{backend}-{algo}-{baseline}-L{steps}__{seed}__{time}``."""
    device: str = "cpu"
    """Torch device for the policy and the testbed."""
    threads: int = 0
    """torch CPU threads while training (0: 1 on the testbed, whose small tensors only contend
    for cores with more threads — 10-15x slower on a busy 2-core machine,
    bench/thread_contention.py; torch's default on other back-ends)."""
    progress: bool = True
    """Show a progress bar."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Back-end specific options (kept verbatim in the run's config)."""

    def validate(self) -> None:
        """Raise ``ValueError`` with a plain sentence naming the field, for a configuration of
        the wrong types, out-of-range or non-finite numbers, or impossible settings."""
        self.check_types()
        for name in SECTIONS:
            getattr(self, name).check(f"{name}.")
        if self.steps < 1 or self.steps > 1000:
            raise ValueError(f"steps must be between 1 and 1000, got {self.steps}.")
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}.")
        if self.rollouts < 1 or self.batch < 1 or self.iterations < 0:
            raise ValueError("rollouts and batch must be >= 1 and iterations >= 0.")
        self._check_ranges()
        self.section.validate(self)
        if self.backend not in ("testbed", "comfy"):
            raise ValueError(f"backend must be 'testbed' or 'comfy', got {self.backend!r}.")
        if self.concentration not in CONCENTRATION_FORMS:
            raise ValueError(f"concentration must be one of {CONCENTRATION_FORMS}, got "
                             f"{self.concentration!r}.")
        shape = self.grouped_draw()
        if shape is not None and (shape[1] < 1 or self.batch % shape[1]):
            raise ValueError(f"batch ({self.batch}) must be a multiple of seeds_per_prompt "
                             f"({shape[1]}) to draw prompts x seeds.")
        if self.init_schedule not in ("default", "uniform"):
            raise ValueError(f"init_schedule must be 'default' or 'uniform', got "
                             f"{self.init_schedule!r}.")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got "
                             f"{self.lr_schedule!r}.")
        if self.weight_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weight_dtype must be one of {WEIGHT_DTYPES}, got "
                             f"{self.weight_dtype!r}.")
        if self.clip_type not in CLIP_TYPES:
            raise ValueError(f"clip_type must be one of {CLIP_TYPES}, got {self.clip_type!r}.")
        self._check_paths()
        check_device(self.device, available=False)

    def check_types(self) -> None:
        """Every field (and every section's field) of its declared JSON type."""
        check_fields(self)
        for name, section_cls in SECTIONS.items():
            section = getattr(self, name)
            if not isinstance(section, section_cls):
                raise ValueError(f"{name} must be a JSON object of {name} options, got "
                                 f"{section!r}.")
            check_fields(section, f"{name}.")

    def _check_ranges(self) -> None:
        """Every number finite and in range, named by its field."""
        n = self.steps + 1
        for name, low, high in (("rollouts", 1, 100_000), ("batch", 1, 1_000_000),
                                ("iterations", 0, None), ("hidden", 1, 16_384),
                                ("depth", 1, 64), ("pool_size", 1, 100_000_000),
                                ("eval_contexts", 1, 10_000_000), ("eval_every", 0, None),
                                ("checkpoint_every", 0, None), ("keep_checkpoints", 1, None),
                                ("sample_every", 0, None), ("rollout_batch", 0, None),
                                ("reference_steps", 1, 10_000), ("width", 16, 16_384),
                                ("height", 16, 16_384), ("seed", 0, 2**63 - 1),
                                ("eval_seed", 0, 2**63 - 1), ("threads", 0, 4096)):
            value = getattr(self, name)
            if value < low or (high is not None and value > high):
                rule = f"between {low} and {high}" if high is not None else f">= {low}"
                raise ValueError(f"{name} must be {rule}, got {value}.")
        check_number("lr", self.lr, low=0, high=10, low_open=True)
        check_number("lr_min_frac", self.lr_min_frac, low=0, high=1)
        check_number("weight_decay", self.weight_decay, low=0)
        check_number("grad_clip", self.grad_clip, low=0, low_open=True)
        check_number("held_out", self.held_out, low=0)
        check_number("cfg", self.cfg, low=0)
        check_number("guidance", self.guidance, low=0)
        # the head starts each of the L + 1 concentrations above the Dirichlet's floor (1e-3)
        check_number("init_concentration", self.init_concentration, low=0.002 * n,
                     high=1e7, low_open=True)
        check_number("final_concentration", self.final_concentration, low=0.002 * n,
                     high=1e7, low_open=True)
        if self.seeds_per_prompt < 0 or self.seeds_per_prompt > self.batch:
            raise ValueError(f"seeds_per_prompt must be between 0 and batch ({self.batch}), "
                             f"got {self.seeds_per_prompt}.")

    def _check_paths(self) -> None:
        """The run folder's parent and name can hold a run folder."""
        out = Path(self.out)
        for parent in (out, *out.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise ValueError(f"out must be a folder, but {parent} is a file.")
                break
        if self.run_name is not None and (
                not self.run_name.strip() or self.run_name in (".", "..")
                or any(sep in self.run_name for sep in ("/", "\\"))):
            raise ValueError(f"run_name must be a plain folder name, got {self.run_name!r}.")

    def grouped_draw(self) -> tuple[int, int] | None:
        """``(prompts, seeds_per_prompt)`` of a batch drawn grouped by prompt, or None for
        independent contexts (see ``seeds_per_prompt``)."""
        seeds = self.seeds_per_prompt
        if not seeds and self.algo in SECTIONS \
                and getattr(self.section, "baseline", None) in GROUPED_BASELINES:
            seeds = min(DEFAULT_SEEDS_PER_PROMPT, self.batch)
        if not seeds:
            return None
        return max(1, self.batch // seeds), seeds

    @property
    def section(self) -> Any:
        """The active algorithm's config section (``getattr(self, self.algo)``)."""
        if self.algo not in SECTIONS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}.")
        return getattr(self, self.algo)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (sections nested)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a (possibly nested) dict; the old flat keys (:data:`LEGACY_KEYS`) are
        mapped into their sections, so old ``config.json`` files and configs keep working."""
        if not isinstance(data, dict):
            raise ValueError(f"A training config must be a JSON object, got "
                             f"{_json_type(data)}.")
        data = dict(data)
        if "concentration" not in data and SAVED_BEFORE_CONCENTRATION <= data.keys():
            data["concentration"] = "softplus"  # a run saved before the option trained it
        legacy = {k: data.pop(k) for k in list(data) if k in LEGACY_KEYS}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        for name, section_cls in SECTIONS.items():
            value = data.get(name)
            if name in data and not isinstance(value, (dict, section_cls)):
                raise ValueError(f"{name} must be a JSON object of {name} options, got "
                                 f"{value!r} ({_json_type(value)}).")
            if isinstance(value, dict):
                fields = {f.name for f in dataclasses.fields(section_cls)}
                unknown += [f"{name}.{k}" for k in sorted(set(value) - fields)]
                data[name] = section_cls(**{k: v for k, v in value.items() if k in fields})
        if unknown:
            raise ValueError(f"Unknown config fields: {', '.join(unknown)}.")
        config = cls(**data)
        active = config.algo if isinstance(config.algo, str) and config.algo in SECTIONS \
            else "reinforce"
        for key, value in legacy.items():
            section, name = LEGACY_KEYS[key]
            setattr(getattr(config, section or active), name, value)
        return config

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a config JSON file; every problem is a ``ValueError`` naming the file."""
        path = Path(path)
        data = read_json(path, "Config file")
        try:
            config = cls.from_dict(data)
            config.check_types()  # a wrong type is the file's mistake (ranges: validate)
            return config
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Config file {path}: {exc}") from None

    def changes_refused_on_resume(self, saved: TrainConfig) -> list[str]:
        """``field (old -> new)`` for every :data:`RESUME_FIXED` field that differs."""
        return [f"{name} ({getattr(saved, name)!r} -> {getattr(self, name)!r})"
                for name in RESUME_FIXED if getattr(saved, name) != getattr(self, name)]


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file's content; ``ValueError`` naming the file (``what``: "Config file"...) if
    it is missing, not a file, not UTF-8 or not JSON."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} not found: {path}.")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file.")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path} is not UTF-8 text (is it a binary file?).") from None
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be read: {exc.strerror}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid JSON (line {exc.lineno}, column "
                         f"{exc.colno}: {exc.msg}).") from None
