"""``kennel data fetch`` against a local HTTP server with Range support; never the network."""

from __future__ import annotations

import http.server
import io
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import kennel

from kennel.data.fetch import FetchError, default_dest, fetch_dogimages
from kennel.data.layout import load_layout
from kennel.data.sample import write_sample_dataset
from kennel.localhost import free_port


def make_zip(source: Path, prefix: str = "dogImages") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(source.rglob("*")):
            name = "/".join(filter(None, [prefix, path.relative_to(source).as_posix()]))
            archive.write(path, name + ("/" if path.is_dir() else ""))
        archive.writestr("__MACOSX/dogImages/._junk", b"resource fork")
    return buffer.getvalue()


class Server:
    """Serves ``payload`` at any path; honours ``Range: bytes=N-``; can break the first response midway."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.ranges: list[str | None] = []
        self.break_first_at: int | None = None
        self.status = 200
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.ranges.append(self.headers.get("Range"))
                if outer.status != 200:
                    self.send_error(outer.status)
                    return
                start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
                body = outer.payload[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.break_first_at is not None:
                    body, outer.break_first_at = body[: outer.break_first_at], None
                    self.wfile.write(body)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dogImages.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def archive_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    source = write_sample_dataset(tmp_path_factory.mktemp("src"), num_classes=3, per_split=(4, 2, 2), size=24)
    return make_zip(source)


@pytest.fixture
def server(archive_bytes: bytes) -> Iterator[Server]:
    srv = Server(archive_bytes)
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def assert_dataset(root: Path) -> None:
    assert root.name == "dogImages"
    layout = load_layout(root)
    assert len(layout.classes) == 3
    assert [len(layout[s]) for s in ("train", "valid", "test")] == [12, 6, 6]


def test_full_download(server: Server, tmp_path: Path) -> None:
    root = fetch_dogimages(dest=tmp_path / "out", url=server.url, progress=True)
    assert root == tmp_path / "out" / "dogImages"
    assert_dataset(root)
    assert server.ranges == [None]
    assert not list(default_dest().glob("dogImages.zip*")), "the downloaded archive should be removed after unpacking"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["dogImages"], "temporary folders left behind"
    assert not (root.parent / "__MACOSX").exists()


def test_resumes_a_partial_download(server: Server, archive_bytes: bytes) -> None:
    part = default_dest() / "dogImages.zip.part"
    part.parent.mkdir(parents=True)
    half = len(archive_bytes) // 2
    part.write_bytes(archive_bytes[:half])
    root = fetch_dogimages(url=server.url, progress=False)
    assert server.ranges == [f"bytes={half}-"]
    assert root == default_dest() / "dogImages"
    assert_dataset(root)


def test_resumes_after_the_connection_breaks(server: Server) -> None:
    server.break_first_at = 1000
    root = fetch_dogimages(url=server.url, progress=False)
    assert server.ranges == [None, "bytes=1000-"]
    assert_dataset(root)


def test_already_unpacked_returns_without_downloading(server: Server, tmp_path: Path) -> None:
    fetch_dogimages(dest=tmp_path, url=server.url, progress=False)
    fetch_dogimages(dest=tmp_path, url=server.url, progress=False)
    assert len(server.ranges) == 1


def test_corrupt_archive_is_rejected(server: Server, archive_bytes: bytes, tmp_path: Path) -> None:
    corrupt = bytearray(archive_bytes)
    middle = len(corrupt) // 3
    corrupt[middle : middle + 64] = bytes(64)
    server.payload = bytes(corrupt)
    with pytest.raises(FetchError, match=r"corrupt|not a readable zip"):
        fetch_dogimages(dest=tmp_path, url=server.url, progress=False)
    assert not (tmp_path / "dogImages").exists()


def test_not_a_zip_and_wrong_layout(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip file" * 10)
    with pytest.raises(FetchError, match="not a readable zip"):
        fetch_dogimages(dest=tmp_path / "out", from_file=junk)
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat, "w") as archive:
        archive.writestr("dogImages/train/001.A/a.jpg", b"x")
        archive.writestr("dogImages/valid/001.A/a.jpg", b"x")
    with pytest.raises(FetchError, match="train/ valid/ test/"):
        fetch_dogimages(dest=tmp_path / "out", from_file=flat)
    assert not (tmp_path / "out" / "dogImages").exists()


def test_http_error_is_reported(server: Server, tmp_path: Path) -> None:
    server.status = 404
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_dogimages(dest=tmp_path, url=server.url, progress=False)


def test_archive_without_top_folder(tmp_path: Path) -> None:
    source = write_sample_dataset(tmp_path / "src", num_classes=3, per_split=(4, 2, 2), size=24)
    archive = tmp_path / "bare.zip"
    archive.write_bytes(make_zip(source, prefix=""))
    assert_dataset(fetch_dogimages(dest=tmp_path / "out", from_file=archive))


def cli(*args: str):
    return kennel("data", "fetch", *args)


def test_cli_from_file_then_already_there(archive_bytes: bytes, tmp_path: Path) -> None:
    archive = tmp_path / "dogImages.zip"
    archive.write_bytes(archive_bytes)
    result = cli("dogimages", "--from", str(archive), "--dest", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "ready at" in result.output and str(tmp_path / "out" / "dogImages") in result.output
    assert archive.exists(), "a user's own archive is never deleted"
    again = cli("dogimages", "--from", str(archive), "--dest", str(tmp_path / "out"))
    assert again.exit_code == 0 and "already unpacked" in again.output


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/dogImages.zip"


def test_no_network_fails_fast_with_a_way_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened, urlopen = [], urllib.request.urlopen

    def counting(request, *args, **kwargs):
        opened.append(request.full_url)
        return urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", counting)
    url = closed_port_url()
    with pytest.raises(FetchError) as info:
        fetch_dogimages(dest=tmp_path, url=url, progress=False)
    assert opened == [url]  # fast: a refused connection is not retried
    assert "--from" in str(info.value) and "--data" in str(info.value)
    result = cli("dogimages", "--url", closed_port_url(), "--dest", str(tmp_path), "-q")
    assert result.exit_code == 1
    assert "--from dogImages.zip" in result.output
    assert "Traceback" not in result.output


def test_cli_unknown_dataset() -> None:
    result = cli("cats")
    assert result.exit_code == 2 and "dogimages" in result.output
