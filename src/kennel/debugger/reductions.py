"""Reductions of many tensors at once: a few kernels per tensor, everything stacked and copied to the host in
one transfer, so a saved step costs one device synchronisation however many tensors it reduces."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kennel.debugger.window import COLUMN, COLUMNS

# Large tensors are reduced over an evenly strided sample of at most this many elements: a large feature map
# costs several passes otherwise, more than the layer that made it, and a resnet's weights and gradients cost a
# saved step a quarter of a second. Std, norm and the share of zeros are estimates then, min and max bound the
# range from inside; the numel column keeps the true size. A weight's or gradient's mean is over every element:
# one pass, in which a NaN or an infinity anywhere shows (ExplodingTensor counts them exactly then).
SAMPLE = 1 << 16


def strided(flat: torch.Tensor) -> torch.Tensor:
    """An evenly strided sample of at most :data:`SAMPLE` elements of a 1-d tensor (a view; itself if small)."""
    return flat[:: -(-flat.numel() // SAMPLE)] if flat.numel() > SAMPLE else flat


_ZEROS, _NORM, _NAN, _INF = COLUMN["zeros"], COLUMN["norm"], COLUMN["nan"], COLUMN["inf"]


class Reducer:
    """Collects tensors to reduce at one saved step; :meth:`collect` returns the rows and clears it.

    NaN and infinity are counted at collect time, and only in tensors whose mean is not finite (any NaN or
    infinity makes it so), which spares two passes over every healthy tensor. A tensor that will not live that
    long (an activation, ``keep=False``) is not counted: its min and max say whether it held NaN or infinity, and
    its count is then 1, a lower bound."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.collections: list[str] = []
        self.layers: list[str] = []
        self._floats: list[torch.Tensor] = []  # mean, sum of squares, min, max per row, on the tensor's device
        self._counts: list[torch.Tensor] = []  # non-zero elements per row
        self._kept: list[torch.Tensor | None] = []
        self._numel: list[int] = []  # elements of each tensor
        self._counted: list[int] = []  # elements reduced (fewer for a sampled activation)
        self._scalars: list[tuple[str, str, float]] = []
        self._extras: list[tuple[int, str, torch.Tensor]] = []

    def add_scalar(self, name: str, collection: str, value: float) -> None:
        """A number the host already has (the loss): its row needs no kernel at all."""
        self._scalars.append((name, collection, float(value)))

    @torch.no_grad()
    def add_many(self, names: Sequence[str], collection: str, layers: Sequence[str], tensors, keep=True) -> None:
        flat = [t.detach().reshape(-1) for t in tensors]
        if not keep:  # activations: a strided sample of a large one (see SAMPLE), its mean the sample's too
            flat = [strided(f) for f in flat]
        flat = [f if f.dtype == torch.float32 else f.float() for f in flat]
        sizes = [t.numel() for t in tensors]
        for name, layer, f, size in zip(names, layers, flat, sizes, strict=True):
            sample = strided(f)
            if f.numel() == 0:
                zero = f.new_zeros((), dtype=torch.float32)
                self._floats += [zero, zero, zero, zero]
                self._counts.append(zero.long())
            else:
                # Fast passes: torch.std_mean is ten times slower than a mean and a dot product, and the std
                # follows from those on the host (see collect).
                low, high = torch.aminmax(sample)
                self._floats += [f.mean(), torch.dot(sample, sample), low, high]
                self._counts.append(torch.count_nonzero(sample))
            self._kept.append(f if keep else None)
            self._numel.append(size)
            self._counted.append(sample.numel())
            self.names.append(name)
            self.collections.append(collection)
            self.layers.append(layer)

    def add(self, name: str, collection: str, layer: str, tensor: torch.Tensor, keep: bool = True) -> int:
        self.add_many([name], collection, [layer], [tensor], keep)
        return len(self.names) - 1

    def extra(self, row: int, column: str, value: torch.Tensor) -> None:
        """Set ``column`` (``update``, ``dead``, ``saturated``) of ``row`` to a 0-d tensor on the same device."""
        self._extras.append((row, column, value.float()))

    def collect(self) -> np.ndarray:
        """``[rows, len(COLUMNS)]``, one host transfer for everything added since the last collect."""
        rows = len(self.names)
        out = np.full((rows, len(COLUMNS)), np.nan)
        scalars = self._scalars
        if rows:
            # Everything lives on the model's device: one stack per dtype, one copy to the host.
            floats = torch.stack(self._floats + [v for _, _, v in self._extras]).cpu().double().numpy()
            counts = torch.stack(self._counts).cpu().double().numpy()
            numel = np.asarray(self._numel, dtype=np.float64)
            mean, squares, low, high = floats[: rows * 4].reshape(rows, 4).T
            counted = np.asarray(self._counted, dtype=np.float64)
            scale = numel / np.maximum(counted, 1)  # a sampled activation's sum of squares, scaled to its size
            out[:, COLUMN["mean"]], out[:, COLUMN["min"]], out[:, COLUMN["max"]] = mean, low, high
            out[:, _NORM] = np.sqrt(squares * scale)
            # E[x^2] - E[x]^2 in float64 from a float32 sum: exact enough unless |mean| dwarfs the std by 1e3.
            with np.errstate(invalid="ignore"):
                out[:, COLUMN["std"]] = np.sqrt(np.maximum(squares / np.maximum(counted, 1) - mean * mean, 0.0))
            out[:, _ZEROS] = np.where(counted > 0, 1.0 - counts / np.maximum(counted, 1), 0.0)
            out[:, COLUMN["numel"]] = numel
            out[:, _NAN] = out[:, _INF] = 0.0
            for (row, column, _), value in zip(self._extras, floats[rows * 4 :], strict=True):
                out[row, COLUMN[column]] = value
            # All zeros in a sample is no proof: such a tensor is counted whole (AllZero judges on it).
            for i in np.flatnonzero((counts == 0) & (counted < numel)):
                kept = self._kept[i]
                if kept is not None:
                    out[i, _ZEROS] = 1.0 - torch.count_nonzero(kept).item() / max(kept.numel(), 1)
            for i in np.flatnonzero(~np.isfinite(out[:, COLUMN["mean"]])):
                kept = self._kept[i]
                if kept is not None:
                    out[i, _NAN], out[i, _INF] = torch.isnan(kept).sum().item(), torch.isinf(kept).sum().item()
                else:
                    low, high = out[i, COLUMN["min"]], out[i, COLUMN["max"]]
                    out[i, _NAN] = float(np.isnan(low) or np.isnan(high))
                    out[i, _INF] = float(np.isinf(low) or np.isinf(high))
        if scalars:
            values = np.array([v for *_, v in scalars])
            rows = np.full((len(scalars), len(COLUMNS)), np.nan)
            for column in ("mean", "min", "max"):
                rows[:, COLUMN[column]] = values
            rows[:, COLUMN["std"]] = 0.0
            rows[:, _NORM] = np.abs(values)
            rows[:, _ZEROS] = values == 0
            rows[:, _NAN], rows[:, _INF] = np.isnan(values), np.isinf(values)
            rows[:, COLUMN["numel"]] = 1
            out = np.vstack([out, rows])
            self.names += [n for n, _, _ in scalars]
            self.collections += [c for _, c, _ in scalars]
            self.layers += [""] * len(scalars)
        self.__init__()
        return out


def reduce_tensors(tensors: Sequence[torch.Tensor], collection: str = "tensors") -> np.ndarray:
    """The rows of :data:`~kennel.debugger.window.COLUMNS` for ``tensors``, e.g. for one's own analysis."""
    reducer = Reducer()
    reducer.add_many([str(i) for i in range(len(tensors))], collection, [""] * len(tensors), tensors)
    return reducer.collect()


@torch.no_grad()
def dead_share(output: torch.Tensor, inactivity: float) -> torch.Tensor:
    """The share of units (channels, dimension 1) active (> 0) in less than ``inactivity`` of a batch."""
    if output.dim() < 2:
        output = output.reshape(-1, 1)
    dims = [d for d in range(output.dim()) if d != 1]
    # One pass: a ReLU's output is never negative, so "active" is "not zero".
    active = torch.count_nonzero(output, dim=dims)
    return (active < inactivity * (output.numel() // output.shape[1])).float().mean()


@torch.no_grad()
def saturated_share(inputs: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """The share of ``inputs`` outside ``[low, high]``."""
    return ((inputs < low) | (inputs > high)).float().mean()
