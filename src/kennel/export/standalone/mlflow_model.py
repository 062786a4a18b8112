"""The MLflow pyfunc model of a kennel export (MLflow's models-from-code): ``code/inference.py``'s classifier on the
model's artifact ``model``, the ONNX file with its labels and preprocessing.

Input: a DataFrame whose ``image`` column holds photos as bytes. The signature declares the column binary, so that
``mlflow models serve`` decodes the base64 strings of a JSON request
(``{"dataframe_split": {"columns": ["image"], "data": [[BASE64]]}}``); the param ``top_k`` says how many classes
to answer with. Output: one row per photo with ``label``, ``probability`` and ``index`` of the most probable class
and ``top``, the ``top_k`` most probable as ``{"label", "probability", "index"}``.
"""

import base64

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

# The names kennel.export.mlflow gives the input column, the ONNX artifact and the param, in the model's signature.
IMAGE_COLUMN = "image"
MODEL_ARTIFACT = "model"
TOP_K_PARAM = "top_k"
DEFAULT_TOP_K = 5


def _image_bytes(value) -> bytes:
    """A photo of the ``image`` column: bytes as the signature says, or base64 text where nothing decoded it."""
    if isinstance(value, str):
        return base64.b64decode(value, validate=True)
    return bytes(value)


class KennelImageClassifier(PythonModel):
    def load_context(self, context) -> None:
        # code/inference.py, on the path MLflow gives a model's code; imported here, since MLflow runs this file
        # once at save time as well, where that path is not set.
        from inference import OnnxClassifier

        self.classifier = OnnxClassifier(context.artifacts[MODEL_ARTIFACT])

    # The DataFrame hints tell MLflow to take the signature saved with the model rather than infer one from them.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        top_k = int((params or {}).get(TOP_K_PARAM) or DEFAULT_TOP_K)
        images = [_image_bytes(value) for value in model_input[IMAGE_COLUMN]]
        ranked = self.classifier.predict(images, top_k) if images else []
        return pd.DataFrame(
            {
                "label": [top[0]["label"] for top in ranked],
                "probability": [top[0]["probability"] for top in ranked],
                "index": [top[0]["index"] for top in ranked],
                "top": ranked,
            }
        )


mlflow.models.set_model(KennelImageClassifier())
