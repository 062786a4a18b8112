"""One inference engine for every frozen forward pass: backends, their measured choice, ONNX exports and int8.

``open_engine(graph, device)`` is the entry point; :mod:`kennel.inference.graph` says what a graph is.
"""

from kennel.inference.backends import BACKENDS, Backend, register_backend
from kennel.inference.engine import Engine, EngineError, open_engine
from kennel.inference.graph import FrozenGraph, classifier_graph, features_graph

__all__ = [
    "BACKENDS",
    "Backend",
    "Engine",
    "EngineError",
    "FrozenGraph",
    "classifier_graph",
    "features_graph",
    "open_engine",
    "register_backend",
]
