"""Resource sets per environment, chosen by ``DARKHALO_ENV`` (local | aws).

local: outputs and cache under ``DARKHALO_DATA_DIR`` (default ./data), a synthetic survey
       served on 127.0.0.1, the local engine.
aws:   outputs and cache on S3 (``DARKHALO_S3_ROOT``), NERSC's DR10 tree, Phase 3 from S3.
``DARKHALO_OUTPUTS_URL`` is where a browser reads the outputs root (local default: the outputs
server scripts/ui.sh starts; aws: the CloudFront URL of the outputs prefix, unset = plots inlined).
``DARKHALO_SURVEY`` picks the survey (dr10_south | dr10_north; default dr10_south): locally it
is the synthetic sky and coadd tree generated and served, on aws the tree fetched.
"""
from __future__ import annotations

import os

from darkhalo_assets.engines import engine_from_env
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource
from resources.survey import NERSC_DR10_URL, SurveyResource

ENVIRONMENTS = ("local", "aws")
# Where scripts/ui.sh serves the local outputs (resources/outputs_server.py) for the UI's plots.
OUTPUTS_URL = "http://127.0.0.1:3030"


def resources_for_env(env: str | None = None) -> dict:
    env = env or os.environ.get("DARKHALO_ENV", "local")
    if env == "local":
        data = os.path.abspath(os.environ.get("DARKHALO_DATA_DIR", "data"))
        survey = os.environ.get("DARKHALO_SURVEY", "dr10_south")
        phase3 = Phase3SourceResource(mode="synthetic", survey_root=f"{data}/synthetic_survey", survey=survey)
        return {
            "data_store": DataStoreResource(root=f"{data}/outputs", cache_root=f"{data}/coadd_cache",
                                            allowed_cache_prefix=data,
                                            public_url=os.environ.get("DARKHALO_OUTPUTS_URL", OUTPUTS_URL)),
            "survey": SurveyResource(survey=survey, synthetic_root=phase3.survey_root,
                                     brick_pixels=phase3.brick_pixels, backoff_base_s=0.2),
            "phase3": phase3,
            # DARKHALO_ENGINE=spark runs the heavy steps with a local spark-submit; pyspark on the
            # standing cluster at DARKHALO_SPARK_MASTER (default local[2]).
            "compute": engine_from_env(os.environ.get("DARKHALO_ENGINE", "local"), log_dir=f"{data}/spark_logs",
                                       spark_master=os.environ.get("DARKHALO_SPARK_MASTER")),
        }
    if env == "aws":
        root = os.environ.get("DARKHALO_S3_ROOT", "s3://darkhaloscope/darkhalo")
        p3 = os.environ.get("DARKHALO_PHASE3_ROOT", "s3://darkhaloscope/phase3_pipeline")
        return {
            "data_store": DataStoreResource(root=f"{root}/outputs",
                                            cache_root=os.environ.get("DARKHALO_CACHE_ROOT",
                                                                      "s3://darkhaloscope/dr10/coadd_cache"),
                                            allowed_cache_prefix=os.environ.get("DARKHALO_CACHE_PREFIX"),
                                            # the CloudFront (or S3 website) URL of {root}/outputs
                                            public_url=os.environ.get("DARKHALO_OUTPUTS_URL")),
            "survey": SurveyResource(survey=os.environ.get("DARKHALO_SURVEY", "dr10_south"),
                                     base_url=os.environ.get("DARKHALO_SURVEY_URL", NERSC_DR10_URL)),
            "phase3": Phase3SourceResource(
                mode="parquet",
                parent_uri=f"{p3}/phase3p5/v3_color_relaxed/parent_compact/",
                bricks_uri=f"{p3}/phase3a/v3_color_relaxed/bricks_with_region/",
                selections_uri=f"{p3}/phase3b/v3_color_relaxed/region_selections/",
                metrics_uri=f"{p3}/phase3a/v3_color_relaxed/region_metrics/"),
            "compute": engine_from_env(
                os.environ.get("DARKHALO_ENGINE", "emr"), region=os.environ.get("AWS_REGION"),
                s3_code_prefix=os.environ.get("DARKHALO_EMR_CODE_PREFIX", f"{root}/emr"),
                log_uri=os.environ.get("DARKHALO_EMR_LOG_URI"), subnet_id=os.environ.get("DARKHALO_EMR_SUBNET"),
                key_name=os.environ.get("DARKHALO_EMR_KEY"),
                emr_mode=os.environ.get("DARKHALO_EMR_MODE", "cluster_per_run"),
                emr_cluster_id=os.environ.get("DARKHALO_EMR_CLUSTER_ID"),
                application_id=os.environ.get("DARKHALO_EMR_SERVERLESS_APP_ID"),
                execution_role_arn=os.environ.get("DARKHALO_EMR_SERVERLESS_ROLE_ARN"),
                spark_master=os.environ.get("DARKHALO_SPARK_MASTER")),
        }
    raise ValueError(f"DARKHALO_ENV must be one of {ENVIRONMENTS}, got {env!r}")
