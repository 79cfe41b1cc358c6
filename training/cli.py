"""Command line: ``python -m learned_schedules.training {train,eval,demo}``.

Also installed as the ``learned-schedules`` console script. Every ``train`` flag comes from
:class:`training.rl.config.TrainConfig` (its field docstrings are the help texts).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import logging
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from .rl.config import LEGACY_KEYS, SECTIONS, TrainConfig

log = logging.getLogger("learned_schedules.training")


def field_docs(cls: type) -> dict[str, str]:
    """The string literal written under each dataclass field (CleanRL-style docs), including
    the fields a dataclass inherits."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


#: TrainConfig fields ``eval`` accepts for ComfyUI models (overriding the policy's training)
COMFY_EVAL_FIELDS = ("comfyui_path", "comfyui_base", "comfyui_cpu", "checkpoint",
                     "diffusion_model", "unet_config", "weight_dtype", "text_encoders",
                     "clip_type", "text_encoder_options", "vae", "prompts", "eval_prompts",
                     "held_out", "width", "height", "sampler", "cfg", "guidance",
                     "negative_prompt", "rollout_batch", "cache_dir", "reward", "reward_paths",
                     "allow_download", "reference_steps")


def _add_flag(parser: argparse._ActionsContainer, flag: str, dest: str, f: dataclasses.Field,
              help_text: str) -> None:
    if f.type in ("bool", bool):
        parser.add_argument(flag, dest=dest, default=None,
                            action=argparse.BooleanOptionalAction, help=help_text)
        return
    type_name = str(f.type)
    kind = int if type_name.startswith("int") else (
        float if type_name.startswith("float") else str)
    parser.add_argument(flag, dest=dest, type=kind, default=None, help=help_text)


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else None


def _add_config_flags(parser: argparse._ActionsContainer, skip: tuple[str, ...] = (),
                      only: tuple[str, ...] | None = None) -> None:
    """One flag per TrainConfig field; ``--<section>.<field>`` for the algorithm sections, and
    the old flat names (``--baseline``, ``--ppo-epochs``...) as shorthands."""
    docs = field_docs(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip or f.name == "extra" or (only is not None and f.name not in only):
            continue
        if f.name in SECTIONS:
            section = SECTIONS[f.name]
            section_docs = field_docs(section)
            group = parser.add_argument_group(f"{f.name} options", docs.get(f.name))
            for sf in dataclasses.fields(section):
                flag = f"--{f.name}.{sf.name.replace('_', '-')}"
                _add_flag(group, flag, f"{f.name}.{sf.name}", sf,
                          f"{section_docs.get(sf.name, '')} (default: {_default(sf)})")
            continue
        _add_flag(parser, "--" + f.name.replace("_", "-"), f.name, f,
                  f"{docs.get(f.name, '')} (default: {_default(f)})")
    if only is not None:
        return
    for key, (section, name) in LEGACY_KEYS.items():
        section_cls = SECTIONS[section or "ppo"]  # PPO's section has every field
        sf = next(x for x in dataclasses.fields(section_cls) if x.name == name)
        target = f"--{section or '<algo>'}.{name.replace('_', '-')}"
        scope = "" if section else " of the active --algo"
        _add_flag(parser, "--" + key.replace("_", "-"), key, sf,
                  f"{field_docs(section_cls).get(name, '')} Shorthand for {target}{scope}.")


def _config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    data: dict[str, Any] = dataclasses.asdict(base or TrainConfig())
    for f in dataclasses.fields(TrainConfig):
        if f.name in SECTIONS:
            for sf in dataclasses.fields(SECTIONS[f.name]):
                value = getattr(args, f"{f.name}.{sf.name}", None)
                if value is not None:
                    data[f.name][sf.name] = value
            continue
        value = getattr(args, f.name, None)
        if value is not None:
            data[f.name] = value
    for key in LEGACY_KEYS:  # shorthands: mapped into their section by from_dict
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    method = getattr(args, "method", None)
    if method is not None:
        data["algo"] = algo_of_method(method)
    return TrainConfig.from_dict(data)


def algo_of_method(method: str) -> str:
    """``--method``: a method name (as written in policy files) or an algorithm name -> the
    algorithm; ``ValueError`` naming the choices otherwise."""
    from .rl.algorithms import ALGORITHMS

    by_method = {cls.method: name for name, cls in ALGORITHMS.items()}
    if method in ALGORITHMS:
        return method
    if method not in by_method:
        raise ValueError(f"Unknown --method {method!r}; choose one of "
                         f"{', '.join(sorted(set(by_method) | set(ALGORITHMS)))}.")
    return by_method[method]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="learned-schedules",
        description="Train and evaluate instance-level sampling-schedule policies.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p_train = sub.add_parser("train", help="train a policy (REINFORCE/PPO)")
    p_train.add_argument("--config", help="JSON file with TrainConfig fields (flags override)")
    p_train.add_argument("--resume", help="run folder (or checkpoint file) to continue exactly")
    p_train.add_argument("--method", help="the method by name, a shorthand for --algo: "
                         "dirichlet-reinforce, dirichlet-ppo, art (or an algorithm name)")
    _add_config_flags(p_train)

    p_eval = sub.add_parser(
        "eval", help="compare a policy with comparator / default schedules on held-out data",
        description="Testbed policies: against uniform, shifted, best-global and oracle "
                    "schedules. ComfyUI-model policies: against ComfyUI's default schedule(s) "
                    "on the held-out prompts x seeds (reward table, per-prompt CSV, image "
                    "grid); model and prompt options default to the policy's training run.")
    p_eval.add_argument("policy", help="policy file (.safetensors) or a run folder")
    p_eval.add_argument("--testbed-config", help="testbed JSON (default: the policy's)")
    p_eval.add_argument("--contexts", type=int, default=512, help="held-out contexts")
    p_eval.add_argument("--train-contexts", type=int, default=512,
                        help="training contexts used to fit the best global schedule")
    p_eval.add_argument("--seed", type=int, default=10_000, help="held-out context seed")
    p_eval.add_argument("--no-oracle", action="store_true", help="skip the per-instance oracle")
    p_eval.add_argument("--fit-iters", type=int, default=400,
                        help="Adam iterations when fitting the best global / oracle schedules")
    p_eval.add_argument("--out", help="output folder (default: <run>/eval)")
    comfy = p_eval.add_argument_group("ComfyUI models")
    comfy.add_argument("--seeds", type=int, default=4, help="seeds per held-out prompt")
    comfy.add_argument("--schedulers", default="simple",
                       help="comma-separated ComfyUI schedulers to compare with (default: "
                            "simple, the model's own)")
    comfy.add_argument("--schedule", action="append", default=[], metavar="NAME=S0,S1,...",
                       help="an extra fixed schedule to compare with, in the model's sigmas "
                            "(L+1 values from high to 0), e.g. best_global=1,.716,.504,.217,0; "
                            "repeatable")
    comfy.add_argument("--grid-columns", type=int, default=6, help="contexts in the image grid")
    comfy.add_argument("--ceiling-steps", type=int, default=0,
                       help="also evaluate the default schedule at this many steps (e.g. 30) as "
                            "the ceiling of the gap-closed shares (0: off)")
    _add_config_flags(comfy, only=COMFY_EVAL_FIELDS)

    p_demo = sub.add_parser("demo", help="the main job: train JS on the default testbed, "
                                         "then evaluate (about a minute on 2 CPU cores)")
    p_demo.add_argument("--out", default="runs", help="parent folder of the run")
    p_demo.add_argument("--iterations", type=int, default=None, help="override iterations")
    p_demo.add_argument("--seed", type=int, default=0)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from .rl.distributed import current
    from .rl.engine import train

    if args.resume:
        run = Path(args.resume)
        if args.config:
            raise ValueError("--config and --resume cannot be combined: a resumed run keeps its "
                             "config.json; pass the flags to change instead.")
        if not run.exists():
            raise ValueError(f"--resume: {run} does not exist.")
        run_dir = run if run.is_dir() else run.parent.parent
        if not (run_dir / "config.json").is_file():
            raise ValueError(f"--resume: {run_dir} is not a run folder (it has no config.json).")
        base = TrainConfig.load(run_dir / "config.json")
        config = _config_from_args(args, base)
        result = train(config, resume=run)
    else:
        base = TrainConfig.load(args.config) if args.config else None
        config = _config_from_args(args, base)
        result = train(config)
    if not result.interrupted:  # after Ctrl-C the other ranks may be gone: no barrier
        current(config.device).shutdown()
    if result.is_main:  # one line per run, not per data-parallel process
        print(json.dumps({"run_dir": str(result.run_dir), "iterations": result.iterations_done,
                          "interrupted": result.interrupted,
                          "policy": str(result.run_dir / "policy.safetensors")}))
    return 130 if result.interrupted else 0


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


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval import evaluate_policy_file

    for flag, value, low in (("--contexts", args.contexts, 1), ("--seeds", args.seeds, 1),
                             ("--train-contexts", args.train_contexts, 1),
                             ("--fit-iters", args.fit_iters, 0),
                             ("--grid-columns", args.grid_columns, 1),
                             ("--ceiling-steps", args.ceiling_steps, 0)):
        if value < low:
            raise ValueError(f"eval {flag} must be >= {low}, got {value}.")
    if not any(s.strip() for s in args.schedulers.split(",")):
        raise ValueError("eval --schedulers needs at least one scheduler name.")
    overrides = {name: getattr(args, name, None) for name in COMFY_EVAL_FIELDS}
    overrides["testbed_config"] = args.testbed_config
    options = {"train_contexts": args.train_contexts, "fit_iters": args.fit_iters,
               "oracle": not args.no_oracle, "grid_columns": args.grid_columns,
               "schedulers": tuple(s.strip() for s in args.schedulers.split(",") if s.strip())}
    if args.schedule:
        options["fixed_schedules"] = dict(parse_schedule_option(v) for v in args.schedule)
    report = evaluate_policy_file(args.policy, overrides=overrides, contexts=args.contexts,
                                  seeds=args.seeds, seed=args.seed, options=options,
                                  out=args.out, ceiling_steps=args.ceiling_steps)
    print(report.markdown())
    print(f"\nwritten: {report.out_dir}")
    return 0


DEMO_CONFIG = dict(backend="testbed", steps=5, baseline="js", rollouts=2, batch=16,
                   iterations=2000, lr=3e-3, eval_every=250, checkpoint_every=500)


def cmd_demo(args: argparse.Namespace) -> int:
    from .eval import evaluate_policy_file
    from .rl.engine import train

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return {"train": cmd_train, "eval": cmd_eval, "demo": cmd_demo}[args.command](args)
    except ValueError as exc:  # a user mistake: one line, no traceback
        log.error("%s", " ".join(str(exc).split()))
        return 2
    except OSError as exc:  # a path that cannot be written or read
        where = f" {exc.filename}" if exc.filename else ""
        log.error("Cannot use%s: %s.", where, exc.strerror or exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
