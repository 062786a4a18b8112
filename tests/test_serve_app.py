"""The HTTP endpoint on a tiny artifact: every route, every refusal as a 4xx JSON error, batching, metrics."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from helpers import ARTIFACT_CLASSES, LOOPBACK, encode, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from kennel.serve import sagemaker
from kennel.serve.app import Answer, ServeSettings, create_app
from kennel.serve.inputs import InputError

CLASSES = ARTIFACT_CLASSES  # the shared artifact_dir fixture's
KEYS = {"predictions", "dog", "human_face", "model", "latency_ms"}


def photo(seed: int = 0, size: tuple[int, int] = (80, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def client(artifact_dir: Path):
    settings = ServeSettings(max_body_bytes=200_000, max_pixels=1_000_000, max_wait_ms=20)
    with TestClient(create_app(artifact_dir, settings), base_url=LOOPBACK) as client:
        yield client


def post(client: TestClient, body: bytes, content_type: str = "image/jpeg", **params):
    return client.post("/invocations", content=body, headers={"content-type": content_type}, params=params)


def assert_answer(response, top_k: int = 5) -> dict:
    assert response.status_code == 200, response.text
    data = response.json()
    assert set(data) == KEYS
    Answer.model_validate(data)  # the schema /docs shows
    assert len(data["predictions"]) == top_k
    for p in data["predictions"]:
        assert set(p) == {"label", "probability", "index"} and CLASSES[p["index"]] == p["label"]
    probabilities = [p["probability"] for p in data["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert isinstance(data["dog"]["is_dog"], bool) and 0 <= data["dog"]["score"] <= 1
    assert isinstance(data["human_face"]["found"], bool) and data["human_face"]["count"] >= 0
    assert data["model"] == {"backbone": "tiny", "classes": len(CLASSES)}
    assert data["latency_ms"] > 0
    return data


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "application/x-image", "image/webp"])
def test_invocations_takes_the_photo_bytes(client: TestClient, content_type: str) -> None:
    fmt = {"image/png": "PNG", "image/webp": "WEBP"}.get(content_type, "JPEG")
    assert_answer(post(client, encode(photo(), fmt), content_type))


def test_same_photo_same_answer_on_every_route(client: TestClient) -> None:
    body = encode(photo(1))
    raw = assert_answer(post(client, body, top_k=3), top_k=3)
    as_json = json.dumps({"image": base64.b64encode(body).decode(), "top_k": 3})
    from_json = assert_answer(post(client, as_json.encode(), "application/json"), top_k=3)
    upload = client.post("/predict", files={"file": ("dog.jpg", body, "image/jpeg")}, data={"top_k": "3"})
    from_upload = assert_answer(upload, top_k=3)
    assert raw["predictions"] == from_json["predictions"] == from_upload["predictions"]
    assert_answer(client.post("/predict", files={"file": ("dog.jpg", body, "application/octet-stream")}))


def test_top_k_defaults_to_five_and_is_capped_by_the_classes(client: TestClient) -> None:
    assert_answer(post(client, encode(photo())))
    assert_answer(post(client, encode(photo()), top_k=50), top_k=len(CLASSES))


@pytest.mark.parametrize(
    ("mode", "fmt"), [("I;16", "PNG"), ("CMYK", "JPEG"), ("L", "PNG"), ("P", "GIF"), ("RGBA", "PNG"), ("CMYK", "TIFF")]
)
def test_other_modes_are_converted(client: TestClient, mode: str, fmt: str) -> None:
    if mode == "I;16":
        image = Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).astype(np.uint16))
        assert image.mode.startswith("I;16")
    else:
        image = photo().convert(mode)
    assert_answer(post(client, encode(image, fmt), "image/png" if fmt == "PNG" else "image/jpeg"))


def bad_requests(client: TestClient) -> dict[str, tuple]:
    jpeg = encode(photo())
    frames = [photo(i) for i in range(3)]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:])
    return {
        "empty": (post(client, b""), 400, "empty_body"),
        "truncated": (post(client, jpeg[: len(jpeg) // 2]), 400, "corrupt_image"),
        "header only": (post(client, jpeg[:200]), 400, "corrupt_image"),
        "lying type": (post(client, b"<html>not a photo</html>", "image/png"), 415, "not_an_image"),
        "text type": (post(client, jpeg, "text/plain"), 415, "unsupported_media_type"),
        "no type": (
            client.post("/invocations", content=jpeg, headers={"content-type": ""}),
            415,
            "unsupported_media_type",
        ),
        "too large": (post(client, b"\xff" * 300_000), 413, "body_too_large"),
        "too large streamed": (
            client.post("/invocations", content=iter([b"\xff" * 50_000] * 6), headers={"content-type": "image/jpeg"}),
            413,
            "body_too_large",
        ),
        "upload too large": (
            client.post("/predict", files={"file": ("a.jpg", b"\xff" * 300_000, "image/jpeg")}),
            413,
            "body_too_large",
        ),
        "bomb": (post(client, encode(Image.new("L", (1500, 1000)), "PNG"), "image/png"), 422, "image_too_large"),
        "strip": (post(client, encode(Image.new("L", (3000, 2)), "PNG"), "image/png"), 422, "bad_aspect_ratio"),
        "animated": (post(client, animated.getvalue(), "image/gif"), 422, "animated_image"),
        "bad base64": (post(client, b'{"image": "not base64!!"}', "application/json"), 400, "bad_base64"),
        "bad json": (post(client, b'{"image": ', "application/json"), 400, "bad_json"),
        "json without image": (post(client, b'{"top_k": 3}', "application/json"), 400, "bad_json"),
        "json base64 of junk": (
            post(client, json.dumps({"image": base64.b64encode(b"junk").decode()}).encode(), "application/json"),
            415,
            "not_an_image",
        ),
        "top_k zero": (post(client, jpeg, top_k=0), 400, "bad_top_k"),
        "top_k word": (post(client, jpeg, top_k="five"), 400, "bad_top_k"),
        "top_k json float": (
            post(
                client,
                json.dumps({"image": base64.b64encode(jpeg).decode(), "top_k": 2.5}).encode(),
                "application/json",
            ),
            400,
            "bad_top_k",
        ),
        "upload top_k": (
            client.post("/predict", files={"file": ("a.jpg", jpeg, "image/jpeg")}, data={"top_k": "-1"}),
            400,
            "bad_top_k",
        ),
        "upload missing": (client.post("/predict"), 400, "bad_request"),
        "upload wrong field": (
            client.post("/predict", files={"photo": ("a.jpg", jpeg, "image/jpeg")}),
            400,
            "bad_request",
        ),
        "unknown route": (client.get("/nowhere"), 404, "not_found"),
        "wrong method": (client.get("/invocations"), 405, "method_not_allowed"),
    }


def test_every_bad_input_gets_its_4xx_and_the_server_keeps_serving(client: TestClient) -> None:
    for name, (response, status, code) in bad_requests(client).items():
        try:
            assert_error(response, status, code)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
        assert_answer(post(client, encode(photo())))


def test_a_small_gif_frame_is_served(client: TestClient) -> None:
    assert_answer(post(client, encode(photo(), "GIF"), "image/gif"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=2000),
        st.builds(lambda cut: encode(photo(3))[:cut], st.integers(0, 3000)),
        st.builds(lambda b: json.dumps({"image": b}).encode(), st.text(max_size=200)),
    ),
    content_type=st.sampled_from(
        [
            "image/jpeg",
            "image/png",
            "image/gif",
            "image/webp",
            "application/x-image",
            "application/json",
            "text/plain",
            "",
        ]
    ),
    top_k=st.one_of(st.none(), st.text(max_size=5), st.integers(-5, 2000).map(str)),
)
def test_fuzzed_requests_never_get_a_5xx(client: TestClient, body: bytes, content_type: str, top_k) -> None:
    params = {} if top_k is None else {"top_k": top_k}
    response = client.post("/invocations", content=body, headers={"content-type": content_type}, params=params)
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"code", "message"}


def test_ping_model_docs_and_metrics(client: TestClient) -> None:
    assert client.get("/ping").status_code == 200
    model = client.get("/model").json()
    assert model["class_names"] == CLASSES and model["backbone"] == "tiny"
    assert model["preprocessing"]["input_size"] > 0 and "metrics" in model
    assert client.get("/docs").status_code == 200
    assert "/invocations" in client.get("/openapi.json").json()["paths"]
    post(client, b"")
    post(client, encode(photo()))
    text = client.get("/metrics").text
    assert 'kennel_requests_total{route="/invocations",status="200"}' in text
    assert 'kennel_requests_total{route="/invocations",status="400"}' in text
    assert 'kennel_errors_total{code="empty_body"}' in text
    for name in ("kennel_request_seconds_bucket", "kennel_batch_size_bucket", "kennel_queue_depth"):
        assert name in text


def test_concurrent_requests_share_batches(artifact_dir: Path) -> None:
    settings = ServeSettings(max_wait_ms=50, max_batch_size=16)
    with TestClient(create_app(artifact_dir, settings), base_url=LOOPBACK) as client:
        bodies = [encode(photo(i)) for i in range(12)]
        alone = [post(client, body, top_k=6).json()["predictions"] for body in bodies]
        batcher = client.app.state.service.slot.current.model.batcher
        batcher.batch_sizes.clear()
        working, first = batcher.run_batch, []

        def run_batch(batch: torch.Tensor):
            # The first batch ends only once all the other requests wait in the queue, so they have to share
            # the next batches however unevenly the client's threads send them.
            if not first:
                first.append(len(batch))
                wait_until(lambda: len(batch) + batcher.depth == len(bodies), "every request queued")
            return working(batch)

        batcher.run_batch = run_batch
        with ThreadPoolExecutor(12) as pool:
            together = list(pool.map(lambda b: assert_answer(post(client, b, top_k=6), 6)["predictions"], bodies))
        sizes = list(batcher.batch_sizes)
    assert max(sizes) > 1 and sum(sizes) == 12
    for a, b in zip(alone, together, strict=True):  # each answer belongs to its own photo
        assert [p["label"] for p in a] == [p["label"] for p in b]
        assert all(abs(p["probability"] - q["probability"]) < 1e-4 for p, q in zip(a, b, strict=True))


def test_the_web_page_is_served_when_present(client: TestClient) -> None:
    from kennel.serve.app import STATIC

    response = client.get("/")
    assert response.status_code == (200 if (STATIC / "index.html").is_file() else 404)


def test_sagemaker_functions_round_trip(artifact_dir: Path, tmp_path: Path) -> None:
    model = sagemaker.model_fn(str(artifact_dir))
    body = encode(photo(1))
    data = sagemaker.input_fn(body, "image/jpeg")
    answer, content_type = sagemaker.output_fn(sagemaker.predict_fn(data, model), "application/json")
    result = json.loads(answer)
    assert content_type == "application/json" and set(result) == KEYS
    settings = ServeSettings(max_wait_ms=0)
    with TestClient(create_app(artifact_dir, settings), base_url=LOOPBACK) as client:
        served = post(client, body).json()
    assert [p["label"] for p in result["predictions"]] == [p["label"] for p in served["predictions"]]
    assert all(
        abs(p["probability"] - q["probability"]) < 1e-4
        for p, q in zip(result["predictions"], served["predictions"], strict=True)
    )
    as_json = json.dumps({"image": base64.b64encode(body).decode(), "top_k": 2})
    assert len(sagemaker.predict_fn(sagemaker.input_fn(as_json, "application/json"), model)["predictions"]) == 2
    with pytest.raises(InputError) as refused:
        sagemaker.input_fn(b"junk", "image/jpeg")
    assert refused.value.status == 415 and refused.value.to_dict()["error"]["code"] == "not_an_image"
    with pytest.raises(InputError):
        sagemaker.output_fn(result, "text/csv")
    (tmp_path / "model").symlink_to(artifact_dir, target_is_directory=True)
    assert sagemaker.model_fn(str(tmp_path)).predictor.class_names == CLASSES


def test_a_failing_model_answers_json_500_and_recovers(artifact_dir: Path) -> None:
    with TestClient(
        create_app(artifact_dir, ServeSettings(max_wait_ms=0)), base_url=LOOPBACK, raise_server_exceptions=False
    ) as client:
        assert_answer(post(client, encode(photo())))  # the model loaded
        batcher = client.app.state.service.slot.current.model.batcher
        working = batcher.run_batch

        def broken(batch):
            raise RuntimeError("out of memory")

        batcher.run_batch = broken
        assert_error(post(client, encode(photo())), 500, "internal")
        batcher.run_batch = working
        assert_answer(post(client, encode(photo())))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(st.binary(max_size=1000), st.builds(lambda cut: encode(photo(4))[:cut], st.integers(0, 3000))),
    content_type=st.sampled_from(["image/jpeg", "image/png", "application/octet-stream", "text/plain", "video/mp4"]),
    top_k=st.one_of(st.none(), st.text(max_size=4)),
)
def test_fuzzed_uploads_never_get_a_5xx(client: TestClient, body: bytes, content_type: str, top_k) -> None:
    data = {} if top_k is None else {"top_k": top_k}
    response = client.post("/predict", files={"file": ("x", body, content_type)}, data=data)
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert set(response.json()["error"]) == {"code", "message"}


@pytest.mark.parametrize(
    ("faces", "dog_logit", "searched"),
    [("not-dog", 0.0, True), ("not-dog", 20.0, False), ("always", 20.0, True), ("off", 0.0, False)],
)
def test_faces_are_looked_for_where_the_setting_says(
    artifact_dir: Path, faces: str, dog_logit: float, searched: bool
) -> None:
    from kennel.predictor import Outputs
    from kennel.serve import Endpoint, EndpointOptions

    endpoint = Endpoint.load(artifact_dir, options=EndpointOptions(faces=faces))
    looked_at: list[Image.Image] = []
    endpoint.faces = lambda image: looked_at.append(image) or {"found": True, "count": 1}
    prepared = endpoint.prepare(encode(photo()), "image/jpeg")
    imagenet = torch.zeros(1000)
    imagenet[200] = dog_logit  # a Tibetan terrier when large
    answer = endpoint.respond(Outputs(torch.zeros(len(CLASSES)), imagenet), prepared)
    assert answer["dog"]["is_dog"] == (dog_logit > 0)
    assert len(looked_at) == int(searched)
    not_searched = {"found": False, "count": 0, "searched": False}
    assert answer["human_face"] == ({"found": True, "count": 1} if searched else not_searched)


def test_too_large_says_what_the_model_reads(client: TestClient) -> None:
    resize = client.get("/model").json()["preprocessing"]["resize_size"]
    response = post(client, encode(Image.new("RGB", (1100, 1000))))
    assert_error(response, 422, "image_too_large")
    message = response.json()["error"]["message"]
    assert "1100x1000" in message and "1,000,000" in message and f"only {resize} px" in message


def test_decodes_wait_for_their_slots(artifact_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from kennel.serve import Endpoint, EndpointOptions, inputs

    endpoint = Endpoint.load(artifact_dir, options=EndpointOptions(max_decodes=2))
    decode, lock, meeting = inputs.load_rgb, threading.Lock(), threading.Barrier(2)
    in_flight = {"now": 0, "most": 0}

    def counted(image: Image.Image, model_side: int | None = None) -> Image.Image:
        with lock:
            in_flight["now"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])
        meeting.wait(timeout=30)  # two decode together, as they may; a third would raise the count first
        try:
            return decode(image, model_side)
        finally:
            with lock:
                in_flight["now"] -= 1

    monkeypatch.setattr(inputs, "load_rgb", counted)
    with ThreadPoolExecutor(8) as pool:
        prepared = list(pool.map(lambda i: endpoint.prepare(encode(photo(i)), "image/jpeg"), range(8)))
    assert in_flight["most"] == 2 and len(prepared) == 8


def test_a_49_megapixel_png_is_refused_or_shrunk_and_its_memory_given_back(
    artifact_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kennel import serve
    from kennel.serve import Endpoint, EndpointOptions

    bomb = encode(Image.new("RGB", (7000, 7000), (120, 90, 60)), "PNG")  # about 160 KB
    with pytest.raises(InputError) as refused:
        Endpoint.load(artifact_dir).prepare(bomb, "image/png")
    assert refused.value.code == "image_too_large" and "resize the photo" in refused.value.message
    trims: list[int] = []
    monkeypatch.setattr(serve, "give_memory_back", lambda: trims.append(1))
    endpoint = Endpoint.load(artifact_dir, options=EndpointOptions(max_pixels=50_000_000))
    prepared = endpoint.prepare(bomb, "image/png")
    side = 2 * endpoint.predictor.preprocessing.resize_size
    size = endpoint.predictor.input_size
    assert prepared.image.size == (side, side) and prepared.tensor.shape == (3, size, size)
    assert trims == [1]
