"""The real download code against a local HTTP server serving shared data files."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from geneinfer.errors import DataUnavailableError
from geneinfer.public_data import Source, download, fetch, register_source, unregister_source


class _Handler(SimpleHTTPRequestHandler):
    """Serves files; honours Range; ``mode`` can cut the body short or ignore Range."""

    mode = "normal"
    requests: ClassVar[list[tuple[str, str | None]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        type(self).requests.append((self.path, rng))
        path = Path(self.directory) / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if rng and type(self).mode != "ignore-range":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).mode == "cut":
            self.wfile.write(body[: len(body) // 3])  # then close: an interrupted transfer
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path, shared) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    for rel in ("genes/dgex_map_tg.txt", "genes/GPL96_annotation.tsv.gz"):
        shutil.copyfile(shared / rel, root / Path(rel).name)
    _Handler.mode = "normal"
    _Handler.requests = []

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(root), **kwargs)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_downloads_verifies_and_then_uses_the_cache(server, tmp_path):
    url, root = server
    src = Source("test_tg", "D-GEX targets via a local mirror", f"{url}/dgex_map_tg.txt",
                 "dgex_map_tg.txt", sha256=_sha(root / "dgex_map_tg.txt"), license="GPL-2",
                 homepage="https://github.com/uci-cbcl/D-GEX")
    register_source(src)
    try:
        cache = tmp_path / "cache"
        path = fetch("test_tg", cache_dir=cache, data_dir=None, progress=False)
        assert path == cache / "test_tg" / "dgex_map_tg.txt"
        assert path.read_bytes() == (root / "dgex_map_tg.txt").read_bytes()
        assert not path.with_name("dgex_map_tg.txt.part").exists()
        n = len(_Handler.requests)
        assert fetch("test_tg", cache_dir=cache, data_dir=None) == path
        assert len(_Handler.requests) == n  # served from the cache, no new request
    finally:
        unregister_source("test_tg")


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    url, _ = server
    dest = tmp_path / "out" / "GPL96_annotation.tsv.gz"
    with pytest.raises(DataUnavailableError, match=r"corrupt.*sha256"):
        download(f"{url}/GPL96_annotation.tsv.gz", dest, sha256="0" * 64, progress=False)
    assert list(dest.parent.iterdir()) == []


def test_interrupted_download_leaves_no_final_file_and_resumes(server, tmp_path):
    url, root = server
    want = root / "dgex_map_tg.txt"
    dest = tmp_path / "dgex_map_tg.txt"
    _Handler.mode = "cut"
    with pytest.raises(DataUnavailableError, match=r"interrupted|stopped after"):
        download(f"{url}/dgex_map_tg.txt", dest, sha256=_sha(want), progress=False)
    part = dest.with_name(dest.name + ".part")
    assert not dest.exists()
    assert 0 < part.stat().st_size < want.stat().st_size
    _Handler.mode = "normal"
    download(f"{url}/dgex_map_tg.txt", dest, sha256=_sha(want), progress=True)
    assert _Handler.requests[-1][1] == f"bytes={want.stat().st_size // 3}-"
    assert dest.read_bytes() == want.read_bytes() and not part.exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    url, root = server
    dest = tmp_path / "GPL96_annotation.tsv.gz"
    dest.with_name(dest.name + ".part").write_bytes(b"stale partial bytes")
    _Handler.mode = "ignore-range"
    download(f"{url}/GPL96_annotation.tsv.gz", dest, sha256=_sha(root / dest.name),
             progress=False)
    assert dest.read_bytes() == (root / dest.name).read_bytes()


def test_missing_file_and_unreachable_host_are_clear_errors(server, tmp_path):
    url, _ = server
    with pytest.raises(DataUnavailableError, match="HTTP 404"):
        download(f"{url}/nope.txt", tmp_path / "nope.txt", progress=False)
    register_source(Source("test_404", "missing", f"{url}/nope.txt", "nope.txt",
                           license="x", homepage="https://example.org"))
    try:
        with pytest.raises(DataUnavailableError) as err:
            fetch("test_404", cache_dir=tmp_path / "c", data_dir=tmp_path, progress=False)
        assert f"{url}/nope.txt" in str(err.value) and "save it as" in str(err.value)
    finally:
        unregister_source("test_404")
    with pytest.raises(DataUnavailableError, match="cannot reach"):
        download("http://127.0.0.1:9/x", tmp_path / "x", progress=False, timeout=5)
    assert not (tmp_path / "x").exists()
