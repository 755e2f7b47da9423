"""Random-number-generator state as plain tensors and lists (``torch.load(weights_only=True)`` safe)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_state(extra: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Torch (CPU + CUDA), NumPy and Python RNG states, plus named ``torch.Generator`` states."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_state[0]), "state": list(py_state[1]), "gauss_next": py_state[2]},
        "generators": {name: g.get_state() for name, g in (extra or {}).items()},
    }
    return state


def restore_rng_state(state: dict[str, Any], extra: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng_state`; CUDA states are restored only if the device count matches."""
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
    npst = state["numpy"]
    np.random.set_state(
        ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    for name, g in (extra or {}).items():
        if name in state.get("generators", {}):
            g.set_state(state["generators"][name].cpu())
