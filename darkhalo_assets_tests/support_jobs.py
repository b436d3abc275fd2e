"""Tiny job functions (ENGINE_SPEC ``job(params, runner, log) -> summary``) for engine tests."""


def double(unit):
    if not isinstance(unit, int):
        raise ValueError(f"unit {unit!r} is not an integer")
    return 2 * unit


def double_units(params: dict, runner, log) -> dict:
    """Doubles ``params["units"]`` through ``runner.map``; a non-integer unit fails the job."""
    units = list(params["units"])
    log(f"doubling {len(units)} units on {runner.engine}")
    doubled = runner.map(double, units)
    return {"units": units, "doubled": doubled, "total": sum(doubled), "engine": runner.engine}
