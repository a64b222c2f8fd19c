"""Registration of our env ids with Safety-Gymnasium's registry.

Only Safety-Gymnasium's registry module is touched (imported inside the functions), so this runs
while ``safety_gymnasium`` itself finishes importing (see :func:`metacpo.compat.install_import_hook`).
"""

from __future__ import annotations

from metacpo.tasks.spec import AGENTS, TaskFamily, env_id as make_env_id, families, get_family

ENTRY_POINT = "metacpo.tasks.builder:StochasticBuilder"


def register_ids(family: TaskFamily) -> list[str]:
    """Register ``Safety{Agent}St{family}{level}-v0`` for every agent and level; returns the ids.

    Idempotent. ``family`` must already be in the family registry
    (:func:`metacpo.tasks.spec.add_family`).
    """
    from safety_gymnasium.utils.registration import register, safe_registry

    get_family(family.name)
    ids = []
    for level in sorted(family.levels):
        for agent in AGENTS:
            eid = make_env_id(agent, family.name, level)
            ids.append(eid)
            if eid in safe_registry:
                continue
            register(id=eid, entry_point=ENTRY_POINT,
                     kwargs={"agent": agent, "family": family.name, "level": level},
                     max_episode_steps=family.max_episode_steps)
    return ids


def registered_ids() -> list[str]:
    """Every env id of every registered family (in family, level, agent order)."""
    from safety_gymnasium.utils.registration import safe_registry

    out = []
    for fam in families().values():
        for level in sorted(fam.levels):
            for agent in AGENTS:
                eid = make_env_id(agent, fam.name, level)
                if eid in safe_registry:
                    out.append(eid)
    return out
