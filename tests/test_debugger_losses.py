"""Every step's loss in the debugger's records: written beside the saved steps, read back across a kill and a
resume, and what the debugger report draws its loss curve from."""

from __future__ import annotations

from pathlib import Path

from debug_models import fit, mlp, vectors

from kennel.debugger import load_records
from kennel.debugger.store import RecordWriter, read_table


def test_every_steps_loss_is_kept_though_tensors_are_saved_every_50th(tmp_path: Path) -> None:
    fit(tmp_path / "job" / "debug", mlp(), vectors(n=640), vectors(n=64, seed=1), epochs=2, preset="light")
    records = load_records(tmp_path / "job")
    assert records.steps("TRAIN") == [0]  # 20 steps per epoch, every 50th saved
    steps, losses = records.loss_curve("TRAIN")
    assert steps.tolist() == list(range(40)) and losses[-5:].mean() < losses[:5].mean()  # a healthy run learns
    eval_steps, eval_losses = records.loss_curve("EVAL")
    assert eval_steps.tolist() == [19, 39] and len(eval_losses) == 2  # one mean per validation pass
    per_batch = records.losses[records.losses["mode"] == "EVAL"]
    assert per_batch["mode_step"].tolist() == [0, 1, 2, 3]  # two batches of 32 per pass


def test_a_resumed_job_keeps_the_newer_loss_of_steps_run_twice(tmp_path: Path) -> None:
    folder = tmp_path / "debug"
    first = RecordWriter(folder)
    for step in range(20):
        first.write_loss("TRAIN", step, step, step // 10, 1.0)
    first.close()
    resumed = RecordWriter(folder)  # the checkpoint of epoch 1: steps 10 to 19 run again
    for step in range(10, 25):
        resumed.write_loss("TRAIN", step, step, step // 10, 2.0)
    resumed.close()
    assert sorted(p.name for p in folder.glob("losses-*.arrow")) == ["losses-001.arrow", "losses-002.arrow"]
    table = read_table(folder, "losses")
    assert table["step"].to_pylist() == list(range(25))
    assert table["loss"].to_pylist() == [1.0] * 10 + [2.0] * 15
