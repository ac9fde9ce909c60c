"""Training batches and the validation set, simulated on the fly, each a pure function of seeds."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from cmrecon.models.train_config import DataSection, TrainConfig

__all__ = ["MODEL_INPUTS", "batch_for", "batches", "make_validation_set"]

#: Keys of a sample that the model takes.
MODEL_INPUTS = ("ir_kspace", "pd_kspace", "mask", "sens_maps")


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)))


def _make_sample(rng: np.random.Generator, data: DataSection, size: Sequence[int],
                 n_coils: int, sens: str) -> dict[str, Any]:
    from cmrecon.sim.training import make_sample
    return make_sample(rng, size=(int(size[0]), int(size[1])), coils=(n_coils, n_coils),
                       sens=sens, as_torch=True, **data.sample_kwargs())


def _stack(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in samples[0].items():
        out[k] = torch.stack([s[k] for s in samples]) if isinstance(v, torch.Tensor) else \
            [s[k] for s in samples]
    return out


def batch_for(cfg: TrainConfig, batch_index: int) -> dict[str, Any]:
    """Training batch number ``batch_index`` (global, counted from 0 over all epochs).

    A pure function of ``(cfg.train.seed, batch_index)``: the batch's matrix size and coil
    count come from spawn key ``(0, batch_index)``, item ``b`` from ``(0, batch_index, b + 1)``.

    Returns
    -------
    dict
        :func:`cmrecon.sim.training.make_sample` keys stacked on a leading batch axis
        (``ir_kspace`` ``(B, coils, RO, PE)`` complex64, ``mask`` ``(B, 1, RO, PE)`` bool, ...).
    """
    data, seed = cfg.data, cfg.train.seed
    meta = _rng(seed, 0, batch_index)
    size = data.sizes[int(meta.integers(len(data.sizes)))]
    n_coils = int(meta.integers(data.coils[0], data.coils[1] + 1))
    samples = []
    for b in range(cfg.train.batch_size):
        rng = _rng(seed, 0, batch_index, b + 1)
        sens = data.sens[int(rng.integers(len(data.sens)))]
        samples.append(_make_sample(rng, data, size, n_coils, sens))
    return _stack(samples)


def batches(cfg: TrainConfig, start: int, stop: int) -> Iterator[dict[str, Any]]:
    """Training batches ``start … stop − 1``, made by ``train.num_workers`` processes when > 0."""
    if cfg.train.num_workers <= 0:
        yield from (batch_for(cfg, g) for g in range(start, stop))
        return
    # batch_size=None: each index goes alone through collate_fn, run in the worker processes
    yield from torch.utils.data.DataLoader(
        range(start, stop), batch_size=None, collate_fn=functools.partial(batch_for, cfg),
        num_workers=cfg.train.num_workers, prefetch_factor=2, persistent_workers=False)


def make_validation_set(cfg: TrainConfig) -> list[dict[str, Any]]:
    """The fixed held-out validation samples (each a batch of one, torch tensors).

    Sample ``i`` uses spawn key ``(1, i)`` of ``SeedSequence(validation.seed)``; training
    samples use keys starting with 0, so the two sets never share a generator state. Sizes and
    coil-map modes cycle through ``validation.sizes`` / ``validation.sens``.
    """
    val = cfg.validation
    out = []
    for i in range(val.n):
        rng = _rng(val.seed, 1, i)
        n_coils = int(rng.integers(val.coils[0], val.coils[1] + 1))
        size = val.sizes[i % len(val.sizes)]
        sens = val.sens[i % len(val.sens)]
        out.append(_stack([_make_sample(rng, cfg.data, size, n_coils, sens)]))
    return out
