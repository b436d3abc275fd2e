"""A small synthetic survey fetched over real HTTP into a coadd cache, for stage 4c tests."""
from pathlib import Path

from darkhalo_assets.stages.coadds.fill import CoaddFetcher, fetch_bricks
from darkhalo_assets.storage.store import Store
from darkhalo_assets.synthetic.coadds import write_survey_coadds
from darkhalo_assets.synthetic.phase3 import Phase3Spec, generate_phase3
from darkhalo_assets.synthetic.server import SurveyServer


def cached_survey(root: Path, spec: Phase3Spec, n_uncached: int = 0):
    """Generate ``spec``'s sky under ``root/survey``, serve it on 127.0.0.1 and fill
    ``root/cache`` through the real fetcher, leaving the last ``n_uncached`` bricks out.
    Returns (phase3 tables, cache store, brick names)."""
    t3 = generate_phase3(spec)
    write_survey_coadds(root / "survey", t3.bricks_with_region.to_pandas(), t3.parent_catalog.to_pandas(),
                        brick_pixels=spec.brick_pixels)
    cache = Store(str(root / "cache"))
    names = t3.bricks_with_region.column("brickname").to_pylist()
    pix = (spec.brick_pixels, spec.brick_pixels)
    with SurveyServer(root / "survey") as srv, CoaddFetcher(srv.base_url, cache, expected_shape=pix) as f:
        results = list(fetch_bricks(f, names[:len(names) - n_uncached]))
    assert all(r.status == "cached" for r in results), [r.to_record() for r in results if r.status != "cached"]
    return t3, cache, names
