"""``kennel serve``'s settings, parsed once: from the command line, or from ``KENNEL_SERVE_<NAME>`` variables in
each worker process the server starts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from kennel import serve_defaults as defaults
from kennel.serve import EndpointOptions, FaceSearch
from kennel.serve.package import HandlerRef


class ServeSettings(BaseSettings):
    """Endpoint settings; each can also come from ``KENNEL_SERVE_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="KENNEL_SERVE_")

    max_body_bytes: int = defaults.MAX_BODY_BYTES
    max_pixels: int = defaults.MAX_PIXELS
    max_decodes: int = Field(defaults.MAX_DECODES, ge=1)  # photos decoded at once (a huge one takes several slots)
    max_batch_size: int = defaults.MAX_BATCH_SIZE
    max_wait_ms: float = defaults.MAX_WAIT_MS
    top_k: int = defaults.TOP_K
    runtime: str = defaults.RUNTIME  # an inference backend, a runtime, or auto (kennel.inference)
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = defaults.PRECISION
    dog_threshold: float = defaults.DOG_THRESHOLD
    faces: FaceSearch = defaults.FACES
    max_queue: int = Field(defaults.MAX_QUEUE, ge=1)
    request_timeout_s: float = Field(defaults.REQUEST_TIMEOUT_S, gt=0)
    header_timeout_s: float = Field(defaults.HEADER_TIMEOUT_S, gt=0)
    model_ref: str = ""  # what a reload loads again: a registry URI (models:/NAME@ALIAS), or the model folder
    follow_alias: bool = False  # load the version a registry alias names whenever it moves
    follow_interval_s: float = Field(30.0, gt=0)  # how often the alias is looked up
    capture_dir: Path | None = None  # a JSON line per sampled request (kennel.serve.capture), for kennel monitor
    capture_sample: float = Field(1.0, gt=0, le=1)  # the share of requests captured
    capture_photos: bool = False  # keep the photos themselves too
    model_name: str = ""  # the endpoint's name (v2 and runtime routes); the job's (or the model folder's) when empty
    # The user's inference handlers to serve instead of kennel's artifact, and the threads they answer in (one
    # request each, as SageMaker's model server runs one per worker).
    handlers: HandlerRef | None = None
    handler_threads: int = Field(defaults.MAX_DECODES, ge=1)
    # Who may call (kennel.serve.guard): the address bound (a loopback one turns the Host check on), the bearer
    # token (None: none), the extra Host names a loopback server answers, and the origins CORS allows.
    host: str = defaults.HOST
    token: SecretStr | None = None
    signing_key: SecretStr | None = None  # the runtime API's secret access key; the token when None
    allowed_hosts: list[str] = []
    cors_origins: list[str] = []

    def endpoint_options(self) -> EndpointOptions:
        return EndpointOptions(self.max_pixels, self.top_k, self.dog_threshold, self.faces, self.max_decodes)
