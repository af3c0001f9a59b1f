"""The MovieLens downloader against a local HTTP server on 127.0.0.1 serving a test zip."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from pipelines.download import BASE_URL_ENV, download
from pipelines.prepare import PrepareConfig, prepare
from recsys.errors import UserError

FILES = {"ml-100k/u.data": "1\t2\t3\t881250949\n2\t2\t4\t881250950\n", "ml-100k/README": "hi\n"}


def make_zip(folder: Path, files: dict[str, str], md5: str | None = None) -> str:
    path = folder / "ml-100k.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    (folder / "ml-100k.zip.md5").write_text(f"{md5 or digest}  ml-100k.zip\n")
    return digest


@pytest.fixture
def server(tmp_path: Path, monkeypatch):
    """Serve tmp_path/www on 127.0.0.1; yields (folder, base_url)."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}/movielens/"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_and_unpacks(server, tmp_path):
    www, base = server
    (www / "movielens").mkdir()
    digest = make_zip(www / "movielens", FILES)
    out = tmp_path / "data" / "ml-100k"
    info = download("movielens-100k", out, base_url=base)
    assert info["md5"] == digest and info["files"] == ["README", "u.data"]
    assert (out / "u.data").read_text() == FILES["ml-100k/u.data"]  # top folder stripped
    assert json.loads((out / ".download.json").read_text())["md5"] == digest
    assert sorted(p.name for p in out.parent.iterdir()) == ["ml-100k"]  # no temp files left
    stats = prepare(PrepareConfig(format="movielens", input=out, out=tmp_path / "ds"))
    assert (stats["num_users"], stats["num_items"], stats["num_interactions"]) == (2, 1, 2)


def test_base_url_from_environment(server, tmp_path, monkeypatch):
    www, base = server
    (www / "movielens").mkdir()
    make_zip(www / "movielens", FILES)
    monkeypatch.setenv(BASE_URL_ENV, base)
    assert download("movielens-100k", tmp_path / "ml")["url"] == base + "ml-100k.zip"


def test_bad_checksum_writes_nothing(server, tmp_path):
    www, base = server
    (www / "movielens").mkdir()
    make_zip(www / "movielens", FILES, md5="0" * 32)
    out = tmp_path / "data" / "ml-100k"
    out.mkdir(parents=True)
    (out / "old.txt").write_text("keep me")
    with pytest.raises(
        UserError, match=r"checksum mismatch .* expected 0{32} .*nothing was written"
    ):
        download("movielens-100k", out, base_url=base)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["ml-100k"]
    with pytest.raises(UserError, match="checksum mismatch"):
        download("movielens-100k", tmp_path / "x", base_url=base, md5="f" * 32)


def test_missing_checksum_file(server, tmp_path):
    www, base = server
    (www / "movielens").mkdir()
    make_zip(www / "movielens", FILES)
    (www / "movielens" / "ml-100k.zip.md5").unlink()
    with pytest.raises(UserError, match=r"ml-100k.zip.md5: HTTP 404"):
        download("movielens-100k", tmp_path / "ml", base_url=base)


def test_unreachable_server_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        UserError, match=r"could not reach .*Are you offline\? Download the zip by hand"
    ):
        download("movielens-1m", tmp_path / "ml", base_url=f"http://127.0.0.1:{port}/", timeout=2)
    assert not (tmp_path / "ml").exists()


def test_unsafe_zip_member_refused(server, tmp_path):
    www, base = server
    (www / "movielens").mkdir()
    make_zip(www / "movielens", {"../evil.txt": "x"})
    with pytest.raises(UserError, match="unsafe member path"):
        download("movielens-100k", tmp_path / "ml", base_url=base)
    assert not (tmp_path / "evil.txt").exists()


def test_unknown_name(tmp_path):
    with pytest.raises(UserError, match="unknown data set 'movielens-7m'"):
        download("movielens-7m", tmp_path)
