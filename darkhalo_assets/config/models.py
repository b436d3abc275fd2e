"""Typed models of config/phase4.yaml: every key, its type and its allowed range.

``parse_phase4`` turns the merged YAML dict into a ``Phase4Model`` or lists every problem
at once, each naming the key's path: an unknown key with the nearest valid name (a typo
such as ``replicatess`` would otherwise be ignored and the default silently used), a wrong
type, a missing key, a non-finite or out-of-range grid value. It runs when the config is
loaded, so a bad config fails before any output is touched.
"""
from __future__ import annotations

import difflib
import math
import types
import typing
from typing import Annotated, Any, Union

from darkhalo_assets.science.sources import SOURCE_KINDS
from darkhalo_assets.survey.base import BAD_PIXEL_RULES
from pydantic import (BaseModel, BeforeValidator, ConfigDict, PrivateAttr, StrictInt, StrictStr,
                      ValidationError, field_validator, model_validator)

GRID_AXES = ("theta_e_arcsec", "src_dmag", "src_flux_ratio", "src_reff_arcsec", "src_e", "shear",
             "src_type", "src_sersic_n", "lens_axis_ratio", "lens_pa_fixed_deg")
# Lens axes a grid may leave unset (also in grid_defaults): then the seed's tie holds, the lens
# axis ratio from src_e and the lens PA uniform in [0, 180) per task (science/task_params.py).
LENS_AXES = ("lens_axis_ratio", "lens_pa_fixed_deg")
SRC_TYPES = SOURCE_KINDS  # the registered source light profiles (science/sources.py)
SAMPLING_MODES = ("per_config", "per_split")
SELECTION_POLICIES = ("union_dedup", "one_set")
STRATA_OVER = ("bricks", "objects")
# The Sersic indices science/sources.Source renders; outside it a task would fail mid-stage.
SERSIC_N_RANGE = (0.2, 8.0)


def _finite_number(v: Any) -> int | float:
    if type(v) not in (int, float):   # bool and numeric strings are not numbers here
        raise ValueError(f"must be a number, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"must be a finite number, got {v!r}")
    return v


# YAML ints stay ints and floats stay floats (no coercion): grid values reach the manifests
# as numpy arrays whose dtype must not change.
Real = Annotated[Union[int, float], BeforeValidator(_finite_number)]


def _range_check(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False):
    """A check that every value (a scalar or a list of them) lies in the interval."""
    text = (("(" if lo_open else "[") + ("-inf" if lo is None else f"{lo:g}") + ", "
            + ("inf" if hi is None else f"{hi:g}") + (")" if hi_open else "]"))

    def check(v):
        for x in (v if isinstance(v, list) else [v]):
            if x is None:
                continue
            bad_lo = lo is not None and (x <= lo if lo_open else x < lo)
            bad_hi = hi is not None and (x >= hi if hi_open else x > hi)
            if bad_lo or bad_hi:
                raise ValueError(f"{x!r} is outside {text}")
        return v
    return check


# Allowed range of each numeric grid axis (values in a grid and in grid_defaults alike).
AXIS_RANGES = {
    "theta_e_arcsec": _range_check(0.0, lo_open=True),
    "src_flux_ratio": _range_check(0.0, lo_open=True),
    "src_reff_arcsec": _range_check(0.0),
    "src_e": _range_check(0.0, 1.0, hi_open=True),
    "shear": _range_check(0.0),
    "src_sersic_n": _range_check(*SERSIC_N_RANGE),
    "lens_axis_ratio": _range_check(0.0, 1.0, lo_open=True),
    "lens_pa_fixed_deg": _range_check(0.0, 180.0, hi_open=True),
}


def _src_type_check(v):
    for t in (v if isinstance(v, list) else [v]):
        if t is not None and t not in SRC_TYPES:
            raise ValueError(f"{t!r} not in {SRC_TYPES}")
    return v


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class GridModel(_Model):
    """One grid: the axes it varies (the others come from grid_defaults).

    An axis left out is None; an axis given must be a non-empty list (null is refused).
    """
    theta_e_arcsec: list[Real] = None
    src_dmag: list[Real] = None
    src_flux_ratio: list[Real] = None
    src_reff_arcsec: list[Real] = None
    src_e: list[Real] = None
    shear: list[Real] = None
    src_type: list[StrictStr] = None
    src_sersic_n: list[Real] = None
    lens_axis_ratio: list[Real] = None
    lens_pa_fixed_deg: list[Real] = None

    _order: tuple[str, ...] = PrivateAttr(default=())

    @field_validator(*GRID_AXES)
    @classmethod
    def _values(cls, v, info):
        if not v:
            raise ValueError(f"axis {info.field_name} must be a non-empty list")
        if info.field_name == "src_type":
            return _src_type_check(v)
        return AXIS_RANGES.get(info.field_name, lambda x: x)(v)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_file_order(cls, data, handler):
        # config_id is the index in the product of the axes in file order, so the order is data.
        model = handler(data)
        if isinstance(data, dict):
            model._order = tuple(data)
        return model

    @model_validator(mode="after")
    def _axes_consistent(self):
        if self.src_dmag is not None and self.src_flux_ratio is not None:
            raise ValueError("give src_dmag or src_flux_ratio, not both")
        if self.theta_e_arcsec is None:
            raise ValueError("theta_e_arcsec axis is required")
        return self

    @property
    def axes(self) -> dict[str, list]:
        """The axes this grid varies, in file order."""
        return {name: list(getattr(self, name)) for name in self._order}


class GridDefaultsModel(_Model):
    """Values of the axes a grid does not list (None: not set)."""
    theta_e_arcsec: Real | None = None
    src_dmag: Real | None = None
    src_flux_ratio: Real | None = None
    src_reff_arcsec: Real | None = None
    src_e: Real | None = None
    shear: Real | None = None
    src_type: StrictStr | None = None
    src_sersic_n: Real | None = None
    lens_axis_ratio: Real | None = None
    lens_pa_fixed_deg: Real | None = None

    @field_validator(*GRID_AXES)
    @classmethod
    def _value(cls, v, info):
        if info.field_name == "src_type":
            return _src_type_check(v)
        return AXIS_RANGES.get(info.field_name, lambda x: x)(v)


class InjectionModel(_Model):
    """Stage 4c science options (docs/stage_4c_injection.md)."""
    # per_band: each band masked with its own SATUR_/ALLMASK_ bits plus the band-free ones;
    # r_only: the seed's rule (bits 0, 1, 3, 6, 10, 11) in every band.
    bad_pixel_rule: StrictStr = "per_band"
    # Poisson noise of the injected light, gain from the coadd's invvar and the nominal sky.
    arc_shot_noise: bool = False

    @field_validator("bad_pixel_rule")
    @classmethod
    def _rule(cls, v):
        if v not in BAD_PIXEL_RULES:
            raise ValueError(f"must be one of {BAD_PIXEL_RULES}, got {v!r}")
        return v

    @field_validator("arc_shot_noise", mode="before")
    @classmethod
    def _strict_bool(cls, v):
        if type(v) is not bool:
            raise ValueError(f"must be true or false, got {v!r}")
        return v


class TierModel(_Model):
    grid: StrictStr
    sampling: StrictStr
    n_per_config: StrictInt | None = None
    n_per_split: StrictInt | None = None
    control_frac: Real = 0.0

    @field_validator("sampling")
    @classmethod
    def _sampling(cls, v):
        if v not in SAMPLING_MODES:
            raise ValueError(f"must be one of {SAMPLING_MODES}, got {v!r}")
        return v

    @field_validator("control_frac")
    @classmethod
    def _control_frac(cls, v):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"must be in [0, 1), got {v!r}")
        return v

    @model_validator(mode="after")
    def _sample_size(self):
        if self.sampling == "per_config" and not (self.n_per_config or 0) > 0:
            raise ValueError("per_config sampling needs n_per_config > 0")
        if self.sampling == "per_split" and not (self.n_per_split or 0) > 0:
            raise ValueError("per_split sampling needs n_per_split > 0")
        return self


class StratumModel(_Model):
    name: StrictStr
    column: StrictStr
    quantiles: StrictInt
    over: StrictStr

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, v):
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    @field_validator("over")
    @classmethod
    def _over(cls, v):
        if v not in STRATA_OVER:
            raise ValueError(f"must be one of {STRATA_OVER}, got {v!r}")
        return v


class Phase4Model(_Model):
    variant: StrictStr
    lrg_flag: StrictStr
    split_seed: StrictInt
    replicates: StrictInt
    control_replicates: StrictInt | None = None
    stamp_sizes: list[StrictInt]
    bandsets: list[StrictStr]
    max_total_tasks_soft: StrictInt
    selection_policy: StrictStr = "union_dedup"
    selection_set_id: StrictStr | None = None
    strata: list[StratumModel]
    grids: dict[str, GridModel]
    grid_defaults: GridDefaultsModel = GridDefaultsModel()
    tiers: dict[str, TierModel]
    injection: InjectionModel = InjectionModel()

    @field_validator("replicates")
    @classmethod
    def _replicates(cls, v):
        if v < 1:
            raise ValueError(f"must be >= 1, got {v}")
        return v

    @field_validator("stamp_sizes")
    @classmethod
    def _stamps(cls, v):
        small = [s for s in v if s < 8]
        if small:
            raise ValueError(f"{small} too small (minimum 8)")
        return v

    @field_validator("bandsets")
    @classmethod
    def _bandsets(cls, v):
        bad = [b for b in v if not b or set(b) - set("grz")]
        if bad:
            raise ValueError(f"{bad} must be letters of 'grz'")
        return v

    @field_validator("selection_policy")
    @classmethod
    def _policy(cls, v):
        if v not in SELECTION_POLICIES:
            raise ValueError(f"must be one of {SELECTION_POLICIES}, got {v!r}")
        return v


def cross_checks(raw: dict) -> list[str]:
    """Problems between keys. Reads the raw dict, skipping values of the wrong type (those are
    reported by the models), so they are listed together with every other problem."""
    def is_int(v):
        return type(v) is int
    p = []
    rep, cr = raw.get("replicates"), raw.get("control_replicates")
    if is_int(rep) and is_int(cr) and not 1 <= cr <= rep:
        p.append(f"control_replicates must be null or 1..replicates ({rep}), got {cr}")
    if raw.get("selection_policy") == "one_set" and not raw.get("selection_set_id"):
        p.append("selection_policy one_set needs selection_set_id")
    grids, tiers = raw.get("grids"), raw.get("tiers")
    if isinstance(grids, dict) and isinstance(tiers, dict):
        for name, t in tiers.items():
            grid = t.get("grid") if isinstance(t, dict) else None
            if isinstance(grid, str) and grid not in grids:
                p.append(f"tiers.{name}.grid: unknown grid {grid!r}"
                         + (_did_you_mean(grid, list(grids)) or f" (known: {', '.join(map(str, grids))})"))
    return p


def parse_phase4(raw: Any) -> tuple[Phase4Model | None, list[str]]:
    """The typed config and [] — or None and every problem, each naming its key's path."""
    if not isinstance(raw, dict):
        return None, [f"the config must be a mapping of keys, got {type(raw).__name__}"]
    try:
        model, problems = Phase4Model.model_validate(raw), []
    except ValidationError as e:
        model, problems = None, [_describe(err) for err in e.errors(include_url=False)]
    problems += cross_checks(raw)
    return (None, problems) if problems else (model, [])


def _did_you_mean(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(str(name), valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _path(loc: tuple) -> str:
    return ".".join(str(x) for x in loc)


def _describe(err: dict) -> str:
    loc = tuple(x for x in err["loc"] if not _is_union_branch(x))
    path = _path(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        valid = _field_names_at(loc[:-1])
        hint = _did_you_mean(loc[-1], valid) or (f" (valid keys here: {', '.join(valid)})" if valid else "")
        return f"unknown key {path!r}{hint}"
    if kind == "missing":
        return f"missing key {path!r}"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error" or kind == "assertion_error":
        return f"{path}: {msg}" if path else msg
    return f"{path}: {msg}, got {err.get('input')!r}"


def _is_union_branch(part) -> bool:
    # pydantic adds the branch's type to the location of an error inside a Union (e.g. 'int').
    return isinstance(part, str) and (part in ("int", "float", "str", "none", "list", "dict")
                                      or part.startswith(("function-", "constrained-")))


def _field_names_at(loc: tuple) -> list[str]:
    """Field names of the model at ``loc`` (walking dict keys and list indices)."""
    tp: Any = Phase4Model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            tp = tp.model_fields[part].annotation if part in tp.model_fields else None
        elif typing.get_origin(tp) in (dict, list):
            tp = typing.get_args(tp)[-1]
        else:
            return []
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp):
    """``X | None`` -> X."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp
