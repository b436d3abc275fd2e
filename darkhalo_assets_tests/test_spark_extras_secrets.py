"""Pipes extras travel as files, S3 objects and EMR step arguments: a data store whose storage
options carry credentials is refused before any Spark job is launched, naming the option."""
import pytest

from darkhalo_assets.storage.store import Store
from darkhalo_assets.engines.dispatch import store_spec


class _DataStore:
    def __init__(self, store):
        self._store = store

    def store(self):
        return self._store


def test_credentials_in_storage_options_are_refused():
    leaky = Store("s3://bucket/darkhalo", {"key": "AKIA-EXAMPLE", "secret": "not-for-extras",
                                            "client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}})
    with pytest.raises(ValueError, match=r"carry credentials \(key, secret\)") as err:
        store_spec(_DataStore(leaky))
    assert "not-for-extras" not in str(err.value)
    nested = Store("s3://bucket/darkhalo", {"client_kwargs": {"aws_secret_access_key": "x"}})
    with pytest.raises(ValueError, match=r"client_kwargs\.aws_secret_access_key"):
        store_spec(_DataStore(nested))


def test_endpoint_only_options_pass(tmp_path):
    ok = Store("s3://bucket/darkhalo", {"client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}})
    assert store_spec(_DataStore(ok)) == {"root": "s3://bucket/darkhalo",
                                          "storage_options": {"client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}}}
    assert store_spec(_DataStore(Store(str(tmp_path))))["storage_options"] == {}
