"""The endpoint's handlers for the dog-breed model train_model.py saves, as SageMaker's PyTorch inference
toolkit (or `kennel serve JOB`) calls them: model_fn once, then input_fn and predict_fn per request; the
toolkit's default output_fn answers JSON.

    kennel serve JOB                       # the kennel run job whose source folder holds this file
"""

import io
import json
import logging
import os

import torch
import torch.nn as nn
import torchvision.models as models
import torchvision.transforms as transforms
from PIL import Image

logger = logging.getLogger(__name__)
JPEG_CONTENT_TYPE = "image/jpeg"
IMAGE_TYPES = (JPEG_CONTENT_TYPE, "image/png", "application/x-image")


def model_fn(model_dir):
    with open(os.path.join(model_dir, "model_info.json")) as info_file:
        info = json.load(info_file)
    classes = info["classes"]
    if info["library"] == "torchvision":
        model = getattr(models, info["backbone"])(weights=None)
        model.fc = nn.Linear(model.fc.in_features, len(classes))
    else:
        import timm

        model = timm.create_model(info["backbone"], pretrained=False, num_classes=len(classes))
    with open(os.path.join(model_dir, "model.pth"), "rb") as weights:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.eval()
    model.info = info
    logger.info("loaded %s with %d breeds", info["backbone"], len(classes))
    return model


def input_fn(request_body, content_type=JPEG_CONTENT_TYPE):
    if content_type in IMAGE_TYPES:
        return Image.open(io.BytesIO(request_body)).convert("RGB")
    raise ValueError(f"unsupported content type {content_type}: send a photo as image/jpeg")


def predict_fn(image, model):
    info = model.info
    size = info["size"]
    transform = transforms.Compose(
        [
            transforms.Resize(int(size * 256 / 224)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(info["mean"], info["std"]),
        ]
    )
    with torch.no_grad():
        probabilities = torch.softmax(model(transform(image).unsqueeze(0)), dim=1)[0]
    top = probabilities.topk(min(5, len(info["classes"])))
    return [
        {"breed": breed(info["classes"][index]), "probability": round(float(p), 4)}
        for p, index in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def breed(folder):
    """``001.Affenpinscher`` -> ``Affenpinscher``; ``012.Australian_shepherd`` -> ``Australian shepherd``."""
    return folder.split(".", 1)[-1].replace("_", " ")
