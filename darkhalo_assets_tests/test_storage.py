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
