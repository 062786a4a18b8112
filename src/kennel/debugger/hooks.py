"""The debugger observer: captures the configured collections of each mode as reductions, stores them in the
job folder, and runs the rules on them while the job trains.

Where each collection is read, step by step (a TRAIN step's index is the global step before it runs):
forward hooks on activation layers (only while a saved step runs), inputs and loss after the backward pass,
gradients and weights just before the optimizer step (unscaled and clipped: what the optimizer sees), and the
size of the update after it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kennel.debugger.config import Capture, DebugConfig
from kennel.debugger.reductions import Reducer, dead_share, saturated_share, strided
from kennel.debugger.rules.common import DEBUGGER_RULES
from kennel.debugger.rules.dead_relu import RELU_LAYERS
from kennel.debugger.store import FINDINGS, RecordWriter, write_rule_statuses
from kennel.debugger.window import LOSS_EVERY, CaptureOptions, History, Save, Window
from kennel.engine import LoopState, Observer
from kennel.rules import RuleRunner

log = logging.getLogger(__name__)

ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid,
    nn.Sigmoid, nn.Tanh, nn.Softplus,
)  # fmt: skip


class Debugger(Observer):
    """Observe a training loop for the debugger: ``Debugger(job.folder.debug, config.debug, classes=names)``.
    ``classes`` are the names of the labels, which the rules' findings name classes by; ``clock`` (seconds,
    monotonic) is what the clock rules measure a stall with; ``phrasing`` rewords what findings say (a user's
    script's own terms for kennel's settings)."""

    def __init__(
        self,
        folder: Path | str,
        config: DebugConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        classes: Sequence[str] = (),
        phrasing: Callable[[str], str] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.config = config or DebugConfig()
        self.captures: dict[str, Capture] = {
            mode: capture for mode in ("TRAIN", "EVAL") if (capture := self.config.capture(mode)) is not None
        }
        self.rules = self.config.build_rules()
        self.options = CaptureOptions()
        for rule in self.rules:
            rule.configure(self.options)
        self.runner: RuleRunner[Window] = RuleRunner(
            self.rules, self.folder / FINDINGS, DEBUGGER_RULES.kind, phrasing=phrasing
        )
        self.history = History()
        self.history.classes.names = tuple(classes)
        self.writer = RecordWriter(self.folder)
        self.reducer = Reducer()
        self.eval_step = 0  # validation batches since the job began
        self._saving = dict.fromkeys(("TRAIN", "EVAL"), False)
        self._params: list[tuple[str, str, str, nn.Parameter]] = []  # name, collection, layer, parameter
        self._before: list[torch.Tensor] | None = None
        self._hooks: list[Any] = []
        self._model: nn.Module | None = None
        self._classes = 0
        self._train_targets: list[torch.Tensor] = []
        self._valid_targets: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._state: LoopState | None = None
        self._clock = clock
        self._last_step_at = clock()
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()

    def _wants(self, mode: str, collection: str) -> bool:
        capture = self.captures.get(mode)
        return capture is not None and collection in capture.collections

    def _saves(self, mode: str, step: int) -> bool:
        capture = self.captures.get(mode)
        return capture is not None and capture.saves(step)

    # --- setting up -----------------------------------------------------------------------------------

    def on_fit_start(self, state: LoopState) -> None:
        self._state, self._model = state, state.model
        optimized = {id(p) for group in state.optimizer.param_groups for p in group["params"]}
        layers = {
            f"{name}.{p}": type(module).__name__
            for name, module in state.model.named_modules()
            for p, _ in module.named_parameters(recurse=False)
        }
        self._params = [
            (name, "biases" if name.endswith("bias") else "weights", layers.get(name, ""), p)
            for name, p in state.model.named_parameters()
            if id(p) in optimized
        ]
        if any(self._wants(mode, "activations") for mode in self.captures):
            for name, module in state.model.named_modules():
                if isinstance(module, ACTIVATIONS):
                    self._hooks.append(module.register_forward_hook(self._activation_hook(name or "input")))
        self._saving["EVAL"] = self._saves("EVAL", self.eval_step)
        if self.runner.wants("clock"):
            self._watchdog = threading.Thread(target=self._watch, name="kennel-debugger-clock", daemon=True)
            self._watchdog.start()

    def _activation_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            mode = "TRAIN" if self._model.training else "EVAL"
            if not (self._saving[mode] and self._wants(mode, "activations")) or not isinstance(output, torch.Tensor):
                return
            layer = type(module).__name__
            x = inputs[0]
            row = self.reducer.add(f"{name}/input", "activations", layer, x, keep=False)
            if layer in self.options.saturation:
                self.reducer.extra(row, "saturated", saturated_share(x, *self.options.saturation[layer]))
            row = self.reducer.add(f"{name}/output", "activations", layer, output, keep=False)
            if layer in RELU_LAYERS:
                self.reducer.extra(row, "dead", dead_share(output, self.options.inactivity))

        return hook

    # --- TRAIN ----------------------------------------------------------------------------------------

    def on_epoch_start(self, state: LoopState) -> None:
        self._saving["TRAIN"] = self._saves("TRAIN", state.global_step)
        self._valid_targets = []

    def on_after_backward(self, state: LoopState) -> None:
        self._add_loss(state, "TRAIN", state.global_step)
        inputs, targets = state.batch
        # Kept as they come and counted once per epoch: a bincount per step would cost more than the step.
        if self._classified(state.outputs, targets):
            self._train_targets.append(targets)
        if self._saving["TRAIN"] and self._wants("TRAIN", "inputs"):
            self._add_inputs(inputs)

    def on_before_optimizer_step(self, state: LoopState) -> None:
        if not self._saving["TRAIN"]:
            return
        if self._wants("TRAIN", "gradients"):
            grads = [(f"{n}/grad", layer, p.grad) for n, _, layer, p in self._params if p.grad is not None]
            self._add_params("gradients", grads)
        for collection in ("weights", "biases"):
            if self._wants("TRAIN", collection):
                self._add_params(collection, [(n, layer, p) for n, c, layer, p in self._params if c == collection])
        if self._wants("TRAIN", "weights") or self._wants("TRAIN", "biases"):
            # The same sample as the weights' norm (reductions.strided): an update's size is what it is compared with.
            self._before = [strided(p.detach().reshape(-1)).clone() for *_, p in self._params]

    def on_batch_end(self, state: LoopState) -> None:
        self._last_step_at = self._clock()
        self.history.lr = state.lr
        step = state.global_step - 1
        if self._saving["TRAIN"]:
            self._update_norms()
            self._save(state, "TRAIN", step, step)
        if state.global_step % LOSS_EVERY == 0 and "TRAIN" in self.captures:
            self._run(state, self.history.window("steps", "TRAIN", step))
        self._saving["TRAIN"] = self._saves("TRAIN", state.global_step)

    def _update_norms(self) -> None:
        if self._before is None:
            return
        now = [strided(p.detach().reshape(-1)) for *_, p in self._params]
        torch._foreach_sub_(self._before, now)
        norms = torch._foreach_norm(self._before)
        self._before = None
        rows = {name: i for i, name in enumerate(self.reducer.names)}
        for (name, *_, p), norm, seen in zip(self._params, norms, now, strict=True):
            if name in rows:  # a sample's norm, scaled to the whole tensor's as the weight's norm is
                self.reducer.extra(rows[name], "update", norm * (p.numel() / max(seen.numel(), 1)) ** 0.5)

    # --- EVAL -----------------------------------------------------------------------------------------

    def on_eval_batch_end(self, state: LoopState) -> None:
        self._last_step_at = self._clock()
        step = self.eval_step
        self._add_loss(state, "EVAL", step)
        inputs, targets = state.batch
        if self._classified(state.outputs, targets):
            self._valid_targets.append((targets, state.outputs.argmax(1)))
        if self._saving["EVAL"]:
            if self._wants("EVAL", "inputs"):
                self._add_inputs(inputs)
            self._save(state, "EVAL", state.global_step - 1, step)
        self.eval_step += 1
        self._saving["EVAL"] = self._saves("EVAL", self.eval_step)

    def on_epoch_end(self, state: LoopState) -> None:
        metrics = {**state.epoch_metrics, "global_step": state.global_step}
        self.history.epochs.append(metrics)
        self._counted()
        mode = "EVAL" if "valid_loss" in metrics else "TRAIN"
        self._run(state, self.history.window("epoch", mode, state.global_step - 1))
        self.writer.flush()
        write_rule_statuses(self.folder, self.runner.statuses())

    # --- shared ---------------------------------------------------------------------------------------

    def _add_inputs(self, inputs: torch.Tensor | None) -> None:
        if not isinstance(inputs, torch.Tensor):  # a user's script (kennel run) may feed a model something else
            return
        if self.history.inputs_are_images is None:
            self.history.inputs_are_images = inputs.dim() == 4 and inputs.shape[1] in (1, 3)
        self.reducer.add("inputs", "inputs", "", inputs)

    def _add_loss(self, state: LoopState, mode: str, mode_step: int) -> None:
        capture = self.captures.get(mode)
        # No loss: a user's script (kennel run) that registered no loss module with its hook.
        if state.loss is not None and capture is not None and capture.in_range(mode_step):
            self.history.add_loss(mode, mode_step, state.loss)
            # On disk too: the debugger's report draws every step the loss rules judged, not only the saved ones.
            step = mode_step if mode == "TRAIN" else state.global_step - 1
            self.writer.write_loss(mode, step, mode_step, state.epoch, state.loss)

    def _add_params(self, collection: str, rows: list[tuple[str, str, torch.Tensor]]) -> None:
        """Reduce ``(name, layer, tensor)`` rows of a parameter collection."""
        if rows:
            names, layers, tensors = zip(*rows, strict=True)
            self.reducer.add_many(names, collection, layers, tensors)

    def _classified(self, outputs: torch.Tensor | None, targets: torch.Tensor) -> bool:
        """Whether a batch is a classifier's (a score per class, a label per sample); notes the class count."""
        if outputs is None or outputs.dim() != 2 or targets.dim() != 1:
            return False
        self._classes = outputs.shape[1]
        return True

    def _counted(self) -> None:
        """Fold the epoch's labels into the class counts the rules see."""
        counts, classes = self.history.classes, self._classes
        if self._train_targets:
            epoch = torch.bincount(torch.cat(self._train_targets), minlength=classes).cpu().numpy()
            counts.train = epoch if len(counts.train) != len(epoch) else counts.train + epoch
        if self._valid_targets:
            targets = torch.cat([t for t, _ in self._valid_targets])
            wrong = targets[torch.cat([p for _, p in self._valid_targets]) != targets]
            counts.valid = torch.bincount(targets, minlength=classes).cpu().numpy()
            counts.valid_wrong = torch.bincount(wrong, minlength=classes).cpu().numpy()
        self._train_targets, self._valid_targets = [], []

    def _save(self, state: LoopState, mode: str, step: int, mode_step: int) -> None:
        reducer = self.reducer
        if self._wants(mode, "losses") and state.loss is not None:
            reducer.add_scalar("loss", "losses", state.loss)
        names, collections, layers = reducer.names, reducer.collections, reducer.layers
        values = reducer.collect()  # appends the scalar rows to names, collections and layers
        save = Save(
            mode, step, mode_step, state.epoch, float(state.lr), state.batch_size, names, collections, layers, values
        )
        self.writer.write(save)
        self.history.add_save(save)
        self._run(state, self.history.window("save", mode, step))

    def _run(self, state: LoopState, window: Window) -> None:
        self.runner.run(window, state, event=window.event)

    def check_clock(self) -> None:
        """Run the clock rules on the time since the last step ended (the watchdog thread does, every
        interval)."""
        state = self._state
        since = self._clock() - self._last_step_at
        self._run(state, self.history.window("clock", state.mode, state.global_step, since))

    def _watch(self) -> None:
        interval = min(rule.clock_interval() for rule in self.rules if "clock" in rule.events)
        while not self._stopping.wait(interval):
            self.check_clock()

    def _close(self) -> None:
        self._stopping.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            # Joined, not left to die with the process: a clock check runs the rules in native code (NumPy),
            # and a thread caught there while the interpreter finalizes aborts the process.
            self._watchdog.join()
            self._watchdog = None
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self.writer.close()
        write_rule_statuses(self.folder, self.runner.statuses(ended=True))

    def on_fit_end(self, state: LoopState) -> None:
        if self.runner.wants("clock"):  # the loop ended on its own: the clock rules' last word
            self.check_clock()
        self._close()

    def on_exception(self, state: LoopState, error: BaseException) -> None:
        self._close()

    # --- checkpoints ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        history = self.history
        return {
            "eval_step": self.eval_step,
            "runner": self.runner.state_dict(),
            "epochs": list(history.epochs),
            "losses": {mode: [list(x) for x in losses] for mode, losses in history.losses.items()},
            "peak_lr": history.peak_lr,
            "train_counts": [int(c) for c in self.history.classes.train],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.eval_step = int(state.get("eval_step", 0))
        self.runner.load_state_dict(state.get("runner", {}))
        self.history.epochs = list(state.get("epochs", []))
        for mode, losses in state.get("losses", {}).items():
            for step, loss in losses:
                self.history.add_loss(mode, int(step), float(loss))
        self.history.peak_lr = float(state.get("peak_lr", 0.0))
        self.history.classes.train = np.asarray(state.get("train_counts") or [], dtype=np.int64)
