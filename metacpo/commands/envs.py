"""``metacpo envs``: list every registered stochastic env id with its parameter ranges."""

from __future__ import annotations

import argparse
import json

NAME = "envs"
HELP = "List the registered Safety{Agent}St{family}{level}-v0 env ids and their parameter ranges."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", help="only this task family (e.g. circle, button)")
    parser.add_argument("--agent", help="only this agent (Point, Car, Doggo, Racecar)")
    parser.add_argument("--level", type=int, help="only this level")
    parser.add_argument("--overrides", metavar="FILE",
                        help="a YAML/TOML file of range overrides to validate and show")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    from metacpo.cli import add_task_arguments

    add_task_arguments(parser, overrides=False)


def rows(*, family: str | None = None, agent: str | None = None, level: int | None = None) -> list[dict]:
    """One dict per registered env id: id, agent, family, level, steps, ranges."""
    from metacpo import tasks

    if agent is not None and agent not in tasks.AGENTS:
        raise ValueError(f"unknown agent {agent!r}; allowed: {', '.join(tasks.AGENTS)}")
    fams = tasks.families()
    if family is not None:
        fams = {family: tasks.get_family(family)}
    if level is not None:
        for fam in fams.values():
            if level not in fam.levels:
                raise ValueError(f"unknown level {level} for family {fam.name!r}; allowed: "
                                 f"{', '.join(str(lv) for lv in sorted(fam.levels))}")
    out = []
    for eid in tasks.registered_ids():
        a, f, lv = tasks.parse_env_id(eid)
        if f not in fams or (agent and a != agent) or (level is not None and lv != level):
            continue
        dist = tasks.get_distribution(f, lv)
        out.append({"id": eid, "agent": a, "family": f, "level": lv,
                    "max_episode_steps": fams[f].max_episode_steps,
                    "fixed": dist.is_fixed, "ranges": dist.describe()})
    return out


def run(args: argparse.Namespace) -> int:
    from metacpo import tasks
    from metacpo.tasks.setup import TaskSetup

    TaskSetup(imports=tuple(args.imports)).apply()  # installed entry points, then --import
    if args.overrides:
        tasks.load_distribution_overrides(args.overrides)
    table = rows(family=args.family, agent=args.agent, level=args.level)
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    width = max((len(r["id"]) for r in table), default=10)
    for r in table:
        ranges = ", ".join(f"{k}={v}" for k, v in r["ranges"].items())
        print(f"{r['id']:<{width}}  {r['max_episode_steps']:>4} steps  {ranges}")
    print(f"{len(table)} env ids")
    return 0
