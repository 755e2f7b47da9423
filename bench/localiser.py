"""Train and validate a localiser (versemi.inference.localiser) for one dataset of the default model.

    OMP_NUM_THREADS=1 .venv/bin/python bench/localiser.py train --dataset Dataset001_Hippocampus --minutes 20
    .venv/bin/python bench/localiser.py validate --dataset Dataset001_Hippocampus

``train`` is resumable (its state is saved every 50 steps in ``--work``; run it again to go on) and logs
to ``<work>/train.log``; it stops after ``--minutes`` of CPU time in this run or at ``--steps``. Each step
builds a mosaic canvas (:func:`versemi.data.synthetic.mosaic_canvas`) at 1 mm: shuffled blocks of other
training crops (plus some noise blocks and an air border), with one or two labeled crops (the second often
mirrored left-right) at random positions, or none; the canvas is preprocessed exactly as ``Localiser.locate``
does (the plan's preprocessing at the localiser's spacing) and the network learns the union of the labels
(BCE + soft Dice). ``validate`` places the development cases' crops in canvases made of other development
crops and reports, per canvas, whether every labeled crop's structure lies inside the located boxes, how many
boxes hit nothing, and the boxes' volume compared with the canvas; the numbers go into the localiser file.

Data: only training-side cases of ``../shared/data``: never the benchmark's held-out split nor the cases
bundled in ``examples/data`` (``bench/default_model.py heldout_split``); the development split
(``bench/semisup.py``, ``which="dev"``) is kept out of training for the validation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import default_model  # noqa: E402
import semisup  # noqa: E402
from semisup_presets import get_preset  # noqa: E402

from versemi.data.preprocessing import PreprocessingSpec, preprocess_case  # noqa: E402
from versemi.data.synthetic import mosaic_canvas  # noqa: E402
from versemi.inference.localiser import Localiser, LocaliserNet  # noqa: E402

MODALITY = {"Dataset001_Hippocampus": "MRI", "Dataset002_LeftAtrium": "MRI"}
#: The fine stage's box is at least the median training scan (what the segmentation model saw around the
#: structure) and grows the located component by MARGIN_MM: more mosaic context costs Dice (docs/PREDICT.md).
MIN_BOX_MM = {"Dataset001_Hippocampus": (35.0, 50.0, 36.0), "Dataset002_LeftAtrium": (119.0, 89.0, 55.0)}
MARGIN_MM = 5.0
SAVE_EVERY = 50


def case_split(data: Path, dataset: str) -> tuple[list[str], list[str]]:
    """(training cases, development cases) of ``dataset``: held-out and bundled cases excluded."""
    protocol = json.loads((data / "protocol.json").read_text(encoding="utf-8"))
    heldout = set(default_model.heldout_split(data, protocol).get(dataset, []))
    fraction = get_preset("cpu3").heldout_fraction
    dev = set(semisup.make_split(data, [dataset], protocol, fraction, which="dev")[dataset]) - heldout
    ids = semisup.dataset_case_ids(data / dataset)
    return [c for c in ids if c not in heldout and c not in dev], sorted(dev)


def read_cases(data: Path, dataset: str, cases: list[str]) -> list[tuple[np.ndarray, np.ndarray, tuple[float, ...]]]:
    """(image, label, spacing) per case, arrays in (z, y, x) order."""
    out = []
    for case in cases:
        image = sitk.ReadImage(str(data / dataset / "imagesTr" / f"{case}_0000.nii.gz"))
        label = sitk.ReadImage(str(data / dataset / "labelsTr" / f"{case}.nii.gz"))
        out.append((sitk.GetArrayFromImage(image).astype(np.float32), sitk.GetArrayFromImage(label), image.GetSpacing()))
    return out


def canvas_image(array: np.ndarray, spacing: tuple[float, ...]) -> sitk.Image:
    """A canvas array as a scan with the MSD crops' direction (LPS-flipped x and y)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection((-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))
    return image


def training_sample(rng: np.random.Generator, cases: list, spec: PreprocessingSpec) -> tuple[np.ndarray, np.ndarray]:
    """One preprocessed (image, binary target) pair, see the module docstring."""
    spacing = cases[0][2]
    crop_shape = np.max([c[0].shape for c in cases], axis=0)
    shape = [int(rng.integers(n + 8, max(n + 9, int(n * rng.uniform(1.5, 4.5))))) for n in crop_shape]
    count = int(rng.choice([0, 1, 1, 2, 2]))
    picks = rng.choice(len(cases), size=count + 6, replace=False)
    targets = []
    for k in range(count):
        image, label, _ = cases[picks[k]]
        if k == 1 and rng.random() < 0.7:
            image, label = image[:, :, ::-1], label[:, :, ::-1]
        targets.append((image, label))
    background = [cases[i][0] for i in picks[count:]]
    array, label, _ = mosaic_canvas(rng, shape, background, targets, block=int(rng.choice([6, 8, 12])),
                                    jitter=0.2, noise_fraction=float(rng.uniform(0.0, 0.2)))
    if rng.random() < 0.3:  # an air border, as around a head
        border = [int(rng.integers(0, 12)) for _ in range(3)]
        inner = tuple(slice(b, n - b) for b, n in zip(border, array.shape))
        keep = np.zeros_like(array)
        keep[inner] = array[inner]
        array = keep
        label = np.where(keep != 0, label, 0).astype(np.uint8)
    array *= float(rng.uniform(50, 1000))
    case = preprocess_case(canvas_image(array, spacing), spec, canvas_image(label, spacing))
    return case.image, (case.label > 0).astype(np.float32)


def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(5.0))
    prob = torch.sigmoid(logits)
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return bce + dice


def pad4(x: np.ndarray, value: float) -> np.ndarray:
    shape = [int(np.ceil(n / 4) * 4) for n in x.shape]
    out = np.full(shape, value, dtype=np.float32)
    out[: x.shape[0], : x.shape[1], : x.shape[2]] = x
    return out


def cmd_train(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    log = (args.work / "train.log").open("a", encoding="utf-8")
    train_ids, dev_ids = case_split(args.data, args.dataset)
    cases = read_cases(args.data, args.dataset, train_ids)
    spec = PreprocessingSpec(target_spacing=(args.spacing,) * 3, modality=MODALITY[args.dataset])
    net = LocaliserNet(args.channels)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    state_path = args.work / "state.pt"
    step = 0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
    print(f"{time.strftime('%H:%M:%S')} start at step {step}: {len(train_ids)} training cases, "
          f"{len(dev_ids)} development cases kept out", file=log, flush=True)
    rng = np.random.default_rng(args.seed + step)
    start, running = time.process_time(), []
    while step < args.steps and time.process_time() - start < args.minutes * 60:
        for group in opt.param_groups:
            group["lr"] = args.lr * (1 - step / args.steps) ** 0.9
        image, target = training_sample(rng, cases, spec)
        x = torch.from_numpy(pad4(image, float(image.min())))[None, None]
        y = torch.from_numpy(pad4(target, 0.0))[None, None]
        net.train()
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        running.append(loss.item())
        if step % SAVE_EVERY == 0 or step == args.steps:
            torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step}, state_path)
            print(f"{time.strftime('%H:%M:%S')} step {step} loss {np.mean(running):.4f}", file=log, flush=True)
            running = []
    torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step}, state_path)
    localiser = Localiser(args.dataset, net, spacing=(args.spacing,) * 3, margin_mm=MARGIN_MM,
                          min_box_mm=MIN_BOX_MM[args.dataset],
                          info={"trained_steps": step, "training_cases": len(train_ids), "spacing_mm": args.spacing,
                                "data": "training-side cases of ../shared/data (no held-out, bundled or dev case)"})
    localiser.save(args.work / f"localiser-{args.dataset}.pt")
    print(f"{time.strftime('%H:%M:%S')} saved at step {step}", file=log, flush=True)
    return 0


def validate(localiser: Localiser, cases: list, spec: PreprocessingSpec, canvases: int, seed: int) -> dict[str, Any]:
    """Hit rate of the located boxes on canvases of development crops (see the module docstring)."""
    rng = np.random.default_rng(seed)
    hits = misses = false_boxes = 0
    volume = []
    seconds = []
    for k in range(canvases):
        count = 1 + (k % 2)
        picks = rng.choice(len(cases), size=count + 6, replace=False)
        targets = [cases[picks[0]][:2]]
        if count == 2:
            image, label, _ = cases[picks[1]]
            targets.append((image[:, :, ::-1], label[:, :, ::-1]))
        shape = (167, 225, 165) if k % 3 == 0 else tuple(int(n) for n in rng.integers(90, 170, size=3))
        array, label, corners = mosaic_canvas(rng, shape, [cases[i][0] for i in picks[count:]], targets, jitter=0.1)
        scan = canvas_image(array * 500.0, cases[0][2])
        t0 = time.process_time()
        boxes = localiser.locate(scan, spec)
        seconds.append(time.process_time() - t0)
        inside = np.zeros(label.shape, dtype=bool)
        for b in boxes:
            inside[b[2]:b[5], b[1]:b[4], b[0]:b[3]] = True
            if not label[b[2]:b[5], b[1]:b[4], b[0]:b[3]].any():
                false_boxes += 1
        for corner, (crop, crop_label) in zip(corners, targets):
            region = tuple(slice(c, c + n) for c, n in zip(corner, crop.shape))
            fg = crop_label > 0
            if inside[region][fg].mean() >= 0.99:
                hits += 1
            else:
                misses += 1
        volume.append(float(inside.mean()))
    return {"canvases": canvases, "structures": hits + misses, "located": hits, "missed": misses,
            "false_boxes": false_boxes, "box_volume_fraction_mean": round(float(np.mean(volume)), 4),
            "cpu_seconds_mean": round(float(np.mean(seconds)), 3)}


def cmd_validate(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    path = args.work / f"localiser-{args.dataset}.pt"
    localiser = Localiser.load(path)
    _, dev_ids = case_split(args.data, args.dataset)
    cases = read_cases(args.data, args.dataset, dev_ids)
    spec = PreprocessingSpec(target_spacing=(1.0,) * 3, modality=MODALITY[args.dataset])
    report = validate(localiser, cases, spec, args.canvases, args.seed + 1000)
    report["development_cases"] = len(dev_ids)
    print(json.dumps(report, indent=2))
    localiser.info = {**dict(localiser.info), "validation": report}
    localiser.save(path)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["train", "validate"])
    p.add_argument("--dataset", default="Dataset001_Hippocampus", choices=sorted(MODALITY))
    p.add_argument("--data", type=Path, default=semisup.DEFAULT_DATA)
    p.add_argument("--work", type=Path, default=None, help="default bench/results/localiser-<dataset>")
    p.add_argument("--minutes", type=float, default=20.0, help="CPU-time budget of this run (train)")
    p.add_argument("--steps", type=int, default=4000, help="total steps (the learning-rate schedule's length)")
    p.add_argument("--spacing", type=float, default=3.0, help="the localiser's isotropic grid, mm")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--canvases", type=int, default=30, help="validation canvases")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.work = args.work or semisup.DEFAULT_RESULTS / f"localiser-{args.dataset}"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cmd_train(args) if args.command == "train" else cmd_validate(args)


if __name__ == "__main__":
    raise SystemExit(main())
