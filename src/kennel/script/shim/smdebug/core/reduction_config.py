"""``from smdebug.core.reduction_config import ReductionConfig``."""

from kennel.script.hook.names import ReductionConfig

__all__ = ["ReductionConfig"]
