"""``from smdebug.pytorch.hook import Hook``."""

from kennel.script.hook.api import Hook

__all__ = ["Hook"]
