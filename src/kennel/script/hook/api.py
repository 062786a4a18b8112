"""``smd.Hook``: smdebug's PyTorch hook, as SageMaker scripts call it, backed by kennel's debugger.

Under ``kennel run`` the job's settings (``KENNEL_HOOK_CONFIG``) say what is captured; the arguments a script
gives the hook (``out_dir``, ``save_config``, ``include_collections``...) are accepted and kept, and change
nothing, so one script runs with the same captures and rules however it was written for SageMaker. Without the
settings (the script run by hand) every call works and nothing is captured.

A process has one hook state (:class:`~kennel.script.hook.loop.ScriptLoop`): each ``Hook`` made in it, by
``create_from_json_file``, ``get_hook(create_if_not_exists=True)`` or the constructor, is a handle on it, and the
last one made is what ``get_hook()`` returns."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from torch import nn

from kennel.script.contract import HOOK_CONFIG_ENV
from kennel.script.hook import tensors
from kennel.script.hook.loop import ScriptLoop
from kennel.script.hook.names import Collection, CollectionKeys, ModeKeys


class _Stderr(logging.Handler):
    """The hook's few lines go to the script's stderr as it is at each line, whatever logging the script set up
    (the job keeps its stderr): its own handler, no propagation, so a line is said once; folded at its words to 80
    columns, since ``kennel run`` shows the script's stderr as it comes."""

    def emit(self, record: logging.LogRecord) -> None:
        from kennel.lines import fitted

        try:
            print(fitted(self.format(record), sys.stderr), file=sys.stderr, flush=True)
        except Exception:
            self.handleError(record)


log = logging.getLogger("kennel.script.hook")
if not log.handlers:
    log.addHandler(_Stderr())
    log.setLevel(logging.INFO)
    log.propagate = False

_lock = threading.Lock()
_loop: ScriptLoop | None = None
_hook: Hook | None = None

# The capture arguments whose values differ from smdebug's defaults are named in the line that says they are not
# used.
_CAPTURE_DEFAULTS = {
    "reduction_config": None,
    "save_config": None,
    "include_regex": None,
    "include_collections": None,
    "save_all": False,
}


def process_loop() -> ScriptLoop:
    """The process's hook state, made from the job's settings the first time a hook is made."""
    global _loop
    with _lock:
        if _loop is None:
            _loop = _make_loop()
        return _loop


def _make_loop() -> ScriptLoop:
    path = os.environ.get(HOOK_CONFIG_ENV)
    if not path:
        log.info(
            "kennel: the debugger is off (%s is not set): run the script with `kennel run` to capture its tensors "
            "and step times",
            HOOK_CONFIG_ENV,
        )
        return ScriptLoop()
    from kennel.script.hook_settings import HookSettings

    try:
        settings = HookSettings.read(path)
    except (OSError, ValueError) as exc:
        log.warning("kennel: the debugger is off: cannot read its settings %s (%s)", path, exc)
        return ScriptLoop()
    rank = int(os.environ.get("RANK", "0") or 0)
    loop = ScriptLoop(settings, rank)
    debugger = f"debugger {settings.debug.preset}" if loop.debugger is not None else "debugger off"
    steps = "step times on" if loop.events.records is not None else "step times off"
    log.info("kennel: hook for job %s (rank %d): %s, %s", settings.job_id, rank, debugger, steps)
    return loop


class Hook:
    """smdebug's ``smdebug.pytorch.Hook``. Register the model (``register_module``) and the loss
    (``register_loss``), set the mode before each phase (``set_mode(modes.TRAIN)``, ``modes.EVAL``); steps are
    counted per mode, one per forward of the registered module."""

    def __init__(
        self,
        out_dir: str | None = None,
        export_tensorboard: bool = False,
        tensorboard_dir: str | None = None,
        dry_run: bool = False,
        reduction_config: Any = None,
        save_config: Any = None,
        include_regex: list[str] | None = None,
        include_collections: list[str] | None = None,
        save_all: bool = False,
        include_workers: str = "one",
    ) -> None:
        self.out_dir = out_dir
        self.export_tensorboard, self.tensorboard_dir, self.dry_run = export_tensorboard, tensorboard_dir, dry_run
        self.reduction_config, self.save_config = reduction_config, save_config
        self.include_regex, self.include_collections = include_regex, include_collections
        self.save_all, self.include_workers = save_all, include_workers
        self._loop = process_loop()
        self._collections: dict[str, Collection] = {}
        asked = [name for name, default in _CAPTURE_DEFAULTS.items() if getattr(self, name) != default]
        if asked and self._loop.debugger is not None:
            log.info(
                "kennel: the job's debug settings decide what is captured (preset %s), not Hook(%s=...)",
                self._loop.settings.debug.preset,
                ", ".join(asked),
            )
        set_hook(self)

    @classmethod
    def create_from_json_file(cls, json_file_path: str | None = None) -> Hook:
        """The hook of the kennel job the script runs in (its settings come from ``KENNEL_HOOK_CONFIG``; a path
        given here, SageMaker's hook configuration, is not read). Outside a job: a hook that captures nothing."""
        return cls()

    # --- the model, the loss, the mode ----------------------------------------------------------------

    def register_module(self, module: nn.Module) -> None:
        """Follow ``module``: each of its forwards is a step of the current mode."""
        if not isinstance(module, nn.Module):
            raise TypeError(f"register_module takes a torch.nn.Module, not {type(module).__name__}")
        self._loop.register_module(module)

    def register_hook(self, module: nn.Module) -> None:
        """The same as :meth:`register_module`."""
        self.register_module(module)

    def register_loss(self, loss_module: nn.Module) -> None:
        """Follow a loss module (``nn.CrossEntropyLoss()``): its output is each step's loss."""
        if not isinstance(loss_module, nn.Module):
            raise TypeError(f"register_loss takes a torch.nn.Module, not {type(loss_module).__name__}")
        self._loop.register_loss(loss_module)

    def set_mode(self, mode: ModeKeys) -> None:
        """``smd.modes.TRAIN``, ``EVAL``, ``PREDICT`` or ``GLOBAL``: the mode of the steps that follow."""
        name = getattr(mode, "name", mode)
        if not isinstance(name, str) or name.upper() not in ModeKeys.__members__:
            raise ValueError(f"invalid mode {mode!r}; valid modes: {', '.join(ModeKeys.__members__)}")
        self._loop.set_mode(ModeKeys[name.upper()])

    def get_mode(self) -> ModeKeys:
        return self._loop.mode

    @property
    def mode(self) -> ModeKeys:
        return self._loop.mode

    @property
    def step(self) -> int:
        """Forwards of the registered module so far, every mode."""
        return self._loop.step

    @property
    def mode_steps(self) -> dict[ModeKeys, int]:
        """Forwards of the registered module so far in each mode."""
        return dict(self._loop.mode_steps)

    # --- what the script saves itself -----------------------------------------------------------------

    def save_scalar(self, name: str, value: Any, sm_metric: bool = False, timestamp: float | None = None) -> None:
        """Save a number (collection ``scalars``) at the current step of the current mode."""
        tensors.save(self._loop, name, [CollectionKeys.SCALARS], value, scalar=True)

    def save_tensor(
        self, tensor_name: str, tensor_value: Any, collections_to_write: str | list[str] = CollectionKeys.DEFAULT
    ) -> None:
        """Save a tensor's reductions in ``collections_to_write`` at the current step, if it is a saved step."""
        collections = [collections_to_write] if isinstance(collections_to_write, str) else list(collections_to_write)
        tensors.save(self._loop, tensor_name, collections, tensor_value, scalar=False)

    def record_tensor_value(self, tensor_name: str, tensor_value: Any) -> None:
        """A tensor computed without a registered module. A loss from ``nn.functional`` (one number, with
        ``loss`` in its name) is the step's loss, as a registered loss module's output is; any other tensor is
        saved in collection ``default`` (a second loss in ``losses``)."""
        is_loss = "loss" in tensor_name.lower() and getattr(tensor_value, "numel", lambda: 0)() == 1
        if is_loss and self._loop.record_loss(tensor_value):
            return
        collection = CollectionKeys.LOSSES if is_loss else CollectionKeys.DEFAULT
        tensors.save(self._loop, tensor_name, [collection], tensor_value, scalar=False)

    def close(self) -> None:
        """End the capture: the open epoch ends, the records and findings are written and closed."""
        self._loop.close()

    # --- collections, as a script configures them -----------------------------------------------------

    def get_collection(self, name: str, create: bool = True) -> Collection:
        if name not in self._collections:
            if not create:
                raise KeyError(f"no collection named {name!r}")
            self._collections[name] = Collection(name)
        return self._collections[name]

    def get_collections(self) -> dict[str, Collection]:
        return dict(self._collections)

    def add_collection(self, collection: Collection) -> None:
        self._collections[collection.name] = collection

    def has_default_configuration(self) -> bool:
        return True

    has_default_hook_configuration = has_default_configuration

    def count_parameters(self, model: nn.Module) -> int:
        """The number of parameters of ``model`` that require a gradient."""
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def __repr__(self) -> str:
        loop = self._loop
        capture = loop.settings.debug.preset if loop.debugger is not None else "off"
        return f"<kennel smdebug Hook: debugger {capture}, mode {loop.mode.name}, step {loop.step}>"


def get_hook(json_config_path: str | None = None, create_if_not_exists: bool = False) -> Hook | None:
    """The last hook made in this process; with ``create_if_not_exists``, one from the job's settings if there
    is none yet."""
    if _hook is None and create_if_not_exists:
        Hook.create_from_json_file(json_config_path)
    return _hook


def set_hook(hook: Hook) -> None:
    global _hook
    _hook = hook


def del_hook() -> None:
    global _hook
    _hook = None
