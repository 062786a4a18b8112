"""Training scripts written the way SageMaker users write them for this project (the shapes real ones have:
module-level argparse defaults read from ``os.environ['SM_...']`` with no fallback, smdebug's hook made with
``create_from_json_file()`` and passed to ``train()`` and ``test()``, metrics logged to stderr, a torchvision
resnet with ``pretrained=True``, ``model.pth`` saved to ``SM_MODEL_DIR``), and a folder of torchvision weights
with random values under torchvision's own file name, so that ``pretrained=True`` finds them and nothing
downloads."""

from __future__ import annotations

import textwrap
from pathlib import Path

# A train_model.py / hpo.py in the usual shape, on ImageFolder splits (dogImages' layout), small enough to train
# in seconds on tiny photos (32 px, resnet18 with its backbone frozen but for the last block).
TRAIN_MODEL = """
import argparse
import logging
import os
import sys

import torch
import torch.nn as nn
import torch.optim as optim
import torchvision.models as models
import torchvision.transforms as transforms
from torchvision import datasets

import smdebug.pytorch as smd
from smdebug import modes
from smdebug.profiler.utils import str2bool
from sagemaker.debugger import DebuggerHookConfig, ProfilerRule, Rule, rule_configs

logger = logging.getLogger(__name__)
logger.setLevel(logging.DEBUG)
logger.addHandler(logging.StreamHandler(sys.stderr))


def test(model, test_loader, criterion, hook):
    model.eval()
    hook.set_mode(modes.EVAL)
    running_loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for inputs, labels in test_loader:
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            running_loss += loss.item() * inputs.size(0)
            correct += (outputs.argmax(1) == labels).sum().item()
            seen += inputs.size(0)
    logger.info(f"Test set: Average loss: {running_loss / seen:.4f}, Testing Accuracy: {correct / seen:.4f}")
    return running_loss / seen


def train(model, train_loader, valid_loader, criterion, optimizer, epochs, hook):
    for epoch in range(epochs):
        model.train()
        hook.set_mode(smd.modes.TRAIN)
        losses = []
        for batch_idx, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            loss = criterion(model(data), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if batch_idx % 100 == 0:
                logger.debug(f"Train epoch {epoch} [{batch_idx * len(data)}/{len(train_loader.dataset)}]")
        logger.info(f"Epoch {epoch}: train loss: {sum(losses) / len(losses):.4f}")
        model.eval()
        hook.set_mode(smd.modes.EVAL)
        valid_loss, correct, seen = 0.0, 0, 0
        with torch.no_grad():
            for inputs, labels in valid_loader:
                outputs = model(inputs)
                valid_loss += criterion(outputs, labels).item() * inputs.size(0)
                correct += (outputs.argmax(1) == labels).sum().item()
                seen += inputs.size(0)
        logger.info(f"Epoch {epoch}: valid loss: {valid_loss / seen:.4f}, valid accuracy: {correct / seen:.4f}")
    return model


def net(num_classes, backbone):
    model = getattr(models, backbone)(pretrained=True)
    for param in model.parameters():
        param.requires_grad = False
    for param in model.layer4.parameters():
        param.requires_grad = True
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def loaders(data_dir, batch_size):
    normalize = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    transform = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor(), normalize])
    splits = {}
    for name in ("train", "valid", "test"):
        splits[name] = datasets.ImageFolder(os.path.join(data_dir, name), transform)
    return {
        name: torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=name == "train")
        for name, data in splits.items()
    }, len(splits["train"].classes)


def main(args):
    torch.manual_seed(0)
    data, num_classes = loaders(args.data_dir, args.batch_size)
    model = net(num_classes, args.backbone)
    hook = smd.Hook.create_from_json_file()
    hook.register_hook(model)
    criterion = nn.CrossEntropyLoss()
    hook.register_loss(criterion)
    optimizer = optim.Adam(filter(lambda p: p.requires_grad, model.parameters()), lr=args.lr)
    model = train(model, data["train"], data["valid"], criterion, optimizer, args.epochs, hook)
    test(model, data["test"], criterion, hook)
    torch.save(model.state_dict(), os.path.join(args.model_dir, "model.pth"))
    logger.info("saved the model")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--backbone", type=str, default="resnet18")
    parser.add_argument("--use-cuda", type=str2bool, default=False)
    parser.add_argument("--data-dir", type=str, default=os.environ["SM_CHANNEL_TRAINING"])
    parser.add_argument("--model-dir", type=str, default=os.environ["SM_MODEL_DIR"])
    parser.add_argument("--output-dir", type=str, default=os.environ["SM_OUTPUT_DATA_DIR"])
    main(parser.parse_args())
"""

# SageMaker's metric_definitions for it, as a notebook's estimator or tuner gives them.
METRIC_DEFINITIONS = [
    {"Name": "train_loss", "Regex": "train loss: ([0-9\\\\.]+)"},
    {"Name": "valid_loss", "Regex": "valid loss: ([0-9\\\\.]+)"},
    {"Name": "valid_accuracy", "Regex": "valid accuracy: ([0-9\\\\.]+)"},
    {"Name": "test_loss", "Regex": "Average loss: ([0-9\\\\.]+)"},
]

# Tells what it was given, and does nothing else: the training toolkit's contract, seen from inside.
SHOW_ENVIRONMENT = """
import json
import os
import sys

prefixes = ("SM_", "SAGEMAKER_", "PYTHONUNBUFFERED", "TRAINING_JOB")
env = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
seen = {"argv": sys.argv[1:], "cwd": os.getcwd(), "env": env}
config = os.environ["SM_INPUT_CONFIG_DIR"]
names = ("hyperparameters.json", "resourceconfig.json", "inputdataconfig.json")
seen["files"] = {name: json.load(open(os.path.join(config, name))) for name in names}
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "seen.json"), "w") as out:
    json.dump(seen, out)
print("value=-1.5e-05 and value=nan and value=3")
"""

CRASHES = """
import os
import sys

print("starting", flush=True)
print("loading the data from", os.environ["SM_CHANNEL_TRAINING"], file=sys.stderr)
raise ValueError("the batch size must be positive")
"""

READS_A_CHANNEL_IT_WAS_NOT_GIVEN = """
import argparse
import os

parser = argparse.ArgumentParser()
parser.add_argument("--train", type=str, default=os.environ["SM_CHANNEL_TRAIN"])
parser.add_argument("--valid", type=str, default=os.environ["SM_CHANNEL_VALID"])
args = parser.parse_args()
"""


def write_script(folder: Path, text: str, name: str = "train_model.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def fill_torch_home(home: Path, *backbones: str) -> Path:
    """``home/hub/checkpoints`` with a random-init state dict of each torchvision backbone under the file name
    torchvision looks for, so that ``models.NAME(pretrained=True)`` loads it and never downloads."""
    import torch
    from torchvision import models

    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for backbone in backbones:
        weights = models.get_model_weights(backbone).DEFAULT
        torch.save(models.get_model(backbone).state_dict(), checkpoints / weights.url.rsplit("/", 1)[-1])
    return home
