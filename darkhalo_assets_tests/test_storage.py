"""Store: root confinement and atomic writes on a local dir and on a real S3 API (moto server)."""
import boto3
import pytest
from moto.server import ThreadedMotoServer

from darkhalo_assets.storage.store import Store, UnsafePath


@pytest.fixture(scope="module")
def s3():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="x",
                 aws_secret_access_key="x").create_bucket(Bucket="darkhalo")
    yield {"client_kwargs": {"endpoint_url": endpoint}, "key": "x", "secret": "x"}
    server.stop()


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b", "a/./b", "a?x=1", "s3://other/x", "a\\b"])
def test_paths_cannot_leave_the_root(tmp_path, bad):
    with pytest.raises(UnsafePath):
        Store(str(tmp_path)).write_bytes_atomic(bad, b"x")


def _interrupted_write(store: Store, rel: str) -> None:
    with pytest.raises(RuntimeError):
        with store.open_write_atomic(rel) as f:
            f.write(b"half" * 1000)
            raise RuntimeError("killed mid-write")


def test_local_write_is_invisible_until_committed(tmp_path):
    store = Store(str(tmp_path))
    _interrupted_write(store, "a/half.bin")
    assert not store.exists("a/half.bin") and store.ls("a") == []
    store.write_bytes_atomic("a/whole.bin", b"done")
    assert store.read_bytes("a/whole.bin") == b"done" and store.ls("a") == ["whole.bin"]


def test_s3_write_is_invisible_until_committed(s3):
    store = Store("s3://darkhalo/root", s3)
    _interrupted_write(store, "a/half.bin")
    store.fs.invalidate_cache()
    assert not store.exists("a/half.bin")
    store.write_bytes_atomic("a/whole.bin", b"done")
    store.fs.invalidate_cache()
    assert store.read_bytes("a/whole.bin") == b"done"
    assert repr(store) == "Store('s3://darkhalo/root')"   # storage options (credentials) never shown


# -- the cache root's allowed prefix: normalised first, then checked (issue #12 item 7) ---------
def _data_store(cache_root: str, prefix: str, s3=None):
    from resources.storage import DataStoreResource
    endpoint = s3["client_kwargs"]["endpoint_url"] if s3 else None
    return DataStoreResource(root=prefix, cache_root=cache_root, allowed_cache_prefix=prefix,
                             s3_endpoint_url=endpoint)


@pytest.mark.parametrize("escape", ["../escaped", "sub/../../escaped", "./../escaped"])
def test_local_cache_root_that_climbs_out_of_the_prefix_is_refused(tmp_path, escape):
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(ValueError, match="outside the allowed prefix") as e:
        _data_store(f"{data}/{escape}", str(data)).cache_store()
    assert str(tmp_path / "escaped") in str(e.value)          # the message shows where it really points
    assert not (tmp_path / "escaped").exists()


def test_local_cache_root_below_the_prefix_opens_its_normalised_path(tmp_path):
    data = tmp_path / "data"
    store = _data_store(f"{data}/x/../coadd_cache/./", str(data)).cache_store()
    assert store.root == str(data / "coadd_cache")
    store.write_bytes_atomic("0001p000/_SUCCESS", b"{}")
    assert (data / "coadd_cache" / "0001p000" / "_SUCCESS").read_bytes() == b"{}"
    with pytest.raises(ValueError, match="outside"):               # a sibling sharing the prefix's spelling
        _data_store(f"{data}2/coadd_cache", str(data)).cache_store()


@pytest.mark.parametrize("escape", ["s3://darkhalo/allowed/../x", "s3://darkhalo/allowed/sub/../../x",
                                    "s3://darkhalo/allowed/../../other-bucket/x", "s3://other/allowed"])
def test_s3_cache_root_that_climbs_out_of_the_prefix_is_refused(s3, escape):
    from darkhalo_assets.storage.store import UnsafePath
    with pytest.raises((ValueError, UnsafePath)):
        _data_store(escape, "s3://darkhalo/allowed", s3).cache_store()


def test_s3_cache_root_below_the_prefix_writes_under_it(s3, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")          # the resource takes credentials from the environment
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    store = _data_store("s3://darkhalo/allowed/tmp/../cache", "s3://darkhalo/allowed", s3).cache_store()
    assert store.root == "s3://darkhalo/allowed/cache"
    store.write_bytes_atomic("0001p000/_SUCCESS", b"{}")
    store.fs.invalidate_cache()
    assert store.fs.cat_file("darkhalo/allowed/cache/0001p000/_SUCCESS") == b"{}"
    assert not store.fs.exists("darkhalo/allowed/tmp")
