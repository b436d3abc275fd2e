"""Every path darkhalo writes or reads, and every commit marker, in one place.

Paths are relative to a ``Store`` root: the output root (``data_store.store()``) unless the
method says it is under the coadd cache root (``data_store.cache_store()``). Stages never
spell a path themselves; they ask ``layout`` (a module-level ``Layout``), so a stage reads
another stage's committed outputs by name, and the data layout table in README and
``docs/operators.md`` is this file in prose. Changing a path here moves it everywhere:
the demo's outputs are checked byte for byte against these names in the tests.
"""
from __future__ import annotations

from dataclasses import dataclass

# A dataset (or a cache brick, or a 4d table set) counts only once this file exists in it.
COMMIT_MARKER = "_SUCCESS"


@dataclass(frozen=True)
class Layout:
    """Relative paths of every stage's outputs (like PUDL's ``PudlPaths``)."""

    commit_marker: str = COMMIT_MARKER

    # -- leases: one writer per tier or brick (storage/lease.py), beside the outputs they guard --
    leases_dir: str = "_leases"

    def lease(self, name: str) -> str:
        """The lock file of lease ``name`` (local stores; removed when released)."""
        return f"{self.leases_dir}/{name}.lock"

    def lease_holder(self, name: str) -> str:
        """Who holds lease ``name`` and since when (on s3://, the lease object itself)."""
        return f"{self.leases_dir}/{name}.holder.json"

    # -- Phase 3 inputs (generated locally; read from S3 URIs in production) ----------------
    def phase3_table(self, name: str) -> str:
        return f"phase3/{name}"

    # -- 4a manifests ------------------------------------------------------------------------
    phase4a: str = "phase4a"

    def manifest(self, experiment_id: str) -> str:
        return f"{self.phase4a}/manifests/{experiment_id}"

    def manifest_part(self, experiment_id: str, k: int) -> str:
        return f"{self.manifest(experiment_id)}/{self.part_file(k)}"

    def stage_config(self, tier: str) -> str:
        """Every parameter and count of a tier's manifest build (JSON)."""
        return f"{self.phase4a}/_stage_config_{tier}.json"

    def tier_bricks(self, tier: str) -> str:
        return f"{self.phase4a}/tier_bricks/{tier}.parquet"

    def bricks_manifest(self, tier: str) -> str:
        """The tier's unique bricks with task and galaxy counts (``bricks_manifest[tier]``)."""
        return f"{self.phase4a}/bricks_manifest/{tier}.parquet"

    # Written by the unpartitioned ``bricks_manifest`` before issue #15 (a dataset over all
    # tiers); read by nothing now, named so operators can find and delete it.
    legacy_bricks_manifest: str = "phase4a/bricks_manifest"

    def manifest_staging(self, tier: str, fingerprint: str) -> str:
        """Per-part inputs staged for executors during one build; removed when it ends."""
        return f"{self.phase4a}/_staging/{tier}-{fingerprint}"

    @staticmethod
    def part_file(k: int) -> str:
        return f"part-{k:05d}.parquet"

    # -- 4b coadd cache (under the cache root) and blacklist (under the output root) ----------
    def cache_brick(self, brick: str) -> str:
        """Cache root: the brick's folder of coadd files (file names: the survey's)."""
        return brick

    def cache_commit(self, brick: str) -> str:
        """Cache root: the brick's commit record (sizes and sha256 of its files)."""
        return f"{brick}/{self.commit_marker}"

    quarantine_dir: str = "_quarantine"

    def cache_quarantine(self, brick: str, tag: str) -> str:
        """Cache root: files of a brick that failed verification against its commit record,
        moved aside with an ``evidence.json`` (``tag``: when and by which process)."""
        return f"{self.quarantine_dir}/{brick}/{tag}"

    missing_dir: str = "phase4b/missing"

    def missing_evidence(self, brick: str) -> str:
        return f"{self.missing_dir}/{brick}.json"

    # ``brick_blacklist[tier]``: the tier's bricks with evidence in ``missing_dir`` (evidence is
    # per brick and shared by the tiers; these files only list which of the tier's bricks).
    def blacklist_parquet(self, tier: str) -> str:
        return f"phase4b/brick_blacklist/{tier}.parquet"

    def blacklist_json(self, tier: str) -> str:
        """A JSON list of the tier's missing brick names (the seed's ``brick_blacklist.json``)."""
        return f"phase4b/brick_blacklist/{tier}.json"

    # The unpartitioned blacklist over all tiers from before issue #15: read only when a
    # tier's own file does not exist yet (an instance upgraded in place keeps working).
    legacy_blacklist_parquet: str = "phase4b/brick_blacklist.parquet"
    legacy_blacklist_json: str = "phase4b/brick_blacklist.json"

    def fill_run_results(self, run_id: str, key: str) -> str:
        """Per-brick outcomes of one Spark cache fill (too many for a Pipes message)."""
        return f"phase4b/fill_runs/{run_id}-{key}.parquet"

    def injection_tasks(self, experiment_id: str) -> str:
        return f"phase4b/injection_tasks/{experiment_id}"

    # -- 4c injected cutouts -------------------------------------------------------------------
    def injection(self, tier: str) -> str:
        return f"phase4c/{tier}"

    @staticmethod
    def staging_for(rel: str) -> str:
        """Unit inputs staged for workers while ``rel`` is written (a ``_staging`` folder beside it);
        removed when the run ends."""
        parent, _, name = rel.rpartition("/")
        return f"{parent}/_staging/{name}" if parent else f"_staging/{name}"

    # inside injection(tier): one metrics file and one stamps file per shard (the metrics file is the
    # shard's commit), and the tier's _SUCCESS listing the shards once all are there.
    metrics_dir: str = "metrics"
    stamps_dir: str = "stamps"

    def metrics_shard(self, shard: str) -> str:
        return f"{self.metrics_dir}/{shard}.parquet"

    def stamps_shard(self, shard: str) -> str:
        return f"{self.stamps_dir}/{shard}.parquet"

    # the shard's commit record (its input fingerprint and the run that wrote it), written last
    commits_dir: str = "commits"

    def shard_record(self, shard: str) -> str:
        return f"{self.commits_dir}/{shard}.json"

    gallery: str = "gallery.png"

    # -- 4d completeness -----------------------------------------------------------------------
    def completeness(self, tier: str, name: str = "") -> str:
        return f"phase4d/{tier}" + (f"/{name}" if name else "")

    def completeness_view(self, tier: str, view: str, table: str) -> str:
        """A view's table (Parquet): ``tasks`` at the tier's top level, others under their own folder."""
        return self._view_file(tier, view, f"{table}.parquet")

    def completeness_commit(self, tier: str, view: str = "tasks") -> str:
        """A view's commit marker: written after all its tables, removed before any is replaced."""
        return self._view_file(tier, view, self.commit_marker)

    def _view_file(self, tier: str, view: str, name: str) -> str:
        return self.completeness(tier, name if view == "tasks" else f"{view}/{name}")

    def summary_text(self, tier: str) -> str:
        return self.completeness(tier, "summary.txt")

    def plots(self, tier: str) -> str:
        return self.completeness(tier, "plots")

    def plot(self, tier: str, name: str) -> str:
        return self.completeness(tier, f"plots/{name}")


layout = Layout()
