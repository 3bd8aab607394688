"""``Store``: one local directory or ``s3://bucket/prefix`` with its endpoint, resolved once."""

from __future__ import annotations

import os
import pickle

import pytest

from factory.dataset.storage import ENDPOINT_ENV, Store, as_store
from factory.errors import UserError


def test_local_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Store("data/ds/")
    assert s.url == s.path == os.path.join(str(tmp_path), "data", "ds")
    assert s.is_local
    assert Store(f"file://{tmp_path}/x").url == f"{tmp_path}/x"
    assert Store("~").url == os.path.expanduser("~")
    assert s.child("shards", "a.tar").url == f"{s.url}/shards/a.tar"
    assert s.child("a").parent() == s
    assert s.join() == s.path and s.join("", "a") == f"{s.path}/a"
    assert as_store(s) is s and as_store(tmp_path) == Store(str(tmp_path))


def test_local_operations_commit_through_tmp(tmp_path):
    s = Store(str(tmp_path / "root"))
    s.check_writable()
    assert not (tmp_path / "root").exists()  # the probe leaves nothing behind
    s.write_bytes_atomic("sub/f.bin", b"abc")
    assert s.is_file("sub/f.bin") and s.read_bytes("sub/f.bin") == b"abc"
    assert s.exists("sub") and not s.is_file("sub")
    assert [os.path.basename(i.path) for i in s.list("sub")] == ["f.bin"]
    assert s.list("_tmp") == []  # the temporary was moved into place
    tmp = s.tmp_path("g.bin")
    assert tmp.startswith("_tmp/g.bin.") and tmp.endswith(".part")
    with s.fs.open_output_stream(s.join(tmp)) as fh:
        fh.write(b"g")
    s.commit(tmp, "deep/g.bin")
    assert s.read_bytes("deep/g.bin") == b"g"
    s.delete("deep")
    s.delete("missing")  # quietly
    assert not s.exists("deep")


def test_s3_urls_are_checked():
    s = Store("s3://bucket/some/prefix/", "http://127.0.0.1:9000")
    assert s.url == "s3://bucket/some/prefix" and s.path == "bucket/some/prefix"
    assert not s.is_local
    assert Store("s3://bucket").path == "bucket"
    assert s.child("manifest.json").url == "s3://bucket/some/prefix/manifest.json"
    assert s.child("/abs").url == "s3://bucket/some/prefix/abs"  # never leaves for a local path
    assert s.join("/a", "", "b") == "bucket/some/prefix/a/b"
    with pytest.raises(UserError, match="no bucket"):
        Store("s3:///prefix")
    with pytest.raises(UserError, match="unsupported scheme 'gs'"):
        Store("gs://bucket/x")
    with pytest.raises(UserError, match="must not contain credentials"):
        Store("s3://key:secret@bucket/x")
    with pytest.raises(UserError, match="empty path"):
        Store("")


def test_endpoint_from_argument_else_environment(monkeypatch):
    monkeypatch.setenv(ENDPOINT_ENV, "http://127.0.0.1:9100")
    assert Store("s3://b/x").endpoint == "http://127.0.0.1:9100"
    assert Store("s3://b/x", "http://10.0.0.1:9000").endpoint == "http://10.0.0.1:9000"
    s = Store("s3://b/x", "http://10.0.0.1:9000")
    assert s.at("s3://c/y").endpoint == s.endpoint  # a sibling keeps the endpoint
    monkeypatch.delenv(ENDPOINT_ENV)
    assert Store("s3://b/x").endpoint is None
    with pytest.raises(UserError, match="expected http"):
        Store("s3://b/x", "ftp://host")


def test_no_credentials_in_repr_or_pickle(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    with pytest.raises(UserError, match="credentials") as err:
        Store("s3://b/x", "http://key:very-secret-value@127.0.0.1:9000")
    assert "very-secret-value" not in str(err.value)
    s = Store("s3://b/x", "http://127.0.0.1:9000")
    assert repr(s) == "Store(url='s3://b/x', endpoint='http://127.0.0.1:9000')"
    assert s.safe_url() == "s3://b/x"
    assert b"very-secret-value" not in pickle.dumps(s)


def test_pickle_round_trip_drops_the_file_system(tmp_path):
    s = Store(str(tmp_path), None)
    fs = s.fs
    assert s.fs is fs  # created once, then cached
    raw = pickle.dumps(s)
    assert b"LocalFileSystem" not in raw
    back = pickle.loads(raw)
    assert back == s and hash(back) == hash(s)
    assert back._fs is None  # re-created on first use in the receiving process
    assert back.fs is not fs and back.exists()
    s3 = Store("s3://bucket/p", "http://127.0.0.1:1")
    _ = s3.fs
    back = pickle.loads(pickle.dumps(s3))
    assert back == s3 and back._fs is None
