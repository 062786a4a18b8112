"""``import smdebug.pytorch as smd``: kennel's hook (:mod:`kennel.script.hook.api`) under smdebug's names."""

from kennel.script.hook.api import Hook, del_hook, get_hook, set_hook
from kennel.script.hook.names import (
    Collection,
    CollectionConfig,
    CollectionKeys,
    ReductionConfig,
    SaveConfig,
    SaveConfigMode,
)
from kennel.script.hook.names import ModeKeys as modes

__all__ = [
    "Collection",
    "CollectionConfig",
    "CollectionKeys",
    "Hook",
    "ReductionConfig",
    "SaveConfig",
    "SaveConfigMode",
    "del_hook",
    "get_hook",
    "modes",
    "set_hook",
]
