"""``kennel serve`` for the user's handlers: ``--entry-point inference.py --model-dir DIR``, a SageMaker
``model.tar.gz`` (unpacked once, safely, into the cache) and a ``kennel run`` job; what cannot be served is one
line at start."""

from __future__ import annotations

import io
import json
import socket
import tarfile
from pathlib import Path

import httpx
import pytest
from helpers import LOOPBACK, kennel, wait_until
from test_serve_cli import read_answer, start_server, stop
from test_serve_handlers import MODEL_FN, NET, PHOTO_HANDLERS, expected_breeds, model_folder, photo

from kennel.errors import UsageError
from kennel.localhost import free_port
from kennel.serve import package
from kennel.serve.package import HandlerRef


def model_tarball(path: Path, folder: Path, prefix: str = "") -> Path:
    """``folder`` packed as ``tar -czf model.tar.gz -C folder .`` packs a SageMaker model."""
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(folder.rglob("*")):
            tar.add(item, arcname=prefix + str(item.relative_to(folder)), recursive=False)
    return path


def error_line(result) -> str:
    """The one line a refused start prints."""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: "), line
    return line


# --- model.tar.gz ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_serve_a_sagemaker_model_tarball_then_stop_with_requests_in_flight(tmp_path: Path, kennel_home: Path) -> None:
    boto3 = pytest.importorskip("boto3")
    from kennel.serve.sigv4 import access_key_id

    slow = PHOTO_HANDLERS.replace("    model.eval()", "    import time; time.sleep(0.5)\n    model.eval()")
    folder = model_folder(
        tmp_path / "built", NET + slow, **{"requirements.txt": "torchvision>=0.19  # resize\npillow\n"}
    )
    archive = model_tarball(tmp_path / "model.tar.gz", folder, prefix="./")
    process, url = start_server(archive)
    try:
        secret = (kennel_home / "serve-token").read_text().strip()
        client = boto3.client(
            "sagemaker-runtime",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=access_key_id("model"),
            aws_secret_access_key=secret,
        )
        body = photo(5)
        answer = client.invoke_endpoint(EndpointName="model", Body=body, ContentType="image/jpeg")
        assert [p["label"] for p in json.loads(answer["Body"].read())["predictions"]] == expected_breeds(body)
        assert httpx.get(f"{url}/model").json()["requirements"] == ["torchvision>=0.19", "pillow"]
        port = int(url.rsplit(":", 1)[1])
        head = (
            f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        sockets = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(4)]
        for sock in sockets:
            sock.sendall(head + body)
        in_hand = lambda: "kennel_in_flight 4.0" in httpx.get(f"{url}/metrics").text  # noqa: E731
        wait_until(in_hand, "4 requests in hand")
    finally:
        output = stop(process)  # SIGTERM while the 4 are answered
    answers = [read_answer(sock) for sock in sockets]
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 4, output
    assert "lists torchvision>=0.19, pillow: not installed by kennel" in output
    assert f"aws_access_key_id {access_key_id('model')}" in output and output.count(secret) == 1
    unpacked = list((kennel_home / "cache" / "model-packages").iterdir())
    assert len(unpacked) == 1 and (unpacked[0] / "code" / "inference.py").is_file()


def test_an_archive_is_unpacked_once_into_a_folder_named_by_its_content(tmp_path: Path, monkeypatch) -> None:
    folder = model_folder(tmp_path / "built", NET + MODEL_FN)
    archive = model_tarball(tmp_path / "model.tar.gz", folder)
    first = package.unpack(archive)
    assert (first / "model.pth").is_file() and (first / "code" / "inference.py").is_file()
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary folder left beside it

    def not_again(*args, **kwargs):
        raise AssertionError("unpacked a second time")

    monkeypatch.setattr(tarfile, "open", not_again)
    assert package.unpack(archive) == first
    monkeypatch.undo()
    (folder / "code" / "inference.py").write_text(NET + PHOTO_HANDLERS)
    assert package.unpack(model_tarball(tmp_path / "model.tar.gz", folder)) != first  # a new archive, a new key


def tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("model.pt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        (tarfile.TarInfo("/etc/cron.d/evil"), "absolute path"),
        (tarfile.TarInfo("code/../../evil.py"), "climbs out"),
        (link("code/passwd", "/etc/passwd"), "outside the archive"),
        (link("code/up", "../../outside"), "outside the archive"),
        (link("code/hard", "../outside", tarfile.LNKTYPE), "outside the archive"),
        (link("fifo", "", tarfile.FIFOTYPE), "device or a pipe"),
    ],
)
def test_an_archive_that_would_write_outside_its_folder_is_refused(
    tmp_path: Path, member: tarfile.TarInfo, problem: str
) -> None:
    archive = tar_with(tmp_path / "model.tar.gz", member, b"print('hi')" if member.isfile() else b"")
    with pytest.raises(UsageError, match=problem):
        package.unpack(archive, root=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []
    assert not (tmp_path / "evil.py").exists() and not (tmp_path.parent / "evil.py").exists()


def test_a_link_inside_the_archive_is_kept(tmp_path: Path) -> None:
    archive = tar_with(tmp_path / "model.tar.gz", link("code/model.pt", "../model.pt"))
    assert (package.unpack(archive, root=tmp_path / "cache") / "code" / "model.pt").read_bytes() == b"x"


def test_sagemaker_program_names_another_module(tmp_path: Path, monkeypatch) -> None:
    from fastapi.testclient import TestClient

    from kennel.serve.app import create_app
    from kennel.serve.handler_model import HandlerLoader

    folder = model_folder(tmp_path / "built", NET + MODEL_FN, **{"serve.py": NET + PHOTO_HANDLERS})
    archive = model_tarball(tmp_path / "breeds.tar.gz", folder)
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "serve.py")
    with TestClient(create_app(HandlerLoader(HandlerRef(package=archive))), base_url=LOOPBACK) as client:
        answer = client.post("/invocations", content=photo(), headers={"content-type": "image/jpeg"})
        assert answer.status_code == 200 and answer.json()["predictions"], answer.text
        assert client.get("/model").json()["entry_point"].endswith("code/serve.py")
        assert client.get("/v2/models/breeds").status_code == 200  # named after the archive
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "missing")
    with pytest.raises(UsageError, match=r"code/missing\.py: no such file"):
        package.resolve(HandlerRef(package=archive))


# --- a kennel run job -----------------------------------------------------------------------------------------------


def script_job(kennel_home: Path, job_id: str, handlers: str | None) -> Path:
    """A finished ``kennel run`` job: its record, its source folder (with ``handlers`` as inference.py), and
    what the script saved in its model folder."""
    from kennel.jobs.folder import JobRecord

    folder = kennel_home / "jobs" / job_id
    model_folder(folder / "model", None)
    (folder / "source").mkdir()
    (folder / "source" / "train_model.py").write_text("print('training')\n")
    if handlers is not None:
        (folder / "source" / "inference.py").write_text(handlers)
    JobRecord(id=job_id, name="resnet-dogs", status="completed", kind="script", job_dir=str(folder)).save()
    return folder


def test_serve_a_script_jobs_model_with_its_inference_script(kennel_home: Path) -> None:
    pytest.importorskip("kennel.script.contract", reason="kennel run's job contract has not landed")
    from fastapi.testclient import TestClient

    from kennel.cli.serve import handler_ref
    from kennel.serve.app import create_app
    from kennel.serve.handler_model import HandlerLoader

    folder = script_job(kennel_home, "20261201-1200-resnet-dogs", NET + PHOTO_HANDLERS)
    ref = handler_ref("resnet-dogs", None, None)
    assert ref is not None and ref.entry_point == folder / "source" / "inference.py"
    assert ref.model_dir == folder / "model" and ref.name == "20261201-1200-resnet-dogs"
    with TestClient(create_app(HandlerLoader(ref)), base_url=LOOPBACK) as client:
        body = photo(2)
        answer = client.post("/invocations", content=body, headers={"content-type": "image/jpeg"})
        assert [p["label"] for p in answer.json()["predictions"]] == expected_breeds(body)


def test_a_script_job_without_an_inference_script_is_one_line(kennel_home: Path) -> None:
    pytest.importorskip("kennel.script.contract", reason="kennel run's job contract has not landed")
    script_job(kennel_home, "20261201-1300-no-handlers", None)
    result = kennel("serve", "20261201-1300-no-handlers", "--port", free_port())
    assert result.exit_code == 2
    line = error_line(result)
    assert "job 20261201-1300-no-handlers has no inference script" in line and "inference.py" in line


# --- what cannot be served: one line at start ---------------------------------------------------------------------


def test_a_handler_file_that_does_not_import_is_one_line_naming_it(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "model", "import torch\nimport no_such_module\n")
    entry = folder / "code" / "inference.py"
    result = kennel("serve", "--entry-point", entry, "--model-dir", folder, "--port", free_port())
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert str(entry) in line and "(line 2)" in line and "ModuleNotFoundError: No module named 'no_such_module'" in line
    (entry).write_text("def model_fn(model_dir:\n")
    line = error_line(kennel("serve", "--entry-point", entry, "--model-dir", folder, "--port", free_port()))
    assert str(entry) in line and "SyntaxError" in line


def test_a_model_folder_without_the_file_model_fn_wants_is_one_line(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "model", NET + MODEL_FN)
    (folder / "model.pth").unlink()
    entry = folder / "code" / "inference.py"
    result = kennel("serve", "--entry-point", entry, "--model-dir", folder, "--port", free_port())
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert f"model_fn({folder}) raised FileNotFoundError" in line and "model.pth" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = error_line(kennel("serve", "--model-dir", empty, "--port", free_port()))  # the default model_fn
    assert f"{empty}: no model.pt" in line and "TorchScript" in line


def test_transform_fn_beside_input_fn_is_an_error_at_start(tmp_path: Path) -> None:
    both = NET + MODEL_FN + "\ndef input_fn(body, content_type):\n    return body\n"
    both += "\ndef transform_fn(model, body, content_type, accept):\n    return body\n"
    folder = model_folder(tmp_path / "model", both)
    result = kennel("serve", "--entry-point", folder / "code" / "inference.py", "--model-dir", folder)
    assert result.exit_code == 2
    assert "defines transform_fn and input_fn" in error_line(result)
    wrong = NET + "\ndef model_fn(a, b, c):\n    return None\n"
    (folder / "code" / "inference.py").write_text(wrong)
    line = error_line(kennel("serve", "--model-dir", folder, "--port", free_port()))
    assert "model_fn takes 3 argument(s)" in line


def test_options_that_do_not_fit_together(tmp_path: Path, artifact_dir: Path) -> None:
    line = error_line(kennel("serve", artifact_dir, "--entry-point", tmp_path / "inference.py"))
    assert "--entry-point serves your own handlers" in line
    assert "give a model" in error_line(kennel("serve"))
    archive = model_tarball(tmp_path / "model.tar.gz", model_folder(tmp_path / "m", NET + MODEL_FN))
    assert "--model-dir" in error_line(kennel("serve", archive, "--model-dir", tmp_path))
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tar archive")
    assert "cannot unpack it" in error_line(kennel("serve", broken, "--port", free_port()))
