"""A real S3 API on 127.0.0.1 (moto's server mode) for the tests that write to ``s3://``."""
from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass

# Distinctive dummy credentials, so a test can prove they never leak into messages.
S3_KEY = "AKIADARKHALOTESTKEY1"
S3_SECRET = "darkhalo-test-secret-0123456789abcdef"


@dataclass
class S3Env:
    endpoint_url: str
    bucket: str
    storage_options: dict
    client: object


@contextlib.contextmanager
def moto_s3(bucket: str):
    """A real S3 API on 127.0.0.1 (moto ThreadedMotoServer) with ``bucket`` created."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY,
                              aws_secret_access_key=S3_SECRET, region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        opts = {"key": S3_KEY, "secret": S3_SECRET, "endpoint_url": endpoint,
                "client_kwargs": {"region_name": "us-east-1"}}
        yield S3Env(endpoint, bucket, opts, client)
    finally:
        server.stop()


def s3_listing(env: S3Env, prefix: str) -> dict[str, str]:
    """key (relative to ``prefix``) -> sha256 of every object below it, read via boto3."""
    out = {}
    pages = env.client.get_paginator("list_objects_v2").paginate(Bucket=env.bucket, Prefix=prefix.rstrip("/") + "/")
    for page in pages:
        for obj in page.get("Contents", []):
            body = env.client.get_object(Bucket=env.bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"][len(prefix.rstrip("/")) + 1:]] = hashlib.sha256(body).hexdigest()
    return out
