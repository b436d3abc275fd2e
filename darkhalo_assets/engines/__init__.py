"""Where heavy steps run. ``ENGINES`` maps an engine name to its ``compute`` resource class;
``engine_from_env`` builds one from a name (e.g. ``DARKHALO_ENGINE``) and settings.

Loaded lazily: the Spark driver imports ``darkhalo_assets.engines.spark_entry`` without Dagster.
"""
from __future__ import annotations

import importlib
import importlib.util

# engine name -> "module:class"
_ENGINE_CLASSES = {
    "local": "darkhalo_assets.engines.local:LocalEngine",
    "spark": "darkhalo_assets.engines.spark:SparkSubmitEngine",
    "emr": "darkhalo_assets.engines.emr:EmrEngine",
    "emr_serverless": "darkhalo_assets.engines.emr_serverless:EmrServerlessEngine",
    "pyspark": "darkhalo_assets.engines.pyspark_session:PySparkEngine",
}

ENGINE_NAMES = tuple(_ENGINE_CLASSES)


def _load(name: str):
    module, _, cls = _ENGINE_CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def engine_class(name: str):
    """The resource class of engine ``name``; unknown names raise listing the known ones."""
    from darkhalo_assets.engines.jobs import ComputeConfigError
    if name not in _ENGINE_CLASSES:
        raise ComputeConfigError(f"unknown compute engine {name!r}; known engines: {', '.join(_ENGINE_CLASSES)}")
    return _load(name)


def engine_from_env(name: str, **settings):
    """Engine ``name`` built from ``settings``; settings another engine takes (e.g. log_dir for
    spark when ``local`` is chosen) are ignored, so one environment can list them all."""
    cls = engine_class(name)
    return cls(**{k: v for k, v in settings.items() if k in cls.model_fields and v is not None})


def __getattr__(attr: str):
    if attr == "ENGINES":
        return {n: _load(n) for n in _ENGINE_CLASSES if _importable(n)}
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def _importable(name: str) -> bool:
    return importlib.util.find_spec(_ENGINE_CLASSES[name].partition(":")[0]) is not None
