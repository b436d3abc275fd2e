"""What each brick partition of ``coadd_cache`` records in Dagster, from the fill job's per-brick records.

Whichever path fills the cache (a backfill's range run, one brick, the tier-fill job, the CLI,
any engine), every brick gets its own events, so its partition shows its own truth:

- cached or skipped: a materialization of ``coadd_cache[brick]`` with its own files, bytes,
  verification, upstream status and cache path; then a ``files_verified`` evaluation on that
  partition (passed, or failed with the problems);
- missing upstream (HTTP 404): a materialization whose ``status`` is ``missing`` (the brick is
  recorded: its evidence is what ``brick_blacklist`` reads) and a *failed* ``files_verified``
  evaluation on the partition, severity WARN: it has no files, which is known data, not damage;
- failed (or refused by the tiling): no materialization - the run fails, so Dagster shows the
  partition failed - and an observation of the partition carrying the error.

A partition's check evaluation must name the materialization it checked, or Dagster treats it
as stale and shows the partition unchecked; the record type for that pointer is not exported by
``dagster``, so it is built with the public ``deserialize_value`` from its persisted form.
"""
from __future__ import annotations

import json
from collections import defaultdict

from dagster import (AssetCheckEvaluation, AssetCheckSeverity, AssetKey, AssetMaterialization, AssetObservation,
                     AssetRecordsFilter, MetadataValue, deserialize_value)

from darkhalo_assets.metadata import json_md

ASSET_KEY = AssetKey("coadd_cache")
CHECK_NAME = "files_verified"
CODE_VERSION_TAG = "dagster/code_version"   # what Dagster's own materializations carry
EVENTS_PER_CHUNK = 500                      # materializations logged before their storage ids are read back


def materialization(rec: dict, cache_url: str, extra: dict, code_version: str | None) -> AssetMaterialization:
    """The brick's own materialization (cached, skipped or missing upstream)."""
    status = rec["status"]
    md = {"status": status, "files": int(rec.get("files") or 0), "cache_bytes": int(rec.get("cache_bytes") or 0),
          "bytes_downloaded": int(rec["bytes_downloaded"]), "files_fetched": int(rec["files_fetched"]),
          "files_adopted": int(rec["files_adopted"]), "verification": verification_text(rec),
          "upstream": upstream_text(rec), "path": MetadataValue.path(cache_url),
          "seconds": round(float(rec["seconds"]), 3), **extra}
    if rec.get("upstream_status") is not None:
        md["upstream_status"] = int(rec["upstream_status"])
    return AssetMaterialization(asset_key=ASSET_KEY, partition=rec["brickname"], metadata=md,
                                tags={CODE_VERSION_TAG: code_version} if code_version else None)


def failure_observation(rec: dict, cache_url: str, extra: dict) -> AssetObservation:
    """A failed brick's error on its own partition (it has no materialization from this run)."""
    md = {"status": "failed", "error": rec["error"] or "unknown error", "path": MetadataValue.path(cache_url), **extra}
    if rec.get("upstream_status") is not None:
        md["upstream_status"] = int(rec["upstream_status"])
    return AssetObservation(asset_key=ASSET_KEY, partition=rec["brickname"], metadata=md)


def verification_text(rec: dict) -> str:
    if rec["status"] == "missing":
        return "no files: the brick is not served upstream"
    if rec["verified_ok"] is None:
        return "sizes match _SUCCESS (sha256 verified when first cached)"
    if rec["verified_ok"]:
        return f"sha256 of {rec.get('files') or 0} files matches _SUCCESS"
    return "FAILED: " + "; ".join(rec["problems"] or [])


def upstream_text(rec: dict) -> str:
    if rec["status"] == "missing":
        return f"HTTP {rec.get('upstream_status') or 404} for {rec.get('upstream_url')} at {rec.get('upstream_time')}"
    if rec["files_fetched"]:
        return f"served ({rec['files_fetched']} files fetched)"
    return "not requested: every file already cached"


def evaluation(rec: dict, target, blocking: bool, extra: dict) -> AssetCheckEvaluation | None:
    """The brick's ``files_verified`` evaluation, or None when nothing was checked (a skipped brick
    was size-checked against its record only, which its materialization says)."""
    if rec["status"] == "missing":
        problems = [f"no files: HTTP {rec.get('upstream_status') or 404} upstream ({rec.get('upstream_url')})"]
        passed, severity = False, AssetCheckSeverity.WARN
    elif rec["verified_ok"] is None:
        return None
    else:
        passed, severity = bool(rec["verified_ok"]), AssetCheckSeverity.ERROR
        problems = [] if passed else list(rec["problems"] or [])
    return AssetCheckEvaluation(
        asset_key=ASSET_KEY, check_name=CHECK_NAME, passed=passed, severity=severity, blocking=blocking,
        partition=rec["brickname"], target_materialization_data=target,
        metadata={"bricks_checked": 1, "problems": json_md({rec["brickname"]: problems} if problems else {}),
                  **extra})


def _target(record):
    return deserialize_value(json.dumps({
        "__class__": "AssetCheckEvaluationTargetMaterializationData",
        "storage_id": record.storage_id, "run_id": record.run_id, "timestamp": record.timestamp}))


def log_brick_events(context, rows: list[dict], cache_url, *, blocking: bool, extra: dict | None = None,
                     code_version: str | None = None) -> None:
    """Log every brick's events (see the module docstring); ``cache_url(brick)`` is its cache path."""
    extra = dict(extra or {})
    run_id = context.run.run_id
    for i in range(0, len(rows), EVENTS_PER_CHUNK):
        chunk = rows[i:i + EVENTS_PER_CHUNK]
        done = [r for r in chunk if r["status"] != "failed"]
        for r in chunk:
            event = (materialization(r, cache_url(r["brickname"]), extra, code_version) if r["status"] != "failed"
                     else failure_observation(r, cache_url(r["brickname"]), extra))
            context.log_event(event)
        if not done:
            continue
        # Events are stored as they are logged: the newest materialization of each brick is this run's.
        records = context.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=ASSET_KEY, asset_partitions=[r["brickname"] for r in done]),
            limit=len(done)).records
        mine = {rec.partition_key: rec for rec in records if rec.run_id == run_id}
        for r in done:
            ev = evaluation(r, _target(mine[r["brickname"]]) if r["brickname"] in mine else None, blocking, extra)
            if ev is not None:
                context.log_event(ev)


def failure_report(rows: list[dict], limit_per_cause: int = 20) -> tuple[str, dict]:
    """Every failed or unverified brick grouped by its cause, as text (each cause with its count and
    bricks) and as metadata (every brick's error, up to 500 bricks; counts per cause for all)."""
    errors = {r["brickname"]: (r["error"] or "unknown error") if r["status"] == "failed"
              else "failed verification: " + "; ".join(r["problems"] or [])
              for r in rows if r["status"] == "failed" or r["verified_ok"] is False}
    causes: dict[str, list[str]] = defaultdict(list)
    for brick, cause in errors.items():
        causes[cause].append(brick)
    lines = []
    for cause, bricks in sorted(causes.items(), key=lambda kv: -len(kv[1])):
        shown = ", ".join(repr(b) if not b else b for b in bricks[:limit_per_cause])
        more = f" ... (+{len(bricks) - limit_per_cause})" if len(bricks) > limit_per_cause else ""
        lines.append(f"  {cause} ({len(bricks)} brick{'s' if len(bricks) > 1 else ''}): {shown}{more}")
    md = {"failed_bricks": json_md(dict(list(errors.items())[:500])),
          "failures_by_cause": json_md({c: len(b) for c, b in causes.items()})}
    return "\n".join(lines), md
