"""Download, verify and unpack a published dataset archive (dogImages) into the cache.

The download streams into ``NAME.zip.part`` and resumes with an HTTP Range request after a broken connection, so
a 1.1 GB file survives a flaky network. The archive is checked (every member's CRC, and the train/valid/test
class layout) before anything is unpacked, and unpacking goes to a temporary folder that is renamed into place
only when complete: the dataset folder either exists whole or not at all.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import logging
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kennel.data.layout import SPLITS
from kennel.errors import KennelError
from kennel.home import cache_dir

log = logging.getLogger(__name__)

DOGIMAGES_URL = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
CONNECT_TIMEOUT = 5.0  # seconds; also the longest stall tolerated mid-stream before resuming
RESUME_ATTEMPTS = 5
CHUNK = 1 << 20


class FetchError(KennelError, RuntimeError):
    """Downloading, verifying or unpacking failed; the message says what to do next."""

    exit_code = 1


@dataclass(frozen=True)
class RemoteDataset:
    name: str
    url: str
    folder: str  # the dataset root once unpacked: DEST/folder/{train,valid,test}
    size: str


DATASETS = {"dogimages": RemoteDataset("dogimages", DOGIMAGES_URL, "dogImages", "about 1.1 GB")}


def default_dest() -> Path:
    return cache_dir() / "datasets"


def offline_help(url: str, reason: str) -> str:
    name = PurePosixPath(urllib.parse.urlparse(url).path).name or "dogImages.zip"
    return (
        f"cannot download {url}: {reason}.\n"
        f"Without internet on this machine, bring a local copy: download {name} elsewhere, copy it here and run\n"
        f"    kennel data fetch dogimages --from {name}\n"
        "or pass --data DIR to commands with a dataset folder you already have (train/ valid/ test/ inside)."
    )


def _check_resolvable(url: str, timeout: float) -> None:
    """Name resolution ignores socket timeouts and can hang for long offline; bound it here."""
    host = urllib.parse.urlparse(url).hostname
    if not host:
        raise FetchError(f"{url} is not a URL kennel can download")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(socket.getaddrinfo, host, None).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise FetchError(offline_help(url, f"no answer resolving {host} within {timeout:.0f} s")) from None
    except OSError as exc:
        raise FetchError(offline_help(url, f"cannot resolve {host} ({exc})")) from None
    finally:
        pool.shutdown(wait=False)


class _Interrupted(Exception):
    """The connection broke mid-stream; the ``.part`` file keeps what arrived and the next attempt resumes."""


@contextlib.contextmanager
def _progress_bar(enabled: bool, description: str) -> Iterator:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=Console(stderr=True), transient=True) as progress:
        yield progress


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse | None:
    """Open ``url`` from byte ``offset``; ``None`` when the server says the range is already complete."""
    headers = {"User-Agent": "kennel-data-fetch"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            total = (exc.headers.get("Content-Range") or "").rpartition("/")[2]
            if total.isdigit() and int(total) == offset:
                return None
            raise _Interrupted(f"server refused to resume at byte {offset}") from exc
        raise FetchError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if offset:
            raise _Interrupted(f"reconnecting failed ({reason})") from exc
        raise FetchError(offline_help(url, str(reason))) from exc


def _download_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset, timeout)
    if response is None:
        return
    with response:
        resumed = response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            part.unlink()
            raise _Interrupted(f"server answered another range than bytes {offset}-; restarting")
        if offset and not resumed:
            log.info("server ignored the Range request; downloading %s from the start", url)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        with open(part, "ab" if resumed else "wb") as out, _progress_bar(progress, part.name[:-5]) as bar:
            task = bar.add_task(f"downloading {part.name[:-5]}", total=total, completed=offset) if bar else None
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    if bar:
                        bar.advance(task, len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise _Interrupted(f"connection broke ({exc})") from exc
    if total is not None and part.stat().st_size != total:
        raise _Interrupted(f"got {part.stat().st_size:,} of {total:,} bytes")


def download(url: str, target: Path, timeout: float = CONNECT_TIMEOUT, progress: bool = True) -> Path:
    """Stream ``url`` to ``target`` through ``target.part``, resuming after breaks; returns ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    if part.exists():
        log.info("resuming %s from byte %d", url, part.stat().st_size)
    else:
        _check_resolvable(url, timeout)
    for attempt in range(1, RESUME_ATTEMPTS + 1):
        try:
            _download_once(url, part, timeout, progress)
            break
        except _Interrupted as exc:
            log.warning("download of %s interrupted (attempt %d/%d): %s", url, attempt, RESUME_ATTEMPTS, exc)
            if attempt == RESUME_ATTEMPTS:
                raise FetchError(
                    f"download of {url} kept breaking ({exc}); {part} keeps what arrived, run the command again "
                    "to resume"
                ) from None
    part.replace(target)
    return target


def dataset_prefix(archive: zipfile.ZipFile) -> PurePosixPath:
    """The folder inside the archive that holds train/ valid/ test/ (``dogImages`` for the real one)."""
    found: dict[PurePosixPath, dict[str, set[str]]] = {}
    for name in archive.namelist():
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts:
            raise FetchError(f"archive member {name!r} points outside the dataset folder; refusing to unpack")
        if path.parts and path.parts[0] == "__MACOSX":
            continue
        for i, part in enumerate(path.parts[:-2]):
            if part in SPLITS and not name.endswith("/"):
                found.setdefault(PurePosixPath(*path.parts[:i]), {}).setdefault(part, set()).add(path.parts[i + 1])
                break
    complete = [prefix for prefix, splits in found.items() if set(splits) == set(SPLITS)]
    if len(complete) != 1:
        seen = ", ".join(f"{p}/{s}" for p, splits in found.items() for s in sorted(splits)) or "none"
        raise FetchError(
            "the archive does not hold one dataset in train/ valid/ test/ layout with class folders "
            f"(split folders with classes found: {seen})"
        )
    return complete[0]


def verify_archive(path: Path) -> PurePosixPath:
    """Test every member's CRC and the layout; return the dataset folder inside the archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise FetchError(f"{path} is corrupt: member {bad!r} fails its CRC check; download it again")
            return dataset_prefix(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise FetchError(f"{path} is not a readable zip archive ({exc}); download it again") from exc


def unpack(archive_path: Path, prefix: PurePosixPath, target: Path) -> Path:
    """Extract beside ``target`` in a temporary folder, then rename the dataset folder into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive_path) as archive:
        needed = sum(info.file_size for info in archive.infolist())
        free = shutil.disk_usage(target.parent).free
        if needed > free:
            raise FetchError(f"unpacking needs {needed / 1e9:.1f} GB but {target.parent} has {free / 1e9:.1f} GB free")
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            members = [n for n in archive.namelist() if PurePosixPath(n).parts[:1] != ("__MACOSX",)]
            archive.extractall(tmp, members=members)
            tmp.joinpath(*prefix.parts).replace(target)
        except OSError as exc:
            if is_unpacked(target):  # another kennel process finished the same unpacking first
                return target
            raise FetchError(f"unpacking {archive_path} into {target.parent} failed ({exc})") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_unpacked(root: Path) -> bool:
    return all((root / split).is_dir() for split in SPLITS)


def fetch_dataset(
    name: str,
    dest: Path | str | None = None,
    from_file: Path | str | None = None,
    url: str | None = None,
    progress: bool = True,
) -> Path:
    """Make dataset ``name`` available under ``dest`` (default: the cache) and return its root folder."""
    if name not in DATASETS:
        raise FetchError(f"unknown dataset {name!r}; kennel can fetch: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[name]
    dest = Path(dest).expanduser() if dest else default_dest()
    root = dest / spec.folder
    if is_unpacked(root):
        log.info("%s is already unpacked at %s", name, root)
        return root
    if root.exists():
        raise FetchError(f"{root} exists but holds no complete train/ valid/ test/ dataset; remove it and retry")
    if from_file is not None:
        archive = Path(from_file).expanduser()
        if not archive.is_file():
            raise FetchError(f"{archive} does not exist")
    else:
        archive = download(url or spec.url, default_dest() / f"{spec.folder}.zip", progress=progress)
    log.info("verifying %s", archive)
    prefix = verify_archive(archive)
    log.info("unpacking %s to %s", archive, root)
    unpack(archive, prefix, root)
    if from_file is None:
        archive.unlink()  # the unpacked folder is what kennel reads; keeping the archive would double the disk used
    return root


def fetch_dogimages(
    dest: Path | str | None = None,
    from_file: Path | str | None = None,
    url: str = DOGIMAGES_URL,
    progress: bool = True,
) -> Path:
    """Download (or take ``from_file``), verify and unpack dogImages; return the folder holding train/valid/test."""
    return fetch_dataset("dogimages", dest, from_file, url, progress)
