"""Phase 4 configuration as data: grids, tiers, sampling targets (config/phase4.yaml).

Run config can override any key (a nested dict merged over the file), so a user adds a
grid or a tier without touching code. The merged dict is parsed into the typed models of
``config/models.py``; every problem is listed at once, each with its key's path.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from typing import Any

import numpy as np
import yaml

from darkhalo_assets.config.models import (GRID_AXES, SAMPLING_MODES, SELECTION_POLICIES, SRC_TYPES,  # noqa: F401
                                           Phase4Model, parse_phase4)


def default_config_dict() -> dict:
    text = importlib_resources.files("darkhalo_assets").joinpath("config/phase4.yaml").read_text()
    return yaml.safe_load(text)


def deep_merge(base: dict, override: dict | None) -> dict:
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@dataclass(frozen=True)
class Grid:
    name: str
    axes: dict[str, list]     # only the axes the grid varies, in file order
    defaults: dict[str, Any]

    @property
    def n_configs(self) -> int:
        return math.prod(len(v) for v in self.axes.values())

    def configs(self) -> dict[str, np.ndarray]:
        """One array per GRID_AXES entry, index = config_id (itertools.product order)."""
        names = list(self.axes)
        rows = list(itertools.product(*(self.axes[n] for n in names)))
        out: dict[str, np.ndarray] = {}
        for axis in GRID_AXES:
            if axis in names:
                i = names.index(axis)
                out[axis] = np.array([r[i] for r in rows])
            else:
                out[axis] = np.array([self.defaults.get(axis)] * len(rows))
        # flux ratio and dmag are two spellings of one quantity; fill whichever is absent.
        if "src_flux_ratio" in names:
            out["src_dmag"] = -2.5 * np.log10(out["src_flux_ratio"].astype(float))
        else:
            out["src_dmag"] = out["src_dmag"].astype(float)
            out["src_flux_ratio"] = 10 ** (-0.4 * out["src_dmag"])
        out["src_type"] = out["src_type"].astype(str)
        return out


@dataclass(frozen=True)
class Tier:
    name: str
    grid: str
    sampling: str
    n_per_config: int | None
    n_per_split: int | None
    control_frac: float


@dataclass(frozen=True)
class Phase4Config:
    """The merged config: typed values in ``model``, the merged YAML itself in ``raw``.

    ``raw`` is kept exactly as merged (not re-serialised from the models) because its bytes
    reach outputs: ``tier_fingerprint`` hashes some of its values and
    ``_stage_config_<tier>.json`` stores it whole. Read values through the typed attributes.
    """
    raw: dict
    model: Phase4Model = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        model, problems = parse_phase4(self.raw)
        if problems:
            raise ValueError(f"invalid Phase 4 configuration ({len(problems)} problem{'s' * (len(problems) != 1)}): "
                             + "; ".join(problems))
        object.__setattr__(self, "model", model)

    def as_dict(self) -> dict:
        """The merged YAML as loaded (see the class docstring for why it is kept)."""
        return self.raw

    @property
    def lrg_flag(self) -> str:
        return self.model.lrg_flag

    @property
    def variant(self) -> str:
        return self.model.variant

    @property
    def split_seed(self) -> int:
        return self.model.split_seed

    @property
    def replicates(self) -> int:
        return self.model.replicates

    @property
    def control_replicates(self) -> int:
        """Rows per control galaxy (null in the config = ``replicates``, as the seed did)."""
        value = self.model.control_replicates
        return self.replicates if value is None else value

    @property
    def stamp_sizes(self) -> list[int]:
        return list(self.model.stamp_sizes)

    @property
    def bandsets(self) -> list[str]:
        return list(self.model.bandsets)

    @property
    def max_total_tasks_soft(self) -> int:
        return self.model.max_total_tasks_soft

    @property
    def selection_policy(self) -> str:
        return self.model.selection_policy

    @property
    def selection_set_id(self) -> str | None:
        return self.model.selection_set_id

    @property
    def strata(self) -> list[dict]:
        return [s.model_dump() for s in self.model.strata]

    @property
    def injection(self) -> dict:
        """Stage 4c options: bad_pixel_rule, arc_shot_noise (config/models.InjectionModel)."""
        return self.model.injection.model_dump()

    def grid(self, name: str) -> Grid:
        return Grid(name, self.model.grids[name].axes, self.model.grid_defaults.model_dump(exclude_unset=True))

    def tier(self, name: str) -> Tier:
        t = self.model.tiers[name]
        return Tier(name, t.grid, t.sampling, t.n_per_config, t.n_per_split, float(t.control_frac))

    @property
    def tier_names(self) -> list[str]:
        return list(self.model.tiers)

    def experiment_id(self, tier: str, stamp: int, bandset: str) -> str:
        # "gridgrid" is the seed's naming and users' scripts depend on it.
        return f"{tier}_stamp{stamp}_bands{bandset}_grid{self.tier(tier).grid}"

    def experiments(self, tier: str) -> list[tuple[str, int, str]]:
        return [(self.experiment_id(tier, s, b), s, b) for s in self.stamp_sizes for b in self.bandsets]


def load_config(overrides: dict | None = None) -> Phase4Config:
    """config/phase4.yaml with ``overrides`` merged over it; ValueError listing every problem."""
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(f"invalid Phase 4 configuration (1 problem): the overrides must be a mapping of keys "
                         f"(e.g. 'replicates: 3'), got {type(overrides).__name__} {overrides!r}")
    return Phase4Config(deep_merge(default_config_dict(), overrides))


def load_config_overrides(text: str | None, source: str = "config_overrides") -> Phase4Config:
    """The config with the YAML ``text`` (run config ``source``) merged over the file; a
    ValueError naming ``source``, the line and the expected shape when the text is not a
    YAML mapping, else ``load_config``'s list of problems (each with its key's path)."""
    if not text or not text.strip():
        return load_config()
    try:
        overrides = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"{source}: not valid YAML{where} ({getattr(e, 'problem', None) or e}); expected a "
                         "mapping of keys such as 'replicates: 3' or 'tiers: {debug: {n_per_config: 5}}'") from None
    if overrides is None:
        return load_config()
    if not isinstance(overrides, dict):
        raise ValueError(f"{source}: expected a YAML mapping of config keys (e.g. 'replicates: 3'), got a "
                         f"{type(overrides).__name__}: {text.strip()[:80]!r}")
    try:
        return load_config(overrides)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def validate_config(raw: dict) -> list[str]:
    """Every problem of a merged config dict ([] when it is valid)."""
    return parse_phase4(raw)[1]
