"""A user's SageMaker training script, in the shape such scripts have, for tests/test_script_hook.py: the hook made
at module level from the job's JSON settings and handed to train() and test(), which set its mode; the model
registered with register_hook, the loss with register_loss; progress logged to stderr; notebook-side SageMaker
imports it never uses. Its data are generated: ``--random-labels true`` gives labels nothing can learn, so the
model memorises the training set and its validation loss rises (the Overfit rule's case)."""

import argparse
import json
import logging
import sys

import smdebug.pytorch as smd
import torch
from sagemaker.debugger import DebuggerHookConfig, ProfilerRule, Rule, rule_configs  # noqa: F401
from smdebug import modes
from smdebug.profiler.utils import str2bool
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)
logger.addHandler(logging.StreamHandler(sys.stderr))

hook = smd.Hook.create_from_json_file()


def test(model, test_loader, criterion, hook):
    model.eval()
    hook.set_mode(modes.EVAL)
    running_loss, correct = 0.0, 0
    with torch.no_grad():
        for inputs, labels in test_loader:
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            running_loss += loss.item() * inputs.size(0)
            correct += (outputs.argmax(1) == labels).sum().item()
    return running_loss / len(test_loader.dataset), correct / len(test_loader.dataset)


def train(model, train_loader, valid_loader, criterion, optimizer, epochs, hook):
    for epoch in range(epochs):
        model.train()
        hook.set_mode(smd.modes.TRAIN)
        running_loss = 0.0
        for inputs, labels in train_loader:
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * inputs.size(0)
        valid_loss, valid_accuracy = test(model, valid_loader, criterion, hook)
        train_loss = running_loss / len(train_loader.dataset)
        logger.info(
            f"Epoch {epoch}: train loss {train_loss:.4f}, valid loss {valid_loss:.4f}, accuracy {valid_accuracy:.3f}"
        )
    return model


def data(samples, seed, random_labels):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (samples,), generator=generator) if random_labels else torch.arange(samples) % 3
    inputs = torch.randn(samples, 16, generator=generator)
    if not random_labels:
        inputs[torch.arange(samples), labels] += 2.0
    return TensorDataset(inputs, labels)


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 3))


def main(args):
    model = net()
    hook.register_hook(model)
    criterion = nn.CrossEntropyLoss()
    hook.register_loss(criterion)
    if args.optimizer == "sgd":
        optimizer = optim.SGD(model.parameters(), lr=args.lr)
    else:
        optimizer = optim.Adam(model.parameters(), lr=args.lr)
    train_loader = DataLoader(data(args.samples, 0, args.random_labels), batch_size=16, shuffle=True)
    valid_loader = DataLoader(data(args.samples, 1, args.random_labels), batch_size=16)
    model = train(model, train_loader, valid_loader, criterion, optimizer, args.epochs, hook)
    test_loss, test_accuracy = test(model, valid_loader, criterion, hook)
    logger.info(f"Test set: Average loss: {test_loss:.4f}, Accuracy: {test_accuracy:.3f}")
    print("mode steps: " + json.dumps({mode.name: n for mode, n in hook.mode_steps.items()}), file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--optimizer", type=str, default="adam")
    parser.add_argument("--random-labels", type=str2bool, default=False)
    main(parser.parse_args())
