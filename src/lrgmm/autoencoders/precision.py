"""Numeric precision of the autoencoder: ``"fp32"``, ``"bf16"`` or ``"auto"``.

bf16 runs the encoder and decoder under ``torch.autocast`` (convolutions in bfloat16, the
reductions autocast keeps in float32, GroupNorm included); inputs and outputs stay float32, so
nothing downstream changes type. It pays only where the hardware has bf16 arithmetic: on a CPU
with AVX-512 BF16 or AMX, TAEF2's decoder runs about 2x faster than fp32 at 37.9 dB PSNR against
the fp32 output; on an AVX2-only CPU oneDNN emulates bf16 and the same decoder was 5x *slower*
than fp32 (BENCHMARKS.md, "Autoencoder throughput"). ``"auto"`` therefore takes bf16 only where it
is native (CPU flags above, or a CUDA device that reports bf16 support) and fp32 elsewhere.

Metrics never use this: Inception features are computed in float32 whatever the autoencoder's
precision (``lrgmm.metrics.features``).
"""

from __future__ import annotations

import contextlib
import os

import torch

from ..errors import ParameterError

PRECISIONS = ("fp32", "bf16", "auto")
# What FacePipeline, the command line and the studio use unless told otherwise: bf16 where it is
# native. On the reproduction protocol (N = 1,024, 3 seeds x 1,000 faces against 2,000 held-out
# photos) bf16 decoding moved FID by +0.08 and bf16 encoding + decoding by +0.13, against a 2 sd
# of 1.2 (reports/precision.md), for 2.4x the end-to-end faces/s. The price: the same seed gives
# slightly different pixels on a CPU without bf16; ``precision="fp32"`` is the same everywhere.
DEFAULT_PRECISION = "auto"


def _onednn_allows_bf16() -> bool:
    """False when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below its bf16 instruction sets (e.g.
    ``AVX2``): then the convolutions emulate bf16 whatever the CPU has."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return not isa or isa in ("ALL", "DEFAULT") or any(t in isa for t in ("BF16", "FP16", "AMX", "AVX10"))


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """True where ``device`` computes in bfloat16 natively: a CUDA device that says so, or a CPU
    with AVX-512 BF16 or AMX tiles (torch's own CPU feature probes) that oneDNN may use."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu" or not _onednn_allows_bf16():
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    # The probes are private torch API: a torch without them counts as "not native".
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def check_precision(value) -> str:
    """``value`` if it is one of ``PRECISIONS``, else a ParameterError naming the choices."""
    if value not in PRECISIONS:
        raise ParameterError(f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def resolve_precision(value, device: str | torch.device = "cpu") -> str:
    """The precision that runs: ``"auto"`` becomes ``"bf16"`` where ``native_bf16(device)``, else
    ``"fp32"``; ``"fp32"`` and ``"bf16"`` are taken as asked."""
    value = check_precision(value)
    if value == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return value


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a network runs in at a resolved ``precision``: bf16 autocast on ``device``'s
    type, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = ["DEFAULT_PRECISION", "PRECISIONS", "autocast", "check_precision", "native_bf16", "resolve_precision"]
