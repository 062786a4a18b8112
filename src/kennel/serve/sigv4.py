"""AWS Signature Version 4, checked: the SageMaker runtime route accepts a request only when it is signed as boto3
signs it, with the endpoint's key pair.

The key pair: the access key id is made from the endpoint's name (:func:`access_key_id`; it is no secret, it
says which key signed), the secret access key is the endpoint's token (:mod:`kennel.serve.tokens`). The check
recomputes the signature the documented way (canonical request, string to sign, the key derived through date,
region and service) from what arrived, and compares it in constant time. A request dated more than
:data:`MAX_SKEW_S` from now is refused, so a signed request overheard once cannot be replayed later.

:func:`parse` reads the ``Authorization`` header alone, so that a request without a usable one is refused
before its body is read; :func:`verify` needs the body, whose hash is part of what is signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "sagemaker"  # the signing name of SageMaker Runtime
MAX_SKEW_S = 15 * 60
KEY_PREFIX = "KENNEL"


class SignatureError(Exception):
    """A request this endpoint does not take as signed; ``kind`` is the error type AWS answers with."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def access_key_id(endpoint_name: str) -> str:
    """The access key id of an endpoint: ``KENNEL`` and 14 characters of its name's hash, 20 in all as AWS's."""
    digest = hashlib.sha256(endpoint_name.encode()).digest()
    return KEY_PREFIX + base64.b32encode(digest).decode()[:14]


@dataclass(frozen=True)
class Authorization:
    """The parts of an ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""

    access_key: str
    date: str  # YYYYMMDD, from the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse(header: str | None, amz_date: str | None, now: datetime | None = None) -> Authorization:
    """The ``Authorization`` header's parts, checked against what can be checked without the body: the scope
    names this service, its date is the request's, and the request's ``X-Amz-Date`` is within 15 minutes of now."""
    if not header:
        raise SignatureError("MissingAuthenticationTokenException", "Missing Authentication Token")
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureError("IncompleteSignatureException", f"the Authorization header must use {ALGORITHM}")
    fields = {}
    for part in rest.split(","):
        key, _, value = part.strip().partition("=")
        fields[key] = value
    missing = [key for key in ("Credential", "SignedHeaders", "Signature") if not fields.get(key)]
    if missing:
        raise SignatureError("IncompleteSignatureException", f"the Authorization header lacks {', '.join(missing)}")
    credential = fields["Credential"].split("/")
    if len(credential) != 5 or credential[4] != "aws4_request":
        raise SignatureError(
            "IncompleteSignatureException", "the credential is not KEY/DATE/REGION/SERVICE/aws4_request"
        )
    key, date, region, service, _ = credential
    auth = Authorization(key, date, region, service, tuple(fields["SignedHeaders"].split(";")), fields["Signature"])
    if auth.service != SERVICE:
        raise SignatureError("InvalidSignatureException", f"the credential is for {auth.service!r}, not {SERVICE!r}")
    if "host" not in auth.signed_headers or "x-amz-date" not in auth.signed_headers:
        raise SignatureError("IncompleteSignatureException", "the signed headers must include host and x-amz-date")
    check_date(amz_date, auth.date, now or datetime.now(timezone.utc))
    return auth


def check_date(amz_date: str | None, scope_date: str, now: datetime) -> None:
    """The request's ``X-Amz-Date``: a time, of the credential's day, within :data:`MAX_SKEW_S` of ``now``."""
    try:
        moment = datetime.strptime(amz_date or "", "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise SignatureError(
            "IncompleteSignatureException", "X-Amz-Date must be a time such as 20260501T120000Z"
        ) from None
    if amz_date[:8] != scope_date:  # type: ignore[index]
        raise SignatureError("InvalidSignatureException", "the credential's date is not the request's X-Amz-Date")
    if abs((now - moment).total_seconds()) > MAX_SKEW_S:
        raise SignatureError(
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is more than 15 minutes from the server's time, "
            f"{now:%Y%m%dT%H%M%SZ}; check this machine's clock",
        )


def canonical_path(raw_path: str) -> str:
    """The path as signed: dot segments and repeated slashes removed, then percent-encoded once more (the path
    that arrived is encoded already; SigV4 encodes it again for every service but S3)."""
    segments: list[str] = []
    for segment in raw_path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    path = "/" + "/".join(segments) + ("/" if raw_path.endswith("/") and segments else "")
    return quote(path, safe="/~")


def canonical_query(query: str) -> str:
    """The query as signed: its ``key=value`` pairs as they arrived (encoded), sorted."""
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&")) if query else []
    return "&".join(f"{key}={value}" for key, value in pairs)


def canonical_request(
    method: str, raw_path: str, query: str, headers: Iterable[tuple[str, str]], signed: Iterable[str], body: bytes
) -> str:
    """What SigV4 signs of a request: method, path, query, the signed headers (names in lower case, values with
    runs of spaces as one, several values of a name joined by commas), their names, and the body's SHA-256."""
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(" ".join(value.split()))
    names = sorted(set(signed))
    lines = "".join(f"{name}:{','.join(values.get(name, []))}\n" for name in names)
    payload = hashlib.sha256(body).hexdigest()
    return "\n".join(
        [method.upper(), canonical_path(raw_path), canonical_query(query), lines, ";".join(names), payload]
    )


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def signature(secret: str, auth: Authorization, amz_date: str, request: str) -> str:
    """The signature of a canonical ``request`` made with ``secret`` in ``auth``'s scope."""
    key = f"AWS4{secret}".encode()
    for part in (auth.date, auth.region, auth.service, "aws4_request"):
        key = _hmac(key, part)
    to_sign = "\n".join([ALGORITHM, amz_date, auth.scope, hashlib.sha256(request.encode()).hexdigest()])
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def verify(
    auth: Authorization,
    secret: str,
    access_key: str,
    *,
    method: str,
    raw_path: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    amz_date: str,
    body: bytes,
) -> None:
    """Raise :class:`SignatureError` unless ``auth`` is ``access_key``'s signature of this request with
    ``secret``. A body hash sent in ``X-Amz-Content-SHA256`` must be the body's."""
    if not hmac.compare_digest(auth.access_key.encode(), access_key.encode()):
        raise SignatureError(
            "UnrecognizedClientException", "The security token included in the request is invalid: unknown access key"
        )
    headers = list(headers)
    sent_hash = next((value for name, value in headers if name.lower() == "x-amz-content-sha256"), None)
    if sent_hash is not None and sent_hash.strip() != hashlib.sha256(body).hexdigest():
        raise SignatureError("InvalidSignatureException", "X-Amz-Content-SHA256 is not the hash of the body")
    request = canonical_request(method, raw_path, query, headers, auth.signed_headers, body)
    expected = signature(secret, auth, amz_date, request)
    if not hmac.compare_digest(expected.encode(), auth.signature.encode()):
        raise SignatureError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
            "Access Key and signing method.",
        )
