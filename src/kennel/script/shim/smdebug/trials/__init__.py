"""smdebug's analysis side (``create_trial``) reads SageMaker's tensor files; kennel's debugger keeps its own."""

from __future__ import annotations

from typing import Any


def create_trial(path: str, *args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError(
        "smdebug trials read SageMaker's tensor files, which kennel does not write: read a kennel job's "
        "debugger records with `kennel debug JOB` or `kennel.debugger.load_records(JOB)`"
    )


__all__ = ["create_trial"]
