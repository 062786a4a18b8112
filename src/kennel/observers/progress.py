"""A progress bar over the steps of each epoch (on stderr, so stdout stays machine-readable)."""

from __future__ import annotations

import sys

from kennel.engine import LoopState, Observer


class ProgressBar(Observer):
    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._progress = None
        self._task = None

    def on_epoch_start(self, state: LoopState) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn(f"epoch {state.epoch + 1}/{state.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=state.steps_per_epoch, metrics="")

    def on_batch_end(self, state: LoopState) -> None:
        if self._progress is not None:
            metrics = f"loss {state.step_metrics['train_loss']:.4f}"
            self._progress.update(self._task, completed=state.step, metrics=metrics)

    def on_validation_end(self, state: LoopState, metrics: dict[str, float]) -> None:
        self._close()

    def on_epoch_end(self, state: LoopState) -> None:
        self._close()

    def on_fit_end(self, state: LoopState) -> None:
        self._close()

    def on_exception(self, state: LoopState, error: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
