"""Why a script failed, in one line a person can act on: read from the end of what it wrote.

Most failures are the script's own, and its traceback's last line says what went wrong. A few come from the
difference between SageMaker's container and this machine, and get a line that says what to do about it: a
channel kennel was not given, pretrained weights that cannot be downloaded here, a GPU that is not there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

Explainer = Callable[[Sequence[str]], str | None]

_MISSING_VARIABLE = re.compile(r"KeyError: '(SM_[A-Za-z0-9_.-]+)'")
_DOWNLOADING = re.compile(r'Downloading:? "?(https?://[^"\s]+)"? to (\S+)')
_NETWORK = re.compile(
    r"URLError|urlopen error|ConnectionError|Name or service not known|Temporary failure in name|"
    r"Network is unreachable|Connection refused|gaierror|Max retries exceeded|timed out"
)
_HUB = re.compile(r"huggingface\.co|HF_HUB_OFFLINE|LocalEntryNotFoundError|OfflineModeIsEnabled")
_NO_GPU = re.compile(
    r"Torch not compiled with CUDA enabled|Found no NVIDIA driver|No CUDA GPUs are available|"
    r"CUDA driver initialization failed|cudaGetDeviceCount"
)


def missing_variable(lines: Sequence[str]) -> str | None:
    """``os.environ['SM_CHANNEL_VALID']`` for a channel kennel was not given."""
    for line in reversed(lines):
        match = _MISSING_VARIABLE.search(line)
        if match is None:
            continue
        name = match.group(1)
        if name.startswith("SM_CHANNEL_"):
            channel = name.removeprefix("SM_CHANNEL_").lower()
            return f"the script reads {name}, a channel this run was not given: pass --channel {channel}=DIR"
        if name.startswith("SM_HP_"):
            hyperparameter = name.removeprefix("SM_HP_").lower()
            return f"the script reads {name}, a hyperparameter this run was not given: pass --hp {hyperparameter}=VALUE"
        return f"the script reads {name}, which kennel run does not set (it sets SageMaker's training variables)"
    return None


def weights_download(lines: Sequence[str]) -> str | None:
    """``models.resnet18(pretrained=True)`` where the download site cannot be reached."""
    if not any(_NETWORK.search(line) for line in lines):
        return None
    for line in reversed(lines):
        match = _DOWNLOADING.search(line)
        if match is not None:
            url, target = match.group(1), match.group(2).rstrip('"')
            name = Path(target).name or url.rsplit("/", 1)[-1]
            return (
                f"the script's pretrained weights {name} could not be downloaded from {url}: put that file at "
                f"{target} (or point TORCH_HOME at a folder whose hub/checkpoints holds it), or run where the "
                "internet is reachable"
            )
    if any(_HUB.search(line) for line in lines):
        return (
            "the script downloads weights from the Hugging Face hub, which cannot be reached from here: copy them "
            "into the hub cache (HF_HOME) or give the script a local path"
        )
    return None


def no_gpu(lines: Sequence[str]) -> str | None:
    if any(_NO_GPU.search(line) for line in lines):
        return (
            "the script asked for a CUDA GPU and this machine has none (SM_NUM_GPUS is 0): let it use the CPU when "
            "torch.cuda.is_available() is false"
        )
    return None


# Tried in order; the first that recognises the failure says it.
EXPLAINERS: tuple[Explainer, ...] = (missing_variable, weights_download, no_gpu)


def last_error(lines: Sequence[str]) -> str | None:
    """The last line of the last traceback, ``ValueError: ...`` (or the last line written, if none)."""
    lines = [line.rstrip() for line in lines if line.strip()]
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("Traceback (most recent call last)"):
            after = [line for line in lines[index + 1 :] if not line.startswith((" ", "\t"))]
            return after[-1] if after else None
    return lines[-1] if lines else None


def explain(output: Sequence[str], stderr: Sequence[str], exit_code: int) -> str:
    """What to tell the person about a script that exited with ``exit_code``: from the end of its ``output``
    (both streams: torch.hub says what it downloads on stdout) or of its ``stderr`` (its traceback)."""
    for explainer in EXPLAINERS:
        said = explainer(output)
        if said is not None:
            return said
    error = last_error(stderr)
    how = f"killed by signal {-exit_code}" if exit_code < 0 else f"exit {exit_code}"
    return f"{error} ({how})" if error else f"the script ended with {how} and wrote nothing to stderr"


def traceback_tail(lines: Sequence[str], keep: int = 12) -> str:
    """The last lines of the script's last traceback, for the record."""
    lines = [line.rstrip() for line in lines if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        lines = lines[starts[-1] :]
    return "\n".join(lines[-keep:])
