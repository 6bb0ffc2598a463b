"""Find public data locally or download it into a cache, safely.

Look-up order for :func:`fetch`: the data folder (:func:`resolve_data_dir`: the
``data_dir`` argument / ``--data-dir``, else the ``GENEINFER_DATA_DIR`` environment variable),
then the cache (``cache_dir``, ``GENEINFER_CACHE`` or ``~/.cache/geneinfer``), then a
download. Downloads stream into ``<file>.part`` next to the
final name and are renamed only when complete and, where a checksum is published, verified;
an interrupted download keeps its ``.part`` file and the next call resumes it with an HTTP
``Range`` request. ``GENEINFER_OFFLINE=1`` forbids downloading.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from geneinfer import __version__
from geneinfer.errors import DataUnavailableError
from geneinfer.public_data.registry import ResolvedSource, get_source

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


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(req, timeout=timeout)


def _file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(part: Path, url: str, *, sha256: str | None, md5: str | None, size: int | None) -> None:
    """Raise (and delete the partial file) if size or checksum differ from the published ones."""
    problems = []
    if size is not None and part.stat().st_size != size:
        problems.append(f"size {part.stat().st_size} bytes, expected {size}")
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want and not problems:
            got = _file_digest(part, algo)
            if got.lower() != want.lower():
                problems.append(f"{algo} {got}, expected {want}")
    if problems:
        part.unlink(missing_ok=True)
        raise DataUnavailableError(
            f"download of {url} is corrupt ({'; '.join(problems)}); the partial file was "
            "deleted, try again"
        )


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
    """Stream ``url`` to ``dest`` with a progress bar; resume a previous ``.part`` file.

    The file appears under ``dest`` only once it is complete and matches ``sha256`` /
    ``md5`` / ``size`` when given. A network failure leaves ``dest.part`` for resuming and
    raises :class:`DataUnavailableError`; a checksum mismatch deletes it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if url.startswith("file://"):
        return _copy_local(url, dest, part, sha256=sha256, md5=md5, size=size)
    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part file is already complete
            resp = None
        else:
            raise DataUnavailableError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataUnavailableError(f"cannot reach {url}: {reason}") from exc
    if resp is not None:
        with resp:
            if offset and resp.status != 206:
                log.info("server ignored the resume request for %s; restarting", url)
                offset = 0
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            _stream(resp, part, offset=offset, total=total, url=url, progress=progress)
    _verify(part, url, sha256=sha256, md5=md5, size=size)
    os.replace(part, dest)
    return dest


def _stream(
    resp: http.client.HTTPResponse,
    part: Path,
    *,
    offset: int,
    total: int | None,
    url: str,
    progress: bool,
) -> None:
    written = offset
    bar = tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
        desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
    )
    try:
        with open(part, "ab" if offset else "wb") as out, bar:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (http.client.IncompleteRead, OSError) as exc:
                    raise DataUnavailableError(
                        f"download of {url} was interrupted after {written} bytes ({exc!r}); "
                        "run the same command again to resume"
                    ) from exc
                if not chunk:
                    break
                out.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    except KeyboardInterrupt:
        log.warning("download of %s interrupted; %s kept for resuming", url, part)
        raise
    if total is not None and written < total:
        raise DataUnavailableError(
            f"download of {url} stopped after {written} of {total} bytes; "
            "run the same command again to resume"
        )


def _copy_local(
    url: str, dest: Path, part: Path, *, sha256: str | None, md5: str | None, size: int | None
) -> Path:
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
