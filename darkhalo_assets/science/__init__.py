"""Pure science layer: numpy/astropy only. Nothing in this package imports Dagster."""
