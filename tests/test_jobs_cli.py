"""``kennel jobs`` and ``kennel ui`` over job folders made with ``create_job`` in the isolated kennel home."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import kennel, wait_until

from kennel.jobs import JobRecord, create_job, load_job
from kennel.localhost import free_port

EPOCHS = [
    {"kind": "epoch", "epoch": 1, "train_loss": 1.9, "valid_accuracy": 0.61, "valid_top5": 0.9, "epoch_seconds": 12.5},
    {"kind": "step", "global_step": 20, "train_loss": 1.5},
    {"kind": "epoch", "epoch": 2, "train_loss": 1.2, "valid_accuracy": 0.83, "valid_top5": 0.97, "epoch_seconds": 12.1},
]


def make_job(name: str, status: str = "completed", study: str | None = None, **metrics: float) -> JobRecord:
    record = create_job(
        name,
        backbone="resnet50",
        params={"lr": 0.003, "batch_size": 32, "epochs": 2, "freeze": "all"},
        config={"model": {"backbone": "resnet50"}, "optim": {"lr": 0.003}},
        study=study,
        status=status,
        started="2026-01-02T03:04:05+00:00",
        duration_s=125.0,
        metrics=metrics,
    )
    lines = [json.dumps(e) for e in EPOCHS] + ['{"kind": "epoch", "epo']  # a last line cut short by a kill
    (record.path / "metrics.jsonl").write_text("\n".join(lines))
    return record


@pytest.fixture
def jobs() -> list[JobRecord]:
    return [
        make_job("frozen-r50", best_valid_accuracy=0.83, test_accuracy=0.81, test_top5=0.96),
        make_job("bad-lr", status="failed"),
        make_job("trial-1", study="lr-search", best_valid_accuracy=0.70),
        make_job("trial-2", study="lr-search", best_valid_accuracy=0.88),
    ]


def test_jobs_lists_every_job_with_its_numbers(jobs: list[JobRecord]) -> None:
    result = kennel("jobs", "--format", "table")
    assert result.exit_code == 0, result.output
    for record in jobs:
        assert record.id in result.output
    assert "81.0%" in result.output and "83.0%" in result.output  # test and best valid accuracy
    assert "2m05s" in result.output and "failed" in result.output
    assert kennel("jobs", "ls", "--format", "table").output.count("\n") == result.output.count("\n")
    header, *rows = [line.split("\t") for line in kennel("jobs").output.splitlines()]  # piped: TSV, values as they are
    frozen = next(dict(zip(header, row, strict=True)) for row in rows if row[1] == "frozen-r50")
    assert (frozen["test_accuracy"], frozen["best_valid_accuracy"], frozen["duration_s"]) == ("0.81", "0.83", "125.0")


def test_jobs_filters_and_json(jobs: list[JobRecord]) -> None:
    study = json.loads(kennel("jobs", "--study", "lr-search", "--json").output)
    assert sorted(r["name"] for r in study) == ["trial-1", "trial-2"]
    failed = json.loads(kennel("jobs", "ls", "--status", "failed", "--json").output)
    assert [r["name"] for r in failed] == ["bad-lr"]
    assert len(json.loads(kennel("jobs", "--limit", "2", "--json").output)) == 2
    bad = kennel("jobs", "--status", "sleeping")
    assert bad.exit_code == 2 and "unknown status" in bad.output


def test_show_json_round_trips_the_record(jobs: list[JobRecord]) -> None:
    result = kennel("jobs", "show", jobs[0].id, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["status"] == "completed" and data["config"]["optim"]["lr"] == 0.003
    assert data["metrics"]["test_accuracy"] == 0.81 and data["metrics"]["test_top5"] == 0.96
    assert JobRecord.from_dict(data) == load_job(jobs[0].id)


def test_show_finds_a_job_by_name_prefix_folder_latest_or_part(jobs: list[JobRecord]) -> None:
    for ref in ("frozen-r50", jobs[0].id[:-2], jobs[0].job_dir, "frozen"):
        assert json.loads(kennel("jobs", "show", ref, "--json").output)["id"] == jobs[0].id, ref
    assert json.loads(kennel("jobs", "show", "latest", "--json").output)["id"] == jobs[-1].id


def test_show_prints_the_record_epochs_and_files(jobs: list[JobRecord]) -> None:
    result = kennel("jobs", "show", "frozen-r50")
    assert result.exit_code == 0, result.output
    out = result.output
    assert jobs[0].id in out and "resnet50" in out and "optim.lr" in out
    assert "valid_accuracy" in out and "0.83" in out and "12.1" in out  # the epochs table
    assert "metrics.jsonl" in out


def test_show_keeps_every_key_whole_at_80_columns() -> None:
    import io

    from rich.console import Console

    from kennel.cli.job_view import job_panel

    params = {"hyperparameters.learning-rate": 0.01, "hyperparameters.batch-size": 16, "hyperparameters.epochs": 2}
    record = create_job("script-job", kind="script", params=params, config={"hyperparameters": params})
    screen = io.StringIO()
    Console(file=screen, width=80).print(job_panel(record, 80))
    out = screen.getvalue()
    assert max(len(line) for line in out.splitlines()) <= 80
    assert all(key in out for key in params), out


def test_scripts_jobs_show_their_hyperparameters_and_logged_metrics_at_80_columns() -> None:
    import io

    from rich.console import Console

    from kennel.cli.job_view import jobs_listing
    from kennel.cli.tables import print_table
    from kennel.jobs import list_jobs

    params = {"learning-rate": 0.01, "batch-size": 16, "epochs": 2}
    for number, loss in enumerate([0.91, 0.47]):
        metrics = [{"name": "test_loss", "regex": "loss: ([0-9.]+)"}]
        record = create_job(
            f"train_model-{number}", kind="script", params=params, status="completed", config={"metrics": metrics}
        )
        record.metrics = {"test_loss": loss, "exit_code": 0}  # the exit status is kennel's, not a logged metric
        record.save()
    screen = io.StringIO()
    print_table(jobs_listing(list_jobs()), Console(file=screen, width=80, color_system=None))
    table = screen.getvalue()
    assert max(len(line) for line in table.splitlines()) <= 80, table
    # The script's hyperparameters under kennel's headings, its own metric, and no column it would leave empty.
    assert all(f" {name} " in table for name in ("lr", "test_loss")), table
    assert "best valid" not in table and "test acc" not in table and "backbone" not in table
    assert "0.91" in table and "0.47" in table and "exit_code" not in table
    header, *rows = [line.split("\t") for line in kennel("jobs").output.splitlines()]
    assert "metrics.test_loss" in header and "test_accuracy" in header and len(rows) == 2  # TSV keeps them all


def test_unknown_or_ambiguous_job_exits_2(jobs: list[JobRecord]) -> None:
    missing = kennel("jobs", "show", "no-such-job")
    assert missing.exit_code == 2 and "no job 'no-such-job'" in missing.output
    ambiguous = kennel("jobs", "show", "trial")
    assert ambiguous.exit_code == 2 and "ambiguous" in ambiguous.output


def test_best_of_a_study(jobs: list[JobRecord]) -> None:
    assert json.loads(kennel("jobs", "best", "lr-search", "--json").output)["name"] == "trial-2"
    missing = kennel("jobs", "best", "no-study")
    assert missing.exit_code == 2 and "no study 'no-study'" in missing.output
    unscored = kennel("jobs", "best", "lr-search", "--metric", "test_top5")  # the study is there; the metric is not
    assert unscored.exit_code == 2 and "no job of study 'lr-search' has metric 'test_top5'" in unscored.output


def test_a_running_job_whose_process_is_gone_says_so() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = make_job("ghost", status="running")
    if "pid" not in JobRecord.__dataclass_fields__:
        pytest.skip("job records carry no pid")
    record.pid = dead.pid
    record.save()
    assert "process gone" in kennel("jobs").output
    assert "process gone" in kennel("jobs", "--format", "table").output
    assert "running" in kennel("jobs", "show", "ghost").output


def test_empty_home_says_how_to_start() -> None:
    result = kennel("jobs")
    assert result.exit_code == 0 and "no jobs" in result.output


def test_the_console_imports_neither_torch_nor_mlflow() -> None:
    code = "import sys, kennel.cli.jobs, kennel.cli.ui; print(sorted({'torch', 'mlflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ui_command_line(kennel_home: Path) -> None:
    from kennel.cli.ui import server_command

    command = server_command(port=5123)
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{kennel_home / 'mlflow.db'}"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--artifacts-destination") + 1] == str(kennel_home / "mlartifacts")
    assert kennel("ui", "--help").exit_code == 0


@pytest.mark.slow
def test_ui_serves_the_store_offline_and_stops_cleanly(kennel_home: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kennel", "ui", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    assert response.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "kennel ui did not come up"
                time.sleep(0.5)
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert "experiments" in json.loads(response.read())
    finally:
        process.terminate()
        process.wait(timeout=30)
    # The server's own processes go with it, though they may close their socket a moment after kennel ui exits.
    wait_until(lambda: not answers(f"http://127.0.0.1:{port}/health"), "the server's processes ending")
    assert (kennel_home / "mlflow.db").is_file()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False
