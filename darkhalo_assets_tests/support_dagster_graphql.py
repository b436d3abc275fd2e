"""A small client for the Dagster GraphQL API, the one the UI itself uses: launch asset
backfills (``launchPartitionBackfill``, as the launch dialog does) and runs (``launchRun``, as
the Launchpad does), wait for them, and read materializations and asset check executions.
"""
from __future__ import annotations

import json
import time

import requests

REPOSITORY_NAME = "__repository__"  # what Dagster calls the repository of a bare Definitions
LOCATION_NAME = "darkhalo"          # workspace.yaml's location_name

class GraphQLError(RuntimeError):
    pass


class GraphQLClient:
    """POSTs to ``/graphql`` like the UI does; returns ``data`` or raises with the server's errors."""

    def __init__(self, base_url: str, timeout_s: float = 120.0):
        self.url = base_url.rstrip("/") + "/graphql"
        self.timeout_s = timeout_s
        self.session = requests.Session()

    def query(self, query: str, variables: dict | None = None) -> dict:
        r = self.session.post(self.url, json={"query": query, "variables": variables or {}}, timeout=self.timeout_s)
        try:
            body = r.json()
        except ValueError:
            raise GraphQLError(f"HTTP {r.status_code} from {self.url}: {r.text[:500]}") from None
        if body.get("errors"):
            raise GraphQLError(json.dumps(body["errors"], indent=1)[:4000])
        return body["data"]


LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on InvalidSubsetError { message }
  }
}"""

BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status numPartitions isAssetBackfill error { message } }
    ... on PythonError { message }
  }
}"""

RUNS_BY_TAG = """
query Runs($key: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $key, value: $value}]}) {
    __typename
    ... on Runs { results { runId status tags { key value } assetSelection { path } } }
    ... on PythonError { message }
  }
}"""

ASSET_MATERIALIZATIONS = """
query Mats($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions) {
        partition runId timestamp
        tags { key value }
        metadataEntries {
          label __typename
          ... on IntMetadataEntry { intValue }
          ... on MarkdownMetadataEntry { mdStr }
          ... on JsonMetadataEntry { jsonString }
          ... on PathMetadataEntry { path }
          ... on TableMetadataEntry { table { records schema { columns { name description } } } }
        }
      }
    }
  }
}"""

CHECK_EXECUTIONS = """
query CheckExecutions($key: AssetKeyInput!, $name: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $name, limit: 20) {
    runId status evaluation { success partition }
  }
}"""

RUNS = """
{ runsOrError(limit: 200) { ... on Runs { results { runId jobName status tags { key value } } } } }"""

DAEMON_HEALTH = """
{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"""

ASSET_NODES = """
{ assetNodes { assetKey { path } groupName description kinds opVersion isPartitioned
               hasAssetChecks pools backfillPolicy { description maxPartitionsPerRun }
               owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
               metadataEntries { label __typename } } }"""

ASSET_CHECKS = """
query Checks($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks { name blocking description } } } }
  }
}"""

def launch_asset_backfill(gql: GraphQLClient, asset_keys: list[str], partition_names: list[str], *,
                          title: str = "", tags: dict[str, str] | None = None, run_config: dict | None = None) -> str:
    """Submit an asset backfill with the params the UI's launch dialog sends; returns its id."""
    params: dict = {"assetSelection": [{"path": [k]} for k in asset_keys], "partitionNames": partition_names,
                    "fromFailure": False, "title": title or None,
                    "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
    if run_config is not None:
        params["runConfigData"] = run_config
    res = gql.query(LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
    if res["__typename"] != "LaunchBackfillSuccess":
        raise GraphQLError(f"backfill of {asset_keys} {partition_names[:5]} refused: {res}")
    return res["backfillId"]


LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PipelineNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}"""

RUN_STATUS = """
query Run($id: ID!) {
  runOrError(runId: $id) { __typename ... on Run { runId status tags { key value } } ... on PythonError { message } }
}"""

RUN_FAILURE_EVENTS = """
query RunLogs($id: ID!) {
  logsForRun(runId: $id, limit: 2000) {
    ... on EventConnection { events { __typename message } }
  }
}"""


def launch_run(gql: GraphQLClient, job_name: str, *, asset_keys: list[str] | None = None, partition: str | None = None,
               run_config: dict | None = None, tags: dict[str, str] | None = None) -> str:
    """Launch one run as the Launchpad does (``__ASSET_JOB`` + an asset selection for assets)."""
    tags = dict(tags or {})
    if partition is not None:
        tags["dagster/partition"] = partition
    selector: dict = {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME, "jobName": job_name}
    if asset_keys:
        selector["assetSelection"] = [{"path": [k]} for k in asset_keys]
    params = {"selector": selector, "runConfigData": run_config or {},
              "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}}
    res = gql.query(LAUNCH_RUN, {"executionParams": params})["launchRun"]
    if res["__typename"] != "LaunchRunSuccess":
        raise GraphQLError(f"launch of {job_name} {asset_keys or ''} refused: {res}")
    return res["run"]["runId"]


TERMINAL_RUN = {"SUCCESS", "FAILURE", "CANCELED"}


def run_failure_messages(gql: GraphQLClient, run_id: str) -> list[str]:
    events = gql.query(RUN_FAILURE_EVENTS, {"id": run_id})["logsForRun"].get("events", [])
    return [e["message"] for e in events if "Failure" in e["__typename"] or "Error" in e["__typename"]]


def wait_for_runs(gql: GraphQLClient, run_ids: list[str], timeout_s: float = 240.0, on_timeout=None) -> dict[str, str]:
    """Poll until every run is terminal; returns {run id: status}."""
    deadline = time.monotonic() + timeout_s
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        status = {r: gql.query(RUN_STATUS, {"id": r})["runOrError"].get("status", "?") for r in run_ids}
        if all(s in TERMINAL_RUN for s in status.values()):
            return status
        time.sleep(1)
    details = on_timeout() if on_timeout else ""
    raise TimeoutError(f"runs not finished after {timeout_s:.0f}s: {status}\n{details}")


TERMINAL_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def wait_for_backfills(gql: GraphQLClient, backfill_ids: list[str], timeout_s: float = 240.0,
                       on_timeout=None) -> dict[str, dict]:
    """Poll until every backfill is terminal (the daemon marks them on its ~30 s loop)."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for bid in backfill_ids:
            last[bid] = gql.query(BACKFILL_STATUS, {"id": bid})["partitionBackfillOrError"]
        if all(b.get("status") in TERMINAL_BACKFILL for b in last.values()):
            return last
        time.sleep(2)
    details = on_timeout() if on_timeout else ""
    raise TimeoutError(f"backfills not finished after {timeout_s:.0f}s: {last}\n{details}")


def backfill_runs(gql: GraphQLClient, backfill_id: str) -> list[dict]:
    res = gql.query(RUNS_BY_TAG, {"key": "dagster/backfill", "value": backfill_id})["runsOrError"]
    return res["results"]


def asset_materializations(gql: GraphQLClient, asset_key: str, partitions: list[str] | None = None) -> list[dict]:
    res = gql.query(ASSET_MATERIALIZATIONS, {"key": {"path": [asset_key]}, "partitions": partitions})["assetOrError"]
    if res["__typename"] != "Asset":
        return []
    return res["assetMaterializations"]


def check_executions(gql: GraphQLClient, asset_key: str) -> dict[str, dict]:
    """{check name: {"blocking": bool, "executions": [{runId, status, evaluation}, ...]}}."""
    node = gql.query(ASSET_CHECKS, {"key": {"path": [asset_key]}})["assetNodeOrError"]
    out = {}
    for c in node["assetChecksOrError"]["checks"]:
        ex = gql.query(CHECK_EXECUTIONS, {"key": {"path": [asset_key]}, "name": c["name"]})["assetCheckExecutions"]
        out[c["name"]] = {"blocking": c["blocking"], "description": c["description"], "executions": ex}
    return out


def run_tags(entity: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in entity.get("tags", [])}
