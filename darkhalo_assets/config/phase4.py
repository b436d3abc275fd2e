"""Phase 4 configuration as data: grids, tiers, sampling targets (config/phase4.yaml).

Run config can override any key (a nested dict merged over the file), so a user adds a
grid or a tier without touching code. Validation lists every problem at once.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from importlib import resources as importlib_resources
from typing import Any

import numpy as np
import yaml

from darkhalo_assets.science.sources import SOURCE_KINDS

GRID_AXES = ("theta_e_arcsec", "src_dmag", "src_flux_ratio", "src_reff_arcsec", "src_e", "shear",
             "src_type", "src_sersic_n")
SRC_TYPES = SOURCE_KINDS  # the registered source profiles
SAMPLING_MODES = ("per_config", "per_split")
SELECTION_POLICIES = ("union_dedup", "one_set")


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
    raw: dict

    @property
    def lrg_flag(self) -> str:
        return self.raw["lrg_flag"]

    @property
    def variant(self) -> str:
        return self.raw["variant"]

    @property
    def split_seed(self) -> int:
        return int(self.raw["split_seed"])

    @property
    def replicates(self) -> int:
        return int(self.raw["replicates"])

    @property
    def control_replicates(self) -> int:
        """Rows per control galaxy (null in the config = ``replicates``, as the seed did)."""
        value = self.raw.get("control_replicates")
        return self.replicates if value is None else int(value)

    @property
    def stamp_sizes(self) -> list[int]:
        return [int(s) for s in self.raw["stamp_sizes"]]

    @property
    def bandsets(self) -> list[str]:
        return [str(b) for b in self.raw["bandsets"]]

    @property
    def max_total_tasks_soft(self) -> int:
        return int(self.raw["max_total_tasks_soft"])

    @property
    def strata(self) -> list[dict]:
        return list(self.raw["strata"])

    def grid(self, name: str) -> Grid:
        return Grid(name, dict(self.raw["grids"][name]), dict(self.raw.get("grid_defaults", {})))

    def tier(self, name: str) -> Tier:
        t = self.raw["tiers"][name]
        return Tier(name, t["grid"], t["sampling"], t.get("n_per_config"), t.get("n_per_split"),
                    float(t.get("control_frac", 0.0)))

    @property
    def tier_names(self) -> list[str]:
        return list(self.raw["tiers"])

    def experiment_id(self, tier: str, stamp: int, bandset: str) -> str:
        # "gridgrid" is the seed's naming and users' scripts depend on it.
        return f"{tier}_stamp{stamp}_bands{bandset}_grid{self.tier(tier).grid}"

    def experiments(self, tier: str) -> list[tuple[str, int, str]]:
        return [(self.experiment_id(tier, s, b), s, b) for s in self.stamp_sizes for b in self.bandsets]


def load_config(overrides: dict | None = None) -> Phase4Config:
    raw = deep_merge(default_config_dict(), overrides)
    problems = validate_config(raw)
    if problems:
        raise ValueError(f"invalid Phase 4 configuration ({len(problems)} problems): " + "; ".join(problems))
    return Phase4Config(raw)


def validate_config(raw: dict) -> list[str]:
    p: list[str] = []
    for key in ("lrg_flag", "split_seed", "replicates", "stamp_sizes", "bandsets", "grids", "tiers", "strata"):
        if key not in raw:
            p.append(f"missing key {key!r}")
    if p:
        return p
    if int(raw["replicates"]) < 1:
        p.append("replicates must be >= 1")
    cr = raw.get("control_replicates")
    if cr is not None and not 1 <= int(cr) <= int(raw["replicates"]):
        p.append(f"control_replicates must be null or 1..replicates ({raw['replicates']}), got {cr}")
    for s in raw["stamp_sizes"]:
        if int(s) < 8:
            p.append(f"stamp size {s} too small")
    for b in raw["bandsets"]:
        if not b or set(b) - set("grz"):
            p.append(f"bandset {b!r} must be letters of 'grz'")
    if raw.get("selection_policy", "union_dedup") not in SELECTION_POLICIES:
        p.append(f"selection_policy must be one of {SELECTION_POLICIES}")
    if raw.get("selection_policy") == "one_set" and not raw.get("selection_set_id"):
        p.append("selection_policy one_set needs selection_set_id")
    for gname, axes in raw["grids"].items():
        for axis, values in axes.items():
            if axis not in GRID_AXES:
                p.append(f"grid {gname}: unknown axis {axis!r} (known: {', '.join(GRID_AXES)})")
            elif not isinstance(values, list) or not values:
                p.append(f"grid {gname}: axis {axis} must be a non-empty list")
        if "src_dmag" in axes and "src_flux_ratio" in axes:
            p.append(f"grid {gname}: give src_dmag or src_flux_ratio, not both")
        for t in axes.get("src_type", []):
            if t not in SRC_TYPES:
                p.append(f"grid {gname}: src_type {t!r} not in {SRC_TYPES}")
        for v in axes.get("src_flux_ratio", []):
            if not (isinstance(v, (int, float)) and v > 0):
                p.append(f"grid {gname}: src_flux_ratio {v!r} must be > 0")
        if "theta_e_arcsec" not in axes:
            p.append(f"grid {gname}: theta_e_arcsec axis is required")
    for tname, t in raw["tiers"].items():
        if t.get("grid") not in raw["grids"]:
            p.append(f"tier {tname}: unknown grid {t.get('grid')!r}")
        if t.get("sampling") not in SAMPLING_MODES:
            p.append(f"tier {tname}: sampling must be one of {SAMPLING_MODES}")
        if t.get("sampling") == "per_config" and not int(t.get("n_per_config") or 0) > 0:
            p.append(f"tier {tname}: per_config sampling needs n_per_config > 0")
        if t.get("sampling") == "per_split" and not int(t.get("n_per_split") or 0) > 0:
            p.append(f"tier {tname}: per_split sampling needs n_per_split > 0")
        if not 0.0 <= float(t.get("control_frac", 0.0)) < 1.0:
            p.append(f"tier {tname}: control_frac must be in [0, 1)")
    for s in raw["strata"]:
        if s.get("over") not in ("bricks", "objects") or int(s.get("quantiles", 0)) < 1:
            p.append(f"stratum {s}: needs quantiles >= 1 and over in (bricks, objects)")
    return p
