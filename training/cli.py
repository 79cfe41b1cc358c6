"""Command line: ``python -m learned_schedules.training {train,eval,demo,calibrate}``.

Also installed as the ``learned-schedules`` console script. The flags come from dataclasses
through `tyro <https://github.com/brentyi/tyro>`_: it is maintained, it reads the help of each
flag from the dataclass field's docstring, and it nests sections as ``--section.field``. So
every ``train`` flag is a field of :class:`training.rl.config.TrainConfig` or of one of its
sections: the run settings (``--steps``), the ComfyUI and policy sections with their flat
flags (``--cfg``, ``--hidden``), and each registered algorithm's options (``--ppo.epochs``).
The old flat spellings of the algorithm options (:data:`SHORTHANDS`: ``--baseline``...) and
``--method`` (an alias of ``--algo``) are rewritten before parsing. argparse only dispatches
the subcommand.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import tyro

from ..policies.config import PolicyConfig
from .calibrate.args import CalibrateArgs
from .calibrate.args import finish as finish_calibrate_args
from .comfy.config import ComfyConfig
from .rl.config import TrainConfig
from .rl.config_migration import MOVED
from .rl.run_folder import RunPlan, plan_resume

log = logging.getLogger("learned_schedules.training")

SHORTHANDS: dict[str, tuple[str | None, str]] = {
    key: target for key, target in MOVED.items()
    if target[0] not in ("comfy", "policy") and "." not in key}
"""Old flat flags of algorithm options -> (section, field); section ``None``: the active
``--algo``'s (``--baseline rloo`` is ``--<algo>.baseline rloo``)."""

TRAIN_HELP = (
    "Train a policy. Options are grouped by section: the run, the ComfyUI back-end, the "
    "policy and one section per algorithm (--<algo>.<option>). Shorthands: --baseline, "
    "--normalize-advantages / --no-normalize-advantages and --entropy-coef set the active "
    "--algo's option; --ppo-epochs and --ppo-clip are --ppo.epochs and --ppo.clip; --method "
    "is an alias of --algo (a name, an alias such as dirichlet-ppo, or a policy file's method).")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(f"{message} (see --help).")


def _flag_values(argv: list[str], flag: str) -> list[str]:
    """Every value given to ``flag`` (``--flag v`` or ``--flag=v``)."""
    values = []
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1:])
    return values


def _flags(argv: list[str]) -> set[str]:
    return {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}


def _rewrite(argv: list[str], base_algo: str) -> list[str]:
    """``--method`` -> ``--algo``, every ``--algo`` value resolved through the registry, the
    :data:`SHORTHANDS` -> their section flags."""
    from .rl.algorithms import resolve_algorithm

    names = [resolve_algorithm(v) for v in _flag_values(argv, "--algo")
             + _flag_values(argv, "--method")]
    active = names[-1] if names else base_algo
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        flag, eq, value = arg.partition("=")
        if flag in ("--algo", "--method"):
            value = value if eq else next(it, "")
            out += ["--algo", resolve_algorithm(value)]
            continue
        negated = flag.startswith("--no-")
        key = (flag[5:] if negated else flag[2:]).replace("-", "_")
        if flag.startswith("--") and key in SHORTHANDS:
            section, name = SHORTHANDS[key]
            name = name.replace("_", "-")
            flag = f"--{section or active}.{'no-' if negated else ''}{name}"
        elif negated and "." in flag:  # argparse's --no-art.features is tyro's --art.no-features
            section, _, name = flag[5:].partition(".")
            flag = f"--{section}.no-{name}"
        out.append(flag + eq + value)
    return out


def _cli_type() -> type:
    """TrainConfig as tyro sees it: the ComfyUI and policy sections with flat flags, one
    section per registered algorithm, and the CLI's own ``--config`` / ``--resume``."""
    from .rl.algorithms import ALGORITHMS

    flat = tyro.conf.OmitArgPrefixes
    fields: list[Any] = [
        ("comfy", Annotated[ComfyConfig, flat], field(default_factory=ComfyConfig)),
        ("policy", Annotated[PolicyConfig, flat], field(default_factory=PolicyConfig)),
        ("sections", Annotated[dict[str, Any], tyro.conf.Suppress], field(default_factory=dict)),
        *[(name, cls.options_class, field(default_factory=cls.options_class))
          for name, cls in ALGORITHMS.items()],
        ("config", Annotated[str | None, tyro.conf.arg(
            help="JSON file with TrainConfig fields (flags override)")], None),
        ("resume", Annotated[str | None, tyro.conf.arg(
            help="run folder (or checkpoint file) to continue exactly")], None),
    ]
    return dataclasses.make_dataclass("train", fields, bases=(TrainConfig,))


def _one_line(text: str) -> str:
    """The first line of tyro's boxed error message."""
    lines = [line.strip() for line in text.splitlines()]
    boxed = [line.strip("│").strip() for line in lines if line.startswith("│")]
    lines = [line for line in (boxed or lines) if line and not line.startswith("─")]
    return lines[0] if lines else "invalid arguments"


def _tyro(cls: type, argv: list[str], default: Any, prog: str, description: str) -> Any:
    """``tyro.cli`` whose errors are one ``ValueError`` line (help still goes to stdout)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return tyro.cli(cls, args=argv, default=default, prog=prog,
                            description=description)
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        line = _one_line(err.getvalue()).rstrip(".")
        flag = line[len("Error parsing "):].split(":", 1)[0]
        if line.startswith("Error parsing --") and _flag_values(argv, flag):
            line = line.replace(flag, f"{flag} {_flag_values(argv, flag)[-1]!r}", 1)
        raise ValueError(f"{line} (see {prog} --help).") from None


def _base_config(argv: list[str]) -> tuple[TrainConfig, RunPlan | None]:
    """The config the flags apply to (``--config``'s file, ``--resume``'s run, or the
    defaults) and the run to resume."""
    configs, resumes = _flag_values(argv, "--config"), _flag_values(argv, "--resume")
    if not resumes:
        return (TrainConfig.load(configs[-1]) if configs else TrainConfig()), None
    if configs:
        raise ValueError("--config and --resume cannot be combined: a resumed run keeps its "
                         "config.json; pass the flags to change instead.")
    given = sorted(_flags(argv) & {"--out", "--run-name"})
    if given:
        raise ValueError(f"--resume continues the run in its own folder, so {' and '.join(given)} "
                         "cannot be combined with it.")
    plan = plan_resume(resumes[-1])  # every resume check, before anything is written
    return plan.base_config(), plan


def parse_train_args(argv: list[str]) -> tuple[TrainConfig, RunPlan | None]:
    """``train``'s flags -> (config, the resume plan or None); ``ValueError`` (one sentence)
    for a bad flag or value. Options that cannot apply are warned about in one log line."""
    base, resume = _base_config(argv)
    cli = _cli_type()
    start = copy.deepcopy(base)
    default = cli(**{name: getattr(start, name) for name in TrainConfig.run_fields()},
                  comfy=start.comfy, policy=start.policy, sections={}, **start.sections)
    parsed = _tyro(cli, _rewrite(argv, base.algo), default, "learned-schedules train",
                   TRAIN_HELP)
    config = TrainConfig(**{name: getattr(parsed, name) for name in TrainConfig.run_fields()},
                         comfy=parsed.comfy, policy=parsed.policy,
                         sections={name: getattr(parsed, name) for name in base.sections})
    _warn_unused(config, base)
    return config, resume


def _warn_unused(config: TrainConfig, base: TrainConfig) -> None:
    """One log line naming the options given that this run cannot use."""
    unused = []
    if config.backend != "comfy":
        unused += [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(config.comfy)
                   if getattr(config.comfy, f.name) != getattr(base.comfy, f.name)]
    for name, section in config.sections.items():
        if name != config.algo:
            old = base.sections.get(name)
            unused += [f"--{name}.{f.name.replace('_', '-')}" for f in dataclasses.fields(section)
                       if old is None or getattr(section, f.name) != getattr(old, f.name)]
    if unused:
        log.warning("Not used by this run (backend %s, algo %s), ignored: %s.", config.backend,
                    config.algo, ", ".join(unused))


def cmd_train(argv: list[str]) -> int:
    from .rl.distributed import current
    from .rl.engine import train

    config, resume = parse_train_args(argv)
    result = train(config, resume=resume) if resume is not None else train(config)
    if not result.interrupted:  # after Ctrl-C the other ranks may be gone: no barrier
        current(config.device).shutdown()
    if result.is_main:  # one line per run, not per data-parallel process
        print(json.dumps({"run_dir": str(result.run_dir), "iterations": result.iterations_done,
                          "interrupted": result.interrupted,
                          "policy": str(result.run_dir / "policy.safetensors")}))
    return 130 if result.interrupted else 0


@dataclass
class EvalArgs:
    """Compare a policy with comparator / default schedules on held-out data. Testbed
    policies: against uniform, shifted, best-global and oracle schedules. ComfyUI-model
    policies: against ComfyUI's default schedule(s) on the held-out prompts x seeds (reward
    table, per-prompt CSV, image grid); model and prompt options default to the policy's
    training run (the ComfyUI options below override them)."""

    policy: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="POLICY")]
    """Policy file (.safetensors) or a run folder."""
    testbed_config: str | None = None
    """Testbed JSON (default: the policy's)."""
    contexts: int = 512
    """Held-out contexts."""
    train_contexts: int = 512
    """Training contexts used to fit the best global schedule."""
    seed: int = 10_000
    """Held-out context seed."""
    no_oracle: Annotated[bool, tyro.conf.FlagCreatePairsOff] = False
    """Skip the per-instance oracle."""
    fit_iters: int = 400
    """Adam iterations when fitting the best global / oracle schedules."""
    out: str | None = None
    """Output folder (default: <run>/eval)."""
    seeds: int = 4
    """ComfyUI models: seeds per held-out prompt."""
    schedulers: str = "simple"
    """ComfyUI models: comma-separated ComfyUI schedulers to compare with (default: simple,
    the model's own)."""
    schedule: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """ComfyUI models: an extra fixed schedule NAME=S0,S1,... to compare with, in the model's
    sigmas (L+1 values from high to 0), e.g. best_global=1,.716,.504,.217,0; repeatable."""
    grid_columns: int = 6
    """ComfyUI models: contexts in the image grid."""
    ceiling_steps: int = 0
    """ComfyUI models: also evaluate the default schedule at this many steps (e.g. 30) as the
    ceiling of the gap-closed shares (0: off)."""
    fixed_at_mean: Annotated[bool, tyro.conf.FlagCreatePairsOff] = False
    """Also for a one-shot policy: the row learned_mean, one fixed schedule at the policy's
    mean schedule (step-wise policies always get it)."""
    reward: str | None = None
    """ComfyUI models: the reward (default: the policy's training reward)."""
    comfy: Annotated[ComfyConfig, tyro.conf.OmitArgPrefixes] = field(
        default_factory=ComfyConfig)
    """Overrides of the policy's training run: only the options given here apply."""


def parse_schedule_option(value: str) -> tuple[str, list[float]]:
    """``"name=1,.7,.5,.2,0"`` -> ``("name", [1.0, 0.7, 0.5, 0.2, 0.0])`` (``ValueError`` with
    the expected form otherwise)."""
    name, sep, numbers = value.partition("=")
    try:
        values = [float(v) for v in numbers.split(",") if v.strip()]
    except ValueError:
        values = []
    if not sep or not name.strip() or len(values) < 2:
        raise ValueError(f"eval --schedule looks like NAME=S0,S1,...,0 (at least two numbers), "
                         f"got {value!r}.")
    return name.strip(), values


def parse_eval_args(argv: list[str]) -> tuple[EvalArgs, dict[str, Any]]:
    """``eval``'s flags -> (arguments, overrides of the policy's training config: the
    ComfyUI options given, ``reward`` and ``testbed_config``)."""
    args = _tyro(EvalArgs, argv, None, "learned-schedules eval",
                 " ".join((EvalArgs.__doc__ or "").split()))
    given = _flags(argv)
    overrides: dict[str, Any] = {
        f.name: getattr(args.comfy, f.name) for f in dataclasses.fields(ComfyConfig)
        if {f"--{f.name.replace('_', '-')}", f"--no-{f.name.replace('_', '-')}"} & given}
    overrides.update(reward=args.reward, testbed_config=args.testbed_config)
    return args, overrides


def cmd_eval(argv: list[str]) -> int:
    from .eval import evaluate_policy_file

    args, overrides = parse_eval_args(argv)
    for flag, value, low in (("--contexts", args.contexts, 1), ("--seeds", args.seeds, 1),
                             ("--train-contexts", args.train_contexts, 1),
                             ("--fit-iters", args.fit_iters, 0),
                             ("--grid-columns", args.grid_columns, 1),
                             ("--ceiling-steps", args.ceiling_steps, 0)):
        if value < low:
            raise ValueError(f"eval {flag} must be >= {low}, got {value}.")
    if not any(s.strip() for s in args.schedulers.split(",")):
        raise ValueError("eval --schedulers needs at least one scheduler name.")
    options = {"train_contexts": args.train_contexts, "fit_iters": args.fit_iters,
               "oracle": not args.no_oracle, "grid_columns": args.grid_columns,
               "schedulers": tuple(s.strip() for s in args.schedulers.split(",") if s.strip())}
    if args.schedule:
        options["fixed_schedules"] = dict(parse_schedule_option(v) for v in args.schedule)
    report = evaluate_policy_file(args.policy, overrides=overrides, contexts=args.contexts,
                                  seeds=args.seeds, seed=args.seed, options=options,
                                  out=args.out, ceiling_steps=args.ceiling_steps,
                                  fixed_at_mean=True if args.fixed_at_mean else None)
    print(report.markdown())
    print(f"\nwritten: {report.out_dir}")
    return 0


@dataclass
class DemoArgs:
    """The main job: train JS on the default testbed, then evaluate (about a minute on 2 CPU
    cores)."""

    out: str = "runs"
    """Parent folder of the run."""
    iterations: int | None = None
    """Override iterations."""
    seed: int = 0
    """Training seed."""


DEMO_CONFIG = dict(backend="testbed", steps=5, baseline="js", rollouts=2, batch=16,
                   iterations=2000, lr=3e-3, eval_every=250, checkpoint_every=500)


def cmd_demo(argv: list[str]) -> int:
    from .eval import evaluate_policy_file
    from .rl.engine import train

    args = _tyro(DemoArgs, argv, None, "learned-schedules demo",
                 " ".join((DemoArgs.__doc__ or "").split()))
    cfg = dict(DEMO_CONFIG, seed=args.seed, out=args.out,
               run_name=f"demo-js-L5__{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}")
    if args.iterations is not None:
        cfg["iterations"] = args.iterations
    config = TrainConfig.from_dict(cfg)
    log.info("demo: training a James-Stein policy on the default analytic testbed (L=5)")
    result = train(config)
    import torch

    # the evaluation too runs on one thread: the testbed's tensors are tiny, and on a busy
    # 2-core machine default threading made its comparator fits several times slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = evaluate_policy_file(result.run_dir / "policy.safetensors")
    finally:
        torch.set_num_threads(before)
    print(report.markdown())
    print(f"\nrun folder: {result.run_dir}\nplot: {report.out_dir / 'schedules.png'}")
    return 0


def parse_calibrate_args(argv: list[str]) -> CalibrateArgs:
    """``calibrate``'s flags -> checked arguments (``ValueError``, one line, otherwise);
    ``--config``'s ComfyUI entries are the defaults the flags override."""
    default = CalibrateArgs()
    configs = _flag_values(argv, "--config")
    if configs:
        if not Path(configs[-1]).is_file():
            raise ValueError(f"--config: file not found: {configs[-1]}.")
        default = dataclasses.replace(default, comfy=TrainConfig.load(configs[-1]).comfy)
    args = _tyro(CalibrateArgs, argv, default, "learned-schedules calibrate",
                 " ".join((CalibrateArgs.__doc__ or "").split()))
    return finish_calibrate_args(args)


def cmd_calibrate(argv: list[str]) -> int:
    from .calibrate.command import calibrate_command

    print(json.dumps(calibrate_command(parse_calibrate_args(argv))))
    return 0


COMMANDS = {"train": (cmd_train, "train a policy (REINFORCE, PPO, ART, AdaGen...)"),
            "eval": (cmd_eval, "compare a policy with comparator / default schedules on "
                               "held-out data"),
            "demo": (cmd_demo, "train JS on the default testbed, then evaluate"),
            "calibrate": (cmd_calibrate, "a schedule for your model from the model alone "
                                         "(matching its own many-step result)")}


def build_parser() -> argparse.ArgumentParser:
    """The subcommand dispatch (each subcommand parses its own flags: ``<command> --help``)."""
    parser = _Parser(prog="learned-schedules",
                     description="Train and evaluate instance-level sampling-schedule policies. "
                     + " ".join(f"{name}: {text}." for name, (_, text) in COMMANDS.items()))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("command", choices=tuple(COMMANDS), help="see <command> --help")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = bool({"-v", "--verbose"} & set(argv[:1]))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command][0](args.args)
    except ValueError as exc:  # a user mistake: one line, no traceback
        log.error("%s", " ".join(str(exc).split()))
        return 2
    except OSError as exc:  # a path that cannot be written or read
        where = f" {exc.filename}" if exc.filename else ""
        log.error("Cannot use%s: %s.", where, exc.strerror or exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
