"""What a script saves through the hook itself (``save_scalar``, ``save_tensor``, ``record_tensor_value``):
reduced as the debugger reduces its own collections, and written to the same records at the step of the mode
running, so ``kennel debug`` and ``load_records`` show them beside the rest. As with smdebug, a scalar is saved
whenever the script saves it, a tensor only at the mode's saved steps (``debug.modes.<MODE>.save_interval``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from kennel.debugger.reductions import Reducer
from kennel.debugger.window import Save

if TYPE_CHECKING:
    from kennel.script.hook.loop import ScriptLoop

log = logging.getLogger("kennel.script.hook")


def as_number(name: str, value: Any) -> float:
    """``value`` (a number, a one-element tensor or array) as a float; a TypeError says what it was."""
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        tensor = None
    if tensor is None or tensor.numel() != 1:
        raise TypeError(f"save_scalar({name!r}): a scalar is one number, not {type(value).__name__}")
    return float(tensor.reshape(()))


def save(loop: ScriptLoop, name: str, collections: list[str], value: Any, scalar: bool) -> None:
    """Reduce ``value`` into a record of each of ``collections`` at the current step (a no-op when the debugger
    is off, or its capture leaves out this mode or, for a tensor, this step)."""
    debugger = loop.debugger
    if debugger is None or loop.closed:
        return
    mode, step, mode_step = loop.position() or ("TRAIN", 0, 0)
    capture = debugger.captures.get(mode)
    if capture is None or not (scalar or capture.saves(mode_step)):
        return
    reducer = Reducer()
    if scalar:
        number = as_number(name, value)
        for collection in collections:
            reducer.add_scalar(name, collection, number)
    else:
        try:
            tensor = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            log.warning("kennel: %s is not a tensor or an array of numbers (%s): not saved", name, type(value).__name__)
            return
        for collection in collections:
            reducer.add(name, collection, "", tensor)
    names, kinds, layers = reducer.names, reducer.collections, reducer.layers
    values = reducer.collect()  # appends the scalar rows to the lists above
    state = loop.state
    epoch, lr, batch = (state.epoch, float(state.lr), state.batch_size) if state is not None else (0, 0.0, 0)
    debugger.writer.write(Save(mode, step, mode_step, epoch, lr, batch, names, kinds, layers, values))
