"""Find public data locally or download it into a cache, safely.

Look-up order for :func:`fetch`: the data folder (:func:`resolve_data_dir`: the
``data_dir`` argument / ``--data-dir``, else the ``GENEINFER_DATA_DIR`` environment variable),
then the cache (``cache_dir``, ``GENEINFER_CACHE`` or ``~/.cache/geneinfer``), then a
download. ``GENEINFER_OFFLINE=1`` forbids downloading.

How :func:`download` makes sure nothing wrong ends up under the final name:

* **One writer.** The download holds :func:`geneinfer.utils.locks.exclusive_lock` on the final
  name; a second download of the same file fails at once, naming the holder's pid.
* **Only complete files.** Bytes stream into ``<file>.part``, which is renamed to ``<file>``
  only once complete: a published ``sha256`` / ``md5`` / ``size`` (registry) and the MD5 the
  server declares for the whole file (``X-Goog-Hash`` from Google Cloud Storage, or
  ``Content-MD5``) must all match. Without any checksum, the length must be certain: exactly
  ``Content-Length`` bytes (``Content-Range``'s total on a resume), or a chunked body that
  ended with its final zero-length chunk. A body that just stops (no length, not chunked)
  may have been cut, so geneinfer asks the server for the bytes after it: a 416 that states
  exactly that length confirms the file, a 206 carries on; if the server cannot say, nothing
  is saved.
* **Safe resumes.** The first response's ``ETag`` (else ``Last-Modified``) is stored in
  ``<file>.part.json``. The next run asks for the rest with ``Range`` *and* ``If-Range``, so a
  file that changed on the server comes back whole (200) and replaces the ``.part``. A 206
  must start at the byte asked for and carry the same total and validator, else the download
  starts again from byte 0; so does a 416 to a stale ``.part``. A ``.part`` is kept after a
  failure only if the server gave a validator to resume it with; otherwise it is deleted.
* **No downgrade.** Redirects from https to http, or to any scheme but http(s), are refused.

Every failure is a one-line :class:`~geneinfer.errors.DataUnavailableError`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from geneinfer import __version__
from geneinfer.errors import DataUnavailableError
from geneinfer.public_data.registry import ResolvedSource, get_source, list_sources
from geneinfer.utils.files import atomic_path
from geneinfer.utils.locks import exclusive_lock

log = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = f"geneinfer/{__version__} (+https://pypi.org/project/geneinfer)"


def default_cache_dir() -> Path:
    """``$GENEINFER_CACHE`` or ``~/.cache/geneinfer``."""
    env = os.environ.get("GENEINFER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geneinfer"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The data folder every command reads public tables from, or None.

    ``data_dir`` (``--data-dir``) if given, else ``$GENEINFER_DATA_DIR`` (empty means none).
    A folder that does not exist is an error naming where it came from. Files not found in
    the data folder are looked up in the cache (:func:`default_cache_dir`) and downloaded.
    """
    if data_dir is not None and str(data_dir) != "":
        path, origin = Path(data_dir).expanduser(), "--data-dir"
    else:
        env = os.environ.get("GENEINFER_DATA_DIR", "")
        if not env:
            return None
        path, origin = Path(env).expanduser(), "GENEINFER_DATA_DIR"
    if not path.is_dir():
        raise DataUnavailableError(f"data folder {path} (from {origin}) does not exist")
    return path


def _offline() -> bool:
    return os.environ.get("GENEINFER_OFFLINE", "").lower() in ("1", "true", "yes")


def _resolve(name: str, accession: str | None) -> ResolvedSource:
    return get_source(name).resolve(accession)


def _cache_path(res: ResolvedSource, cache_dir: str | os.PathLike[str] | None) -> Path:
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / res.name / res.filename


#: Files shipped inside the package (small real data and gene lists, see its README.md).
EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "_embedded"


def embedded_path(filename: str) -> Path:
    """A file shipped in the package's ``_embedded`` folder."""
    return EMBEDDED_DIR / filename


def locate(
    name: str,
    *,
    accession: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path | None:
    """The local path of a registered source, or ``None``: the data folder first, then the
    cache, then a copy shipped with the package."""
    res = _resolve(name, accession)
    ddir = resolve_data_dir(data_dir)
    if ddir is not None:
        for rel in res.local_paths:
            candidate = ddir / rel
            if candidate.is_file():
                return candidate
    cached = _cache_path(res, cache_dir)
    if cached.is_file():
        return cached
    if res.embedded and embedded_path(res.embedded).is_file():
        return embedded_path(res.embedded)
    return None


def locate_registered_file(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[str, Path | None] | None:
    """A fixed registry entry known by its source name or by its file name
    (``human_gene_v2.latest.h5``): ``(source name, local path or None)``; None when no
    entry has that name."""
    for src in list_sources():
        if src.parametrised:
            continue
        if name in (src.name, src.filename):
            return src.name, locate(src.name, data_dir=data_dir, cache_dir=cache_dir)
    return None


def _unavailable(res: ResolvedSource, cached: Path, why: str) -> DataUnavailableError:
    where = f"download {res.url}" if res.url else f"get {res.filename} from {res.homepage}"
    local = (f" or as {res.local_paths[0]} in a folder given by --data-dir / GENEINFER_DATA_DIR"
             if res.local_paths else "")
    return DataUnavailableError(
        f"data source {res.name!r} is not available ({why}): {where} and save it as "
        f"{cached}{local}"
    )


def fetch(
    name: str,
    *,
    accession: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    offline: bool | None = None,
) -> Path:
    """Path to a registered source, downloading it into the cache if needed.

    ``offline=True`` (default: the ``GENEINFER_OFFLINE`` environment variable) never
    downloads.

    Raises
    ------
    DataUnavailableError
        If the file is neither in the data folder nor cached and cannot be downloaded
        (offline, no public URL, network error, checksum mismatch). The message says which
        file to get from where and where to put it.
    geneinfer.utils.locks.LockHeldError
        If another geneinfer process is downloading the same file (the message names its pid).
    """
    found = locate(name, accession=accession, data_dir=data_dir, cache_dir=cache_dir)
    if found is not None:
        return found
    res = _resolve(name, accession)
    cached = _cache_path(res, cache_dir)
    if res.url is None:
        raise _unavailable(res, cached, "it has no public download URL")
    if offline or (offline is None and _offline()):
        raise _unavailable(res, cached, "not downloaded: offline mode")
    try:
        return download(
            res.url, cached, sha256=res.sha256, md5=res.md5, size=res.size, progress=progress
        )
    except DataUnavailableError as exc:
        raise _unavailable(res, cached, str(exc)) from exc


# ---------------------------------------------------------------------------- what we know


@dataclass(frozen=True)
class _ServerFile:
    """What the server said about the file in the response that started the ``.part``.

    Stored as JSON in ``<file>.part.json`` so that a later run resumes only the same file.
    """

    url: str
    etag: str | None = None
    last_modified: str | None = None
    total: int | None = None  # length of the whole file in bytes
    md5: str | None = None  # hex MD5 of the whole file, as the server declared it

    @property
    def validator(self) -> str | None:
        """The ``If-Range`` value, or ``None`` when a resume cannot be made safe."""
        # If-Range takes only a strong validator (RFC 9110, 13.1.5): never a weak ETag.
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    @classmethod
    def from_json(cls, text: str) -> _ServerFile | None:
        """Parse a sidecar file; ``None`` if it is not one this version wrote."""
        try:
            data = json.loads(text)
        except ValueError:
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != names or not isinstance(data["url"], str):
            return None
        strings_ok = all(data[k] is None or isinstance(data[k], str)
                         for k in ("etag", "last_modified", "md5"))
        total = data["total"]
        total_ok = total is None or (type(total) is int and total >= 0)
        return cls(**data) if strings_ok and total_ok else None


@dataclass(frozen=True)
class _Outcome:
    """The ``.part`` after a request: ``complete`` when its length is known to be right."""

    server: _ServerFile
    complete: bool


class _Restart(Exception):
    """A resume cannot go on (its message says why); start again from byte 0."""


class _Unsatisfiable(Exception):
    """HTTP 416 to a resume; carries the response headers."""

    def __init__(self, headers: Message) -> None:
        super().__init__("HTTP 416")
        self.headers = headers


class _Interrupted(Exception):
    """Reading the body failed after ``written`` bytes of the ``.part``."""

    def __init__(self, written: int, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.written = written


def _int_header(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


_CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+|\*)", re.ASCII)
_UNSATISFIED_RANGE = re.compile(r"bytes \*/([0-9]+)", re.ASCII)


def _content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``Content-Range: bytes START-END/TOTAL`` as numbers (TOTAL may be ``*``: None)."""
    m = _CONTENT_RANGE.fullmatch((value or "").strip())
    if not m:
        return None
    return int(m[1]), int(m[2]), None if m[3] == "*" else int(m[3])


def _declared_md5(headers: Message) -> str | None:
    """The MD5 of the whole file as the server declares it (hex), or ``None``.

    Google Cloud Storage (GTEx, HGNC) sends ``X-Goog-Hash: crc32c=...,md5=<base64>``; other
    servers may send ``Content-MD5`` (RFC 1864). Both describe the stored bytes, so they are
    ignored when a content coding is involved (``Content-Encoding``, or GCS transcoding an
    object stored compressed, ``X-Goog-Stored-Content-Encoding``).
    """
    for name in ("Content-Encoding", "X-Goog-Stored-Content-Encoding"):
        if (headers.get(name) or "identity").strip().lower() != "identity":
            return None
    values = [item.strip()[4:] for header in headers.get_all("X-Goog-Hash") or []
              for item in header.split(",") if item.strip().lower().startswith("md5=")]
    values.append(headers.get("Content-MD5") or "")
    for value in values:
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 16:
            return raw.hex()
    return None


def _server_file(resp: http.client.HTTPResponse, url: str) -> _ServerFile:
    """What a 200 response says about the whole file."""
    h = resp.headers
    return _ServerFile(url=url, etag=h.get("ETag"), last_modified=h.get("Last-Modified"),
                       total=_int_header(h.get("Content-Length")), md5=_declared_md5(h))


def _changed(server: _ServerFile, headers: Message, total: int | None) -> bool:
    """True if a response's total or validator differs from the ``.part``'s."""
    etag, modified = headers.get("ETag"), headers.get("Last-Modified")
    return (
        (None not in (server.total, total) and total != server.total)
        or (None not in (server.etag, etag) and etag != server.etag)
        or (server.etag is None and None not in (server.last_modified, modified)
            and modified != server.last_modified)
    )


# ---------------------------------------------------------------------------- the .part files


def _partial_paths(dest: Path) -> tuple[Path, Path]:
    """``<dest>.part`` (the bytes) and ``<dest>.part.json`` (what the server said)."""
    return dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")


def _discard(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _load_state(part: Path, state: Path, url: str) -> _ServerFile | None:
    """The facts of a ``.part`` that can be resumed; otherwise delete it and return None."""
    server = None
    if part.is_file() and part.stat().st_size and state.is_file():
        server = _ServerFile.from_json(state.read_text(encoding="utf-8", errors="replace"))
    if server is None or server.url != url or server.validator is None:
        if part.exists():
            log.info("deleting %s: nothing tells whether it is part of the file at %s", part, url)
        _discard(part, state)
        return None
    return server


def _save_state(state: Path, server: _ServerFile) -> None:
    with atomic_path(state, suffix=".json") as tmp:
        tmp.write_text(json.dumps(dataclasses.asdict(server)), encoding="utf-8")


# ---------------------------------------------------------------------------- HTTP


def check_redirect(from_url: str, to_url: str) -> None:
    """Refuse a redirect that gives up https or leaves http(s).

    Raises
    ------
    DataUnavailableError
        If ``from_url`` is https and ``to_url`` is not, or ``to_url`` is not http(s) at all
        (``ftp:``, ``file:``, ...). The message is one line naming both URLs.
    """
    src, dst = urlsplit(from_url).scheme.lower(), urlsplit(to_url).scheme.lower()
    if dst not in ("http", "https") or (src == "https" and dst != "https"):
        raise DataUnavailableError(
            f"refused the redirect from {from_url} to {to_url}: geneinfer downloads only "
            "over http(s) and never drops from https to an unencrypted connection"
        )


class _SafeRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirect handling, with :func:`check_redirect` applied to every hop."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
        headers: Message, newurl: str,
    ) -> urllib.request.Request | None:
        try:
            check_redirect(req.full_url, newurl)
        except DataUnavailableError:
            fp.close()
            raise
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SafeRedirects)


def _check_url(url: str) -> None:
    if not url.isascii() or urlsplit(url).scheme.lower() not in ("http", "https"):
        raise DataUnavailableError(
            f"cannot download {url!r}: only ASCII http://, https:// and file:// URLs are supported"
        )


def _request(
    url: str, offset: int, server: _ServerFile | None, timeout: float
) -> http.client.HTTPResponse:
    """GET ``url``, from byte ``offset`` when resuming (then only if unchanged: If-Range)."""
    # identity: the bytes on disk must be the file's bytes, not a compressed transfer of them.
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset and server is not None and server.validator is not None:
        headers.update({"Range": f"bytes={offset}-", "If-Range": server.validator})
    try:
        return _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and "Range" in headers:
            raise _Unsatisfiable(exc.headers) from None
        raise DataUnavailableError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataUnavailableError(f"cannot reach {url}: {reason}") from exc
    except ValueError as exc:  # malformed URL (http.client.InvalidURL, control characters)
        raise DataUnavailableError(f"cannot download {url!r}: {exc}") from exc


# ---------------------------------------------------------------------------- one request


def _attempt(
    url: str, part: Path, state: Path, server: _ServerFile | None, *, timeout: float,
    progress: bool,
) -> _Outcome:
    """One request: resume ``part`` when ``server`` is given, else fetch from byte 0."""
    offset = part.stat().st_size if server is not None else 0
    try:
        resp = _request(url, offset, server, timeout)
    except _Unsatisfiable as exc:
        assert server is not None  # a 416 is only taken as such for a resume
        return _confirm_complete(server, offset, exc.headers)
    with resp:
        if resp.status == 206:
            server = _check_resume(resp, url, offset, server)
        elif resp.status == 200:
            if offset:
                log.info("%s was sent whole (changed on the server, or no resume); restarting",
                         url)
            offset, server = 0, _restart(resp, url, part, state)
        else:
            raise DataUnavailableError(f"unexpected HTTP {resp.status} {resp.reason} for {url}")
        return _stream(resp, part, state, server, offset=offset, url=url, progress=progress)


def _restart(resp: http.client.HTTPResponse, url: str, part: Path, state: Path) -> _ServerFile:
    """Start the ``.part`` afresh from a 200 response; store its validators if it has any."""
    server = _server_file(resp, url)
    _discard(part, state)
    if server.validator is not None:
        _save_state(state, server)
    return server


def _confirm_complete(server: _ServerFile, offset: int, headers: Message) -> _Outcome:
    """A 416 to a resume: complete if it states the ``.part``'s exact length, else stale."""
    m = _UNSATISFIED_RANGE.fullmatch((headers.get("Content-Range") or "").strip())
    total = int(m[1]) if m else None
    if total == offset and not _changed(server, headers, total):
        return _Outcome(dataclasses.replace(server, total=total), complete=True)
    raise _Restart(f"the server refused to resume at byte {offset} (HTTP 416): stale .part")


def _check_resume(
    resp: http.client.HTTPResponse, url: str, offset: int, server: _ServerFile | None
) -> _ServerFile:
    """Accept a 206 only if it continues this very file at byte ``offset``."""
    if server is None:
        raise DataUnavailableError(f"the server sent part of {url} (HTTP 206) unasked")
    rng = _content_range(resp.headers.get("Content-Range"))
    if rng is None or rng[0] != offset:
        got = "no Content-Range" if rng is None else f"byte {rng[0]}"
        raise _Restart(f"the server resumed at {got} instead of byte {offset}")
    start, end, total = rng
    length = _int_header(resp.headers.get("Content-Length"))
    if _changed(server, resp.headers, total) or (total is not None and end >= total):
        raise _Restart("the file changed on the server since the .part was started")
    if length is not None and length != end - start + 1:
        raise _Restart("the server's Content-Length does not match its Content-Range")
    return server if total is None else dataclasses.replace(server, total=total)


def _stream(
    resp: http.client.HTTPResponse, part: Path, state: Path, server: _ServerFile, *,
    offset: int, url: str, progress: bool,
) -> _Outcome:
    """Write the body into ``part`` from ``offset``; say whether the result is complete."""
    rng = _content_range(resp.headers.get("Content-Range")) if offset else None
    length = _int_header(resp.headers.get("Content-Length"))
    expected = rng[1] + 1 if rng else (None if length is None else offset + length)
    total = server.total or expected
    resumable = server.validator is not None
    try:
        try:
            written = _copy_body(resp, part, offset, total, progress)
        except _Interrupted as exc:
            raise _cut(url, exc.written, total, resumable, str(exc)) from exc
        if expected is not None and written > expected:
            part.unlink()  # more bytes than announced: nothing in it can be trusted
            raise DataUnavailableError(f"the server sent more of {url} than it announced")
        if total is not None and written < total:  # cut short, or a shorter range than asked
            raise _cut(url, written, total, resumable)
    except BaseException:
        if resumable and part.is_file():
            log.warning("download of %s stopped; %s is kept for resuming", url, part)
        else:
            _discard(part, state)
        raise
    # Complete when the whole file's stated length was reached, or a chunked body ended with
    # its final zero-size chunk (http.client raises IncompleteRead when that chunk is missing).
    # A 206 whose Content-Range total is "*" states no whole length: not complete.
    if server.total is not None:
        return _Outcome(server, complete=written == server.total)
    return _Outcome(server, complete=bool(resp.chunked) and offset == 0)


def _cut(
    url: str, written: int, total: int | None, resumable: bool, why: str | None = None
) -> DataUnavailableError:
    stopped = f"stopped after {written} of {total} bytes" if total else (
        f"was interrupted after {written} bytes")
    if why:
        stopped += f" ({why})"
    then = ("run the same command again to resume" if resumable else
            "the server gives no ETag or Last-Modified to resume it safely, so the partial "
            "file was deleted; try again")
    return DataUnavailableError(f"download of {url} {stopped}; {then}")


def _copy_body(
    resp: http.client.HTTPResponse, part: Path, offset: int, total: int | None, progress: bool
) -> int:
    """Append the body to ``part`` (which holds ``offset`` bytes); return its new size."""
    written = offset
    bar = tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
        desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
    )
    with open(part, "ab" if offset else "wb") as out, bar:
        while True:
            try:
                chunk = resp.read(CHUNK)
            except (http.client.HTTPException, OSError) as exc:  # IncompleteRead, reset, timeout
                raise _Interrupted(written, exc) from exc
            if not chunk:
                return written
            out.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))


# ---------------------------------------------------------------------------- whole download


def _resume_or_restart(
    url: str, part: Path, state: Path, server: _ServerFile | None, *, timeout: float,
    progress: bool,
) -> _Outcome:
    """Resume ``part`` if ``server`` is given; if that fails cleanly, once from byte 0."""
    if server is not None:
        try:
            return _attempt(url, part, state, server, timeout=timeout, progress=progress)
        except _Restart as why:
            log.warning("%s: %s; downloading it again from the start", url, why)
            _discard(part, state)
    return _attempt(url, part, state, None, timeout=timeout, progress=progress)


def _fetch_into(url: str, part: Path, state: Path, *, timeout: float, progress: bool) -> _Outcome:
    """Download (or resume) into ``part``: at most four requests, never a loop."""
    server = _load_state(part, state, url)
    outcome = _resume_or_restart(url, part, state, server, timeout=timeout, progress=progress)
    if not outcome.complete and outcome.server.validator is not None and part.stat().st_size:
        # The body just stopped, with no length to check it by: ask for the bytes after it.
        # A 416 that states this very length confirms the file; a 206 carries on.
        outcome = _resume_or_restart(url, part, state, outcome.server, timeout=timeout,
                                     progress=progress)
    return outcome


def _file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(
    part: Path, url: str, *, sha256: str | None, md5: str | None, size: int | None,
    declared_md5: str | None = None,
) -> None:
    """Raise if the size or a checksum differs from the published / declared one."""
    actual = part.stat().st_size
    problems = [f"size {actual} bytes, expected {size}"] if size not in (None, actual) else []
    digests: dict[str, str] = {}
    for algo, want, whose in (("sha256", sha256, "published"), ("md5", md5, "published"),
                              ("md5", declared_md5, "declared by the server")):
        if want and not problems:
            got = digests.setdefault(algo, _file_digest(part, algo))
            if got != want.lower():
                problems.append(f"{algo} {got}, {whose} {want}")
    if problems:
        raise DataUnavailableError(
            f"download of {url} is corrupt ({'; '.join(problems)}); the partial file was "
            "deleted, try again"
        )


def _accept(
    part: Path, url: str, outcome: _Outcome, *, sha256: str | None, md5: str | None,
    size: int | None,
) -> None:
    """Raise unless the ``.part`` is known complete and matches every known checksum."""
    declared = outcome.server.md5
    if not (outcome.complete or sha256 or md5 or declared or size is not None):
        raise DataUnavailableError(
            f"the server sent {url} without a length and no checksum is known for it, so a "
            "complete download cannot be told from a cut one; nothing was saved"
        )
    _verify(part, url, sha256=sha256, md5=md5, size=size, declared_md5=declared)


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Stream ``url`` to ``dest`` with a progress bar; resume a previous ``.part`` safely.

    Parameters
    ----------
    url
        An ``http(s)://`` or ``file://`` URL.
    dest
        The final path; ``dest.part`` and ``dest.part.json`` are kept next to it meanwhile.
    sha256, md5, size
        Published checksums (hex) and size in bytes, checked when given.
    progress
        Show a progress bar.
    timeout
        Seconds to wait for the server on each request.

    Returns
    -------
    Path
        ``dest``, which appears only once complete and verified (see the module notes).

    Raises
    ------
    DataUnavailableError
        On any failure, with a one-line message. ``dest.part`` is kept only if it can be
        resumed safely; after a checksum or size mismatch it is deleted.
    geneinfer.utils.locks.LockHeldError
        If another process (or thread) is downloading to ``dest``.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(dest, what="downloading"):
            if url.startswith("file://"):
                return _copy_local(url, dest, sha256=sha256, md5=md5, size=size)
            _check_url(url)
            return _download_locked(url, dest, sha256=sha256, md5=md5, size=size,
                                    progress=progress, timeout=timeout)
    except OSError as exc:
        # Network errors are already DataUnavailableErrors: this is the local disk (full,
        # read-only, ...). A resumable .part stays for the next run.
        where = exc.filename or dest
        raise DataUnavailableError(f"cannot write {where}: {exc.strerror or exc}") from exc


def _download_locked(
    url: str, dest: Path, *, sha256: str | None, md5: str | None, size: int | None,
    progress: bool, timeout: float,
) -> Path:
    part, state = _partial_paths(dest)
    outcome = _fetch_into(url, part, state, timeout=timeout, progress=progress)
    try:
        _accept(part, url, outcome, sha256=sha256, md5=md5, size=size)
    except DataUnavailableError:
        _discard(part, state)
        raise
    os.replace(part, dest)
    _discard(state)
    return dest


def _copy_local(
    url: str, dest: Path, *, sha256: str | None, md5: str | None, size: int | None
) -> Path:
    part = _partial_paths(dest)[0]
    src = Path(urllib.request.url2pathname(url.removeprefix("file://")))
    if not src.is_file():
        raise DataUnavailableError(f"no such file: {src}")
    try:
        shutil.copyfile(src, part)
        _verify(part, url, sha256=sha256, md5=md5, size=size)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    os.replace(part, dest)
    return dest
