"""Not imported as a package: ``kennel run`` puts this folder first on the script's ``PYTHONPATH`` (see
:mod:`kennel.script.shims`), so that ``import smdebug`` in the user's script finds the ``smdebug`` here, whose
names are kennel's hook (:mod:`kennel.script.hook`). This file makes the folder part of kennel's package data."""
