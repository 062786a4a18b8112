"""The user's own ``inference.py`` behind a kennel endpoint, in the shapes real ones have: only ``model_fn``;
``model_fn`` with an ``input_fn`` for photos, a ``predict_fn`` and the default ``output_fn``; a ``transform_fn``;
handlers that take the ``context``; handlers that raise. Each is queried on the kennel routes and SageMaker's
runtime route (boto3), with kennel's guards, limits, capture, metrics, health and reload."""

from __future__ import annotations

import io
import json
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from helpers import LOOPBACK, asking_meanwhile, encode, wait_until
from PIL import Image
from test_client import running

from kennel.serve.app import ServeSettings, create_app
from kennel.serve.handler_model import HandlerLoader
from kennel.serve.package import HandlerRef

LABELS = ["Akita", "Beagle", "Pug"]

# The network the handlers build and the tests save: a few conv layers, three classes.
NET = """
import io, json, os

import numpy as np
import torch
from PIL import Image
from torch import nn

LABELS = ["Akita", "Beagle", "Pug"]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.features(x))
"""

MODEL_FN = """
def model_fn(model_dir):
    model = Net()
    model.load_state_dict(torch.load(os.path.join(model_dir, "model.pth"), weights_only=True))
    return model
"""

# As this project's inference.py: photos in, breeds out, through the default output_fn.
PHOTO_HANDLERS = (
    MODEL_FN
    + """
CALLS = []


def input_fn(request_body, content_type):
    CALLS.append(content_type)
    if content_type != "image/jpeg":
        raise ValueError(f"expected image/jpeg, got {content_type}")
    image = Image.open(io.BytesIO(request_body)).convert("RGB").resize((16, 16))
    array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return torch.from_numpy(array).unsqueeze(0)


def predict_fn(input_data, model):
    model.eval()
    with torch.no_grad():
        probabilities = model(input_data).softmax(dim=1)[0]
    ranked = probabilities.argsort(descending=True).tolist()
    return {"predictions": [{"label": LABELS[i], "probability": float(probabilities[i])} for i in ranked]}
"""
)

TRANSFORM = (
    MODEL_FN
    + """
def transform_fn(model, request_body, content_type, accept):
    inputs = torch.tensor(json.loads(request_body)["inputs"], dtype=torch.float32)
    with torch.no_grad():
        outputs = model(inputs)
    return json.dumps({"outputs": outputs.tolist(), "accept": accept}), "application/json"
"""
)

WITH_CONTEXT = """
def model_fn(model_dir, context):
    assert context.system_properties["model_dir"] == model_dir
    model = Net()
    model.load_state_dict(torch.load(os.path.join(model_dir, "model.pth"), weights_only=True))
    return model


def input_fn(request_body, content_type, context):
    return json.loads(request_body)


def predict_fn(data, model, context):
    attributes = context.get_request_header(0, "X-Amzn-SageMaker-Custom-Attributes")
    context.set_response_header(0, "X-Amzn-SageMaker-Custom-Attributes", f"seen={attributes}")
    return {"items": len(data), "attributes": attributes, "model_name": context.model_name}


def output_fn(prediction, accept, context):
    return json.dumps(prediction), "application/json"
"""

RAISING = (
    MODEL_FN
    + """
class Teapot(Exception):
    status_code = 418
    message = "I am a teapot"


def input_fn(request_body, content_type):
    data = json.loads(request_body)  # a body that is no JSON: ValueError, a 400
    if data.get("teapot"):
        raise Teapot()
    return data


def predict_fn(data, model):
    if data.get("explode"):
        raise RuntimeError("the model ran out of memory")
    with torch.no_grad():
        return model(torch.tensor(data["inputs"], dtype=torch.float32))
"""
)


def network(seed: int = 0) -> torch.nn.Module:
    """The handlers' ``Net``, initialised from ``seed``."""
    namespace: dict = {}
    exec(NET, namespace)
    torch.manual_seed(seed)
    return namespace["Net"]().eval()


def model_folder(folder: Path, handlers: str | None = NET + MODEL_FN, seed: int = 0, **extra: str) -> Path:
    """A model folder as SageMaker unpacks one: ``model.pth`` at the top, ``code/inference.py`` (and ``extra``
    files in ``code/``)."""
    (folder / "code").mkdir(parents=True)
    torch.save(network(seed).state_dict(), folder / "model.pth")
    if handlers is not None:
        (folder / "code" / "inference.py").write_text(textwrap.dedent(handlers))
    for name, text in extra.items():
        (folder / "code" / name).write_text(text)
    return folder


def handler_app(folder: Path, settings: ServeSettings | None = None, **ref: object):
    entry = folder / "code" / "inference.py"
    handler = HandlerRef(entry_point=entry if entry.is_file() else None, model_dir=folder, **ref)
    return create_app(HandlerLoader(handler), settings or ServeSettings())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[callable]:
    """Serve handlers in a TestClient: ``served(handlers, settings=None) -> client``; closed after the test."""
    clients = []

    def serve(handlers: str, settings: ServeSettings | None = None, name: str = "model") -> TestClient:
        folder = model_folder(tmp_path / name, NET + handlers)
        client = TestClient(handler_app(folder, settings), base_url=LOOPBACK, raise_server_exceptions=False)
        clients.append(client.__enter__())
        return client

    yield serve
    for client in clients:
        client.__exit__(None, None, None)


def photo(seed: int = 0, size: tuple[int, int] = (40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)))


def expected_breeds(body: bytes, seed: int = 0) -> list[str]:
    image = Image.open(io.BytesIO(body)).convert("RGB").resize((16, 16))
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0).unsqueeze(0)
    with torch.no_grad():
        ranked = network(seed)(tensor).softmax(dim=1)[0].argsort(descending=True).tolist()
    return [LABELS[i] for i in ranked]


def post(client: TestClient, body: bytes, content_type: str = "image/jpeg", **headers: str):
    return client.post("/invocations", content=body, headers={"content-type": content_type, **headers})


# --- the shapes of inference.py -----------------------------------------------------------------------------------


def test_only_model_fn_takes_the_toolkits_defaults_for_the_rest(served) -> None:
    client = served(MODEL_FN)
    inputs = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        expected = network()(torch.from_numpy(inputs)).numpy()
    answer = post(client, json.dumps(inputs.tolist()).encode(), "application/json")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json", answer.text
    assert np.allclose(answer.json(), expected, atol=1e-5)
    as_npy = io.BytesIO()
    np.save(as_npy, inputs)
    npy = post(client, as_npy.getvalue(), "application/x-npy", accept="application/x-npy")
    assert npy.headers["content-type"] == "application/x-npy"
    assert np.allclose(np.load(io.BytesIO(npy.content)), expected, atol=1e-5)
    csv = post(client, json.dumps(inputs.tolist()).encode(), "application/json", accept="text/csv")
    assert csv.headers["content-type"].startswith("text/csv") and len(csv.text.strip().splitlines()) == 2
    model = client.get("/model").json()
    assert model["kind"] == "inference handlers" and model["handlers"]["model_fn"] == "inference.py"
    assert model["handlers"]["predict_fn"] == "default"


def test_photo_handlers_with_the_default_output_fn_on_every_route(served) -> None:
    client = served(PHOTO_HANDLERS)
    body = photo(1)
    answer = post(client, body)
    assert answer.status_code == 200, answer.text
    assert [p["label"] for p in answer.json()["predictions"]] == expected_breeds(body)
    upload = client.post("/predict", files={"file": ("dog.jpg", body, "image/jpeg")})
    assert upload.json() == answer.json()
    wrong = post(client, body, "image/png")  # the handler's own ValueError: a bad input
    assert wrong.status_code == 400 and "expected image/jpeg" in wrong.json()["error"]["message"]
    assert post(client, body).status_code == 200


def test_transform_fn_gets_the_request_whole(served) -> None:
    client = served(TRANSFORM)
    inputs = np.zeros((1, 3, 8, 8)).tolist()
    answer = post(client, json.dumps({"inputs": inputs}).encode(), "application/json")
    assert answer.status_code == 200 and answer.json()["accept"] == "application/json"  # none sent: the default
    assert len(answer.json()["outputs"][0]) == 3
    accepted = post(client, json.dumps({"inputs": inputs}).encode(), "application/json", accept="text/plain")
    assert accepted.json()["accept"] == "text/plain"  # transform_fn answers what it likes


def test_handlers_with_the_context_argument(served) -> None:
    client = served(WITH_CONTEXT, ServeSettings(signing_key="key-of-the-test"), name="dogs")
    attributes = {"X-Amzn-SageMaker-Custom-Attributes": "trace=7"}
    answer = post(client, b"[1, 2, 3]", "application/json", **attributes)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"items": 3, "attributes": "trace=7", "model_name": "dogs"}
    assert answer.headers["x-amzn-sagemaker-custom-attributes"] == "seen=trace=7"
    route = f"{LOOPBACK}/endpoints/dogs/invocations"  # the runtime API hands the attributes on both ways too
    headers = sigv4_headers("dogs", route, b"[1]", "key-of-the-test", attributes)
    runtime = client.post(route, content=b"[1]", headers=headers)
    assert runtime.status_code == 200 and runtime.headers["x-amzn-sagemaker-custom-attributes"] == "seen=trace=7"


def sigv4_headers(name: str, url: str, body: bytes, secret: str, headers: dict[str, str]) -> dict[str, str]:
    """boto3's SigV4 headers for a JSON POST of ``body`` to endpoint ``name`` with ``headers``."""
    pytest.importorskip("botocore")
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from kennel.serve.sigv4 import access_key_id

    request = AWSRequest("POST", url, data=body, headers={"Content-Type": "application/json", **headers})
    SigV4Auth(Credentials(access_key_id(name), secret), "sagemaker", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def test_a_handler_that_raises_answers_and_the_server_goes_on(served) -> None:
    client = served(RAISING)
    inputs = {"inputs": np.zeros((1, 3, 8, 8)).tolist()}
    cases = [
        (b"{not json", 400, "bad_input", "JSONDecodeError"),
        (json.dumps({"teapot": True}).encode(), 418, "handler_error", "I am a teapot"),
        (json.dumps({"explode": True}).encode(), 500, "handler_error", "RuntimeError: the model ran out of memory"),
    ]
    for body, status, code, words in cases:
        answer = post(client, body, "application/json")
        assert answer.status_code == status, answer.text
        error = answer.json()["error"]
        assert error["code"] == code and words in error["message"], error
        assert post(client, json.dumps(inputs).encode(), "application/json").status_code == 200
    metrics = client.get("/metrics").text
    assert 'kennel_errors_total{code="handler_error"} 2.0' in metrics


def test_a_body_that_is_no_image_is_the_clients_error(served) -> None:
    client = served(PHOTO_HANDLERS)
    refused = post(client, b"these bytes are no photo", "image/jpeg")
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "bad_input" and "UnidentifiedImageError" in error["message"], error
    assert "the body is no image" in error["message"]
    assert post(client, photo()).status_code == 200


def test_a_content_type_and_an_accept_nobody_handles(served) -> None:
    client = served(MODEL_FN)
    refused = post(client, b"hello", "text/plain")
    assert refused.status_code == 415 and refused.json()["error"]["code"] == "unsupported_media_type"
    assert "write an input_fn" in refused.json()["error"]["message"]
    body = json.dumps(np.zeros((1, 3, 8, 8)).tolist()).encode()
    refused = post(client, body, "application/json", accept="text/html")
    assert refused.status_code == 406 and refused.json()["error"]["code"] == "not_acceptable"
    assert post(client, body, "application/json", accept="text/html, */*").status_code == 200
    assert post(client, b"[[1, 2]", "application/json").status_code == 400  # the default input_fn's bad JSON


# --- production features ------------------------------------------------------------------------------------------


def test_a_photo_over_the_pixel_limit_never_reaches_the_handlers(served) -> None:
    client = served(PHOTO_HANDLERS, ServeSettings(max_pixels=10_000))
    assert post(client, photo(size=(90, 100))).status_code == 200
    calls = sys.modules["inference"].CALLS
    before = len(calls)
    refused = post(client, encode(Image.new("RGB", (200, 100))))
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "image_too_large"
    assert len(calls) == before


def test_tokens_host_and_body_limits_hold(served) -> None:
    client = served(PHOTO_HANDLERS, ServeSettings(token="the-token", max_body_bytes=50_000))
    assert post(client, photo()).status_code == 401
    bearer = {"authorization": "Bearer the-token"}
    assert post(client, photo(), **bearer).status_code == 200
    assert post(client, b"\xff" * 60_000, **bearer).status_code == 413
    assert client.get("/model", headers={"host": "attacker.example", **bearer}).status_code == 421


def test_ping_only_once_model_fn_returned(tmp_path: Path) -> None:
    waiting = """
import time


def model_fn(model_dir):
    while not os.path.exists(os.path.join(model_dir, "go")):
        time.sleep(0.01)
    return Net()
"""
    folder = model_folder(tmp_path / "breeds", NET + waiting)
    with TestClient(handler_app(folder), base_url=LOOPBACK) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/ping").status_code == 503 and client.get("/v2/health/ready").status_code == 503
        (folder / "go").touch()
        wait_until(lambda: client.get("/ping").status_code == 200, "model_fn returned")
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2/models/breeds").json()["platform"] == "sagemaker_inference_handlers"


def test_capture_and_metrics_of_a_handler_endpoint(served, tmp_path: Path) -> None:
    from kennel.serve.capture import read_capture

    client = served(PHOTO_HANDLERS, ServeSettings(capture_dir=tmp_path / "capture"))
    bodies = [photo(i, size=(40 + i, 30)) for i in range(3)]
    answers = [post(client, body).json() for body in bodies]
    metrics = client.get("/metrics").text
    assert 'kennel_requests_total{route="/invocations",status="200"} 3.0' in metrics
    assert "kennel_model_seconds_count 3.0" in metrics
    client.app.state.service.capture.flush()
    lines = sorted(read_capture(tmp_path / "capture"), key=lambda line: line["image"]["width"])
    assert [line["predictions"][0]["label"] for line in lines] == [a["predictions"][0]["label"] for a in answers]
    assert [line["image"]["width"] for line in lines] == [40, 41, 42] and lines[0]["image"]["format"] == "JPEG"
    assert 0 <= lines[0]["image"]["brightness"] <= 1 and lines[0]["model"]["handlers"] == "inference.py"


def test_a_reload_imports_the_handlers_afresh_with_no_request_lost(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "model", NET + PHOTO_HANDLERS)
    with TestClient(handler_app(folder), base_url=LOOPBACK) as client:
        with asking_meanwhile(lambda: post(client, photo()), threads=3) as answers:
            wait_until(lambda: len(answers) >= 5, "requests before the reload")
            entry = folder / "code" / "inference.py"
            entry.write_text(
                entry.read_text() + '\n\ndef output_fn(prediction, accept):\n    return "v2", "text/plain"\n'
            )
            assert client.post("/reload").status_code == 200
            before = len(answers)
            wait_until(lambda: len(answers) >= before + 5, "requests after the reload")
        assert [a.status_code for a in answers] == [200] * len(answers)
        assert answers[0].headers["content-type"] == "application/json" and answers[-1].text == "v2"
        entry.write_text("import no_such_module\n")
        broken = client.post("/reload")
        assert broken.status_code == 503 and "ModuleNotFoundError" in broken.json()["error"]["message"]
        assert post(client, photo()).text == "v2"  # the current handlers go on


# --- the runtime API with boto3 -------------------------------------------------------------------------------------


def test_boto3_invokes_a_handler_endpoint(tmp_path: Path) -> None:
    boto3 = pytest.importorskip("boto3")
    from kennel.serve.sigv4 import access_key_id

    folder = model_folder(tmp_path / "breeds", NET + PHOTO_HANDLERS)
    settings = ServeSettings(signing_key="secret-key-of-the-test")
    with running(handler_app(folder, settings)) as url:
        client = boto3.client(
            "sagemaker-runtime",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=access_key_id("breeds"),
            aws_secret_access_key="secret-key-of-the-test",
        )
        body = photo(3)
        answer = client.invoke_endpoint(EndpointName="breeds", Body=body, ContentType="image/jpeg")
        assert answer["ContentType"] == "application/json" and answer["InvokedProductionVariant"] == "AllTraffic"
        assert [p["label"] for p in json.loads(answer["Body"].read())["predictions"]] == expected_breeds(body)
        with pytest.raises(client.exceptions.ModelError) as refused:
            client.invoke_endpoint(EndpointName="breeds", Body=body, ContentType="image/png")
        assert refused.value.response["OriginalStatusCode"] == 400
        with pytest.raises(client.exceptions.ModelError) as refused:
            client.invoke_endpoint(EndpointName="breeds", Body=body, ContentType="image/jpeg", Accept="text/html")
        assert refused.value.response["OriginalStatusCode"] == 406
        with ThreadPoolExecutor(8) as pool:  # concurrent callers, each answered its own
            bodies = [photo(i) for i in range(16)]
            answers = pool.map(
                lambda b: client.invoke_endpoint(EndpointName="breeds", Body=b, ContentType="image/jpeg"), bodies
            )
            for b, a in zip(bodies, answers, strict=True):
                assert [p["label"] for p in json.loads(a["Body"].read())["predictions"]] == expected_breeds(b)


# --- the toolkit's defaults ----------------------------------------------------------------------------------------


def test_default_decoders_and_encoders() -> None:
    import scipy.sparse

    from kennel.serve import toolkit

    assert toolkit.default_input_fn("1,2\n3,4\n", "text/csv").tolist() == [[1, 2], [3, 4]]
    assert toolkit.default_input_fn("[[1, 2]]", "application/json; charset=utf-8").dtype == torch.float32
    buffer = io.BytesIO()
    np.save(buffer, np.arange(4, dtype=np.int64))
    assert toolkit.default_input_fn(buffer.getvalue(), "application/x-npy").dtype == torch.int64
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(toolkit.HandlerError) as refused:  # an object array would need unpickling
        toolkit.default_input_fn(buffer.getvalue(), "application/x-npy")
    assert refused.value.status == 400
    buffer = io.BytesIO()
    scipy.sparse.save_npz(buffer, scipy.sparse.csr_matrix(np.eye(3)))
    assert toolkit.default_input_fn(buffer.getvalue(), "application/x-npz").tolist() == np.eye(3).tolist()
    assert toolkit.default_output_fn(torch.ones(1, 2), "application/json") == (b"[[1.0, 1.0]]", "application/json")
    assert toolkit.default_output_fn([1, 2], "text/csv")[0] == b"1\n2\n"
    assert toolkit.default_output_fn([1], "*/*")[1] == "application/json"
    with pytest.raises(toolkit.HandlerError) as refused:
        toolkit.default_output_fn([1], "image/png")
    assert refused.value.status == 406


def test_the_default_model_fn_loads_torchscript_only(tmp_path: Path) -> None:
    from kennel.errors import UsageError
    from kennel.serve import toolkit

    torch.save(network().state_dict(), tmp_path / "weights.pth")  # a state dict: no TorchScript
    with pytest.raises(UsageError, match="not a TorchScript model"):
        toolkit.default_model_fn(str(tmp_path))
    with pytest.raises(UsageError, match=r"no model\.pt"):
        toolkit.default_model_fn(str(tmp_path / "empty"))
    with pytest.warns(FutureWarning):
        torch.jit.save(torch.jit.trace(network(), torch.zeros(1, 3, 8, 8)), tmp_path / "model.pt")
    assert toolkit.default_model_fn(str(tmp_path))(torch.zeros(1, 3, 8, 8)).shape == (1, 3)


def test_a_model_folder_without_handlers_serves_torchscript_with_every_default(tmp_path: Path) -> None:
    folder = tmp_path / "scripted"
    folder.mkdir()
    with pytest.warns(FutureWarning):
        torch.jit.save(torch.jit.trace(network(), torch.zeros(1, 3, 8, 8)), folder / "model.pt")
    with TestClient(handler_app(folder), base_url=LOOPBACK) as client:
        answer = post(client, json.dumps(np.zeros((1, 3, 8, 8)).tolist()).encode(), "application/json")
        assert answer.status_code == 200 and len(answer.json()[0]) == 3
        assert set(client.get("/model").json()["handlers"].values()) == {"default"}
