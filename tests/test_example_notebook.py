"""examples/dog_breeds.ipynb, executed whole as a person runs it (nbclient), on tiny generated photos: the data
check, a tuning study of its hpo.py, the best hyperparameters, train_model.py under the debugger and profiler,
its inference.py behind an endpoint, and a photo sent through boto3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sagemaker_scripts import fill_torch_home

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOK = EXAMPLES / "dog_breeds.ipynb"


def test_the_notebook_is_kept_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(not cell["outputs"] and cell["execution_count"] is None for cell in code)


@pytest.mark.slow
def test_the_notebook_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import nbclient
    import nbformat

    from kennel.data.sample import write_sample_dataset
    from kennel.localhost import free_port

    photos = write_sample_dataset(tmp_path / "dogs", num_classes=3, per_split=(8, 4, 4))
    settings = {
        "DOG_BREEDS_DATA": str(photos),
        "DOG_BREEDS_TRIALS": "2",
        "DOG_BREEDS_EPOCHS": "[1]",
        "DOG_BREEDS_BATCH_SIZES": "[8, 16]",
        "DOG_BREEDS_PORT": str(free_port()),
        "DOG_BREEDS_WORK": str(tmp_path / "work"),
        "TORCH_HOME": str(fill_torch_home(tmp_path / "torch", "resnet18")),  # pretrained=True without a download
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=900, resources={"metadata": {"path": str(EXAMPLES)}})
    client.execute()  # a cell that raises fails the test with its traceback

    text = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "backbone: resnet18" in text and "as the script takes them: --backbone resnet18" in text
    assert "true breed: Synthetic " in text and "endpoint stopped" in text
    images = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the debugger's loss curves, and the photo with its top breed
