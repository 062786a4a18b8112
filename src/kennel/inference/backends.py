"""The engine's backends: each runs a :class:`FrozenGraph` one way (a runtime at a precision) and says when it
cannot run here. Which one is fastest is measured (:mod:`kennel.inference.choice`), never assumed."""

from __future__ import annotations

import copy
import importlib.util
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kennel.allocator import keep_buffers_in_heap
from kennel.inference import machine
from kennel.inference.folding import fold_batchnorm
from kennel.inference.graph import FrozenGraph
from kennel.registry import Registry

log = logging.getLogger(__name__)

# A runner takes a float32 batch [N, 3, S, S] and returns the graph's outputs, float32 on the CPU, in order.
Runner = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class Backend:
    name: str
    runtime: str  # "torch", "onnxruntime", "openvino"
    precision: str  # "fp32", "bf16", "fp16", "int8"
    summary: str
    unavailable: Callable[[FrozenGraph, torch.device], str | None]  # why it cannot run here, or None
    open: Callable[[FrozenGraph, torch.device], Runner]

    @property
    def label(self) -> str:
        """``onnxruntime int8``: how a job's record and the console name it."""
        return f"{self.name} {self.precision}" if self.runtime == "torch" else f"{self.runtime} {self.precision}"


BACKENDS: Registry[Backend] = Registry("inference backend")


def register_backend(backend: Backend) -> Backend:
    return BACKENDS.register(backend.name, backend)


# --- PyTorch --------------------------------------------------------------------------------------------------


_FOLDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a graph's module -> its folded copy, or None


def _folded(module: torch.nn.Module, input_size: int) -> torch.nn.Module:
    """``module`` with its BatchNorm folded, folded once while it lives: every PyTorch backend over a graph, those
    timed and the one that then runs, starts from the same copy (and copies it again)."""
    if module not in _FOLDED:
        folded = fold_batchnorm(module, input_size)
        _FOLDED[module] = folded if folded is not module else None
    folded = _FOLDED[module]
    return module if folded is None else folded


def _torch_runner(memory_format: torch.memory_format, autocast: torch.dtype | None, fold: bool = True) -> Callable:
    """``fold``: BatchNorm folded into the convolutions before it (:mod:`kennel.inference.folding`)."""

    def open_(graph: FrozenGraph, device: torch.device) -> Runner:
        # A copy of its own: converting the caller's module to another memory format in place would change how
        # every other backend over the same graph runs (and was timed). Folding makes one.
        module = _folded(graph.module(), graph.input_size) if fold else graph.module()
        module = copy.deepcopy(module).eval().to(device, memory_format=memory_format)
        keep_buffers_in_heap()  # per-batch activations stay in the heap: about 2x for PyTorch on a CPU

        @torch.no_grad()  # not inference_mode: a head trains on these outputs, and autograd refuses those tensors
        def run(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
            batch = batch.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                outputs = module(batch)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            return tuple(output.float().cpu() for output in outputs)

        return run

    return open_


def _on_cpu(graph: FrozenGraph, device: torch.device) -> str | None:
    return None if device.type == "cpu" else "runs on the CPU only"


def _on_cuda(graph: FrozenGraph, device: torch.device) -> str | None:
    return None if device.type == "cuda" else "needs a CUDA GPU"


def _native_bf16(graph: FrozenGraph, device: torch.device) -> str | None:
    if device.type != "cpu":
        return "runs on the CPU only"
    if not machine.has_native_bf16():
        return "this CPU has no native bf16 (AVX512-BF16 or AMX): it would be emulated, slower than fp32"
    return None


def _cuda_bf16(graph: FrozenGraph, device: torch.device) -> str | None:
    if device.type != "cuda":
        return "needs a CUDA GPU"
    return None if torch.cuda.is_bf16_supported() else "this GPU has no bf16"


register_backend(
    Backend(
        "torch-eager",
        "torch",
        "fp32",
        "PyTorch eager, NCHW, the module as it is: the reference",
        _on_cpu,
        _torch_runner(torch.contiguous_format, None, fold=False),
    )
)
register_backend(
    Backend(
        "torch-channels-last",
        "torch",
        "fp32",
        "PyTorch eager, channels-last (NHWC) convolutions, BatchNorm folded into them",
        _on_cpu,
        _torch_runner(torch.channels_last, None),
    )
)
register_backend(
    Backend(
        "torch-bf16",
        "torch",
        "bf16",
        "PyTorch channels-last, BatchNorm folded, with bf16 autocast, where the CPU computes bf16 natively",
        _native_bf16,
        _torch_runner(torch.channels_last, torch.bfloat16),
    )
)
register_backend(
    Backend("torch-cuda", "torch", "fp32", "PyTorch on CUDA, fp32", _on_cuda, _torch_runner(torch.channels_last, None))
)
register_backend(
    Backend(
        "torch-cuda-bf16",
        "torch",
        "bf16",
        "PyTorch on CUDA with bf16 autocast",
        _cuda_bf16,
        _torch_runner(torch.channels_last, torch.bfloat16),
    )
)
register_backend(
    Backend(
        "torch-cuda-fp16",
        "torch",
        "fp16",
        "PyTorch on CUDA with fp16 autocast",
        _on_cuda,
        _torch_runner(torch.channels_last, torch.float16),
    )
)


# --- ONNX Runtime ---------------------------------------------------------------------------------------------

_ARENA_REGISTERED = False


def session_options(ort):
    """Sessions share one CPU arena that grows by what is asked, not by doubling: ONNX Runtime's default arena
    doubles its last extension, and a server's memory jumped by hundreds of MB at a time (benchmarks/serve_soak.py).
    """
    global _ARENA_REGISTERED
    options = ort.SessionOptions()
    # As many threads as PyTorch's: a tuning worker, or a test worker beside others, that was given a share of the
    # cores keeps to it (ONNX Runtime's own default is every core, whoever else is using them).
    options.intra_op_num_threads = torch.get_num_threads()
    if not _ARENA_REGISTERED:
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, 1, -1, -1))  # 1: kSameAsRequested
        _ARENA_REGISTERED = True
    options.add_session_config_entry("session.use_env_allocators", "1")
    return options


def _ort_runner(precision: str, provider: str, provider_options: dict | None = None) -> Callable:
    def open_(graph: FrozenGraph, device: torch.device) -> Runner:
        import onnxruntime as ort

        from kennel.inference.store import onnx_file

        path = onnx_file(graph, precision)
        providers = [(provider, provider_options or {})] if provider != "CPUExecutionProvider" else []
        session = ort.InferenceSession(str(path), session_options(ort), providers=[*providers, "CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        input_name = session.get_inputs()[0].name

        def run(batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
            array = batch.detach().to("cpu", torch.float32).contiguous().numpy()
            return tuple(torch.from_numpy(output) for output in session.run(names, {input_name: array}))

        return run

    return open_


def _ort_ready(precision: str, provider: str = "CPUExecutionProvider") -> Callable:
    def unavailable(graph: FrozenGraph, device: torch.device) -> str | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed"
        if device.type != "cpu":
            return "runs on the CPU only"
        if precision not in graph.onnx_files and not graph.exportable:
            hint = " (train with --precision int8 to add one)" if precision == "int8" else ""
            return f"no {precision} ONNX file{hint}"
        if precision == "int8" and precision not in graph.onnx_files and graph.calibration is None:
            return "int8 needs calibration photos (a training job provides its own)"
        if provider != "CPUExecutionProvider":
            import onnxruntime as ort

            if provider not in ort.get_available_providers():
                return f"no {provider} in this onnxruntime (pip install onnxruntime-openvino)"
        return None

    return unavailable


register_backend(
    Backend(
        "onnxruntime-fp32",
        "onnxruntime",
        "fp32",
        "ONNX Runtime on the CPU, fp32",
        _ort_ready("fp32"),
        _ort_runner("fp32", "CPUExecutionProvider"),
    )
)
register_backend(
    Backend(
        "onnxruntime-int8",
        "onnxruntime",
        "int8",
        "ONNX Runtime on the CPU, static int8 calibrated on the job's training photos",
        _ort_ready("int8"),
        _ort_runner("int8", "CPUExecutionProvider"),
    )
)
register_backend(
    Backend(
        "openvino-fp32",
        "openvino",
        "fp32",
        "ONNX Runtime's OpenVINO provider on the CPU (optional: pip install onnxruntime-openvino)",
        _ort_ready("fp32", "OpenVINOExecutionProvider"),
        _ort_runner("fp32", "OpenVINOExecutionProvider", {"device_type": "CPU"}),
    )
)
