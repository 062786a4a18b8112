"""smdebug's names, answered by kennel (the real smdebug is unmaintained and does not import on Python 3.12+):
``kennel run`` puts this package first on the script's path. The hook is in :mod:`smdebug.pytorch`."""

from kennel.script.hook.names import CollectionKeys, ReductionConfig, SaveConfig, SaveConfigMode
from kennel.script.hook.names import ModeKeys as modes

__version__ = "1.0.34+kennel"  # the smdebug release whose API this speaks

__all__ = ["CollectionKeys", "ReductionConfig", "SaveConfig", "SaveConfigMode", "modes"]
