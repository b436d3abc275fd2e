"""The environment's resources, bound so that a run cannot re-configure them.

Dagster turns every field of a bound ``ConfigurableResource`` into run config whose default is
the bound value, and the Launchpad's first draft of a run (the run config schema's defaults,
``rootDefaultYaml``) then lists all of them: cache and outputs roots, the survey URL (NERSC's
even for a local fill), timeouts, engine settings. They are the deployment's settings
(``DARKHALO_ENV`` and its variables, ``resources.environments``), not a run's, so the code
location binds each one as a plain resource with no config: its run config is empty, the
Launchpad shows only the ops' config, and a run cannot point the cache elsewhere by a typo.
The resource keeps its lifecycle (``yield_for_execution``: the synthetic survey's server
starts and stops with the run) and its type (assets still receive the ``ConfigurableResource``).
"""
from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext, ResourceDefinition, resource


def bound_for_runs(resources: dict) -> dict:
    """``resources`` with every ``ConfigurableResource`` fixed at its bound values (no run config)."""
    return {key: _fixed(res) if isinstance(res, ConfigurableResource) else res for key, res in resources.items()}


def _fixed(bound: ConfigurableResource) -> ResourceDefinition:
    cls = type(bound)
    doc = (cls.__doc__ or cls.__name__).strip().splitlines()[0]

    @resource(description=f"{doc} ({cls.__name__}; set by DARKHALO_ENV and its variables, not per run)")
    def _resource(context: InitResourceContext):
        # A copy per run: setup_for_execution may keep state (the survey server) on the instance.
        with bound.model_copy().yield_for_execution(context) as value:
            yield value

    return _resource
