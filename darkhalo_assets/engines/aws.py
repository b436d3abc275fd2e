"""What the AWS engines (emr, emr_serverless) share: a boto3 session and the checks made on it
before anything is uploaded or launched."""
from __future__ import annotations


def aws_session(region: str | None):
    import boto3
    return boto3.Session(region_name=region) if region else boto3.Session()


def aws_problems(session) -> list[str]:
    """Why nothing can be launched with this session (no region, no or broken credentials)."""
    p = []
    if not session.region_name:
        p.append("no AWS region: set the engine's region, or AWS_REGION / AWS_DEFAULT_REGION")
    try:
        creds = session.get_credentials()
    except Exception as e:  # a broken profile is as fatal as none
        creds, p = None, p + [f"AWS credentials could not be loaded: {e}"]
    if creds is None:
        p.append("no AWS credentials found (environment, shared credentials/config files, SSO or instance "
                 "profile); nothing was launched")
    return p
