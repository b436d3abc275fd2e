"""Dagster Pipes clients for EMR: a cluster per run, or a step on a long-running cluster.

``ClusterPerRunEMRClient`` is ``dagster_aws.pipes.PipesEMRClient`` with three changes:
the step also gets the Pipes bootstrap as ``--dagster-pipes-*`` arguments (dagster-aws
0.29's configuration merge drops its env vars when the caller passes its own
``spark-defaults``), state is polled at a configurable interval (the stock waiters fail
a fast cluster that skips RUNNING between polls), and a failed step raises ``EmrJobFailed``
naming the step, EMR's failure reason and the log location instead of a bare WaiterError.

``ExistingClusterEMRClient`` adds the step to a running cluster with ``add_job_flow_steps``
inside the same kind of Pipes session (context via S3, messages via S3, bootstrap as step
arguments, since a step cannot set environment variables). dagster-aws has no client for
this: PipesEMRClient always calls run_job_flow, PipesEMRContainersClient is EMR on EKS and
PipesEMRServerlessClient is EMR Serverless.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

from dagster import (DagsterExecutionInterruptedError, PipesClient, PipesClientCompletedInvocation,
                     PipesContextInjector, PipesMessageReader, open_pipes_session)
from dagster_aws.pipes import PipesEMRClient, PipesS3MessageReader

STEP_FAILED = ("FAILED", "CANCELLED", "INTERRUPTED")
CLUSTER_DONE = ("TERMINATED", "TERMINATED_WITH_ERRORS")


class EmrJobFailed(RuntimeError):
    """An EMR step or cluster failed; ``log_location`` says where its logs are."""

    def __init__(self, message: str, log_location: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.log_location = log_location
        self.details = details or {}


class PrefixedS3MessageReader(PipesS3MessageReader):
    """PipesS3MessageReader that keeps its message chunks under a prefix, not the bucket root."""

    def __init__(self, *, key_prefix: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.key_prefix = key_prefix.strip("/")

    @contextmanager
    def get_params(self) -> Iterator[dict]:
        with super().get_params() as params:
            yield {**params, "key_prefix": f"{self.key_prefix}/{params['key_prefix']}"}


def step_log_location(log_uri: str | None, cluster_id: str, step_id: str | None) -> str | None:
    if not log_uri:
        return None
    base = log_uri if log_uri.endswith("/") else log_uri + "/"
    return f"{base}{cluster_id}/steps/{step_id}/" if step_id else f"{base}{cluster_id}/"


def with_cli_bootstrap(step: dict, cli_args: dict[str, str]) -> dict:
    args = list(step["HadoopJarStep"]["Args"])
    for k, v in cli_args.items():
        args += [k, v]
    return {**step, "HadoopJarStep": {**step["HadoopJarStep"], "Args": args}}


def describe_step_failure(emr, cluster_id: str, step: dict, log_uri: str | None) -> EmrJobFailed:
    status = step["Status"]
    fd = status.get("FailureDetails") or {}
    reason = fd.get("Message") or fd.get("Reason") or (status.get("StateChangeReason") or {}).get("Message") or ""
    log = fd.get("LogFile") or step_log_location(log_uri, cluster_id, step["Id"])
    msg = (f"EMR step {step['Id']} ({step.get('Name')}) on cluster {cluster_id} ended {status['State']}"
           + (f": {reason}" if reason else "") + (f"\nlogs: {log}" if log else ""))
    return EmrJobFailed(msg, log, {"cluster_id": cluster_id, "step_id": step["Id"], "state": status["State"],
                                   "failure_details": fd})


class ClusterPerRunEMRClient(PipesEMRClient):
    def __init__(self, *, poll_seconds: float = 30.0, forward_step_logs: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.poll_seconds = poll_seconds
        self.forward_step_logs = forward_step_logs

    def _add_log_readers(self, context, response):
        # Each reader waits up to a minute after the run for its S3 object to appear.
        if self.forward_step_logs:
            super()._add_log_readers(context, response)

    def _enrich_params(self, session, params):
        params = super()._enrich_params(session, params)
        cli = dict(session.get_bootstrap_cli_arguments())
        params["Steps"] = [with_cli_bootstrap(s, cli) for s in params.get("Steps", [])]
        return params

    def _wait_for_completion(self, context, response):
        cluster_id = response["JobFlowId"]
        last = None
        while True:
            cluster = self._client.describe_cluster(ClusterId=cluster_id)
            state = cluster["Cluster"]["Status"]["State"]
            if state != last:
                context.log.info(f"[pipes] EMR cluster {cluster_id}: {state}")
                last = state
            if state in CLUSTER_DONE:
                break
            time.sleep(self.poll_seconds)
        log_uri = cluster["Cluster"].get("LogUri")
        steps = self._client.list_steps(ClusterId=cluster_id)["Steps"]
        failed = [s for s in steps if s["Status"]["State"] in STEP_FAILED]
        if failed:
            raise describe_step_failure(self._client, cluster_id, failed[-1], log_uri)
        if state != "TERMINATED":
            why = cluster["Cluster"]["Status"].get("StateChangeReason") or {}
            loc = step_log_location(log_uri, cluster_id, None)
            raise EmrJobFailed(f"EMR cluster {cluster_id} ended {state}: {why.get('Code', '')} "
                               f"{why.get('Message', '')}".rstrip() + (f"\nlogs: {loc}" if loc else ""), loc,
                               {"cluster_id": cluster_id, "state": state})
        return cluster

    def _read_application_logs(self, context, session, response):
        try:
            super()._read_application_logs(context, session, response)
        except KeyError:  # list_objects_v2 has no "Contents" until EMR ships the logs (every ~5 min)
            context.log.warning("[pipes] no EMR application logs on S3 yet; see the cluster's LogUri later")


class ExistingClusterEMRClient(PipesClient):
    """Run one step on a running EMR cluster inside a Pipes session."""

    def __init__(self, *, client, message_reader: PipesMessageReader, context_injector: PipesContextInjector,
                 poll_seconds: float = 30.0, forward_termination: bool = True):
        self._client = client
        self.message_reader = message_reader
        self.context_injector = context_injector
        self.poll_seconds = poll_seconds
        self.forward_termination = forward_termination

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def run(self, *, context, cluster_id: str, step: dict, extras: dict | None = None
            ) -> PipesClientCompletedInvocation:  # type: ignore[override]
        cluster = self._client.describe_cluster(ClusterId=cluster_id)["Cluster"]
        state = cluster["Status"]["State"]
        if state not in ("WAITING", "RUNNING"):
            raise EmrJobFailed(f"EMR cluster {cluster_id} is {state}: it cannot take steps "
                               "(set emr_cluster_id to a running cluster, or use emr_mode=cluster_per_run)")
        log_uri = cluster.get("LogUri")
        with open_pipes_session(context=context, message_reader=self.message_reader,
                                context_injector=self.context_injector, extras=extras) as session:
            step = with_cli_bootstrap(step, dict(session.get_bootstrap_cli_arguments()))
            step_id = self._client.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]
            session.report_launched({"extras": {"cluster_id": cluster_id, "step_id": step_id}})
            context.log.info(f"[pipes] EMR step {step_id} added to cluster {cluster_id}")
            try:
                final = self._wait(context, cluster_id, step_id)
            except DagsterExecutionInterruptedError:
                if self.forward_termination:
                    context.log.warning(f"[pipes] interrupted: cancelling EMR step {step_id}")
                    self._client.cancel_steps(ClusterId=cluster_id, StepIds=[step_id])
                raise
            if final["Status"]["State"] != "COMPLETED":
                raise describe_step_failure(self._client, cluster_id, final, log_uri)
            loc = step_log_location(log_uri, cluster_id, step_id)
            return PipesClientCompletedInvocation(session, metadata={
                "AWS EMR Cluster ID": cluster_id, "AWS EMR Step ID": step_id,
                **({"AWS EMR step logs": loc} if loc else {})})

    def _wait(self, context, cluster_id: str, step_id: str) -> dict:
        last = None
        while True:
            step = self._client.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
            state = step["Status"]["State"]
            if state != last:
                context.log.info(f"[pipes] EMR step {step_id}: {state}")
                last = state
            if state == "COMPLETED" or state in STEP_FAILED:
                return step
            cluster = self._client.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]
            if cluster["State"] in CLUSTER_DONE + ("TERMINATING",):
                why = (cluster.get("StateChangeReason") or {}).get("Message", "")
                step["Status"] = {**step["Status"], "State": f"{state} (cluster {cluster['State']})",
                                  "StateChangeReason": {"Message": why or "the cluster ended before the step"}}
                return step
            time.sleep(self.poll_seconds)
