import dataclasses
import re
from pathlib import Path

import pytest

from metacpo.config import PRESET_DIR, SECTIONS, TrainConfig, apply_override, field_docs, load_yaml
from metacpo.config.schema import UpdateConfig


def test_invalid_values_name_the_value_and_what_is_allowed():
    with pytest.raises(ValueError, match=r"update.delta must be > 0, got 0.0"):
        UpdateConfig(delta=0.0)
    with pytest.raises(ValueError, match=r"update.delta must be > 0, got -1"):
        TrainConfig.from_dict({"update": {"delta": -1}})
    with pytest.raises(ValueError, match=r"cost_limit must be >= 0, got -5"):
        TrainConfig.from_dict({"update": {"cost_limit": -5}})
    with pytest.raises(ValueError, match=r"unknown algo 'ppo'; allowed: \[.*'cpo'.*'trpo'"):
        TrainConfig.from_dict({"algo": "ppo"})
    with pytest.raises(ValueError, match=r"unknown update.metric 'kl'; allowed: \['fisher', 'identity'\]"):
        TrainConfig.from_dict({"update": {"metric": "kl"}})
    with pytest.raises(ValueError, match=r"update.backend 'dco' needs update.metric 'identity'"):
        TrainConfig.from_dict({"update": {"backend": "dco"}})
    with pytest.raises(ValueError, match=r"expects a number, got 'abc'"):
        TrainConfig.from_dict({"update": {"delta": "abc"}})


@pytest.mark.parametrize(("key", "allowed"), [
    ("sampler.kind", "SAMPLER_KINDS"), ("update.metric", "METRICS"), ("update.backend", "SOLVER_BACKENDS"),
    ("meta.metric", "METRICS"), ("meta.backend", "SOLVER_BACKENDS"), ("policy.activation", "ACTIVATIONS"),
    ("critic.optimizer", "CRITIC_OPTIMIZERS"),
])
def test_every_enumerated_setting_checks_against_its_one_list(key, allowed):
    """Validation, the error message and --help all use the list in metacpo.choices."""
    from metacpo import choices
    from metacpo.commands.train import _epilog

    values = getattr(choices, allowed)
    section, name = key.split(".")
    with pytest.raises(ValueError, match=rf"unknown {key} 'nope'; allowed: {re.escape(str(list(values)))}$"):
        TrainConfig.from_dict({"algo": "meta-cpo", section: {name: "nope"}})
    assert f"  {key} = " in _epilog() and f"(one of: {', '.join(values)})" in _epilog()


def test_unknown_sections_and_keys_fail_loudly():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['detla'\] in config section 'update'"):
        TrainConfig.from_dict({"update": {"detla": 0.1}})
    with pytest.raises(ValueError, match=r"unknown config section\(s\) \['updates'\]"):
        TrainConfig.from_dict({"updates": {}})


def test_round_trip_and_overrides():
    data: dict = {}
    apply_override(data, "update.delta=0.02")
    apply_override(data, "policy.hidden=[24, 12]")
    cfg = TrainConfig.from_dict({"algo": "trpo", **data})
    assert cfg.update.delta == 0.02 and cfg.policy.hidden == (24, 12) and cfg.algo == "trpo"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="section.key"):
        apply_override({}, "delta=0.1")
    assert cfg.sampler.num_workers >= 1  # derived property (0 -> cpu count)


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESET_DIR.glob("*.yaml")))
def test_bundled_presets_are_valid(preset):
    data = load_yaml(PRESET_DIR / preset)
    cfg = TrainConfig.from_dict(data)
    # every value the preset sets arrives in the config (a preset that silently loses keys fails)
    got = cfg.to_dict()
    for section, values in data.items():
        if section == "algo":
            assert cfg.algo == values
            continue
        for key, value in values.items():
            expected = list(value) if isinstance(value, (list, tuple)) else value
            assert got[section][key] == expected, f"{preset}: {section}.{key}"
    assert TrainConfig.from_dict(got) == cfg  # and round-trips


def test_meta_algorithms_default_to_a_task_family_env():
    for algo in ("meta-cpo", "meta-trpo", "multitask-cpo"):
        assert TrainConfig.from_dict({"algo": algo}).env.env_id == "SafetyPointStcircle1-v0"
    assert TrainConfig.from_dict({"algo": "cpo"}).env.env_id == "SafetyPointCircle1-v0"
    assert TrainConfig.from_dict({"algo": "meta-cpo", "env": {"env_id": "SafetyCarStbutton1-v0"}}).env.env_id \
        == "SafetyCarStbutton1-v0"


def test_cost_advantage_settings_are_validated():
    cfg = TrainConfig.from_dict({"advantage": {"cost_lam": 0.9}})
    assert cfg.advantage.cost_lam == 0.9 and cfg.advantage.cost_gamma == 1.0
    with pytest.raises(ValueError, match="cost_lam"):
        TrainConfig.from_dict({"advantage": {"cost_lam": 1.5}})


def test_presets_exist_and_bad_preset_fails(tmp_path):
    assert {p.stem for p in PRESET_DIR.glob("*.yaml")} >= {"cpo_point_circle", "trpo_point_circle", "seed_identity"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("update:\n  delta: 0.1\n  foo: 1\n")
    with pytest.raises(ValueError, match="foo"):
        TrainConfig.from_dict(load_yaml(bad))
    with pytest.raises(ValueError, match="not found"):
        load_yaml("no_such_preset")


def test_every_field_has_a_docstring():
    for name, cls in SECTIONS.items():
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{name}: fields without a docstring: {missing}"


def test_building_a_config_imports_no_algorithm():
    """config -> registry only: a config (default or meta) imports its sections, not the algorithms,
    samplers or the meta core (no config <-> registry import circle)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import metacpo.config.schema as s\n"
        "s.TrainConfig()\n"
        "s.TrainConfig.from_dict({'algo': 'meta-cpo'})\n"
        "heavy = ['metacpo.algorithms.cpo', 'metacpo.algorithms.meta_cpo', 'metacpo.algorithms.common',\n"
        "         'metacpo.samplers', 'metacpo.meta', 'metacpo.solvers', 'torch']\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_knows_the_common_section_names():
    from metacpo.algorithms.registry import COMMON_SECTION_NAMES
    from metacpo.config.schema import SECTIONS

    assert COMMON_SECTION_NAMES == {"algo", *SECTIONS}


OLD_CONFIGS = sorted((Path(__file__).resolve().parents[1] / "data" / "old_configs").glob("*.yaml"))


@pytest.mark.parametrize("path", OLD_CONFIGS, ids=[p.stem for p in OLD_CONFIGS])
def test_config_yaml_written_before_the_config_redesign_loads_to_the_same_values(tmp_path, path):
    """config.yaml files written by the commit before issue 11's config work (tests/data/old_configs:
    update.cost_limit 15, meta.max_backtracks 12, annealing from 40 over 5) load to the same values
    as a run directory's config, and write back the same but for the cost limit's new place."""
    import yaml

    from metacpo.config.schema import ADDED_KEYS
    from metacpo.training import load_run_config

    old = yaml.safe_load(path.read_text())
    (tmp_path / "config.yaml").write_text(path.read_text())
    config = load_run_config(tmp_path)
    assert config.constraint.cost_limit == 15.0
    if config.algo == "meta-cpo":
        meta = config.extra["meta"]
        assert (meta.max_backtracks, meta.anneal_cost_limit_from, meta.anneal_iters) == (12, 40.0, 5)
        assert (meta.metric, meta.backtrack_coef, meta.accept_ratio, meta.line_search) == ("identity", 0.8, 0.1, True)
    moved = {**old, "update": {k: v for k, v in old["update"].items() if k != "cost_limit"},
             "constraint": {"cost_limit": 15.0}}
    for (section, key), value in ADDED_KEYS.items():  # settings added since: the value of the old run
        moved[section] = {**moved[section], key: value}
    assert config.to_dict() == moved


def test_the_old_cost_limit_key_works_everywhere_and_a_later_layer_wins():
    base = TrainConfig.from_dict({"update": {"cost_limit": 10, "delta": 0.02}})
    assert base.constraint.cost_limit == 10.0 and base.update.delta == 0.02
    data = {"constraint": {"cost_limit": 10.0}}
    apply_override(data, "update.cost_limit=5")  # --set with the old name overrides the preset's new one
    assert TrainConfig.from_dict(data).constraint.cost_limit == 5.0
    with pytest.raises(ValueError, match=r"^update.cost_limit \(the old name of constraint.cost_limit\) is 5 but "
                                         r"constraint.cost_limit is 10; give one of them$"):
        TrainConfig.from_dict({"update": {"cost_limit": 5}, "constraint": {"cost_limit": 10}})
    assert TrainConfig.from_dict({"update": {"cost_limit": 7}, "constraint": {"cost_limit": 7}}).constraint.cost_limit == 7


def test_the_meta_step_shares_the_step_config():
    """meta's solver and line-search settings are StepConfig's fields (one declaration, one check);
    only two defaults differ from update's, and they keep the values meta runs always had."""
    from metacpo.algorithms.meta_config import MetaConfig
    from metacpo.config.schema import StepConfig

    shared = {f.name for f in dataclasses.fields(StepConfig)}
    assert shared <= {f.name for f in dataclasses.fields(UpdateConfig)}
    assert shared <= {f.name for f in dataclasses.fields(MetaConfig)}
    meta, update = MetaConfig(), UpdateConfig()
    assert {k for k in shared if getattr(meta, k) != getattr(update, k)} == {"metric", "max_backtracks"}
    assert (meta.metric, meta.max_backtracks, update.max_backtracks) == ("identity", 10, 15)
    for section, cls in (("update", UpdateConfig), ("meta", MetaConfig)):
        with pytest.raises(ValueError, match=rf"^{section}.max_backtracks must be >= 0, got -1$"):
            cls(max_backtracks=-1)
        with pytest.raises(ValueError, match=rf"^{section}.backend 'dco' needs {section}.metric 'identity'"):
            cls(backend="dco", metric="fisher")
        assert set(field_docs(cls)) >= {f.name for f in dataclasses.fields(cls)}
