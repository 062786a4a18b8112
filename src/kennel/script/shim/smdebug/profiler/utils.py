"""``from smdebug.profiler.utils import str2bool``: an argparse type for ``--flag true``."""

from kennel.script.hook.names import str2bool

__all__ = ["str2bool"]
