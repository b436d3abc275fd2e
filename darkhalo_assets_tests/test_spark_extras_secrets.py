"""Pipes extras travel as files, S3 objects and EMR step arguments: a data store whose storage
options carry credentials is refused before any Spark job is launched, naming the option."""
import pytest

from darkhalo_assets.storage.store import Store
from darkhalo_assets.storage.specs import store_from_spec, store_spec


def test_credentials_in_storage_options_are_refused():
    leaky = Store("s3://bucket/darkhalo", {"key": "AKIA-EXAMPLE", "secret": "not-for-extras",
                                            "client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}})
    with pytest.raises(ValueError, match=r"carry credentials \(key, secret\)") as err:
        store_spec(leaky)
    assert "not-for-extras" not in str(err.value)
    nested = Store("s3://bucket/darkhalo", {"client_kwargs": {"aws_secret_access_key": "x"}})
    with pytest.raises(ValueError, match=r"client_kwargs\.aws_secret_access_key"):
        store_spec(nested)


def test_endpoint_only_options_pass(tmp_path):
    ok = Store("s3://bucket/darkhalo", {"client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}})
    assert store_spec(ok) == {"root": "s3://bucket/darkhalo",
                                          "storage_options": {"client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}}}
    assert store_spec(Store(str(tmp_path)))["storage_options"] == {}


def test_store_from_spec_is_the_inverse(tmp_path):
    store = Store(str(tmp_path), {})
    back = store_from_spec(store_spec(store))
    assert (back.root, back.storage_options) == (store.root, store.storage_options)
