"""The real download code against a local HTTP server that misbehaves on demand."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import os
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from geneinfer.cli import main
from geneinfer.errors import DataUnavailableError
from geneinfer.public_data import Source, download, fetch, register_source, unregister_source
from geneinfer.public_data.download import _SafeRedirects, check_redirect

TG = "dgex_map_tg.txt"
GPL = "GPL96_annotation.tsv.gz"


class _Handler(SimpleHTTPRequestHandler):
    """Serves files with ETag / Last-Modified, honours Range and If-Range, and misbehaves.

    ``modes`` is a queue: each request takes the next mode ("normal" once it is empty):
    cut (a third of the body, then close), no-length (close-delimited body), no-length-cut,
    chunked, chunked-cut (no final chunk), slow (half, then wait for ``release``),
    ignore-range, ignore-if-range, 206-from-zero, 206-elsewhere (a range starting at half the
    byte asked for), 416.
    """

    protocol_version = "HTTP/1.1"
    modes: ClassVar[list[str]] = []
    requests: ClassVar[list[dict[str, str | None]]] = []
    validators: ClassVar[bool] = True
    goog_md5: ClassVar[str | None] = None
    half_sent: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        cls = type(self)
        mode = cls.modes.pop(0) if cls.modes else "normal"
        cls.requests.append({"path": self.path, "range": self.headers.get("Range"),
                             "if_range": self.headers.get("If-Range"), "mode": mode})
        self.close_connection = True
        if self.path.startswith("/to-ftp/"):
            self._empty(302, Location="ftp://127.0.0.1/x")
            return
        path = Path(self.directory) / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        modified = email.utils.formatdate(path.stat().st_mtime, usegmt=True)
        start = self._range_start(mode, etag, modified)
        if start is not None and (mode == "416" or start >= len(data)):
            self._empty(416, **{"Content-Range": f"bytes */{len(data)}", "ETag": etag})
            return
        self._respond(mode, data, start, etag, modified)

    def _range_start(self, mode: str, etag: str, modified: str) -> int | None:
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        if rng is None or mode == "ignore-range":
            return None
        if if_range is not None and mode != "ignore-if-range" and if_range not in (etag, modified):
            return None  # RFC 9110: the file changed, so send it whole
        return int(rng.removeprefix("bytes=").split("-")[0])

    def _respond(
        self, mode: str, data: bytes, start: int | None, etag: str, modified: str
    ) -> None:
        body, first = (data, 0) if start is None else (data[start:], start)
        if start is not None and mode in ("206-from-zero", "206-elsewhere"):
            first = 0 if mode == "206-from-zero" else start // 2
            body = data[first:]
        self.send_response(200 if start is None else 206)
        if start is not None:
            self.send_header("Content-Range", f"bytes {first}-{first + len(body) - 1}/{len(data)}")
        if type(self).validators:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
        if type(self).goog_md5:
            self.send_header("X-Goog-Hash", f"crc32c=AAAAAA==,md5={type(self).goog_md5}")
        self.send_header("Connection", "close")
        self._send_body(mode, body)

    def _send_body(self, mode: str, body: bytes) -> None:
        if mode.startswith("chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            sent = body if mode == "chunked" else body[: len(body) // 2]
            for i in range(0, len(sent), 4096):
                piece = sent[i:i + 4096]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            if mode == "chunked":
                self.wfile.write(b"0\r\n\r\n")
            return
        if not mode.startswith("no-length"):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode in ("cut", "no-length-cut"):
            self.wfile.write(body[: len(body) // 3])  # then close: an interrupted transfer
        elif mode == "slow":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            type(self).half_sent.set()
            type(self).release.wait(10)
            self.wfile.write(body[len(body) // 2:])
        else:
            self.wfile.write(body)

    def _empty(self, code: int, **headers: str) -> None:
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()


@pytest.fixture
def server(tmp_path, shared) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    for rel in (f"genes/{TG}", f"genes/{GPL}"):
        shutil.copyfile(shared / rel, root / Path(rel).name)
    _Handler.modes, _Handler.requests = [], []
    _Handler.validators, _Handler.goog_md5 = True, None
    _Handler.half_sent, _Handler.release = threading.Event(), threading.Event()

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(root), **kwargs)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        _Handler.release.set()
        httpd.shutdown()
        httpd.server_close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_fetch_downloads_verifies_and_then_uses_the_cache(server, tmp_path):
    url, root = server
    src = Source("test_tg", "D-GEX targets via a local mirror", f"{url}/{TG}", TG,
                 sha256=_sha(root / TG), license="GPL-2",
                 homepage="https://github.com/uci-cbcl/D-GEX")
    register_source(src)
    try:
        cache = tmp_path / "cache"
        path = fetch("test_tg", cache_dir=cache, data_dir=None, progress=False)
        assert path == cache / "test_tg" / TG
        assert path.read_bytes() == (root / TG).read_bytes()
        assert _leftovers(path.parent) == [TG]  # no .part, .part.json or .lock left
        n = len(_Handler.requests)
        assert fetch("test_tg", cache_dir=cache, data_dir=None) == path
        assert len(_Handler.requests) == n  # served from the cache, no new request
    finally:
        unregister_source("test_tg")


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"sha256": "0" * 64}, r"corrupt \(sha256 [0-9a-f]{64}, published 0{64}\)"),
    ({"md5": "0" * 32}, r"corrupt \(md5 [0-9a-f]{32}, published 0{32}\)"),
    ({"size": 123}, r"corrupt \(size 198829 bytes, expected 123\)"),
])
def test_checksum_or_size_mismatch_raises_and_leaves_no_file(server, tmp_path, kwargs, problem):
    url, _ = server
    dest = tmp_path / "out" / GPL
    with pytest.raises(DataUnavailableError, match=problem):
        download(f"{url}/{GPL}", dest, progress=False, **kwargs)
    assert _leftovers(dest.parent) == []


def test_interrupted_download_leaves_no_final_file_and_resumes(server, tmp_path):
    url, root = server
    want = root / TG
    dest = tmp_path / TG
    _Handler.modes = ["cut"]
    with pytest.raises(DataUnavailableError, match=r"stopped after .*run the same command again"):
        download(f"{url}/{TG}", dest, sha256=_sha(want), progress=False)
    assert not dest.exists()
    assert 0 < _part(dest).stat().st_size < want.stat().st_size
    assert dest.with_name(TG + ".part.json").is_file()  # the ETag to resume with
    download(f"{url}/{TG}", dest, sha256=_sha(want), progress=True)
    last = _Handler.requests[-1]
    assert last["range"] == f"bytes={want.stat().st_size // 3}-"
    assert last["if_range"] == f'"{hashlib.md5(want.read_bytes()).hexdigest()}"'
    assert dest.read_bytes() == want.read_bytes() and _leftovers(tmp_path) == [TG, "www"]


def test_a_part_that_cannot_be_resumed_safely_is_not_kept(server, tmp_path):
    url, _ = server
    _Handler.validators = False  # no ETag, no Last-Modified: a resume could splice two files
    _Handler.modes = ["cut"]
    with pytest.raises(DataUnavailableError, match=r"no ETag or Last-Modified .* deleted"):
        download(f"{url}/{TG}", tmp_path / "out" / TG, progress=False)
    assert _leftovers(tmp_path / "out") == []


def test_body_without_length_cut_in_half_never_becomes_the_file(server, tmp_path):
    url, root = server
    dest = tmp_path / "out" / TG
    _Handler.validators = False
    _Handler.modes = ["no-length-cut"]
    with pytest.raises(DataUnavailableError, match=r"without a length .* nothing was saved"):
        download(f"{url}/{TG}", dest, progress=False)
    assert _leftovers(dest.parent) == []
    # With an ETag geneinfer asks for the bytes after the body, learns the real length from
    # the 206's Content-Range, and so knows the second cut is a cut too.
    _Handler.validators = True
    _Handler.modes = ["no-length-cut", "no-length-cut"]
    with pytest.raises(DataUnavailableError, match=r"stopped after \d+ of 384997 bytes"):
        download(f"{url}/{TG}", dest, progress=False)
    assert not dest.exists() and _part(dest).is_file()
    download(f"{url}/{TG}", dest, progress=False)
    assert dest.read_bytes() == (root / TG).read_bytes()


def test_body_without_length_is_kept_only_when_a_416_or_a_checksum_confirms_it(server, tmp_path):
    url, root = server
    size = (root / TG).stat().st_size
    _Handler.modes = ["no-length"]
    download(f"{url}/{TG}", tmp_path / "a" / TG, progress=False)  # no checksum at all
    assert [r["range"] for r in _Handler.requests] == [None, f"bytes={size}-"]  # 416 */size
    assert (tmp_path / "a" / TG).read_bytes() == (root / TG).read_bytes()
    _Handler.validators = False
    _Handler.modes = ["no-length"]
    download(f"{url}/{TG}", tmp_path / "b" / TG, sha256=_sha(root / TG), progress=False)
    assert (tmp_path / "b" / TG).read_bytes() == (root / TG).read_bytes()
    _Handler.modes = ["no-length"]
    with pytest.raises(DataUnavailableError, match="cannot be told from a cut one"):
        download(f"{url}/{TG}", tmp_path / "c" / TG, progress=False)
    assert _leftovers(tmp_path / "c") == []


def test_chunked_body_is_kept_only_with_its_final_chunk(server, tmp_path):
    url, root = server
    _Handler.validators = False
    _Handler.modes = ["chunked"]
    download(f"{url}/{TG}", tmp_path / "a" / TG, progress=False)
    assert (tmp_path / "a" / TG).read_bytes() == (root / TG).read_bytes()
    _Handler.modes = ["chunked-cut"]
    with pytest.raises(DataUnavailableError, match=r"interrupted after \d+ bytes.*IncompleteRead"):
        download(f"{url}/{TG}", tmp_path / "b" / TG, progress=False)
    assert _leftovers(tmp_path / "b") == []


@pytest.mark.parametrize("mode", ["normal", "ignore-if-range"])
def test_resume_after_the_file_changed_gives_the_new_file_not_a_splice(server, tmp_path, mode):
    url, root = server
    dest = tmp_path / TG
    old = (root / TG).read_bytes()
    _Handler.modes = ["cut"]
    with pytest.raises(DataUnavailableError):
        download(f"{url}/{TG}", dest, progress=False)
    new = b"gene\tid\n" + old[::-1]  # same file name, new content, new length
    (root / TG).write_bytes(new)
    # normal: If-Range no longer matches, the server sends the new file whole (200).
    # ignore-if-range: a broken server sends a 206 of the new file; its ETag and total differ.
    _Handler.modes = [mode]
    download(f"{url}/{TG}", dest, progress=False)  # no checksum: transport checks alone
    assert dest.read_bytes() == new
    assert _Handler.requests[-1]["range"] == (None if mode == "ignore-if-range" else
                                              f"bytes={len(old) // 3}-")


@pytest.mark.parametrize("mode", ["206-from-zero", "206-elsewhere", "ignore-range"])
def test_a_resume_answered_from_the_wrong_byte_restarts_cleanly(server, tmp_path, mode):
    url, root = server
    dest = tmp_path / GPL
    _Handler.modes = ["cut"]
    with pytest.raises(DataUnavailableError):
        download(f"{url}/{GPL}", dest, progress=False)
    _Handler.modes = [mode]
    download(f"{url}/{GPL}", dest, progress=False)
    assert dest.read_bytes() == (root / GPL).read_bytes()
    assert _leftovers(tmp_path) == [GPL, "www"]


def test_416_to_a_stale_part_restarts_from_zero(server, tmp_path):
    url, root = server
    dest = tmp_path / TG
    _Handler.modes = ["cut"]
    with pytest.raises(DataUnavailableError):
        download(f"{url}/{TG}", dest, progress=False)
    _part(dest).write_bytes(b"x" * 123)  # stale: not the first 123 bytes of the file
    _Handler.modes = ["416"]
    download(f"{url}/{TG}", dest, progress=False)
    assert [r["range"] for r in _Handler.requests[-2:]] == ["bytes=123-", None]
    assert dest.read_bytes() == (root / TG).read_bytes()
    # A .part with nothing stored about it (e.g. from an older geneinfer) is not resumed.
    dest.unlink()
    _part(dest).write_bytes(b"x" * 123)
    download(f"{url}/{TG}", dest, progress=False)
    assert _Handler.requests[-1]["range"] is None
    assert dest.read_bytes() == (root / TG).read_bytes()


def test_the_md5_the_server_declares_is_checked(server, tmp_path):
    url, root = server
    digest = hashlib.md5((root / TG).read_bytes()).digest()
    _Handler.validators = False
    _Handler.goog_md5 = base64.b64encode(digest).decode()
    _Handler.modes = ["no-length"]  # no length either: the declared MD5 alone vouches for it
    download(f"{url}/{TG}", tmp_path / "a" / TG, progress=False)
    assert (tmp_path / "a" / TG).read_bytes() == (root / TG).read_bytes()
    _Handler.goog_md5 = base64.b64encode(bytes(16)).decode()
    with pytest.raises(DataUnavailableError, match=r"md5 [0-9a-f]{32}, declared by the server"):
        download(f"{url}/{TG}", tmp_path / "b" / TG, progress=False)
    assert _leftovers(tmp_path / "b") == []


def test_redirect_policy_refuses_https_to_http_and_other_schemes():
    check_redirect("https://a.org/x", "https://b.org/y")
    check_redirect("http://a.org/x", "https://a.org/x")
    check_redirect("http://a.org/x", "http://b.org/x")
    for src, dst in [("https://a.org/x", "http://a.org/x"), ("HTTPS://a.org/x", "HTTP://a.org/x"),
                     ("http://a.org/x", "ftp://a.org/x"), ("https://a.org/x", "file:///etc/passwd")]:
        with pytest.raises(DataUnavailableError) as err:
            check_redirect(src, dst)
        assert str(err.value).startswith(f"refused the redirect from {src} to {dst}:")
        assert "\n" not in str(err.value)
    # The handler urllib uses applies the policy (and closes the redirect's body).
    fp = io.BytesIO(b"moved")
    req = urllib.request.Request("https://a.org/x")
    with pytest.raises(DataUnavailableError, match="refused the redirect"):
        _SafeRedirects().redirect_request(req, fp, 302, "Found", {}, "http://a.org/x")
    assert fp.closed


def test_a_redirect_off_http_is_refused_end_to_end(server, tmp_path):
    url, _ = server
    with pytest.raises(DataUnavailableError, match=r"refused the redirect .* to ftp://"):
        download(f"{url}/to-ftp/{TG}", tmp_path / TG, progress=False)
    assert _leftovers(tmp_path) == ["www"]


def test_a_second_fetch_of_the_same_file_exits_2_naming_the_holder(
    server, tmp_path, capsys, monkeypatch
):
    url, root = server
    monkeypatch.delenv("GENEINFER_OFFLINE", raising=False)
    cache, empty = tmp_path / "cache", tmp_path / "empty"
    empty.mkdir()
    register_source(Source("test_slow", "slow mirror", f"{url}/{TG}", TG, license="x",
                           homepage="https://example.org"))
    _Handler.modes = ["slow"]
    errors: list[BaseException] = []

    def first() -> None:
        try:
            fetch("test_slow", cache_dir=cache, data_dir=empty, progress=False)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert _Handler.half_sent.wait(10)
        argv = ["data", "fetch", "test_slow", "--cache-dir", str(cache), "--data-dir", str(empty)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        dest = cache / "test_slow" / TG
        assert err == (f"geneinfer: error: another geneinfer process (pid {os.getpid()}) is "
                       f"downloading {dest}; wait for it or stop it\n")
    finally:
        _Handler.release.set()
        thread.join(10)
        unregister_source("test_slow")
    assert errors == [] and dest.read_bytes() == (root / TG).read_bytes()
    assert len(_Handler.requests) == 1 and _leftovers(dest.parent) == [TG]


def test_missing_file_bad_url_unreachable_host_and_bad_folder_are_clear_errors(server, tmp_path):
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
    with pytest.raises(DataUnavailableError, match="only ASCII http"):
        download(f"{url}/GSE١٢٣", tmp_path / "x", progress=False)
    with pytest.raises(DataUnavailableError, match="cannot reach"):
        download("http://127.0.0.1:9/x", tmp_path / "x", progress=False, timeout=5)
    assert not (tmp_path / "x").exists()
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(DataUnavailableError, match=r"^cannot write .*a_file"):
        download(f"{url}/{TG}", tmp_path / "a_file" / TG, progress=False)
