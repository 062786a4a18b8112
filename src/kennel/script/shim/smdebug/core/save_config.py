"""``from smdebug.core.save_config import SaveConfig``."""

from kennel.script.hook.names import SaveConfig, SaveConfigMode

__all__ = ["SaveConfig", "SaveConfigMode"]
