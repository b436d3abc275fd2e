"""Dagster resources for darkhalo: where data lives, where the survey is, where compute runs.

Environments are resource sets chosen by one variable, ``DARKHALO_ENV`` (local | aws);
see ``resources.environments``. Nothing else in the code branches on the environment.
"""
from resources.storage import DataStoreResource
from resources.survey import SurveyResource
from resources.environments import resources_for_env

__all__ = ["DataStoreResource", "SurveyResource", "resources_for_env"]
