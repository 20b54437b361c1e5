"""Accelerator figures: HBM size, peak dense bf16 FLOP/s and HBM bandwidth per device, with their sources.

One table for the planner's verdicts and roofline bounds (``tempr1_jax.plan``), the trainer's MFU
(``train_log.throughput``) and the accelerator benchmark. Pure Python: importing it pulls no JAX.

    lookup("h100")                    # a short name
    lookup("NVIDIA H100 80GB HBM3")   # or a jax.Device.device_kind string
"""

from __future__ import annotations

import dataclasses

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Device:
    """One accelerator (one chip / one GPU, what ``jax.devices()`` lists).

    name: short name (``h100``); label: how reports print it; kinds: ``jax.Device.device_kind`` strings that
    name it (matched exactly, case-insensitive); hbm_bytes: HBM capacity; bf16_flops: peak dense bf16 FLOP/s
    (no sparsity); hbm_bandwidth: bytes/s; source: where the figures come from.
    """

    name: str
    label: str
    kinds: tuple[str, ...]
    hbm_bytes: int
    bf16_flops: float
    hbm_bandwidth: float
    source: str


# HBM capacities are the vendors' figures; HBM stacks come in binary sizes, so a GPU's "80 GB" is 80 GiB and the
# TPU pages say GiB. What a program may use is somewhat less (runtime reservations; JAX on GPU preallocates 75 %
# of it unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise): the planner prints the margin it leaves.
DEVICES: tuple[Device, ...] = (
    Device(
        "h100",
        "H100-80GB (SXM)",
        ("NVIDIA H100 80GB HBM3",),
        80 * GIB,
        989e12,
        3.35e12,
        "https://www.nvidia.com/en-us/data-center/h100/ (H100 SXM: 80 GB, 3.35 TB/s, BF16 1979 TFLOPS with "
        "sparsity, 989 dense)",
    ),
    Device(
        "h200",
        "H200 (SXM)",
        ("NVIDIA H200",),
        141 * GIB,
        989e12,
        4.8e12,
        "https://www.nvidia.com/en-us/data-center/h200/ (H200 SXM: 141 GB, 4.8 TB/s, BF16 1979 TFLOPS with "
        "sparsity, 989 dense)",
    ),
    Device(
        "a100",
        "A100-80GB (SXM)",
        ("NVIDIA A100-SXM4-80GB",),
        80 * GIB,
        312e12,
        2.039e12,
        "https://www.nvidia.com/en-us/data-center/a100/ (A100 80GB SXM: 2039 GB/s, BF16 312 TFLOPS dense)",
    ),
    Device(
        "v4",
        "TPU v4",
        ("TPU v4",),
        32 * GIB,
        275e12,
        1.2e12,
        "https://cloud.google.com/tpu/docs/v4 (275 TFLOPs bf16, HBM2 32 GiB, 1200 GBps per chip)",
    ),
    Device(
        "v5e",
        "TPU v5e",
        ("TPU v5 lite", "TPU v5e"),
        16 * GIB,
        197e12,
        8.19e11,
        "https://cloud.google.com/tpu/docs/v5e (197 TFLOPs bf16, HBM2 16 GiB, 819 GBps per chip)",
    ),
    Device(
        "v5p",
        "TPU v5p",
        ("TPU v5p", "TPU v5"),
        95 * GIB,
        459e12,
        2.765e12,
        "https://cloud.google.com/tpu/docs/v5p (459 TFLOPs bf16, HBM2e 95 GiB, 2765 GBps per chip)",
    ),
    Device(
        "v6e",
        "TPU v6e",
        ("TPU v6 lite", "TPU v6e"),
        32 * GIB,
        918e12,
        1.64e12,
        "https://cloud.google.com/tpu/docs/v6e (918 TFLOPs bf16, HBM 32 GB, 1640 GBps per chip)",
    ),
)


def find(kind: str) -> Device | None:
    """The device of a short name (``h100``, ``v5e``...) or a ``device_kind`` string (``TPU v5 lite``), else None."""
    k = kind.strip().lower()
    for d in DEVICES:
        if k == d.name or k in (x.lower() for x in d.kinds):
            return d
    return None


def lookup(kind: str) -> Device:
    """``find``, or a ValueError that lists the known names."""
    d = find(kind)
    if d is None:
        known = "; ".join(f"{d.name} ({', '.join(repr(k) for k in d.kinds)})" for d in DEVICES)
        raise ValueError(f"--device-kind {kind!r}: unknown device; known: {known}")
    return d


def peak_bf16_flops(device_kind: str) -> float | None:
    """Peak dense bf16 FLOP/s of one device of this kind, or None when the table does not know it."""
    d = find(device_kind)
    return None if d is None else d.bf16_flops
