"""Typed configuration dataclasses and YAML presets (see :mod:`metacpo.config.schema`)."""

from metacpo.config.schema import (
    PRESET_DIR,
    SECTIONS,
    AdvantageConfig,
    CriticConfig,
    EnvConfig,
    PolicyConfig,
    RunConfig,
    SamplerConfig,
    TrainConfig,
    UpdateConfig,
    apply_override,
    build_section,
    field_docs,
    load_yaml,
)

__all__ = [
    "PRESET_DIR",
    "SECTIONS",
    "AdvantageConfig",
    "CriticConfig",
    "EnvConfig",
    "PolicyConfig",
    "RunConfig",
    "SamplerConfig",
    "TrainConfig",
    "UpdateConfig",
    "apply_override",
    "build_section",
    "field_docs",
    "load_yaml",
]
