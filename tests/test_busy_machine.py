"""Backend figures timed while other processes keep the cores busy are provisional: stored as such, used until the
machine is quiet at a start (a job's engine, ``kennel doctor``), then timed again; ``kennel doctor`` says which are.
The machine's load is faked here (conftest.py makes it quiet for every other test)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from helpers import kennel

from kennel.inference import BACKENDS, choice, features_graph, machine, open_engine
from kennel.models import create_model, get_backbone

CPU = torch.device("cpu")
OTHERS_BUSY = machine.others_busy  # the real one: the autouse fixture replaces it with a quiet machine's


def load(monkeypatch: pytest.MonkeyPatch, cores_busy: float) -> None:
    """Other processes keep ``cores_busy`` of this process's cores busy, from now on."""
    monkeypatch.setattr(machine, "others_busy", lambda start, end=None: cores_busy)


@pytest.fixture
def timed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The backends timed from now on, by name."""
    names: list[str] = []
    real = choice.time_backend

    def counting(backend, *args, **kwargs):
        names.append(backend.name)
        return real(backend, *args, **kwargs)

    monkeypatch.setattr(choice, "time_backend", counting)
    return names


def tiny_graph():
    torch.manual_seed(0)
    features = create_model("tiny", num_classes=4, pretrained=False).features
    return features_graph(features, "tiny", "random:seed0", get_backbone("tiny").preprocessing.input_size)


def runnable(graph) -> list[str]:
    return sorted(name for name in BACKENDS if BACKENDS.get(name).unavailable(graph, CPU) is None)


def test_figures_timed_on_a_busy_machine_are_provisional_until_a_quiet_start(monkeypatch, timed, caplog) -> None:
    graph = tiny_graph()
    load(monkeypatch, machine.cores())  # every core busy with other work
    with caplog.at_level(logging.WARNING, logger="kennel.inference.choice"):
        engine = open_engine(graph, CPU)
    assert engine.reason.endswith("(provisional: timed on a busy machine)")  # as the job records it
    assert sorted(timed) == runnable(graph)
    first = choice.stored(graph, CPU)
    assert first.provisional == runnable(graph) and first.others == machine.cores()
    assert "provisional" in caplog.text and "times them again" in caplog.text

    timed.clear()
    open_engine(graph, CPU)  # still busy: the provisional figures are used as they are
    assert timed == [] and choice.stored(graph, CPU).provisional == runnable(graph)

    load(monkeypatch, 0.1 * machine.cores())  # quiet: a start times them again, and they are figures like any
    open_engine(graph, CPU)
    assert sorted(timed) == runnable(graph) and choice.stored(graph, CPU).provisional == []
    timed.clear()
    open_engine(graph, CPU)
    assert timed == []


def test_only_the_backends_timed_while_busy_are_provisional(monkeypatch, timed) -> None:
    graph = tiny_graph()
    busy_for = {"onnxruntime-fp32"}
    real = choice.time_backend

    def sometimes_busy(backend, *args, **kwargs):  # other work starts as ONNX Runtime is timed, and ends after it
        load(monkeypatch, machine.cores() if backend.name in busy_for else 0.0)
        return real(backend, *args, **kwargs)

    monkeypatch.setattr(choice, "time_backend", sometimes_busy)
    open_engine(graph, CPU)
    assert choice.stored(graph, CPU).provisional == ["onnxruntime-fp32"]


def test_kennel_doctor_says_which_figures_are_provisional(monkeypatch, timed) -> None:
    load(monkeypatch, machine.cores())
    report = json.loads(kennel("doctor", "--model", "tiny", "--json").stdout)
    provisional = [row["backend"] for row in report["backends"] if row["provisional"]]
    assert provisional and sorted(provisional) == sorted(report["provisional"]) == sorted(timed)
    assert report["others"] == machine.cores()
    said = kennel("doctor", "--model", "tiny")  # piped: the backends as TSV, the facts on stderr
    assert "the next job or kennel doctor on a quiet machine times them again" in said.stderr
    rows = [line.split("\t") for line in said.stdout.splitlines()]
    column = rows[0].index("provisional")
    assert sorted(row[0] for row in rows[1:] if row[column] == "true") == sorted(provisional)

    timed.clear()
    load(monkeypatch, 0.0)
    again = json.loads(kennel("doctor", "--model", "tiny", "--json").stdout)
    assert again["measured_now"] is True and sorted(timed) == sorted(provisional)
    assert again["provisional"] == [] and not any(row["provisional"] for row in again["backends"])


def test_other_processes_load_is_the_cores_busy_time_less_this_processs_own() -> None:
    start = machine.CpuSample(at=100.0, everything=50.0, own=10.0)
    end = machine.CpuSample(at=102.0, everything=53.0, own=11.0)  # 3 s busy in 2 s, 1 s of them this process's
    assert OTHERS_BUSY(start, end) == pytest.approx(1.0)
    assert machine.busy(0.3 * machine.cores()) and not machine.busy(0.2 * machine.cores())
