"""Stage 4b as a job: fill the coadd cache for a list of bricks, a batch of bricks per unit.

Each unit opens the fetcher the ``coadd_cache`` asset describes (``survey`` holds the
SurveyResource's fields) and runs ``fetch_bricks`` over its batch - the same per-brick
atomic commit, skip of verified bricks, retries and 404 evidence - records missing-brick
evidence, deep-verifies what it cached, and returns one record per brick. The summary holds
counts by status, bytes and rates, and the per-brick records: inline (``bricks``), or, when
``results_rel`` is given (a tier's 180k bricks do not fit a Pipes message), in that Parquet
file of the data store.

params: bricks, force, reverify (re-hash every listed file: a sweep), bricks_per_task, survey,
data_store and cache_store (store specs), missing_dir, results_rel (optional).
"""
from __future__ import annotations

import json
import time

from darkhalo_assets.storage.specs import store_from_spec
from darkhalo_assets.layout import layout

RESULT_FIELDS = (("brickname", "string"), ("status", "string"), ("bytes_downloaded", "int64"),
                 ("files_fetched", "int64"), ("files_adopted", "int64"), ("seconds", "float64"),
                 ("error", "string"), ("verified_ok", "bool"), ("problems", "string"), ("quarantined", "string"),
                 ("files", "int64"), ("cache_bytes", "int64"), ("upstream_status", "int64"),
                 ("upstream_url", "string"), ("upstream_time", "string"))


def failed_record(brick: str, error: str, upstream_status: int | None = None) -> dict:
    """The record of a brick that was not cached, with the cause (``type: message``)."""
    return {"brickname": brick, "status": "failed", "bytes_downloaded": 0, "files_fetched": 0, "files_adopted": 0,
            "seconds": 0.0, "error": error, "verified_ok": None, "problems": None, "quarantined": None,
            "files": 0, "cache_bytes": 0,
            "upstream_status": upstream_status, "upstream_url": None, "upstream_time": None}


def make_fetcher(survey: dict, cache_spec: dict, force: bool, reverify: bool = False):
    """The fetcher the ``coadd_cache`` asset describes (``survey`` holds the SurveyResource's fields and
    the survey's registered name; a missing field takes the one default in config.defaults)."""
    import dataclasses
    from darkhalo_assets.config.defaults import FETCH
    from darkhalo_assets.stages.coadds.fill import CoaddFetcher, RetryPolicy
    from darkhalo_assets.survey.base import survey_named
    s = {**dataclasses.asdict(FETCH), **survey}
    px = s.get("brick_pixels")
    return CoaddFetcher(s["url"], store_from_spec(cache_spec), survey=survey_named(s.get("survey", "dr10_south")),
                        connect_timeout=s["connect_timeout_s"], read_timeout=s["read_timeout_s"],
                        concurrency=s["concurrency"], force=force, expected_shape=(px, px) if px else None,
                        reverify=reverify,
                        retry=RetryPolicy(s["max_attempts"], s["backoff_base_s"], s["backoff_cap_s"]))


def fill_batch(unit: dict) -> list[dict]:
    """(unit) fetch a batch of bricks; one record per brick (``problems`` a list, None if not verified).

    Never raises: what stops one brick (a full disk writing its evidence, a verification that
    cannot read a file) is that brick's ``failed`` record, and what stops the whole unit (the
    fetcher or a store cannot be opened) is every one of its bricks' record, with the cause.
    """
    from darkhalo_assets.storage.http_fetch import redact_text
    try:
        return _fill_batch(unit)
    except Exception as e:
        error = redact_text(f"{type(e).__name__}: {e}")
        return [failed_record(b, f"{error} (the whole unit of {len(unit['bricks'])} bricks failed)")
                for b in unit["bricks"]]


def _fill_batch(unit: dict) -> list[dict]:
    from darkhalo_assets.stages.coadds.fill import fetch_bricks
    store = store_from_spec(unit["data_store"])
    out = []
    with make_fetcher(unit["survey"], unit["cache_store"], unit["force"], unit.get("reverify", False)) as fetcher:
        results = list(fetch_bricks(fetcher, unit["bricks"]))
        for r in results:
            try:
                # 404 evidence kept, cleared once the brick is there.
                if r.status == "missing":
                    store.write_bytes_atomic(layout.missing_evidence(r.brickname),
                                             json.dumps(r.to_record(), sort_keys=True).encode())
                elif r.status in ("cached", "skipped"):
                    store.rm(layout.missing_evidence(r.brickname))
                v = fetcher.verify_brick(r.brickname, deep=True) if r.status == "cached" else None
            except Exception as e:
                out.append(failed_record(r.brickname, fetcher.redact(f"{type(e).__name__}: {e}")))
                continue
            ev, fetched = r.missing, sum(f.action == "fetched" for f in r.files)
            # the status upstream gave: the 404, a refusal's code, 200 when files came, None unasked
            upstream = ev.status if ev else getattr(r.exception, "status", None) or (200 if fetched else None)
            out.append({"brickname": r.brickname, "status": r.status, "bytes_downloaded": r.bytes_downloaded,
                        "files_fetched": fetched, "files_adopted": sum(f.action == "adopted" for f in r.files),
                        "seconds": float(r.seconds), "error": r.error,
                        "verified_ok": None if v is None else bool(v.ok),
                        "problems": None if v is None else list(v.problems), "quarantined": r.quarantined,
                        "files": len(r.files) if r.status in ("cached", "skipped") else 0,
                        "cache_bytes": sum(f.size for f in r.files) if r.status in ("cached", "skipped") else 0,
                        "upstream_status": upstream,
                        "upstream_url": ev.url if ev else None, "upstream_time": ev.time if ev else None})
    return out


def fill_bricks(params: dict, runner, log) -> dict:
    """Fetch every brick of ``params['bricks']``; summary: counts, bytes, rates, per-brick records."""
    from darkhalo_assets.stages.coadds.fill import STATUSES, split_bricknames
    from darkhalo_assets.survey.base import survey_named
    # A name the tiling does not hold is that brick's failure, refused before any request.
    bricks, refused = split_bricknames(params["bricks"], survey_named(params["survey"].get("survey", "dr10_south")))
    if refused:
        log(f"{len(refused)} brick name(s) refused, not fetched: " + "; ".join(
            f"{b!r}: {why}" for b, why in list(refused.items())[:20]))
    per_task = max(1, int(params.get("bricks_per_task", 50)))
    common = {k: params[k] for k in ("survey", "data_store", "cache_store")}
    units = [{**common, "force": bool(params.get("force", False)), "reverify": bool(params.get("reverify", False)),
              "bricks": bricks[i:i + per_task]}
             for i in range(0, len(bricks), per_task)]
    log(f"{len(bricks):,} bricks in {len(units)} units of <= {per_task}")
    t0 = time.perf_counter()
    rows = [r for batch in runner.map(fill_batch, units) for r in batch] if units else []
    rows += [failed_record(b, why) for b, why in refused.items()]
    seconds = time.perf_counter() - t0
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    nbytes = sum(r["bytes_downloaded"] for r in rows)
    fetched = sum(r["files_fetched"] for r in rows)
    summary = {"bricks": len(rows), **counts, "files_fetched": fetched,
               "files_adopted": sum(r["files_adopted"] for r in rows), "bytes_downloaded": nbytes,
               "seconds": round(seconds, 3), "mb_per_s": round(nbytes / seconds / 1e6, 3) if seconds > 0 else 0.0,
               "files_per_s": round(fetched / seconds, 2) if seconds > 0 else 0.0,
               "unverified": sum(r["verified_ok"] is False for r in rows), "refused": len(refused),
               "quarantined": sum(r["quarantined"] is not None for r in rows)}
    rows.sort(key=lambda r: r["brickname"])
    if params.get("results_rel"):
        write_results(store_from_spec(params["data_store"]), params["results_rel"], rows)
        return {"summary": summary, "results_rel": params["results_rel"]}
    return {"summary": summary, "bricks": rows}


def write_results(store, rel: str, rows: list[dict]) -> None:
    import pyarrow as pa
    from darkhalo_assets.storage.datasets import write_table
    schema = pa.schema([(n, getattr(pa, t)() if t != "bool" else pa.bool_()) for n, t in RESULT_FIELDS])
    rows = [{**r, "problems": None if r["problems"] is None else json.dumps(r["problems"])} for r in rows]
    write_table(store, rel, pa.Table.from_pylist(rows, schema=schema))


def read_results(store, rel: str) -> list[dict]:
    """The per-brick records ``write_results`` wrote."""
    from darkhalo_assets.storage.datasets import read_table
    rows = read_table(store, rel).to_pylist()
    for r in rows:
        r["problems"] = None if r["problems"] is None else json.loads(r["problems"])
    return rows


def brick_records(store, summary: dict) -> list[dict]:
    """A fill job's per-brick records, inline or from its results file."""
    return summary["bricks"] if "bricks" in summary else read_results(store, summary["results_rel"])
