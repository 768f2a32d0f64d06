"""Building a run's configuration: algorithm recipe × ``--preset`` × ``--set`` overrides.

An algorithm's recipe (:data:`adaptrl.algorithms.ALGORITHMS`) gives its composition; ``--preset
paper`` adds the settings its paper used for the chosen environment (:func:`paper_settings`; the
sources are in :data:`PAPER_PRESET_SOURCES`); ``--set key=value`` overrides single values.
The result is a validated :class:`~adaptrl.meta.config.TrainConfig`.

Inner step size. ProMP's Table 1 prints α = 0.01, but every released configuration (the run
scripts and the paper's sweeps) uses 0.1 with the per-step loss normalisation (0.05 for the
RandParams envs). The presets follow the released code; the difference is listed in
docs/algorithms.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from adaptrl.algorithms import ALGORITHMS
from adaptrl.envs import canonical_name, family_horizon
from adaptrl.errors import ConfigError, unknown_name_error
from adaptrl.meta.config import FIELDS, TrainConfig, coerce_setting, setting_group, validate

PRESET_KINDS = ("default", "paper")

PAPER_PRESET_SOURCES = (
    "ProMP App. D (the ProMP paper's meta-RL algorithms); TMAML App. E Table 1 (tmaml-*); "
    "thesis §5.5.2/App. B (mb-mpc); the original code's params-<env>.json, thesis App. A (me-trpo); "
    "thesis App. B (mb-mpo, mb-promp); the thesis's model-free yardstick (trpo, ppo, vpg)")
"""Where each algorithm's ``--preset paper`` settings come from (``adaptrl train --help``)."""


def parse_int_list(text: str, what: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``; a clear error naming the option ``what`` otherwise."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{what} expects integers separated by commas, e.g. 0,1,2; got {text!r}.") from None
    if not values:
        raise ConfigError(f"{what} is empty; give integers separated by commas, e.g. 0,1,2.")
    return values


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``["inner_lr=0.05", "env_options.reward_type=dense"]`` → overrides (values as strings;
    env options parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}.")
        add_override(out, key, value)
    return out


def add_override(overrides: dict[str, Any], key: str, value: Any) -> None:
    """Put one ``--set`` value into ``overrides``: ``env_options.K`` into the ``env_options``
    mapping (a string parsed as a YAML scalar), any other key as given."""
    if key.startswith("env_options."):
        option = key.split(".", 1)[1]
        parsed = yaml.safe_load(value) if isinstance(value, str) else value
        overrides.setdefault("env_options", {})[option] = parsed
    else:
        overrides[key] = value



def paper_settings(algo: str, env: str) -> dict[str, Any]:
    """``--preset paper``: the settings ``algo``'s paper used on canonical family ``env``.

    Raises a :class:`ConfigError` naming the covered environments when there are none (e.g. the
    ProMP paper's algorithms on a single-task environment), rather than running the default
    preset under the name "paper"."""
    from adaptrl.envs import family_names

    spec = ALGORITHMS.get(algo)
    settings = spec.paper_settings(env)
    if not settings:
        covered = [name for name in family_names() if spec.paper_settings(name)]
        listed = f" (its --preset paper covers {', '.join(covered)})" if covered else ""
        raise ConfigError(f"{algo} has no paper settings for {env}{listed}; use --preset default, "
                          "with --set for single values.")
    return settings


def build_config(algo: str, env: str, *, preset: str = "default",
                 overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Resolve ``algo`` on ``env``: the recipe's composition, its paper per-env settings when
    ``preset="paper"``, then ``overrides`` (``--set``). The horizon is resolved to a number."""
    spec = ALGORITHMS.get(algo)
    if preset not in PRESET_KINDS:
        raise unknown_name_error("preset", preset, PRESET_KINDS)
    env = canonical_name(env)
    values: dict[str, Any] = dict(spec.composition)
    if preset == "paper":
        values.update(paper_settings(algo, env))
    valid = [k for k in FIELDS if k not in ("algo", "env") and setting_group(k) in spec.settings]
    for key, value in (overrides or {}).items():
        if key in FIELDS and key not in ("algo", "env") and key not in valid:
            if coerce_setting(key, value) == FIELDS[key].default:
                continue  # another group's key at its default (e.g. a whole config passed back in)
            users = [name for name, other in ALGORITHMS.items() if setting_group(key) in other.settings]
            raise ConfigError(f"{key} is not a setting of {algo} (it is a {setting_group(key)} "
                              f"setting, used by {', '.join(users)}); see adaptrl train --help.")
        if key not in valid:
            raise unknown_name_error("setting", key, valid)
        if key == "env_options":
            values["env_options"] = {**values.get("env_options", {}), **coerce_setting(key, value)}
        else:
            values[key] = value
    values = {k: coerce_setting(k, v) for k, v in values.items()}
    config = validate(TrainConfig(algo=algo, env=env, **values))
    if config.horizon == 0:
        config = dataclasses.replace(config, horizon=family_horizon(env))
    return config
