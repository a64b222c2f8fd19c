"""``metacpo train``: train a policy (CPO, TRPO, ...) and write a run directory."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

NAME = "train"
HELP = "Train a policy (cpo, trpo, ...) on a Safety-Gymnasium or metacpo task; writes runs/<name>/."

# flag -> (section, key): shortcuts for the most used config fields. The field gives the flag its
# help (docstring), its type (the flag's text is converted to it, never re-parsed as YAML) and,
# for a Literal field, its allowed values.
FLAGS: dict[str, tuple[str, str]] = {
    "--env-id": ("env", "env_id"),
    "--seed": ("run", "seed"),
    "--cost-limit": ("constraint", "cost_limit"),
    "--steps-per-iter": ("sampler", "steps_per_iter"),
    "--iters": ("run", "iters"),
    "--workers": ("sampler", "workers"),
    "--sampler": ("sampler", "kind"),
    "--ray-address": ("sampler", "ray_address"),
    "--run-dir": ("run", "run_dir"),
    "--init-from": ("run", "init_from"),
}


def _section_classes() -> dict[str, type]:
    from metacpo.config.schema import SECTIONS

    return dict(SECTIONS)


def _section_lines(name: str, cls: type) -> list[str]:
    """``name.key = default  (allowed values)`` and the field's docstring, for every field of ``cls``."""
    import typing

    from metacpo.config.schema import choices_of, field_docs

    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        allowed = choices_of(hints[f.name])
        lines.append(f"  {name}.{f.name} = {default!r}" + (f"  (one of: {', '.join(allowed)})" if allowed else ""))
        lines.append(f"      {docs.get(f.name, '')}")
    return lines


def _epilog() -> str:
    lines = ["config keys for --set section.key=value (and presets), with defaults:"]
    for name, cls in _section_classes().items():
        lines += _section_lines(name, cls)
    from metacpo.algorithms.registry import algorithm_names, get_algorithm

    users: dict[tuple[str, type], list[str]] = {}  # one listing per section, naming every algorithm using it
    for algo in algorithm_names():
        for name, cls in get_algorithm(algo).sections.items():
            users.setdefault((name, cls), []).append(algo)
    for (name, cls), algos in users.items():
        lines.append(f"[{name}] section (algo {', '.join(algos)} only):")
        lines += _section_lines(name, cls)
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from metacpo.algorithms.registry import algorithm_names
    from metacpo.config.schema import choices_of, field_docs, field_type

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _epilog()
    parser.add_argument("--algo", default=None, help=f"algorithm: {', '.join(algorithm_names())} (default cpo)")
    parser.add_argument("--preset", default=None, metavar="FILE.yaml",
                        help="YAML preset (a file, or a bundled preset name in metacpo/config/presets)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable), e.g. --set update.delta=0.02")
    sections = _section_classes()
    for flag, (section, key) in FLAGS.items():
        doc = field_docs(sections[section]).get(key, "")
        allowed = choices_of(field_type(sections[section], key))
        metavar = "{" + ",".join(allowed) + "}" if allowed else key.upper()
        parser.add_argument(flag, default=None, metavar=metavar, help=f"{doc} [{section}.{key}]")
    from metacpo.cli import add_task_arguments

    add_task_arguments(parser)
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR exactly where it stopped (only --iters and --ray-address "
                             "may be given; the run's --import/--overrides are reused)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def flag_values(args: argparse.Namespace, *, only: tuple[str, ...] | None = None) -> dict[tuple[str, str], Any]:
    """``(section, key) -> typed value`` of every shortcut flag given (``only``: of these flags)."""
    from metacpo.config.schema import field_type, value_from_text

    sections = _section_classes()
    out: dict[tuple[str, str], Any] = {}
    for flag, (section, key) in FLAGS.items():
        raw = getattr(args, _dest(flag))
        if raw is not None and (only is None or flag in only):
            out[(section, key)] = value_from_text(raw, field_type(sections[section], key), f"{section}.{key}")
    return out


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def build_config(args: argparse.Namespace) -> Any:
    """defaults < --preset < --set < explicit flags; validated by the dataclasses."""
    from metacpo.config.schema import TrainConfig, apply_override, load_yaml, set_key

    from metacpo.tasks.setup import import_task_module, normalize_import, read_overrides_file

    data: dict[str, Any] = load_yaml(args.preset) if args.preset else {}
    for assignment in args.overrides:
        apply_override(data, assignment)
    if args.imports:
        imports = [normalize_import(spec) for spec in args.imports]
        for spec in imports:  # before the overrides and the env id are checked: they may name its families
            import_task_module(spec)
        data.setdefault("env", {})["imports"] = imports
    if args.task_overrides:
        data.setdefault("env", {})["task_overrides"] = read_overrides_file(args.task_overrides)
    if args.algo is not None:
        data["algo"] = args.algo
    for (section, key), value in flag_values(args).items():
        set_key(data, section, key, value)
    return TrainConfig.from_dict(data)


def run(args: argparse.Namespace) -> int:
    from metacpo.training import load_run_config, train

    if args.resume:
        others = [f for f in ("algo", "preset") if getattr(args, f) is not None] + (["--set"] if args.overrides else [])
        others += (["--import"] if args.imports else []) + (["--overrides"] if args.task_overrides else [])
        resumable = ("--iters", "--ray-address")
        others += [flag for flag in FLAGS if flag not in resumable and getattr(args, _dest(flag)) is not None]
        if others:
            raise ValueError(f"--resume continues the saved config; it cannot be combined with {', '.join(others)} "
                             "(only --iters, --ray-address)")
        config = load_run_config(args.resume)
        given = flag_values(args, only=resumable)
        run_cfg = dataclasses.replace(config.run, run_dir=str(args.resume))
        if ("run", "iters") in given:
            run_cfg = dataclasses.replace(run_cfg, iters=given[("run", "iters")])
        config = dataclasses.replace(config, run=run_cfg)
        if ("sampler", "ray_address") in given:  # the cluster may live elsewhere now
            config = dataclasses.replace(config, sampler=dataclasses.replace(
                config.sampler, ray_address=given[("sampler", "ray_address")]))
        result = train(config, resume=True, progress=not args.no_progress)
    else:
        config = build_config(args)
        result = train(config, progress=not args.no_progress)
    row = result.last_row
    print(
        f"run dir: {result.run_dir}\n"
        f"last iteration: return {row.get('rollout/ep_return_mean', float('nan')):.2f}  "
        f"cost {row.get('rollout/ep_cost_mean', float('nan')):.2f}  J_C {row.get('rollout/j_c', float('nan')):.2f}",
        file=sys.stdout,
    )
    return 0

