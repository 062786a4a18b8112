"""smdebug's profiler package: scripts import ``str2bool`` from :mod:`smdebug.profiler.utils`. The profiler itself
is kennel's (the job's system samples and the hook's step times)."""
