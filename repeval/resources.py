"""What the machine can hold, checked before a size is allocated: a typo in a batch or image
size is refused in one line instead of being killed by the kernel minutes later."""

from __future__ import annotations

from pathlib import Path

from repeval.errors import InvalidChoiceError

GIB = 2**30


def size_text(n: int) -> str:
    """
    >>> size_text(3 * 2**30), size_text(5 * 2**20)
    ('3.0 GiB', '5.0 MiB')
    """
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def available_memory(device) -> int | None:
    """Bytes free for tensors on `device` (CUDA: the device's free memory; CPU: the kernel's
    MemAvailable), or None where it cannot be known."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits(need: int, what: str, device, remedy: str) -> None:
    """Refuse when `need` bytes (a lower bound of what `what` allocates) exceed what is available."""
    available = available_memory(device)
    if available is not None and need > available:
        raise InvalidChoiceError(f"{what} needs at least {size_text(need)}; {size_text(available)} are available "
                                 f"on {device}: {remedy}")
