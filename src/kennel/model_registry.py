"""Model versions in MLflow's model registry: a job's artifact registered under a name, aliases (``prod``) moved
between versions (aliases only: MLflow deprecated its stages), a version fetched back as a local artifact folder.

The registry is the tracking store the jobs are recorded in (SQLite in ``$KENNEL_HOME`` or a tracking server), and
a version's source is the ``model`` folder of its job's run, so its files come back through MLflow from either. A
fetched version is kept under ``cache_dir()/registry``, keyed by the store, and fetched again only if it changed.
What was deployed when is one JSON line per event in ``$KENNEL_HOME/deployments/<name>.jsonl``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.atomic import atomic_write_json, swap_folder_into_place
from kennel.errors import Failure, UsageError
from kennel.home import cache_dir, kennel_home
from kennel.home import tracking_uri as default_tracking_uri
from kennel.jobs import JobRecord, load_job, now
from kennel.jsonl import append_jsonl, read_jsonl
from kennel.mlflow_store import DEFAULT_EXPERIMENT, check_reachable, get_client

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

SCHEME = "models:/"
EVENTS = ("alias", "serve", "switch")  # what a line of the deployment history records
METRICS = ("best_valid_accuracy", "test_accuracy", "test_top5")  # the job's numbers each version carries as tags
SPLITS = ("train", "valid", "test")
MARKER = ".kennel-registry.json"  # in a fetched folder: which version of which store it holds


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model, as kennel tagged it at registration."""

    name: str
    version: str
    aliases: tuple[str, ...]
    created: str
    job_id: str | None
    backbone: str | None
    metrics: dict[str, float]
    data_fingerprint: str | None
    source: str
    run_id: str | None


@dataclass(frozen=True)
class ResolvedModel:
    """A registry URI fetched: the local artifact folder, and the version the URI named when it was fetched."""

    folder: Path
    name: str
    version: str
    alias: str | None
    uri: str
    job_id: str | None = None


def is_registry_uri(ref: str) -> bool:
    return str(ref).startswith(SCHEME)


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` -> (NAME, None, ALIAS); ``models:/NAME/VERSION`` -> (NAME, VERSION, None)."""
    found = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([^/@]+))", uri)
    if found is None:
        raise UsageError(f"{uri!r} is no registry URI kennel reads; give models:/NAME@ALIAS or models:/NAME/VERSION")
    name, version, alias = found.groups()
    return name, version and str(int(version)), alias


def _store_and_client(tracking_uri: str | None) -> tuple[str, MlflowClient]:
    """The store (``tracking_uri``, else kennel's) and a client on it, opened once per store in this process:
    ``kennel serve --follow-alias`` asks every few seconds. A tracking server is still checked each time, so one
    gone away fails in seconds, not after MLflow's minutes of retries."""
    store = tracking_uri or default_tracking_uri()
    check_reachable(store)
    return store, _open_client(store)


@functools.lru_cache(maxsize=8)
def _open_client(store: str) -> MlflowClient:
    return get_client(store)


# --- registering -------------------------------------------------------------------------------------------------


def register(
    job: str | JobRecord, name: str, alias: str | None = None, tracking_uri: str | None = None
) -> RegisteredVersion:
    """Register ``job``'s model artifact as a new version of ``name`` (created if missing), tagged with the job's
    metrics, backbone and data fingerprint, and point ``alias`` at it when given. A job with no run holding its
    model in this store (tracking was off, or went to another store) gets one now, with its files."""
    from mlflow.exceptions import MlflowException

    from kennel.artifact import is_artifact  # PyTorch: only when registering

    record = job if isinstance(job, JobRecord) else load_job(job)
    if record.status in ("created", "running"):
        raise UsageError(f"job {record.id} is {record.status}; register it once it has finished")
    folder = record.model_dir
    if not is_artifact(folder):
        raise UsageError(f"job {record.id} ({record.status}) has no model artifact at {folder}")
    store, client = _store_and_client(tracking_uri)
    run_id = _run_holding_model(client, record, folder, store)
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    try:
        client.create_registered_model(name, description="kennel image classifier")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise UsageError(f"cannot register a model named {name!r}: {exc.message}") from None
    tags, about = _version_tags(record), f"kennel job {record.id}"
    created = client.create_model_version(name, source, run_id=run_id, tags=tags, description=about)
    if alias:
        try:
            set_alias(name, alias, created.version, store)
        except UsageError as exc:  # the version stays: say which it is
            raise UsageError(f"registered {name} version {created.version}, but {exc}") from None
    return _registered_version(client.get_model_version(name, created.version), _registered(client, name, store))


def _run_holding_model(client: MlflowClient, record: JobRecord, folder: Path, store: str) -> str:
    """The id of the job's run in this store, with the model in its ``model`` folder (logged now if missing)."""
    from mlflow.exceptions import MlflowException

    from kennel.observers.tracking import MLflowTracker

    try:
        run = client.get_run(record.mlflow_run_id) if record.mlflow_run_id else None
    except MlflowException:  # a run of another store, or deleted: the job gets a run here
        run = None
    if run is None:
        # A run as training would have logged it (params, metrics, files, model); the job's record names it.
        experiment = record.study or DEFAULT_EXPERIMENT
        tracker = MLflowTracker(replace(record, mlflow_run_id=None), tracking_uri=store, experiment=experiment)
        tracker.finish()
        return str(tracker.run_id)
    if not any(item.path == "model/artifact.json" for item in client.list_artifacts(run.info.run_id, "model")):
        client.log_artifacts(run.info.run_id, str(folder), artifact_path="model")
    return run.info.run_id


def _version_tags(record: JobRecord) -> dict[str, str]:
    tags = {"kennel.job_id": record.id, "kennel.job_name": record.name, "kennel.backbone": record.backbone}
    tags |= {f"kennel.{key}": repr(float(record.metrics[key])) for key in METRICS if key in record.metrics}
    data = record.config.get("data") or {}
    # What the job trained on, as it recorded it; a job recorded before that, its data as it is now.
    fingerprint = record.data_fingerprint or data_fingerprint(data)
    tags["kennel.data_root"], tags["kennel.data_fingerprint"] = data.get("root"), fingerprint
    return {key: str(value) for key, value in tags.items() if value is not None}


def data_fingerprint(data: dict[str, Any]) -> str | None:
    """:func:`~kennel.data.fingerprint.dataset_fingerprint` of the splits a job's ``data`` config names, as they
    are now (unchanged photos cost a ``stat`` each); None where the folders are gone."""
    from kennel.config import DataConfig
    from kennel.data.fingerprint import dataset_fingerprint
    from kennel.data.layout import LayoutError, load_layout

    try:
        config = DataConfig.model_validate({key: data.get(key) for key in ("root", *SPLITS)})
        return dataset_fingerprint(load_layout(config.root, dirs={s: config.split_dir(s) for s in SPLITS}))
    except (LayoutError, OSError, ValueError) as exc:  # ValueError: no folder named at all
        log.warning("no data fingerprint for the registered version: %s", exc)
        return None


# --- reading the registry ----------------------------------------------------------------------------------------


def _registered(client: MlflowClient, name: str, store: str) -> RegisteredModel:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        hint = f"kennel models register JOB --name {name} makes one"
        raise UsageError(f"no registered model {name!r} in {store} ({hint})") from None


def _model_version(client: MlflowClient, model: RegisteredModel, version: str) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model.name, version)
    except MlflowException:
        known = ", ".join(str(v.version) for v in _search_versions(client, model.name)) or "none"
        raise UsageError(f"model {model.name!r} has no version {version!r} (versions: {known})") from None


def _alias_target(model: RegisteredModel, alias: str) -> str:
    if alias not in model.aliases:
        known = ", ".join(f"{a} -> {v}" for a, v in sorted(model.aliases.items())) or "none"
        raise UsageError(f"model {model.name!r} has no alias {alias!r} (aliases: {known})")
    return str(model.aliases[alias])


def _search_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    quoted = name.replace("\\", "\\\\").replace("'", "\\'")
    found = client.search_model_versions(f"name = '{quoted}'")
    return sorted(found, key=lambda v: int(v.version), reverse=True)


def _registered_version(version: ModelVersion, model: RegisteredModel) -> RegisteredVersion:
    tags = version.tags or {}
    created = datetime.fromtimestamp(version.creation_timestamp / 1000, timezone.utc).isoformat(timespec="seconds")
    return RegisteredVersion(
        name=version.name,
        version=str(version.version),
        aliases=tuple(sorted(a for a, v in model.aliases.items() if str(v) == str(version.version))),
        created=created,
        job_id=tags.get("kennel.job_id"),
        backbone=tags.get("kennel.backbone"),
        metrics={key: float(tags[f"kennel.{key}"]) for key in METRICS if f"kennel.{key}" in tags},
        data_fingerprint=tags.get("kennel.data_fingerprint"),
        source=version.source,
        run_id=version.run_id,
    )


def versions(name: str, tracking_uri: str | None = None) -> list[RegisteredVersion]:
    """Every version of ``name``, newest first, with the aliases that point at each."""
    store, client = _store_and_client(tracking_uri)
    model = _registered(client, name, store)
    return [_registered_version(v, model) for v in _search_versions(client, name)]


def alias_version(name: str, alias: str, tracking_uri: str | None = None) -> str:
    """The version ``alias`` of ``name`` points at now: one small query, for an endpoint asking if it moved."""
    store, client = _store_and_client(tracking_uri)
    return _alias_target(_registered(client, name, store), alias)


def set_alias(name: str, alias: str, version: str, tracking_uri: str | None = None) -> str | None:
    """Point ``alias`` of ``name`` at ``version`` and write it in the deployment history; the version it pointed
    at before, if any."""
    from mlflow.exceptions import MlflowException

    store, client = _store_and_client(tracking_uri)
    model = _registered(client, name, store)
    target = str(_model_version(client, model, str(version)).version)
    previous = str(model.aliases[alias]) if alias in model.aliases else None
    try:
        client.set_registered_model_alias(name, alias, target)
    except MlflowException as exc:
        raise UsageError(f"cannot set alias {alias!r} of {name!r}: {exc.message}") from None
    detail = "new alias" if previous is None else "unchanged" if previous == target else f"was version {previous}"
    record_deployment(name, target, alias, "alias", detail)
    return previous


# --- fetching a version ------------------------------------------------------------------------------------------


def resolve(uri: str, tracking_uri: str | None = None) -> ResolvedModel:
    """The artifact folder of the version ``uri`` names now (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``),
    fetched through MLflow into the cache unless a whole copy of that version is there already."""
    name, version, alias = parse_uri(uri)
    store, client = _store_and_client(tracking_uri)
    model = _registered(client, name, store)
    found = _model_version(client, model, version or _alias_target(model, str(alias)))
    folder = _fetched(client, found, store)
    return ResolvedModel(folder, name, str(found.version), alias, uri, (found.tags or {}).get("kennel.job_id"))


def cached_folder(name: str, version: str, store: str) -> Path:
    """Where a fetched version lives: two stores may each have a version 1 of the same name."""
    key = f"{store.partition(':')[0]}-{hashlib.sha256(store.encode()).hexdigest()[:10]}"
    return cache_dir() / "registry" / key / _safe(name) / str(version)


def _fetched(client: MlflowClient, version: ModelVersion, store: str) -> Path:
    from mlflow.artifacts import download_artifacts

    from kennel.artifact import is_artifact

    folder = cached_folder(version.name, version.version, store)
    source = client.get_model_version_download_uri(version.name, version.version)
    marker = {"store": store, "source": source, "created": version.creation_timestamp, "run_id": version.run_id}
    if _holds(folder, marker):
        return folder
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per fetch, in a server's log
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}.", dir=folder.parent) as tmp:
        try:
            local = Path(download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=store))
        except Exception as exc:
            raise Failure(f"cannot fetch version {version.version} of {version.name!r} from {source}: {exc}") from None
        if not is_artifact(local):
            raise Failure(f"version {version.version} of {version.name!r} holds no kennel model at {source}")
        atomic_write_json(local / MARKER, marker)  # last: a folder with it is whole
        try:  # a stale copy there (the name was deleted and registered again) is replaced
            swap_folder_into_place(local, folder, secrets.token_hex(4))
        except OSError:
            if not _holds(folder, marker):  # else another process fetched the same version first
                raise
    return folder


def _holds(folder: Path, marker: dict[str, Any]) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()) == marker
    except (OSError, ValueError):
        return False


# --- the deployment history --------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "model"


def history_file(name: str) -> Path:
    return kennel_home() / "deployments" / f"{_safe(name)}.jsonl"


def record_deployment(name: str, version: str, alias: str | None, event: str, detail: str = "") -> dict[str, Any]:
    """Append one line to ``name``'s deployment history: ``event`` (alias, serve or switch) at ``version``, by
    way of ``alias`` if any, on this host; ``detail`` says what a person needs (the version before, the endpoint)."""
    if event not in EVENTS:
        raise ValueError(f"unknown deployment event {event!r}; one of {', '.join(EVENTS)}")
    line = dict(time=now(), name=name, event=event, version=str(version), alias=alias, host=socket.gethostname())
    line["detail"] = detail
    append_jsonl(history_file(name), [line])
    return line


def history(name: str) -> list[dict[str, Any]]:
    """``name``'s deployment history, oldest first; a line cut short by a kill is skipped."""
    lines, _ = read_jsonl(history_file(name))
    return [line for line in lines if line.get("name") == name]
