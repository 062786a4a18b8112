"""``kennel demo``: the whole path end to end on one machine - data, check, train, tune, report, predict, serve."""

from __future__ import annotations

import random
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import typer

from kennel.cli.app import app, tracking_uri_option
from kennel.cli.output import console, print_prediction, print_verdicts
from kennel.errors import Failure


def heading(out, title: str) -> None:
    """A step's heading rule, as wide as the lines kennel prints: the terminal's width, or 80 columns when piped
    (the console's own piped width is wider, for tables)."""
    from rich.rule import Rule

    from kennel.lines import width

    out.print(Rule(f"[bold]{title}"), width=min(out.width, width()))


def shell_line(args: list[object], width: int) -> str:
    """``$ ARGS`` as a shell reads it, folded to ``width`` only between arguments (an option stays with its
    value), every folded line ending in `` \\`` so that the whole still pastes into a shell as one command. An
    argument longer than a line stays whole: rich folding it would cut a path in two."""
    words = [shlex.quote(str(arg)) for arg in args]
    units: list[str] = []
    for word in words:
        if units and units[-1].startswith("-") and " " not in units[-1] and not word.startswith("-"):
            units[-1] += " " + word  # --port 8080
        else:
            units.append(word)
    lines, line = [], "$"
    for unit in units:
        if line.strip() not in ("", "$") and len(line) + 1 + len(unit) + 2 > width:  # 2: room for " \\"
            lines.append(line + " \\")
            line = "   "
        line += " " + unit
    return "\n".join([*lines, line])


def echo(out, *args: object) -> None:
    """A command the demo runs, shown as the person would type it (:func:`shell_line`)."""
    out.print(shell_line(list(args), out.width), highlight=False, markup=False, soft_wrap=True)


def say_path(out, what: str, path: object) -> None:
    """``what: PATH`` with the path whole on its line, for a person to copy."""
    out.print(f"{what}: {path}", highlight=False, markup=False, soft_wrap=True)


@dataclass
class DemoRun:
    """What the steps hand to each other."""

    data: Path | None
    seed: int
    overrides: dict[str, object]
    record: object = None
    study: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def step_data(run: DemoRun) -> None:
    from kennel.data.fetch import fetch_dogimages

    if run.data is None:
        run.data = fetch_dogimages()
    say_path(console(), "dataset", run.data)


def step_check(run: DemoRun) -> None:
    from kennel.data.check import check_dataset

    report = check_dataset(run.data)
    totals = report.split_totals()
    out = console()
    out.print(f"{len(report.classes)} classes; " + ", ".join(f"{s} {n:,}" for s, n in totals.items()))
    out.print(f"{len(report.errors)} errors, {len(report.warnings)} warnings (`kennel data check` shows them)")
    for finding in report.errors[:5]:
        out.print(f"  [red]error[/red] {finding.code}: {finding.message}")


def step_train(run: DemoRun) -> None:
    from kennel.config import load_config
    from kennel.job import train

    config = load_config(overrides={"data.root": str(run.data), "name": "demo", **run.overrides})
    run.record = train(config)
    metrics = run.record.metrics
    console().print(
        f"job {run.record.id}: test accuracy {metrics['test_accuracy']:.2%}, top-5 {metrics['test_top5']:.2%}"
    )


# A short study: the trials reuse the features the training step cached, so each one trains a head only.
DEMO_TRIALS = 6


def step_tune(run: DemoRun) -> None:
    import sys
    from datetime import datetime

    from kennel.config import dotted_to_nested
    from kennel.tune import TuneRequest, tune
    from kennel.tune.report import write_study_report

    run.study = f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    base = dotted_to_nested({"data.root": str(run.data), **run.overrides})
    request = TuneRequest(run.study, "default", base, {"seed": run.seed}, {"trials": DEMO_TRIALS})
    echo(console(), "kennel", "tune", "--data", run.data, "--study", run.study, "--trials", DEMO_TRIALS)
    tune(request, stream=sys.stdout)
    say_path(console(), "study report", write_study_report(run.study))


def step_report(run: DemoRun) -> None:
    from kennel.pages import write_report

    say_path(console(), "report", write_report(run.record.path))
    profile = run.record.folder.profile_page  # written by the job's profiler when it ended
    if profile.is_file():
        out = console()
        say_path(out, "profile", profile)
        out.print(f"`kennel profile {run.record.id}` prints its summary", highlight=False, markup=False)


def step_predict(run: DemoRun) -> None:
    from kennel.data.layout import load_layout
    from kennel.predictor import Predictor

    test = load_layout(run.data)["test"]
    photo, label = random.Random(run.seed).choice(test.files)
    prediction = Predictor.load(run.record.artifact).predict([photo])[0]
    out = console()
    print_prediction(out, photo, prediction)
    truth = test.classes[label]
    verdict = "[green]right[/green]" if prediction.index == label else "[red]wrong[/red]"
    out.print(f"true breed: {truth.split('.', 1)[-1].replace('_', ' ')} ({verdict})")


def step_serve(run: DemoRun, startup_s: float = 120) -> None:
    """Start ``kennel serve`` on a free port, ask it about a random test photo, print the answer, stop it."""
    import subprocess
    import sys

    from kennel.client import EndpointClient, EndpointError
    from kennel.data.layout import load_layout, readable_name
    from kennel.localhost import free_port, stop_process

    port = free_port()
    command = [sys.executable, "-m", "kennel", "serve", str(run.record.artifact), "--port", str(port)]
    out = console()
    echo(out, "kennel", "serve", run.record.artifact, "--port", port)
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = EndpointClient(f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if server.poll() is not None:
                raise Failure(f"kennel serve exited ({server.returncode}): {server.stderr.read()[-1500:]}")
            try:
                client.ping()
                break
            except EndpointError:
                if time.monotonic() > deadline:
                    raise Failure(f"kennel serve did not answer within {startup_s:.0f} s") from None
                time.sleep(0.25)
        test = load_layout(run.data)["test"]
        photo, label = random.Random(run.seed + 1).choice(test.files)
        echo(out, "kennel", "predict", "--endpoint", client.url, photo)
        answer = client.predict(photo)
        print_prediction(out, photo, answer["predictions"])
        print_verdicts(out, answer)
        truth = readable_name(test.classes[label])
        verdict = "[green]right[/green]" if answer["predictions"][0]["index"] == label else "[red]wrong[/red]"
        out.print(f"true breed: {truth} ({verdict}); answered in {answer['latency_ms']:.0f} ms")
    finally:
        stop_process(server)
    out.print("endpoint stopped")


# The steps in order; later capabilities (tuning) add theirs here.
STEPS: list[tuple[str, Callable[[DemoRun], None]]] = [
    ("data", step_data),
    ("check", step_check),
    ("train", step_train),
    ("tune", step_tune),
    ("report", step_report),
    ("predict", step_predict),
    ("serve", step_serve),
]


@app.command("demo")
def demo_command(
    data: Path = typer.Option(None, "--data", "-d", help="local dataset folder instead of downloading dogImages"),
    model: str = typer.Option(None, "--model", "-m", help="backbone (default: the default recipe's)"),
    epochs: int = typer.Option(None, "--epochs", help="training epochs"),
    seed: int = typer.Option(0, "--seed", help="seed for training and the random test photo"),
    tracking_uri: str = tracking_uri_option(),
) -> None:
    """Run the whole path: fetch (or --data), check, train, tune, report, predict a test photo, serve and query it."""
    from kennel.home import use_tracking_uri

    use_tracking_uri(tracking_uri)
    overrides = {k: v for k, v in {"model.backbone": model, "epochs": epochs, "seed": seed}.items() if v is not None}
    run = DemoRun(data, seed, overrides)
    out = console()
    started = time.perf_counter()
    for index, (name, step) in enumerate(STEPS, 1):
        heading(out, f"{index}/{len(STEPS)} {name}")
        step_started = time.perf_counter()
        step(run)
        run.timings[name] = time.perf_counter() - step_started
    heading(out, "done")
    out.print("  ".join(f"{name} {seconds:.0f}s" for name, seconds in run.timings.items()))
    out.print(f"total {time.perf_counter() - started:.0f}s; `kennel jobs` lists the job, `kennel ui` opens MLflow")
