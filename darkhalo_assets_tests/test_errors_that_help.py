"""Errors that help (#12 items 11, 15): a misconfigured environment or a credentialed URL is
refused up front with a message naming every variable or key and the fix."""
import os
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance, asset, materialize

from resources.survey import SurveyResource

REPO = Path(__file__).resolve().parents[1]
AWS_VARS = ("DARKHALO_S3_ROOT", "DARKHALO_CACHE_ROOT", "DARKHALO_PHASE3_ROOT", "DARKHALO_CACHE_PREFIX",
            "AWS_REGION", "AWS_DEFAULT_REGION", "DARKHALO_ENGINE", "DARKHALO_SURVEY", "DARKHALO_SURVEY_URL",
            "DARKHALO_EMR_MODE", "DARKHALO_EMR_CLUSTER_ID", "DARKHALO_EMR_CODE_PREFIX", "DARKHALO_EMR_LOG_URI",
            "DARKHALO_EMR_SERVERLESS_APP_ID", "DARKHALO_EMR_SERVERLESS_ROLE_ARN")


def _load_code_location(tmp_path, **env) -> subprocess.CompletedProcess:
    """Load the code location in a fresh process, as `dagster dev` / the CLI would."""
    clean = {k: v for k, v in os.environ.items() if k not in AWS_VARS}
    clean.update(DAGSTER_HOME=str(tmp_path), DARKHALO_DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run([sys.executable, "-c", "import darkhalo_assets.definitions"], cwd=REPO, env=clean,
                          capture_output=True, text=True, timeout=300)


def test_aws_environment_lists_every_missing_or_malformed_variable_at_load(tmp_path):
    """Item 11: DARKHALO_ENV=aws used to fall back to hard-coded buckets silently."""
    r = _load_code_location(tmp_path, DARKHALO_ENV="aws", DARKHALO_CACHE_ROOT="/local/cache",
                            DARKHALO_ENGINE="emr_serverless", DARKHALO_EMR_SERVERLESS_ROLE_ARN="admin")
    assert r.returncode != 0
    err = r.stderr.splitlines()[-1]
    assert "EnvironmentConfigError: DARKHALO_ENV=aws: 6 environment variable problems" in err, err
    for part in ("DARKHALO_S3_ROOT is not set", "DARKHALO_PHASE3_ROOT is not set",
                 "DARKHALO_CACHE_ROOT='/local/cache' is not an s3:// URI", "AWS_REGION is not set",
                 "DARKHALO_EMR_SERVERLESS_APP_ID is not set",
                 "DARKHALO_EMR_SERVERLESS_ROLE_ARN='admin' is not an IAM role ARN"):
        assert part in err, part
    # and a complete environment loads
    r = _load_code_location(tmp_path, DARKHALO_ENV="aws", DARKHALO_S3_ROOT="s3://b/darkhalo",
                            DARKHALO_CACHE_ROOT="s3://b/cache", DARKHALO_PHASE3_ROOT="s3://b/phase3",
                            AWS_REGION="eu-west-1")
    assert r.returncode == 0, r.stderr[-2000:]


@asset
def survey_probe(survey: SurveyResource) -> None:
    survey.url  # noqa: B018  (the asset only needs the resource built)


def test_credentialed_survey_url_in_run_config_is_refused_without_echoing_it():
    """Item 15: a user:password@ or token URL must not be used; the error names the key and the fix."""
    secret_url = "https://bob:hunter2@portal.nersc.gov/cfs/cosmo/data/legacysurvey/dr10/?token=s3cr3t"
    with DagsterInstance.ephemeral() as instance:
        res = materialize([survey_probe], resources={"survey": SurveyResource()}, instance=instance,
                          raise_on_error=False,
                          run_config={"resources": {"survey": {"config": {"base_url": secret_url}}}})
        assert not res.success
        failure = next(ev for ev in res.all_events if ev.is_failure)
        text = str(failure.event_specific_data.error.to_string())
        assert "survey base_url 'https://portal.nersc.gov/cfs/cosmo/data/legacysurvey/dr10/' carries credentials " \
               "(user:password before @, query parameter 'token')" in text
        assert "~/.netrc" in text and "hunter2" not in text and "s3cr3t" not in text
    # the environment path is refused the same way, at load
    import pytest
    with pytest.raises(ValueError, match="survey base_url .* carries credentials"):
        SurveyResource(base_url=secret_url)
