"""Speed settings chosen once from the hardware: autocast dtype, memory format, torch.compile,
the fused optimiser kernel and activation checkpointing.

``resolve(cfg, device)`` turns the config keys ``train.amp`` (``auto | null | bf16 | fp16``),
``train.channels_last``, ``train.compile``, ``optim.fused`` (``auto | true | false``) and
``train.activation_checkpointing`` into a :class:`FastPath`; the training loop, the
objectives and the evaluation only ask it (``fast.inputs(x)``, ``fast.autocast(device)``,
``fast.prepare(model)``, ``fast.wrap(module)``). ``auto`` picks what measured faster on that
kind of hardware (docs/performance.md):

* ``amp``: bf16 autocast where the hardware computes bf16 natively: a CPU with AVX512-BF16 or
  AMX-BF16, or a CUDA GPU with native bf16 (Ampere and later); otherwise fp32. A CPU without
  those instructions emulates bf16 (conversions around fp32 arithmetic), which is slower than
  fp32, so bf16 there is never chosen automatically.
* ``channels_last``: on together with reduced-precision autocast; off in fp32 on CPU (slower
  with AVX2 only, docs/performance.md).
* ``compile``: on for CUDA when Triton is installed; off on CPU (compiling a training step
  takes many minutes on a few cores).
* ``fused``: PyTorch's fused Adam/SGD kernel on CUDA. Off on CPU: there the optimiser step is
  ~1 % of a training step (the fused kernel's gain is within measurement noise) and the fused
  kernel's rounding makes results depend on the thread count (an exact resume in another
  thread count no longer reproduces the losses).

Each ``true``/``false``/dtype value overrides the automatic choice.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import shutil
import sys
import warnings
from dataclasses import asdict, dataclass

import torch

AMP_VALUES = ("auto", None, "bf16", "fp16")
SWITCH_VALUES = ("auto", True, False)


@dataclass(frozen=True)
class FastPath:
    """Resolved speed settings: ``amp`` is ``None`` (fp32), ``"bf16"`` or ``"fp16"``."""

    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    fused: bool = False
    checkpointing: bool = False

    def describe(self) -> str:
        return (f"precision {self.amp or 'fp32'}, memory format {'channels-last' if self.channels_last else 'contiguous'}, "
                f"torch.compile {'on' if self.compile else 'off'}, fused optimiser {'on' if self.fused else 'off'}, "
                f"activation checkpointing {'on' if self.checkpointing else 'off'}")

    def as_dict(self) -> dict:
        return asdict(self)

    def autocast(self, device: torch.device):
        """The autocast context of :attr:`amp` on ``device`` (fp32: none)."""
        return autocast(device, self.amp)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch in the model's memory format."""
        return to_memory_format(x, self.channels_last)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model in this memory format (in place) with activation checkpointing set."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if hasattr(model, "set_activation_checkpointing"):
            model.set_activation_checkpointing(self.checkpointing)
        elif self.checkpointing:
            raise ValueError(f"train.activation_checkpointing is not supported by {type(model).__name__}")
        return model

    def wrap(self, module: torch.nn.Module, **compile_options) -> torch.nn.Module:
        """What the step calls: ``module``, or its compiled form (:class:`CompiledOrEager`)."""
        if not self.compile:
            return module
        set_compile_cache()
        return CompiledOrEager(module, **compile_options)


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """Instruction-set features of this CPU (``avx2``, ``avx512_bf16``, ``amx_bf16``, ...).

    From PyTorch's cpuinfo (``torch.cpu.get_capabilities``) where available, else the
    ``flags`` line of ``/proc/cpuinfo`` (Linux names, e.g. ``avx512_bf16``, ``amx_bf16``).
    """
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        try:
            return frozenset(k for k, v in get().items() if v is True)
        except Exception:  # noqa: BLE001 - an unusual cpuinfo: fall back to /proc
            pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


CPU_ISA_LEVELS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


def cpu_isa() -> str:
    """The widest of :data:`CPU_ISA_LEVELS` this CPU has (``"amx_bf16"``, ..., ``"avx2"``), else
    the platform's machine name: what decides which oneDNN kernels run, hence the rounding of
    an fp32 run (a result is reproducible to the digit only on the same level)."""
    flags = cpu_flags()
    return next((level for level in CPU_ISA_LEVELS if level in flags), None) or platform.machine() or "unknown"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matrix products natively (not emulated in fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # older signature
            return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return False


def compiler_available(device: torch.device) -> bool:
    """Whether torch.compile's inductor backend can generate code for ``device``: a C++
    compiler for CPU, Triton for CUDA."""
    device = torch.device(device)
    if sys.platform == "win32" or not hasattr(torch, "compile"):
        return False
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    try:
        from torch._inductor import cpp_builder

        return cpp_builder.get_cpp_compiler() is not None
    except Exception:  # noqa: BLE001 - no compiler found (inductor raises its own error types)
        return shutil.which(os.environ.get("CXX", "g++")) is not None


def fused_kernel_devices() -> set[str]:
    """Device types for which PyTorch has fused Adam/SGD kernels."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        return set(_get_fused_kernels_supported_devices())
    except ImportError:  # another PyTorch version: the two it has long supported
        return {"cpu", "cuda"}


def _get(cfg, key: str, default):
    node = cfg
    for part in key.split("."):
        if node is None or part not in node:
            return default
        node = node[part]
    return node


def resolve(cfg, device: torch.device) -> FastPath:
    """The :class:`FastPath` of a config (``train.*`` and ``optim.fused`` keys) on ``device``."""
    device = torch.device(device)
    amp = _get(cfg, "train.amp", "auto")
    if amp == "auto":
        amp = "bf16" if native_bf16(device) else None
    cl = _get(cfg, "train.channels_last", "auto")
    if cl == "auto":
        cl = amp in ("bf16", "fp16")
    comp = _get(cfg, "train.compile", "auto")
    if comp == "auto":
        comp = device.type == "cuda" and compiler_available(device)
    elif comp and not compiler_available(device):
        warnings.warn(f"train.compile=true but torch.compile has no code generator for {device.type} "
                      f"({'Triton' if device.type == 'cuda' else 'a C++ compiler'} not found): running eagerly",
                      stacklevel=2)
        comp = False
    fused = _get(cfg, "optim.fused", "auto")
    if fused == "auto":
        fused = device.type == "cuda" and "cuda" in fused_kernel_devices()
    elif fused and device.type not in fused_kernel_devices():
        raise ValueError(f"optim.fused=true: PyTorch has no fused optimiser kernel for {device.type}; use optim.fused=auto")
    return FastPath(amp=amp, channels_last=bool(cl), compile=bool(comp), fused=bool(fused),
                    checkpointing=bool(_get(cfg, "train.activation_checkpointing", False)))


def autocast(device: torch.device, amp: str | None):
    """The autocast context of ``amp`` (``None``: fp32, no autocast)."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


class CompiledOrEager(torch.nn.Module):
    """``torch.compile(module)`` that falls back to the eager module if compilation fails.

    The first call runs the compiled module; if that raises, the same call is run eagerly:
    when the eager call fails too the error is the model's own and is raised; otherwise the
    compiler failed, a one-line warning says so and every later call is eager. Parameters,
    buffers and ``state_dict`` are the wrapped module's (no ``_orig_mod.`` prefix).
    """

    def __init__(self, module: torch.nn.Module, **compile_options):
        super().__init__()
        self.module = module
        self._compiled = torch.compile(module, **compile_options)
        self._state = "untried"  # untried | compiled | eager

    def forward(self, *args, **kwargs):
        if self._state == "eager":
            return self.module(*args, **kwargs)
        if self._state == "compiled":
            return self._compiled(*args, **kwargs)
        try:
            out = self._compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - decided below by running the eager module
            out = self.module(*args, **kwargs)  # raises if the error is the model's, not the compiler's
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                          f"running eagerly (set train.compile=false to skip compiling)", stacklevel=2)
            self._state = "eager"
            return out
        self._state = "compiled"
        return out

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        return self.module.load_state_dict(*args, **kwargs)


# inference: compiling (with weights frozen into the graph: BatchNorm folded into the
# convolutions, weights pre-packed) can pay only once this many images of one size are predicted
COMPILE_MIN_IMAGES = 16


def resolve_inference(amp="auto", compile="auto", device: torch.device | str = "cpu", num_images: int = 1,
                      one_size: bool = True) -> FastPath:
    """The :class:`FastPath` of ``densemtl predict``: autocast as for training; ``compile``
    ``auto`` on CUDA (with Triton) when at least :data:`COMPILE_MIN_IMAGES` images of one size
    are predicted, never on CPU (compiling takes minutes on a few cores, more than it saves on
    a folder of images); channels-last with reduced precision or a compiled model."""
    device = torch.device(device)
    fast = resolve({"train": {"amp": amp, "channels_last": "auto", "compile": False}, "optim": {"fused": False}}, device)
    if compile == "auto":
        compile = device.type == "cuda" and one_size and num_images >= COMPILE_MIN_IMAGES and compiler_available(device)
    elif compile and not compiler_available(device):
        warnings.warn("--compile true but torch.compile has no code generator here: predicting eagerly", stacklevel=2)
        compile = False
    return FastPath(amp=fast.amp, channels_last=fast.channels_last or bool(compile), compile=bool(compile))


def prepare_inference(model: torch.nn.Module, fast: FastPath) -> torch.nn.Module:
    """``model`` in eval mode and ``fast``'s memory format; compiled (inductor, weights frozen)
    if ``fast.compile``. Returns the module to call; ``model`` keeps its attributes."""
    model.eval()
    fast.prepare(model)
    return fast.wrap(model, options={"freezing": True}).eval()


def set_compile_cache(path: str | os.PathLike | None = None) -> None:
    """Keep inductor's compiled kernels between runs (``TORCHINDUCTOR_CACHE_DIR``; default
    ``~/.cache/densemtl/inductor``) unless the environment already chose a directory."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path or os.path.join(os.path.expanduser("~"), ".cache", "densemtl", "inductor"))
