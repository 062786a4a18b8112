"""SageMaker Runtime's InvokeEndpoint on a kennel endpoint, through boto3's own client: its signature checked, its
answers and errors parsed as boto3 parses SageMaker's (``ModelError``, ``ValidationError``, a 403)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from helpers import ARTIFACT_CLASSES, LOOPBACK, encode, wait_until
from PIL import Image
from test_client import running

from kennel.serve import sigv4
from kennel.serve.app import ServeSettings, create_app

boto3 = pytest.importorskip("boto3", reason="boto3 is not installed: pip install -e '.[dev]'")
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

SECRET = "the-endpoint-token-for-these-tests"
NAME = "dogs"
PHOTO = encode(Image.new("RGB", (64, 48), (200, 120, 30)))


def runtime(url: str, secret: str = SECRET, name: str = NAME, region: str = "eu-west-1"):
    """boto3's sagemaker-runtime client, pointed at ``url`` with the endpoint's key pair."""
    from botocore.config import Config

    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=sigv4.access_key_id(name),
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def endpoint(artifact_dir: Path) -> Iterator[str]:
    settings = ServeSettings(token=SECRET, model_name=NAME, max_wait_ms=0, max_body_bytes=200_000)
    app = create_app(artifact_dir, settings)
    with running(app) as url:
        wait_until(lambda: httpx.get(f"{url}/ping").status_code == 200, "the model ready")
        yield url


def test_invoke_endpoint_answers_as_sagemaker_does(endpoint: str) -> None:
    answer = runtime(endpoint).invoke_endpoint(
        EndpointName=NAME, Body=PHOTO, ContentType="image/jpeg", Accept="application/json", CustomAttributes="c=1"
    )
    assert answer["ContentType"] == "application/json" and answer["InvokedProductionVariant"] == "AllTraffic"
    prediction = json.loads(answer["Body"].read())
    assert prediction["predictions"][0]["label"] in ARTIFACT_CLASSES and "dog" in prediction
    bearer = {"content-type": "image/jpeg", "authorization": f"Bearer {SECRET}"}
    direct = httpx.post(f"{endpoint}/invocations", content=PHOTO, headers=bearer).json()
    assert [p["label"] for p in direct["predictions"]] == [p["label"] for p in prediction["predictions"]]


def test_the_model_refusing_a_request_is_a_model_error_with_its_own_status(endpoint: str) -> None:
    client = runtime(endpoint)
    with pytest.raises(client.exceptions.ModelError) as refused:
        client.invoke_endpoint(EndpointName=NAME, Body=b"not a photo", ContentType="image/jpeg")
    error = refused.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424 and error["OriginalStatusCode"] == 415
    assert json.loads(error["OriginalMessage"])["error"]["code"] == "not_an_image"
    assert "Received client error (415)" in error["Error"]["Message"]
    with pytest.raises(client.exceptions.ModelError) as refused:
        client.invoke_endpoint(EndpointName=NAME, Body=PHOTO, ContentType="image/jpeg", Accept="text/csv")
    assert refused.value.response["OriginalStatusCode"] == 406
    with pytest.raises(client.exceptions.ModelError) as refused:
        client.invoke_endpoint(EndpointName=NAME, Body=PHOTO, ContentType="text/plain")
    assert refused.value.response["OriginalStatusCode"] == 415
    assert client.invoke_endpoint(EndpointName=NAME, Body=PHOTO, ContentType="image/jpeg")["Body"].read()


def test_another_endpoint_name_is_a_404_validation_error(endpoint: str) -> None:
    client = runtime(endpoint)
    with pytest.raises(client.exceptions.ValidationError) as missing:
        client.invoke_endpoint(EndpointName="cats", Body=PHOTO, ContentType="image/jpeg")
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "cats" in missing.value.response["Error"]["Message"] and NAME in missing.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("secret", "name", "code"),
    [
        ("not-the-token", NAME, "InvalidSignatureException"),
        (SECRET, "cats", "UnrecognizedClientException"),  # cats' key id, not this endpoint's
    ],
)
def test_a_wrong_key_is_a_403_and_the_endpoint_goes_on(endpoint: str, secret: str, name: str, code: str) -> None:
    with pytest.raises(ClientError) as refused:
        runtime(endpoint, secret=secret, name=name).invoke_endpoint(
            EndpointName=NAME, Body=PHOTO, ContentType="image/jpeg"
        )
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert refused.value.response["Error"]["Code"] == code
    assert runtime(endpoint).invoke_endpoint(EndpointName=NAME, Body=PHOTO, ContentType="image/jpeg")["Body"].read()


def test_unsigned_requests_and_the_bearer_token_do_not_open_the_runtime_route(endpoint: str) -> None:
    route = f"{endpoint}/endpoints/{NAME}/invocations"
    for headers in ({}, {"authorization": f"Bearer {SECRET}"}):
        refused = httpx.post(route, content=PHOTO, headers={"content-type": "image/jpeg", **headers})
        assert refused.status_code == 403 and refused.json()["message"], refused.text
        assert refused.headers["x-amzn-errortype"] in (
            "MissingAuthenticationTokenException",
            "IncompleteSignatureException",
        )
    # and the runtime route's signature opens no other route
    signed = signed_request(route, PHOTO)
    other = httpx.post(f"{endpoint}/invocations", content=PHOTO, headers=signed)
    assert other.status_code == 401


def signed_request(url: str, body: bytes, secret: str = SECRET, when: datetime | None = None) -> dict[str, str]:
    """botocore's SigV4 headers for a POST of ``body`` to ``url``, signed at ``when`` (now by default)."""
    from unittest import mock

    request = AWSRequest("POST", url, data=body, headers={"Content-Type": "image/jpeg"})
    signer = SigV4Auth(Credentials(sigv4.access_key_id(NAME), secret), "sagemaker", "us-east-1")
    moment = (when or datetime.now(timezone.utc)).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=moment):
        signer.add_auth(request)
    return dict(request.headers.items())


def test_a_stale_or_tampered_request_is_refused(endpoint: str) -> None:
    route = f"{endpoint}/endpoints/{NAME}/invocations"
    assert httpx.post(route, content=PHOTO, headers=signed_request(route, PHOTO)).status_code == 200
    old = signed_request(route, PHOTO, when=datetime.now(timezone.utc) - timedelta(minutes=20))
    stale = httpx.post(route, content=PHOTO, headers=old)
    assert stale.status_code == 403 and "Signature expired" in stale.json()["message"]
    recent = signed_request(route, PHOTO, when=datetime.now(timezone.utc) - timedelta(minutes=5))
    assert httpx.post(route, content=PHOTO, headers=recent).status_code == 200
    tampered = httpx.post(route, content=PHOTO[:-1] + b"\x00", headers=signed_request(route, PHOTO))
    assert tampered.status_code == 403 and tampered.headers["x-amzn-errortype"] == "InvalidSignatureException"


def test_refusals_on_the_runtime_route_come_in_aws_shape(endpoint: str) -> None:
    client = runtime(endpoint)
    with pytest.raises(ClientError) as too_large:
        client.invoke_endpoint(EndpointName=NAME, Body=b"\xff" * 300_000, ContentType="image/jpeg")
    response = too_large.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 413 and response["Error"]["Code"] == "ValidationError"
    assert "over the limit" in response["Error"]["Message"]
    rebound = httpx.post(f"{endpoint}/endpoints/{NAME}/invocations", headers={"host": "attacker.example"})
    assert rebound.status_code == 421 and rebound.headers["x-amzn-errortype"] == "ValidationError"
    assert "--allowed-host" in rebound.json()["message"]


def test_the_signature_check_matches_botocore_on_awkward_requests() -> None:
    """Paths with characters to encode, a query, repeated spaces in a header: botocore's signature verifies."""
    body = b'{"x": 1}'
    url = "http://127.0.0.1:8080/endpoints/my%20model/invocations?b=2&a=1"
    request = AWSRequest("POST", url, data=body, headers={"Content-Type": "application/json", "X-Custom": "a   b"})
    SigV4Auth(Credentials(sigv4.access_key_id("my model"), SECRET), "sagemaker", "us-west-2").add_auth(request)
    headers = [*request.headers.items(), ("Host", "127.0.0.1:8080")]
    auth = sigv4.parse(request.headers["Authorization"], request.headers["X-Amz-Date"])
    key, date = sigv4.access_key_id("my model"), request.headers["X-Amz-Date"]
    check = dict(method="POST", raw_path="/endpoints/my%20model/invocations", query="b=2&a=1", headers=headers)
    sigv4.verify(auth, SECRET, key, amz_date=date, body=body, **check)
    for changed in ({"body": b"{}"}, {"query": "a=1"}, {"raw_path": "/endpoints/my%2520model/invocations"}):
        with pytest.raises(sigv4.SignatureError):
            sigv4.verify(auth, SECRET, key, **{"amz_date": date, "body": body, **check, **changed})
    assert hashlib.sha256(body).hexdigest() in sigv4.canonical_request("POST", "/", "", [], [], body)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer x",
        "AWS4-HMAC-SHA256 Credential=K/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=0",
    ],
)
def test_headers_that_are_no_sagemaker_signature_are_refused(header: str | None) -> None:
    with pytest.raises(sigv4.SignatureError):
        sigv4.parse(header, "20260101T000000Z", now=datetime(2026, 1, 1, tzinfo=timezone.utc))


def test_an_endpoint_without_a_key_has_no_open_runtime_route(artifact_dir: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(artifact_dir, ServeSettings(model_name=NAME)), base_url=LOOPBACK) as client:
        route = f"{LOOPBACK}/endpoints/{NAME}/invocations"
        refused = client.post(route, content=PHOTO, headers=signed_request(route, PHOTO))
        assert refused.status_code == 403 and refused.headers["x-amzn-errortype"] == "AccessDeniedException"
        assert client.post("/invocations", content=PHOTO, headers={"content-type": "image/jpeg"}).status_code == 200
