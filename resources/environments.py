"""Resource sets per environment, chosen by ``DARKHALO_ENV`` (local | aws).

local: outputs and cache under ``DARKHALO_DATA_DIR`` (default ./data), a synthetic survey
       served on 127.0.0.1, the local engine.
aws:   outputs and cache on S3 (``DARKHALO_S3_ROOT``), NERSC's DR10 tree, Phase 3 from S3. Its
       variables are checked when the resources are built (code location load): every missing
       or malformed one is listed in one ``EnvironmentConfigError``.
``DARKHALO_OUTPUTS_URL`` is where a browser reads the outputs root (local default: the outputs
server scripts/ui.sh starts; aws: the CloudFront URL of the outputs prefix, unset = plots inlined).
``DARKHALO_SURVEY`` picks the survey (dr10_south | dr10_north; default dr10_south): locally it
is the synthetic sky and coadd tree generated and served, on aws the tree fetched.
"""
from __future__ import annotations

import os
import re

from darkhalo_assets.engines import ENGINE_NAMES, engine_from_env
from darkhalo_assets.storage.url_secrets import credentials_in_url, url_without_credentials
from darkhalo_assets.survey.base import all_surveys
from resources.phase3 import Phase3SourceResource
from resources.storage import DataStoreResource
from resources.survey import NERSC_DR10_URL, SurveyResource

ENVIRONMENTS = ("local", "aws")
# Where scripts/ui.sh serves the local outputs (resources/outputs_server.py) for the UI's plots.
OUTPUTS_URL = "http://127.0.0.1:3030"


class EnvironmentConfigError(ValueError):
    """The environment variables of ``DARKHALO_ENV`` are missing or malformed (all listed at once)."""


# DARKHALO_ENV=aws: where outputs, the coadd cache and Phase 3 live. No defaults: a default
# bucket would be somebody else's, and the run would fail much later with a connection error.
AWS_REQUIRED_S3 = {"DARKHALO_S3_ROOT": "the outputs root, e.g. s3://my-bucket/darkhalo",
                   "DARKHALO_CACHE_ROOT": "the coadd cache, e.g. s3://my-bucket/dr10/coadd_cache",
                   "DARKHALO_PHASE3_ROOT": "the Phase 3 tree, e.g. s3://my-bucket/phase3_pipeline"}
AWS_OPTIONAL_S3 = ("DARKHALO_CACHE_PREFIX", "DARKHALO_EMR_CODE_PREFIX", "DARKHALO_EMR_LOG_URI")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")


def aws_environment_problems(environ=None) -> list[str]:
    """Every missing or malformed variable of ``DARKHALO_ENV=aws`` ([] when all is well)."""
    env = os.environ if environ is None else environ
    get = lambda k: (env.get(k) or "").strip()
    p = []
    for name, what in AWS_REQUIRED_S3.items():
        if not get(name):
            p.append(f"{name} is not set ({what})")
        elif not get(name).startswith("s3://"):
            p.append(f"{name}={get(name)!r} is not an s3:// URI ({what})")
    p += [f"{name}={get(name)!r} is not an s3:// URI" for name in AWS_OPTIONAL_S3
          if get(name) and not get(name).startswith("s3://")]
    region = get("AWS_REGION") or get("AWS_DEFAULT_REGION")
    if not region:
        p.append("AWS_REGION is not set (the region of the buckets and of EMR, e.g. us-east-1)")
    elif not _REGION.match(region):
        p.append(f"AWS_REGION={region!r} is not an AWS region name (e.g. us-east-1)")
    survey = get("DARKHALO_SURVEY")
    if survey and survey not in all_surveys():
        p.append(f"DARKHALO_SURVEY={survey!r} is not a registered survey (known: {', '.join(sorted(all_surveys()))})")
    url = get("DARKHALO_SURVEY_URL")
    if url and not url.startswith(("https://", "http://")):
        p.append(f"DARKHALO_SURVEY_URL={url_without_credentials(url)!r} is not an http(s):// URL")
    elif url and credentials_in_url(url):
        p.append(f"DARKHALO_SURVEY_URL carries credentials ({', '.join(credentials_in_url(url))}): use ~/.netrc")
    outputs_url = get("DARKHALO_OUTPUTS_URL")
    if outputs_url and not outputs_url.startswith(("https://", "http://")):
        p.append(f"DARKHALO_OUTPUTS_URL={outputs_url!r} is not an http(s):// URL (the CloudFront URL of the outputs)")
    engine = get("DARKHALO_ENGINE") or "emr"
    if engine not in ENGINE_NAMES:
        p.append(f"DARKHALO_ENGINE={engine!r} is not a compute engine (known: {', '.join(ENGINE_NAMES)})")
    if engine == "emr":
        mode = get("DARKHALO_EMR_MODE") or "cluster_per_run"
        if mode not in ("cluster_per_run", "existing_cluster"):
            p.append(f"DARKHALO_EMR_MODE={mode!r} is not cluster_per_run or existing_cluster")
        elif mode == "existing_cluster" and not get("DARKHALO_EMR_CLUSTER_ID"):
            p.append("DARKHALO_EMR_CLUSTER_ID is not set (DARKHALO_EMR_MODE=existing_cluster runs on it)")
    if engine == "emr_serverless":
        if not get("DARKHALO_EMR_SERVERLESS_APP_ID"):
            p.append("DARKHALO_EMR_SERVERLESS_APP_ID is not set (aws emr-serverless list-applications)")
        role = get("DARKHALO_EMR_SERVERLESS_ROLE_ARN")
        if not role:
            p.append("DARKHALO_EMR_SERVERLESS_ROLE_ARN is not set (the IAM role the job run assumes)")
        elif not _ROLE_ARN.match(role):
            p.append(f"DARKHALO_EMR_SERVERLESS_ROLE_ARN={role!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
    return p


def resources_for_env(env: str | None = None) -> dict:
    env = env or os.environ.get("DARKHALO_ENV", "local")
    if env == "aws":
        problems = aws_environment_problems()
        if problems:
            raise EnvironmentConfigError(
                f"DARKHALO_ENV=aws: {len(problems)} environment variable problem{'s' * (len(problems) != 1)} "
                "(set them, e.g. in the code location's environment, and reload): " + "; ".join(problems))
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
        root = os.environ["DARKHALO_S3_ROOT"].rstrip("/")
        p3 = os.environ["DARKHALO_PHASE3_ROOT"].rstrip("/")
        return {
            "data_store": DataStoreResource(root=f"{root}/outputs",
                                            cache_root=os.environ["DARKHALO_CACHE_ROOT"],
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
