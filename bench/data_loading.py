"""How fast training patches come out of the preprocessed cache, on CPU.

Measures, in one run:

1. preprocessing (cache miss) vs reading an entry back (cache hit) per case;
2. patches/s from :class:`PatchSampler` alone (memory-mapped slicing + padding);
3. patches/s with the default MONAI augmentation (:func:`make_training_augmentation`);
4. patches/s through the trainer's DataLoader over :class:`~versemi.training.batches.StepStream` (one
   batch of 2 patches per step) with ``--workers`` processes.

Data: ``--data DIR`` (an nnU-Net v2 raw dataset, e.g. ``../shared/data/Dataset002_LeftAtrium``)
or, by default, a generated synthetic dataset of ``--cases`` volumes of 96 x 160 x 160 voxels.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/data_loading.py
    .venv/bin/python bench/data_loading.py --data ../shared/data/Dataset002_LeftAtrium --spacing 0.625 0.625 0.625
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from versemi.data.augmentation import make_training_augmentation
from versemi.data.cache import CacheJob, PreprocessedCache, fill_cache
from versemi.data.dataset import NnUNetDataset
from versemi.data.plans import DatasetPlan, Plans
from versemi.data.preprocessing import PreprocessingSpec
from versemi.data.sampling import PatchSampler, patch_size_zyx
from versemi.training.batches import StepSampler, StepStream, augment_patch, make_step_loader
from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset


def rate(fn, n: int) -> float:
    fn()  # warm-up (opens the memmaps, builds MONAI grids)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="nnU-Net raw dataset (default: synthetic)")
    parser.add_argument("--cases", type=int, default=4, help="cases to use")
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0), help="target spacing x y z (mm)")
    parser.add_argument("--patch", type=int, nargs=3, default=(96, 96, 64), help="patch size x y z (voxels)")
    parser.add_argument("--patches", type=int, default=100, help="patches per measurement")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        if args.data is None:
            folder = make_nnunet_dataset(
                tmp, "Dataset900_Bench", [SyntheticStructure("organ", 1, 1.0), SyntheticStructure("small", 2, 2.0)],
                num_cases=args.cases, shape_zyx=(96, 160, 160), spacing_xyz=(1.0, 1.0, 1.0),
            )
        else:
            folder = args.data
        ds = NnUNetDataset(folder)
        cases = [c for c in ds.cases if c.label_path is not None][: args.cases]
        spec = PreprocessingSpec(target_spacing=tuple(args.spacing), modality=ds.modality)
        jobs = [CacheJob(c.case_id, c.image_path, c.label_path, spec, ds.name) for c in cases]
        cache = PreprocessedCache(Path(tmp) / "cache")

        start = time.perf_counter()
        cached, _ = fill_cache(cache, jobs)
        miss = (time.perf_counter() - start) / len(jobs)
        start = time.perf_counter()
        fill_cache(PreprocessedCache(cache.cache_dir), jobs)
        hit = (time.perf_counter() - start) / len(jobs)
        shapes = sorted({c.shape for c in cached})
        print(f"data: {ds.name}, {len(cached)} cases, preprocessed shapes (z, y, x) {shapes[:3]}")
        print(f"cache: build {miss * 1000:.0f} ms/case, reuse {hit * 1000:.1f} ms/case "
              f"(ratio {miss / hit:.0f}x)")

        patch = patch_size_zyx(args.patch)
        sampler = PatchSampler(cached, patch, foreground_oversample=0.33, rng=0)
        raw = rate(sampler.sample, args.patches)
        transform = make_training_augmentation(None).set_random_state(seed=0)
        augmented = rate(lambda: augment_patch(sampler.sample(), transform), max(10, args.patches // 4))
        plans = Plans({ds.name: DatasetPlan(ds.name, spec, tuple(args.patch))})
        step_sampler = StepSampler(cached, [], plans, 2, 0, 0.33, donors=False)
        loader = make_step_loader(StepStream(step_sampler, {ds.name: make_training_augmentation(None)}, seed=0),
                                  args.workers, pin_memory=False)
        next(loader)  # don't count worker start-up
        start = time.perf_counter()
        loaded = 0
        for _ in range(max(1, args.patches // 2)):
            loaded += next(loader)[0]["image"].shape[0]
        loader_rate = loaded / (time.perf_counter() - start)
        print(f"patch (z, y, x) {patch}: sampler {raw:.0f} patches/s; + augmentation {augmented:.1f} patches/s "
              f"(1 thread); DataLoader x{args.workers} workers {loader_rate:.1f} patches/s")


if __name__ == "__main__":
    main()
