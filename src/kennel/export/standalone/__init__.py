"""Files that kennel copies as they are into its exports, to run where kennel is not installed.

They import nothing from kennel (only ONNX Runtime, Pillow, NumPy and, for the MLflow model, MLflow) and keep to
Python 3.8, the oldest that SageMaker's serving containers still run. Kennel itself reads only their names and
constants from here.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
INFERENCE = FOLDER / "inference.py"  # the classifier and SageMaker's handler functions
MLFLOW_MODEL = FOLDER / "mlflow_model.py"  # the MLflow pyfunc model, built on inference.py
# What inference.py imports, at the lowest versions kennel itself declares.
REQUIREMENTS = ("onnxruntime>=1.18", "pillow>=10", "numpy>=1.24")
