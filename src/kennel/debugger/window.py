"""What rules look at: the reductions of the last saved steps, the loss of every step, the epochs' metrics and
the class counts, kept in memory by the debugger while the job runs. Rules never see a tensor, only these."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Per tensor per saved step. "zeros" is a fraction, "nan" and "inf" are counts. The last three exist only where
# they mean something (NaN elsewhere): "update" the L2 norm of the optimizer step's change to a weight or bias,
# "dead" the share of an activation layer's units (channels) active in under 1% of the batch, "saturated" the
# share of a tanh or sigmoid layer's inputs beyond its saturation thresholds.
REDUCTIONS = ("mean", "std", "min", "max", "norm", "zeros", "nan", "inf", "numel")
EXTRAS = ("update", "dead", "saturated")
COLUMNS = REDUCTIONS + EXTRAS
COLUMN = {name: i for i, name in enumerate(COLUMNS)}

HISTORY = 32  # saved steps kept per mode: more than any rule's window
# Training steps between two "steps" events: the loss rules look at every step's loss this often, whatever the
# save interval, so a diverging job is stopped within a few steps even when tensors are saved rarely.
LOSS_EVERY = 10
LOSS_HISTORY = 4096  # per-step losses kept per mode


@dataclass
class Save:
    """The reductions of every captured tensor at one saved step of one mode."""

    mode: str
    step: int  # global training step (EVAL: the last training step before this validation)
    mode_step: int  # step counted within the mode (EVAL: validation batches since the job began)
    epoch: int
    lr: float
    batch_size: int
    names: list[str]
    collections: list[str]
    layers: list[str]  # the module class a tensor belongs to: "Linear", "ReLU", ...
    values: np.ndarray  # [len(names), len(COLUMNS)]
    _index: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        groups: dict[str, list[int]] = {}
        for i, collection in enumerate(self.collections):
            groups.setdefault(collection, []).append(i)
        self._index = {c: np.asarray(rows) for c, rows in groups.items()}

    def has(self, collection: str) -> bool:
        return collection in self._index

    def rows(self, *collections: str) -> np.ndarray:
        """Row indices of the tensors of ``collections``."""
        parts = [self._index[c] for c in collections if c in self._index]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=int)

    def activations(self, layers: tuple[str, ...], end: str) -> np.ndarray:
        """Row indices of the activation tensors of ``layers`` (module class names) whose name ends with ``end``
        ("/input" or "/output")."""
        rows = [i for i in self.rows("activations") if self.layers[i] in layers and self.names[i].endswith(end)]
        return np.asarray(rows, dtype=int)

    def column(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        values = self.values[:, COLUMN[name]]
        return values if rows is None else values[rows]

    def tensor(self, name: str) -> np.ndarray | None:
        """All columns of one tensor, or None when it was not saved at this step."""
        try:
            return self.values[self.names.index(name)]
        except ValueError:
            return None


@dataclass
class ClassCounts:
    """Samples per class seen in training, and per-class mistakes in the last validation pass."""

    train: np.ndarray = field(default_factory=lambda: np.zeros(0))
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0))
    valid_wrong: np.ndarray = field(default_factory=lambda: np.zeros(0))
    names: tuple[str, ...] = ()  # the classes' names by label, where the job knows them (its dataset's breeds)


@dataclass
class InputStats:
    """The running mean of the input batches of one mode, over the whole job."""

    elements: float = 0.0
    total: float = 0.0
    samples: int = 0

    @property
    def mean(self) -> float:
        return self.total / self.elements if self.elements else 0.0


@dataclass
class Window:
    """The history a rule judges, as of the event that triggered it."""

    event: str  # "save", "steps", "epoch" or "clock" (see Rule.events)
    mode: str
    step: int
    lr: float = 0.0
    saves: dict[str, deque[Save]] = field(default_factory=dict)
    losses: dict[str, deque[tuple[int, float]]] = field(default_factory=dict)  # (mode step, loss) per mode
    epochs: list[dict[str, float]] = field(default_factory=list)  # each finished epoch's metrics
    classes: ClassCounts = field(default_factory=ClassCounts)
    peak_lr: float = 0.0
    seconds_since_step: float = 0.0
    inputs_are_images: bool | None = None  # None until a batch was seen
    inputs: dict[str, InputStats] = field(default_factory=dict)

    @property
    def latest(self) -> Save | None:
        saves = self.saves.get(self.mode)
        return saves[-1] if saves else None

    def history(self, mode: str | None = None) -> Sequence[Save]:
        return self.saves.get(mode or self.mode, ())

    def loss_series(self, mode: str | None = None, last: int | None = None) -> list[tuple[int, float]]:
        """``(mode step, loss)`` of every step of ``mode`` kept, or of the ``last`` ones."""
        losses = self.losses.get(mode or self.mode, ())
        if last is None or last >= len(losses):
            return list(losses)
        return [losses[i] for i in range(len(losses) - last, len(losses))]

    def winding_down(self, lr: float, share: float = 0.01) -> bool:
        """True when a schedule has brought the learning rate below ``share`` of its peak: parameters are meant
        to stop changing then, so "too small an update" is no finding."""
        return self.peak_lr > 0 and lr < share * self.peak_lr


class History:
    """The debugger's memory of a job, from which each :class:`Window` is cut."""

    def __init__(self) -> None:
        self.saves: dict[str, deque[Save]] = {}
        self.losses: dict[str, deque[tuple[int, float]]] = {}
        self.epochs: list[dict[str, float]] = []
        self.classes = ClassCounts()
        self.peak_lr = 0.0
        self.lr = 0.0
        self.inputs_are_images: bool | None = None
        self.inputs: dict[str, InputStats] = {}

    def add_save(self, save: Save) -> None:
        self.saves.setdefault(save.mode, deque(maxlen=HISTORY)).append(save)
        if math.isfinite(save.lr):
            self.peak_lr = max(self.peak_lr, save.lr)
        for row in save.rows("inputs"):
            stats = self.inputs.setdefault(save.mode, InputStats())
            numel = float(save.values[row, COLUMN["numel"]])
            stats.elements += numel
            stats.total += float(save.values[row, COLUMN["mean"]]) * numel
            stats.samples += save.batch_size

    def add_loss(self, mode: str, mode_step: int, loss: float) -> None:
        self.losses.setdefault(mode, deque(maxlen=LOSS_HISTORY)).append((mode_step, loss))

    def window(self, event: str, mode: str, step: int, seconds_since_step: float = 0.0) -> Window:
        return Window(
            event,
            mode,
            step,
            self.lr,
            self.saves,
            self.losses,
            self.epochs,
            self.classes,
            self.peak_lr,
            seconds_since_step,
            self.inputs_are_images,
            self.inputs,
        )


@dataclass
class CaptureOptions:
    """Thresholds the hooks apply while reducing activations (a rule's ``configure`` sets them): a unit active
    in less than ``inactivity`` of a batch is dead; a tanh or sigmoid input outside ``saturation[layer]`` is
    saturated."""

    inactivity: float = 0.01
    saturation: dict[str, tuple[float, float]] = field(default_factory=dict)
