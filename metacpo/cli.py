"""The ``metacpo`` command line: one subcommand per module in :mod:`metacpo.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Bad input (``ValueError`` from config validation, unknown ids, malformed ranges, ...) becomes
a one-line ``error: ...`` message and exit status 2, never a traceback. Ctrl-C exits with status
130 after one line saying what was kept and how to continue.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Order shown in --help.
COMMANDS: tuple[str, ...] = ("envs", "train", "evaluate", "adapt", "benchmark", "report", "render", "plot", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metacpo",
        description="Safe meta-RL: Meta-CPO and baselines on stochastic Safety-Gymnasium tasks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        mod = importlib.import_module(f"metacpo.commands.{name}")
        # argparse %-formats help strings (not descriptions): escape a literal "%".
        p = sub.add_parser(mod.NAME, help=mod.HELP.replace("%", "%%"), description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def add_task_arguments(parser: argparse.ArgumentParser, *, overrides: bool = True) -> None:
    """``--import MODULE_OR_FILE`` (repeatable) and ``--overrides FILE``: custom task families and ranges."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="import a module or .py file that registers custom task families (repeatable); "
                             "installed packages in the 'metacpo.tasks' entry-point group load automatically")
    if overrides:
        parser.add_argument("--overrides", dest="task_overrides", metavar="FILE", default=None,
                            help="YAML/TOML file of task range overrides {family: {level: {param: range}}}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # commands say what was saved and how to continue
        print(str(exc) or "interrupted", file=sys.stderr)
        if argv is None:  # the program itself (console script, python -m): everything is saved and closed
            # by now; skip interpreter teardown (unloading torch, mujoco, ...: 1-2 s on a busy machine)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

