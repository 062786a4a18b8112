"""The training loop: event order, stopping, checkpoint state and resume, on random tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kennel.engine import LoopConfig, Observer, StopTraining, Trainer
from kennel.engine.observer import EVENTS


class Recorder(Observer):
    """Records every event it receives, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def __getattribute__(self, name: str):
        if name in EVENTS:
            events = object.__getattribute__(self, "events")
            return lambda state, *args: events.append(name)
        return object.__getattribute__(self, name)


def _data(n: int = 24, classes: int = 3, dim: int = 4, batch: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=generator)
    y = torch.arange(n) % classes
    x[torch.arange(n), y] += 3.0  # separable, so the loop can actually learn
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def _trainer(observers: list[Observer], epochs: int = 2) -> Trainer:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    return Trainer(model, optimizer, LoopConfig(epochs=epochs, device=torch.device("cpu")), observers)


def test_event_order_is_exact():
    recorder = Recorder()
    state = _trainer([recorder], epochs=2).fit(_data(), _data())
    per_step = ["on_after_backward", "on_before_optimizer_step", "on_batch_end"]
    per_eval_step = ["on_eval_batch_end"]
    per_epoch = ["on_epoch_start", *per_step * 3, *per_eval_step * 3, "on_validation_end", "on_epoch_end"]
    assert recorder.events == ["on_fit_start", *per_epoch * 2, "on_fit_end"]
    assert state.status == "completed"
    assert state.global_step == 6


def test_eval_batches_are_seen_in_eval_mode_and_steps_are_timed_by_phase():
    from kennel.engine.clock import PHASES

    class Watcher(Observer):
        def __init__(self) -> None:
            self.eval_batches: list[tuple[str, int, float]] = []
            self.step_times: list[dict[str, float]] = []

        def on_eval_batch_end(self, state):
            inputs, targets = state.batch
            assert state.outputs.shape == (len(targets), 3) and inputs.shape == (len(targets), 4)
            self.eval_batches.append((state.mode, len(targets), state.loss))

        def on_batch_end(self, state):
            self.step_times.append(dict(state.step_times))

    watcher = Watcher()
    state = _trainer([watcher], epochs=1).fit(_data(), _data(n=20))
    assert [(mode, size) for mode, size, _ in watcher.eval_batches] == [("EVAL", 8), ("EVAL", 8), ("EVAL", 4)]
    losses = [loss for *_, loss in watcher.eval_batches]
    assert sum(loss * n for loss, n in zip(losses, (8, 8, 4), strict=True)) / 20 == pytest.approx(
        state.history[0]["valid_loss"]
    )
    assert len(watcher.step_times) == 3
    for times in watcher.step_times:
        assert list(times) == list(PHASES) and all(seconds >= 0 for seconds in times.values())
    assert state.mode == "TRAIN" and state.batch is None


def test_loop_learns_and_reports_epoch_metrics():
    state = _trainer([], epochs=5).fit(_data(), _data())
    assert len(state.history) == 5
    assert state.history[-1]["valid_accuracy"] == 1.0
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]


def test_observer_can_request_a_stop():
    class StopAfterThreeSteps(Observer):
        def on_batch_end(self, state):
            if state.global_step == 3:
                state.request_stop("enough")

    state = _trainer([StopAfterThreeSteps()], epochs=4).fit(_data(), _data())
    assert state.status == "stopped"
    assert state.stop_reason == "enough"
    assert state.global_step == 3


def test_stop_training_exception_stops_with_reason():
    class Halt(Observer):
        def on_epoch_end(self, state):
            raise StopTraining("rule fired")

    state = _trainer([Halt()], epochs=4).fit(_data(), _data())
    assert (state.status, state.stop_reason, len(state.history)) == ("stopped", "rule fired", 1)


def test_exception_is_reported_to_observers_and_raised():
    class Boom(Observer):
        def on_batch_end(self, state):
            raise RuntimeError("boom")

    recorder = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        _trainer([recorder, Boom()]).fit(_data())
    assert recorder.events[-1] == "on_exception"


def test_checkpoint_state_resumes_to_identical_weights():
    class SnapshotThenKill(Observer):
        """Takes the checkpoint at the end of epoch 2, then dies as a killed process would."""

        snapshot = None

        def on_epoch_end(self, state):
            if state.epoch == 1:
                SnapshotThenKill.snapshot = state.snapshot()
                raise KeyboardInterrupt

    full = _trainer([], epochs=4)
    full.fit(_data(), _data())
    with pytest.raises(KeyboardInterrupt):
        _trainer([SnapshotThenKill()], epochs=4).fit(_data(), _data())
    assert SnapshotThenKill.snapshot["epoch"] == 2
    resumed = _trainer([], epochs=4)
    resumed.load_state_dict(SnapshotThenKill.snapshot)
    final = resumed.fit(_data(), _data())
    assert [h["epoch"] for h in final.history] == [1, 2, 3, 4]
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_observers_need_distinct_keys():
    with pytest.raises(ValueError, match="share a key"):
        _trainer([Recorder(), Recorder()])
