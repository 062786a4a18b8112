"""What the debugger's rules share: their registry, reading a saved step's layers, and naming classes."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from kennel.debugger.window import ClassCounts, Save
from kennel.rules import RuleRegistry

# The events a debugger rule runs after: "save" (a mode saved a step; the default), "steps" (every LOSS_EVERY
# training steps, saved or not: the losses of every step are there), "epoch" (an epoch ended, after its
# validation) or "clock" (a timer, while the loop may be stuck).
DEBUGGER_RULES = RuleRegistry("debugger rule", "debug.rules", events={"save"})


def layers_above(save: Save, rows: np.ndarray, column: str, percent: float) -> tuple[list[str], float] | None:
    """The names of the tensors of ``rows`` (not empty) whose ``column`` (a share) is above ``percent``, and the
    largest share in percent; None when none is."""
    shares = save.column(column, rows) * 100
    above = rows[shares > percent]
    return ([save.names[i] for i in above], float(shares.max())) if len(above) else None


def none_captured(save: Save, what: str) -> str:
    """Why a saved step holds no ``what`` ("ReLU outputs"): with no activation captured at all, most likely the
    activations collection was off (the light preset's way); with others captured, the model has none of those."""
    if not len(save.rows("activations")):
        return (
            f"no {what} captured: the activations collection is off (--debug full turns it on), or no activation "
            "layer trains (a head on cached features has none)"
        )
    return f"no {what} captured: the layers that train have none"


def short_list(names: Iterable[str], limit: int = 3) -> str:
    """ "a, b, c and 4 more": tensor names for a sentence."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def class_names(classes: ClassCounts, labels: Iterable[int]) -> list[str]:
    """The names of ``labels`` as the job's dataset has them ("Toy poodle"); where the job gave none, numbered from
    1 as ``kennel data check`` lists the classes ("class 3")."""
    return [classes.names[i] if i < len(classes.names) else f"class {i + 1}" for i in map(int, labels)]
