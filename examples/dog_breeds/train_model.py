"""Fine-tune an ImageNet-pretrained CNN on dog breeds, the way a SageMaker training job runs it.

SageMaker (or `kennel run`) starts it with the hyperparameters as --name value and the data and model folders
in SM_* variables. The debugger's hook records the training (TRAIN mode) and the evaluation (EVAL mode); its
rules watch them. The model, its class names and its preprocessing are saved to SM_MODEL_DIR for inference.py.

    kennel run train_model.py --data dogImages --hp backbone=resnet18 --hp epochs=5 --hp lr=0.001
"""

import argparse
import json
import logging
import os
import sys

import smdebug.pytorch as smd
import torch
import torch.nn as nn
import torch.optim as optim
import torchvision.models as models
import torchvision.transforms as transforms
from smdebug import modes
from smdebug.profiler.utils import str2bool
from torchvision import datasets

logger = logging.getLogger(__name__)
logger.setLevel(logging.DEBUG)
logger.addHandler(logging.StreamHandler(sys.stdout))

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def test(model, loader, criterion, device, hook=None):
    """Loss and accuracy on a split, in the hook's EVAL mode."""
    model.eval()
    if hook:
        hook.set_mode(modes.EVAL)
    total_loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            outputs = model(inputs)
            total_loss += criterion(outputs, labels).item() * inputs.size(0)
            correct += (outputs.argmax(1) == labels).sum().item()
            seen += inputs.size(0)
    return total_loss / seen, correct / seen


def train(model, loaders, criterion, optimizer, epochs, device, hook=None):
    for epoch in range(epochs):
        model.train()
        if hook:
            hook.set_mode(modes.TRAIN)
        running_loss, running_corrects = 0.0, 0
        for inputs, labels in loaders["train"]:
            inputs = inputs.to(device)
            labels = labels.to(device)
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            _, preds = torch.max(outputs, 1)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * inputs.size(0)
            running_corrects += torch.sum(preds == labels.data).item()
        seen = len(loaders["train"].dataset)
        logger.info(
            f"Epoch {epoch}: train loss: {running_loss / seen:.4f}, train accuracy: {running_corrects / seen:.4f}"
        )
        valid_loss, valid_accuracy = test(model, loaders["valid"], criterion, device, hook)
        logger.info(f"Epoch {epoch}: valid loss: {valid_loss:.4f}, valid accuracy: {valid_accuracy:.4f}")
    return model


def net(backbone, num_classes, weights_dir=None):
    """The pretrained backbone, frozen, with a new head. A torchvision name (resnet18, resnet50) loads
    torchvision's ImageNet weights; any other is a timm model whose weights come in the `weights` channel as
    BACKBONE.safetensors (for a machine that cannot download them)."""
    if backbone in models.list_models(module=models):
        model = getattr(models, backbone)(pretrained=True)
        for param in model.parameters():
            param.requires_grad = False
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        return model, {"size": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "library": "torchvision"}
    import timm
    from safetensors.torch import load_file

    model = timm.create_model(backbone, pretrained=False)
    if weights_dir:
        model.load_state_dict(load_file(os.path.join(weights_dir, f"{backbone}.safetensors")))
    for param in model.parameters():
        param.requires_grad = False
    model.reset_classifier(num_classes)  # a new head, trainable
    config = timm.data.resolve_data_config({}, model=model)
    size = config["input_size"][-1]
    return model, {"size": size, "mean": list(config["mean"]), "std": list(config["std"]), "library": "timm"}


def data_loaders(data_dir, batch_size, size, mean, std):
    normalize = transforms.Normalize(mean, std)
    train_transform = transforms.Compose(
        [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
    )
    eval_transform = transforms.Compose(
        [transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size), transforms.ToTensor(), normalize]
    )
    splits = {
        "train": datasets.ImageFolder(os.path.join(data_dir, "train"), train_transform),
        "valid": datasets.ImageFolder(os.path.join(data_dir, "valid"), eval_transform),
        "test": datasets.ImageFolder(os.path.join(data_dir, "test"), eval_transform),
    }
    loaders = {
        name: torch.utils.data.DataLoader(split, batch_size=batch_size, shuffle=name == "train", num_workers=1)
        for name, split in splits.items()
    }
    return loaders, splits["train"].classes


def main(args, debug=True):
    """Train, test and save; ``debug``: with the debugger's hook (hpo.py trains without it)."""
    device = torch.device("cuda" if args.use_cuda and torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    classes = sorted(entry.name for entry in os.scandir(os.path.join(args.data_dir, "train")) if entry.is_dir())
    model, preprocessing = net(args.backbone, len(classes), args.weights_dir)
    model = model.to(device)
    loaders, classes = data_loaders(
        args.data_dir, args.batch_size, preprocessing["size"], preprocessing["mean"], preprocessing["std"]
    )

    criterion = nn.CrossEntropyLoss()
    hook = None
    if debug:
        hook = smd.Hook.create_from_json_file()
        hook.register_module(model)
        hook.register_loss(criterion)
    optimizer = optim.Adam(filter(lambda p: p.requires_grad, model.parameters()), lr=args.lr)

    model = train(model, loaders, criterion, optimizer, args.epochs, device, hook)
    test_loss, test_accuracy = test(model, loaders["test"], criterion, device, hook)
    logger.info(f"Test set: Average loss: {test_loss:.4f}, Testing Accuracy: {test_accuracy:.4f}")

    torch.save(model.cpu().state_dict(), os.path.join(args.model_dir, "model.pth"))
    info = {"backbone": args.backbone, "classes": classes, **preprocessing}
    with open(os.path.join(args.model_dir, "model_info.json"), "w") as out:
        json.dump(info, out)
    logger.info(f"Saved the model to {args.model_dir}")


def arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", type=str, default="resnet18")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--use-cuda", type=str2bool, default=True)
    parser.add_argument("--data-dir", type=str, default=os.environ["SM_CHANNEL_TRAINING"])
    parser.add_argument("--weights-dir", type=str, default=os.environ.get("SM_CHANNEL_WEIGHTS"))
    parser.add_argument("--model-dir", type=str, default=os.environ["SM_MODEL_DIR"])
    parser.add_argument("--output-dir", type=str, default=os.environ["SM_OUTPUT_DATA_DIR"])
    return parser.parse_args()


if __name__ == "__main__":
    main(arguments())
