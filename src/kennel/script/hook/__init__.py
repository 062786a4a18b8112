"""The only kennel code inside the user's script: an smdebug-compatible hook that feeds kennel's debugger and the
profiler's step timeline. The script reaches it through the import names it already has (``import
smdebug.pytorch as smd``; the ``smdebug`` package on its path under ``kennel run`` re-exports these names).

    hook = smd.Hook.create_from_json_file()   # the job's settings, from KENNEL_HOOK_CONFIG
    hook.register_module(model)
    hook.register_loss(criterion)
    hook.set_mode(smd.modes.TRAIN)

:mod:`.names` holds the torch-free names (modes, configuration objects, ``str2bool``), :mod:`.api` the hook
itself, :mod:`.loop` what turns the script's forwards, backward passes and optimizer steps into the events of
kennel's training loop (:mod:`.parts`: what it keeps of them), :mod:`.steps` the step records, :mod:`.tensors`
what the script saves itself. Names load lazily: the modes cost no PyTorch import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Hook": "kennel.script.hook.api",
    "get_hook": "kennel.script.hook.api",
    "set_hook": "kennel.script.hook.api",
    "del_hook": "kennel.script.hook.api",
    "ModeKeys": "kennel.script.hook.names",
    "SaveConfig": "kennel.script.hook.names",
    "SaveConfigMode": "kennel.script.hook.names",
    "ReductionConfig": "kennel.script.hook.names",
    "CollectionConfig": "kennel.script.hook.names",
    "Collection": "kennel.script.hook.names",
    "CollectionKeys": "kennel.script.hook.names",
    "str2bool": "kennel.script.hook.names",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
