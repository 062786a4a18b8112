"""The one training loop. It runs epochs and steps on CPU or CUDA and emits events; it knows no observer."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from kennel.distributed import SINGLE, Ranks, any_rank, gather_rows, summed
from kennel.engine.clock import StepClock
from kennel.engine.observer import Observer, ObserverList, StopTraining
from kennel.engine.state import LoopState


@dataclass(frozen=True)
class LoopConfig:
    epochs: int
    device: torch.device
    amp: bool = True
    channels_last: bool = False
    grad_clip: float | None = None
    log_every: int = 10
    compile: bool = False  # torch.compile the training forward
    ranks: Ranks = SINGLE  # this process's place under torchrun; several ranks train with DDP


def _autocast(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _to_device(batch: Any, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = batch
    inputs = inputs.to(device, non_blocking=True)
    if channels_last and inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, targets.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    loss_fn: nn.Module | None = None,
    amp: bool = True,
    channels_last: bool = False,
    on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
    ranks: Ranks = SINGLE,
) -> dict[str, Any]:
    """Loss, top-1 and top-5 accuracy over ``loader``; also returns the logits and targets it saw.
    ``on_batch(inputs, targets, outputs, loss)`` is called after every batch (the loop's EVAL-mode event).
    With several ``ranks`` each holds a shard of the data; the metrics are over all of them, on every rank."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    was_training = model.training
    model.eval()
    logits, targets = [], []
    for batch in loader:
        inputs, target = _to_device(batch, device, channels_last)
        with _autocast(device, amp):
            output = model(inputs)
        output = output.float()
        loss = loss_fn(output, target)
        if on_batch is not None:
            on_batch(inputs, target, output, loss)
        logits.append(output.cpu())
        targets.append(target.cpu())
    model.train(was_training)
    all_logits, all_targets = gather_rows(torch.cat(logits), ranks), gather_rows(torch.cat(targets), ranks)
    top5 = all_logits.topk(min(5, all_logits.shape[1]), dim=1).indices
    return {
        "loss": loss_fn(all_logits, all_targets).item() if len(all_targets) else float("nan"),
        "accuracy": (top5[:, 0] == all_targets).float().mean().item(),
        "top5": (top5 == all_targets[:, None]).any(dim=1).float().mean().item(),
        "logits": all_logits,
        "targets": all_targets,
    }


def rng_state() -> dict[str, Any]:
    # NumPy's state holds an array: stored as a tensor so checkpoints load with ``weights_only=True``.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Fits ``model`` with ``optimizer``; everything else (logging, checkpoints, early stopping, tracking,
    debugging, profiling, pruning) is an :class:`Observer`."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loop: LoopConfig,
        observers: list[Observer] = (),
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        loss_fn: nn.Module | None = None,
    ) -> None:
        self.model = model.to(loop.device)
        if loop.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # What trains: the model itself, or a wrapper that averages gradients across ranks and/or a compiled
        # graph. Observers, checkpoints and evaluation keep using the plain model (and its parameter names).
        self.forward_module: nn.Module = self.model
        if loop.ranks.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [loop.device.index] if loop.device.type == "cuda" else None
            self.forward_module = DistributedDataParallel(self.model, device_ids=ids)
        if loop.compile:
            self.forward_module = torch.compile(self.forward_module)
        self.optimizer = optimizer
        self.loop = loop
        self.observers = ObserverList(list(observers))
        self.scheduler = scheduler
        self.loss_fn = loss_fn or nn.CrossEntropyLoss()
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=loop.amp and loop.device.type == "cuda" and not torch.cuda.is_bf16_supported()
        )
        self._start_epoch = 0
        self._global_step = 0
        self._history: list[dict[str, float]] = []

    @property
    def history(self) -> list[dict[str, float]]:
        """Every finished epoch's metrics, those of a resumed job's earlier runs included (also after a fit
        that raised: the epochs it finished are here)."""
        return self._history

    # --- checkpoints ------------------------------------------------------------------------------------

    def state_dict(self, state: LoopState) -> dict[str, Any]:
        """Everything needed to continue after ``state.epoch``: weights, optimizer, schedule, observers, RNG."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
            "epoch": state.epoch + 1,
            "global_step": state.global_step,
            "history": list(state.history),
            "observers": self.observers.state_dict(),
            "rng": rng_state(),
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler and checkpoint["scheduler"]:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.observers.load_state_dict(checkpoint["observers"])
        set_rng_state(checkpoint["rng"])
        self._start_epoch = checkpoint["epoch"]
        self._global_step = checkpoint["global_step"]
        self._history = list(checkpoint["history"])

    # --- the loop ---------------------------------------------------------------------------------------

    def fit(self, train_loader: Iterable, valid_loader: Iterable | None = None) -> LoopState:
        state = LoopState(
            model=self.model,
            optimizer=self.optimizer,
            device=self.loop.device,
            epochs=self.loop.epochs,
            steps_per_epoch=len(train_loader),
            epoch=self._start_epoch,
            global_step=self._global_step,
            history=self._history,
        )
        state.snapshot = lambda: self.state_dict(state)
        emit = self.observers.emit
        try:
            emit("on_fit_start", state)
            while state.epoch < self.loop.epochs and not state.should_stop:
                self._run_epoch(state, train_loader, valid_loader)
                if not state.should_stop:
                    state.epoch += 1
            state.status = state.stop_status if state.should_stop else "completed"
        except StopTraining as stop:
            state.request_stop(str(stop) or "stopped by an observer")
            state.status = "stopped"
        except BaseException as error:
            state.status = "failed"
            emit("on_exception", state, error)
            raise
        emit("on_fit_end", state)
        return state

    def _run_epoch(self, state: LoopState, train_loader: Iterable, valid_loader: Iterable | None) -> None:
        emit = self.observers.emit
        state.mode, state.step = "TRAIN", 0
        self.model.train()
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # each epoch its own shuffle, the same on every rank
            sampler.set_epoch(state.epoch)
        emit("on_epoch_start", state)
        seen = correct = 0
        loss_sum = 0.0
        started = time.perf_counter()
        clock = StepClock(self.loop.device)
        clock.start()
        for batch in train_loader:
            clock.mark()  # data: waiting for the loader
            inputs, targets = _to_device(batch, self.loop.device, self.loop.channels_last)
            clock.mark()  # transfer
            with _autocast(self.loop.device, self.loop.amp):
                outputs = self.forward_module(inputs)
                loss = self.loss_fn(outputs.float(), targets)
            clock.mark()  # forward
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            state.batch, state.outputs, state.loss = (inputs, targets), outputs.detach(), loss.item()
            state.batch_size = len(targets)
            emit("on_after_backward", state)
            self.scaler.unscale_(self.optimizer)
            if self.loop.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.loop.grad_clip)
            clock.mark()  # backward (with the observers of on_after_backward)
            emit("on_before_optimizer_step", state)
            state.lr = self.optimizer.param_groups[0]["lr"]
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler is not None:
                self.scheduler.step()
            clock.mark()  # optimizer
            state.step_times = clock.finish()
            seen += len(targets)
            correct += (outputs.detach().argmax(1) == targets).sum().item()
            loss_sum += state.loss * len(targets)
            state.step += 1
            state.global_step += 1
            state.step_metrics = {
                "train_loss": state.loss,
                "train_accuracy": correct / seen,
                "lr": state.lr,
                "images_per_s": seen / max(time.perf_counter() - started, 1e-9),
            }
            emit("on_batch_end", state)
            self._agree_on_stop(state)
            if state.should_stop:
                return
            clock.start()
        clock.reset()
        state.batch = state.outputs = None
        # The epoch's counts over every rank's shard, so its metrics describe the whole training split.
        seen, correct, loss_sum = summed([seen, correct, loss_sum], self.loop.ranks)
        metrics = {
            "epoch": state.epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "lr": state.lr,
            "images_per_s": seen / max(time.perf_counter() - started, 1e-9),
            "epoch_seconds": time.perf_counter() - started,
        }
        if valid_loader is not None:
            state.mode = "EVAL"

            def on_eval_batch(inputs: torch.Tensor, targets: torch.Tensor, outputs: torch.Tensor, loss) -> None:
                state.batch, state.outputs, state.loss = (inputs, targets), outputs, loss.item()
                emit("on_eval_batch_end", state)

            result = evaluate(
                self.model,
                valid_loader,
                self.loop.device,
                self.loss_fn,
                self.loop.amp,
                self.loop.channels_last,
                on_batch=on_eval_batch,
                ranks=self.loop.ranks,
            )
            state.batch = state.outputs = None
            valid = {"valid_loss": result["loss"], "valid_accuracy": result["accuracy"], "valid_top5": result["top5"]}
            metrics.update(valid)
            emit("on_validation_end", state, valid)
            state.mode = "TRAIN"
        state.epoch_metrics = metrics
        state.history.append(metrics)
        emit("on_epoch_end", state)
        self._agree_on_stop(state)

    # --- several ranks ----------------------------------------------------------------------------------

    def _agree_on_stop(self, state: LoopState) -> None:
        """Every rank stops at the same step: a rank that ran on alone would wait forever for the others'
        gradients. Observers that stop a job (early stopping, the debugger, a pruner) run on rank 0."""
        ranks = self.loop.ranks
        if ranks.distributed and any_rank(state.should_stop, ranks) and not state.should_stop:
            state.request_stop("stopped by rank 0")
