"""Observers of the training loop: tracking, checkpoints, progress, debugger, profiler, pruning.

Import each from its own module (``from kennel.observers.tracking import MLflowTracker``); nothing is imported
here, so loading one observer does not pay for the others' dependencies.
"""
