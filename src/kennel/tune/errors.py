"""The error every tuning module raises for a job that cannot start (its own module, so the storage and the
request can both raise it without importing each other)."""

from kennel.errors import KennelError


class TuneError(KennelError, ValueError):
    """A tuning job that cannot start; the message says what to change."""
