"""The user's own SageMaker script-mode training script, run unchanged as a kennel job (``kennel run``).

:mod:`.job` runs it (record, logs, metrics read from its lines, profiler, stopping), :mod:`.environment` gives it
SageMaker's training environment, and the smdebug hook inside its process feeds kennel's debugger. Importing this
package imports nothing heavy: the command line reads it at start-up.
"""

from kennel.script.shims import shim_paths

__all__ = ["shim_paths"]
