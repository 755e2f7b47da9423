"""``Predictor``: the one inference path used by ``versemi predict``, evaluation and the Slicer module.

Pipeline for one scan (:meth:`Predictor.predict`):

1. check the scan (3D, scalar, finite) and optionally crop it to a voxel ROI;
2. preprocess exactly as in training: each prompt uses the plan
   (:class:`~versemi.data.plans.DatasetPlan`, checkpoint key ``plans``) of the dataset(s) it was
   trained from: reorient, resample to that dataset's spacing, normalise as planned, crop to the
   body. Prompts whose datasets share one preprocessing form one group; prompts that need different
   ones (a CT prompt and an MR prompt, a 1 mm and a 1.5 x 1.5 x 10 mm dataset) are run group by
   group - steps 2-4 once per group, each with its dataset's window - and merged into one labelmap
   (see :meth:`Predictor.preprocessing_groups`);
3. sliding-window inference at the plan's spacing (Gaussian blending, batched windows, ONE backbone
   pass per window for all chosen prompts, optional mirroring TTA) -> ``(P, d, h, w)`` probabilities;
4. restore prompt by prompt onto the input grid (linear interpolation of the probability, as nnU-Net
   resamples probabilities rather than labels) while keeping only the labelmap (uint8) and the
   running maximum probability (uint16) at full resolution - the full-resolution probabilities of all
   prompts never exist at once; only the box where a prompt reaches the threshold is restored;
5. label = 1 + index of the most probable prompt where that probability is >= 0.5, else 0; the
   labelmap gets the input's size, spacing, origin and direction copied verbatim.

Hidden prompts (``predict(..., hidden_prompts=...)``) are computed in the same backbone pass as the
first group's prompts and shown to the ``model_space_hook`` only (e.g. the synthetic
"all_foreground" prompt for a review score); they are never restored, labelled or written.

Memory on a large scan (512 x 512 x 600 CT): the input, its float32 copy made by preprocessing, the
model-spacing probabilities of the chosen prompts, and 3 bytes per input voxel for the running maximum
(uint16) and the labelmap (uint8); one prompt is restored at a time, in slabs of 64 slices (a whole
float32 map only when the caller asks for probability maps). With several preprocessing groups only
one group's preprocessed volume and probabilities exist at a time.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from versemi import __version__
from versemi.checkpoint import Checkpoint, CheckpointError
from versemi.data.memory import check_preprocessing_memory
from versemi.devices import DeviceError, resolve_device
from versemi.data.plans import Plans, PlansError
from versemi.data.preprocessing import PreprocessingSpec, preprocess_case, restore_to_input_grid
from versemi.fileio import remove_stale_temp_files, sha256_file
from versemi.images import check_output_geometry, check_output_paths
from versemi.inference.io import (
    AtomicOutputs,
    colour_table_text,
    copy_geometry,
    iter_slabs,
    read_input_image,
    sidecar_paths,
    validate_input_image,
)
from versemi.inference.progress import STAGE_SPANS, ProgressReporter, StageProgress, report_info
from versemi.inference.sliding import SlidingWindowSettings, inference_autocast_dtype, sliding_window_probabilities
from versemi.labels import LabelSpace, UnknownPromptError
from versemi.model import build_model

QUALITIES = ("default", "fast")
FAST_SPACING_FACTOR = 2.0
THRESHOLD = 0.5
PROBABILITY_DTYPES = ("float32", "uint8")
# z-slices handled at a time when merging restored probabilities (bounds temporaries).
_MERGE_SLAB = 32
# Input-grid z-slices restored per resampling call (bounds the memory of one prompt's restore).
_RESTORE_SLAB = 64
# What to do about a scan too large for memory (see versemi.data.memory).
MEMORY_ADVICE = ("use --quality fast (twice the spacing: 8x fewer voxels) or --roi to segment a part of the "
                 "scan, or check the scan's voxel spacing")


class PredictionError(ValueError):
    """A prediction request that cannot be carried out (bad ROI, bad option, ...)."""


def set_threads(threads: int | None) -> None:
    """Limit torch and SimpleITK to ``threads`` CPU threads (None = leave the defaults)."""
    if threads is None:
        return
    if threads < 1:
        raise PredictionError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelEntry:
    """One value of the output labelmap, or (``hidden``) a hidden prompt shown to a model-space hook.

    Attributes:
        value: The label value (1..K); 0 for a hidden prompt, which never becomes a label.
        name: The prompt name.
        color: RGB colour.
        snomed: SNOMED CT code, if any.
        prompt_id: The prompt's index in the model's label space.
        hidden: A hidden prompt (see :meth:`Predictor.predict`): only a ``model_space_hook`` sees it.
    """

    value: int
    name: str
    color: tuple[int, int, int]
    snomed: dict[str, str] | None
    prompt_id: int
    hidden: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "name": self.name, "color": list(self.color),
                "snomed": self.snomed, "prompt_id": self.prompt_id}


@dataclass
class PredictionResult:
    """What :meth:`Predictor.predict` returns.

    Attributes:
        labelmap: uint8 image on exactly the input grid; values 1..K follow ``labels``.
        labels: The label table (value, name, colour, SNOMED CT code, prompt id), in prompt order.
        probabilities: Prompt name -> float32 probability image on the input grid, when requested.
        info: How the prediction was made (device, quality, spacing, overlap, TTA, timings, ...);
            JSON-serialisable, copied into the sidecar.
    """

    labelmap: sitk.Image
    labels: list[LabelEntry]
    probabilities: dict[str, sitk.Image] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class PredictFileResult:
    """What :meth:`Predictor.predict_file` wrote."""

    output: Path
    sidecar: Path
    colour_table: Path
    probabilities: list[Path]
    result: PredictionResult


ProbabilitySink = Callable[[LabelEntry, sitk.Image], None]
"""Receives each prompt's full-resolution probability image as soon as it is restored."""

ModelSpaceHook = Callable[[torch.Tensor, list[LabelEntry], Mapping[str, Any]], Mapping[str, Any] | None]
"""Receives the ``(P, d, h, w)`` probabilities at the model spacing, their label entries (channel
``k`` is ``labels[k]``) and the preprocessing record, before they are restored; may return fields to
add to ``result.info`` (e.g. a per-case uncertainty score computed cheaply at the model spacing).
When the chosen prompts need several preprocessing groups, it is called once, for the first group
(the group of the first chosen prompt, which also holds the synthetic prompt), with that group's
probabilities and label entries. Hidden prompts come last, as entries with ``hidden=True`` and
value 0 (find them by ``prompt_id`` or ``name``); the hook must not modify ``probs``."""


@dataclass(frozen=True)
class PreprocessingGroup:
    """Chosen prompts that share one preprocessing, hence one preprocessing + backbone pass.

    Attributes:
        spec: The checkpoint's preprocessing for these prompts (before the ``fast`` quality's coarser
            spacing is applied, see :meth:`Predictor.effective_spec`).
        datasets: The training datasets whose spec this is, among the chosen prompts' sources.
        positions: Indices into the chosen prompt list (label value = position + 1).
        patch_size_zyx: The sliding window: the planned patch of the group's first dataset.
        hidden_prompt_ids: Hidden prompts run in this group's pass (only in the first group).
    """

    spec: PreprocessingSpec
    datasets: tuple[str, ...]
    positions: tuple[int, ...]
    patch_size_zyx: tuple[int, int, int]
    hidden_prompt_ids: tuple[int, ...] = ()


def parse_roi(text: str) -> tuple[int, int, int, int, int, int]:
    """``"x0,y0,z0,x1,y1,z1"`` (voxel indices, start inclusive, end exclusive) -> six ints."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise PredictionError(f"ROI {text!r} must be six integers x0,y0,z0,x1,y1,z1 (voxel indices)") from None
    if len(values) != 6:
        raise PredictionError(f"ROI {text!r} must be six integers x0,y0,z0,x1,y1,z1 (voxel indices)")
    return values  # type: ignore[return-value]


def _sub_stage(progress: ProgressReporter | None, stage: str, index: int, count: int) -> StageProgress:
    """A stage of the ``index``-th of ``count`` preprocessing groups: group ``i`` owns the ``i``-th
    equal part of the whole job and runs all three stages inside it, so the overall fraction keeps
    moving through every group (instead of waiting at the export of the previous one)."""
    start, end = STAGE_SPANS[stage]
    return StageProgress(progress, stage, ((index + start) / count, (index + end) / count))


# ----------------------------------------------------------------------------------------------
# the predictor
# ----------------------------------------------------------------------------------------------
class Predictor:
    """A loaded model ready to segment scans.

    Args:
        checkpoint: Path of a VerSemi checkpoint, or an already loaded checkpoint dict (payload).
        device: ``"auto"`` (CUDA, else working MPS, else CPU), ``"cuda"``, ``"mps"`` or ``"cpu"``.
        quality: ``"default"`` (the model spacing) or ``"fast"`` (2x the model spacing per axis:
            ~8x fewer voxels and windows, coarser and somewhat less accurate borders).
        overlap: Window overlap fraction; default 0.5 (0.25 in fast mode).
        batch_size: Windows per forward pass; default 4 on CUDA, 1 elsewhere.
        tta: Mirroring test-time augmentation (8x slower).
        threads: CPU threads for torch and SimpleITK (None = library defaults).
        amp: float16 autocast on CUDA.
        model_name: Name for the sidecar; default: the installed model's name, else the file stem.
        dataset: Preprocess every input like this training dataset (its name as stored in the
            checkpoint, e.g. ``"Dataset004_SpleenCT"``) whatever the prompts; default (None): each
            prompt uses the preprocessing of the dataset(s) it was trained from.

    Raises:
        CheckpointError: unreadable / incompatible checkpoint, or one lacking inference keys.
        PredictionError: bad option, unknown ``dataset`` or unavailable device.
    """

    def __init__(
        self,
        checkpoint: str | Path | Mapping[str, Any],
        device: str = "auto",
        *,
        quality: str = "default",
        overlap: float | None = None,
        batch_size: int | None = None,
        tta: bool = False,
        threads: int | None = None,
        amp: bool = True,
        model_name: str | None = None,
        dataset: str | None = None,
    ) -> None:
        if quality not in QUALITIES:
            raise PredictionError(f"unknown quality {quality!r}; expected one of {', '.join(QUALITIES)}")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
            raise PredictionError(f"batch size must be a whole number >= 1 (windows per forward pass), got {batch_size!r}")
        if overlap is not None and not 0.0 <= float(overlap) < 1.0:
            raise PredictionError(f"overlap must be a fraction in [0, 1), got {overlap!r}")
        set_threads(threads)
        self.checkpoint_path: Path | None = None
        if isinstance(checkpoint, (Mapping, Checkpoint)):
            ckpt = Checkpoint.from_payload(checkpoint)
        else:
            self.checkpoint_path = Path(checkpoint)
            # An installed model's recorded SHA-256 verifies files that carry no checksum of their own.
            installed = self._find_installed()
            ckpt = Checkpoint.load(self.checkpoint_path, expected_sha256=installed.sha256 if installed else None)
        self.source = ckpt.source
        self.label_space = ckpt.label_space
        self.plans = ckpt.plans
        self.model = ckpt.build_model()
        self.spec = self.plans.datasets[self.plans.default_dataset].spec
        self.specs_by_dataset = {name: self.plans.spec_for(name) for name in self.plans.sources}
        self.dataset = self._check_dataset(dataset, self.source)

        try:
            self.device, self.device_reason = resolve_device(device)
        except DeviceError as exc:
            raise PredictionError(str(exc)) from None
        self.model.to(self.device)
        self.quality = quality
        self.overlap = overlap if overlap is not None else (0.25 if quality == "fast" else 0.5)
        self.batch_size = batch_size or (4 if self.device.type == "cuda" else 1)
        self.tta = tta
        self.amp = amp
        self.fell_back_to_cpu = False
        self._payload_meta = {"versemi_version": ckpt.versemi_version, "model_version": ckpt.model_version,
                              "model_name": ckpt.model_name}
        self._model_name = model_name
        self._sha256: str | None = None
        self._installed = self._find_installed()

    # --- preprocessing ----------------------------------------------------------------------------
    def _check_dataset(self, dataset: str | None, source: str) -> str | None:
        """The ``dataset`` override, checked against the datasets the checkpoint knows."""
        if dataset is None:
            return None
        known = self.plans.sources
        if dataset not in known:
            raise PredictionError(
                f"{source}: unknown dataset {dataset!r} for the preprocessing; the model was trained on "
                f"{', '.join(known) or 'no named dataset'}"
            )
        return dataset

    def _default_dataset(self) -> str:
        """The first training dataset (its plan serves inputs that name no dataset)."""
        return self.plans.default_dataset

    def dataset_spec(self, dataset: str) -> PreprocessingSpec:
        """The preprocessing a training dataset (or a folder mapped to one) used; the default
        dataset's for a source the plans do not know."""
        return self.specs_by_dataset.get(dataset, self.spec)

    def dataset_patch_zyx(self, dataset: str | None) -> tuple[int, int, int]:
        """The sliding window of a dataset's plan (the default dataset's for ``None`` or unknown)."""
        try:
            return self.plans.plan_for(dataset).patch_size_zyx if dataset else self._default_patch_zyx
        except PlansError:
            return self._default_patch_zyx

    @property
    def _default_patch_zyx(self) -> tuple[int, int, int]:
        return self.plans.datasets[self.plans.default_dataset].patch_size_zyx

    @property
    def patch_size_zyx(self) -> tuple[int, int, int]:
        """The default dataset's window (each group uses its own, see :class:`PreprocessingGroup`)."""
        return self._default_patch_zyx

    def preprocessing_groups(
        self, prompt_ids: Sequence[int], hidden_prompt_ids: Sequence[int] = ()
    ) -> list[PreprocessingGroup]:
        """Split the chosen prompts into groups that share one preprocessing.

        Rules: a real prompt uses the spec of its source dataset(s); a prompt trained from several
        datasets with different specs takes one that another chosen prompt already needs (fewer
        passes), else its first source's. The synthetic prompt joins the group of the first chosen
        real prompt (alone: the first dataset's spec). With the ``dataset`` override, or a checkpoint
        with a single spec, there is one group. Groups are ordered by their first prompt. Hidden
        prompts all join the first group (the first chosen prompt's), whatever their own datasets,
        so that the one ``model_space_hook`` call sees them; they add no group and no dataset.

        Args:
            prompt_ids: The chosen prompt ids (see :meth:`resolve_prompts`).
            hidden_prompt_ids: Hidden prompt ids (see :meth:`predict`), none of them chosen.
        """
        groups = self._visible_groups(prompt_ids)
        if hidden_prompt_ids:
            groups[0] = dataclasses.replace(groups[0], hidden_prompt_ids=tuple(hidden_prompt_ids))
        return groups

    def _visible_groups(self, prompt_ids: Sequence[int]) -> list[PreprocessingGroup]:
        """:meth:`preprocessing_groups` without hidden prompts."""
        prompts = [self.label_space.prompts[pid] for pid in prompt_ids]
        if self.dataset is not None:
            return [PreprocessingGroup(self.dataset_spec(self.dataset), (self.dataset,), tuple(range(len(prompts))),
                                       self.dataset_patch_zyx(self.dataset))]
        # Candidate specs per real prompt, in source order, each with the datasets that use it.
        candidates: list[dict[PreprocessingSpec, list[str]]] = []
        for prompt in prompts:
            options: dict[PreprocessingSpec, list[str]] = {}
            for source in prompt.sources:
                options.setdefault(self.dataset_spec(source.dataset), []).append(source.dataset)
            candidates.append(options)
        chosen: list[PreprocessingSpec | None] = [
            next(iter(options)) if len(options) == 1 else None for options in candidates
        ]
        needed = list(dict.fromkeys(spec for spec in chosen if spec is not None))
        for position, options in enumerate(candidates):
            if len(options) > 1:  # a prompt annotated by datasets preprocessed differently
                spec = next((s for s in needed if s in options), next(iter(options)))
                chosen[position] = spec
                needed.append(spec)
        default_dataset = self._default_dataset()
        first_real = next((spec for spec in chosen if spec is not None), None)
        datasets_of: dict[PreprocessingSpec, list[str]] = {}
        for position, spec in enumerate(chosen):
            if spec is None:  # the synthetic prompt (no sources)
                spec = first_real if first_real is not None else (
                    self.dataset_spec(default_dataset) if default_dataset else self.spec
                )
                chosen[position] = spec
                if first_real is None and default_dataset:
                    datasets_of.setdefault(spec, []).append(default_dataset)
            for name in candidates[position].get(spec, []):
                if name not in datasets_of.setdefault(spec, []):
                    datasets_of[spec].append(name)
        groups: dict[PreprocessingSpec, list[int]] = {}
        for position, spec in enumerate(chosen):
            groups.setdefault(spec, []).append(position)  # type: ignore[arg-type]
        out = []
        for spec, positions in groups.items():
            names = tuple(datasets_of.get(spec, []))
            out.append(PreprocessingGroup(spec, names, tuple(positions), self.dataset_patch_zyx(names[0] if names else None)))
        return out

    # --- model identity -------------------------------------------------------------------------
    def _find_installed(self) -> Any:
        if self.checkpoint_path is None:
            return None
        try:
            from versemi.models.store import installed_for_path

            return installed_for_path(self.checkpoint_path)
        except Exception:  # noqa: BLE001 - the model cache is optional for prediction
            return None

    @property
    def sha256(self) -> str | None:
        """SHA-256 of the checkpoint file (None for an in-memory checkpoint)."""
        if self._sha256 is None and self.checkpoint_path is not None:
            self._sha256 = self._installed.sha256 if self._installed else sha256_file(self.checkpoint_path)
        return self._sha256

    @property
    def model_info(self) -> dict[str, Any]:
        """``{"name", "version", "sha256"}`` for sidecars and manifests."""
        name = self._model_name or (self._installed.name if self._installed else None)
        name = name or self._payload_meta.get("model_name") or (
            self.checkpoint_path.name.split(".")[0] if self.checkpoint_path else "in-memory"
        )
        version = (self._installed.version if self._installed else None) or self._payload_meta.get(
            "model_version"
        ) or self._payload_meta.get("versemi_version")
        return {"name": name, "version": version, "sha256": self.sha256}

    # --- prompts --------------------------------------------------------------------------------
    def resolve_prompts(self, prompts: str | Iterable[str] | Iterable[int]) -> list[int]:
        """Prompt ids from ``"liver,spleen"``, ``"all"``, ``"all_foreground"``, names or ids.

        Raises:
            UnknownPromptError: a name the model's label space lacks (message lists the available ones).
        """
        if not isinstance(prompts, str):
            prompts = list(prompts)
            if prompts and all(isinstance(p, (int, np.integer)) for p in prompts):
                ids = [int(p) for p in prompts]
                bad = [i for i in ids if not 0 <= i < len(self.label_space)]
                if bad:
                    raise UnknownPromptError(
                        f"prompt ids {bad} out of range; the model has {len(self.label_space)} prompts: "
                        f"{', '.join(self.label_space.names)}"
                    )
                return list(dict.fromkeys(ids))
        try:
            return self.label_space.resolve(prompts)  # type: ignore[arg-type]
        except UnknownPromptError as exc:
            raise UnknownPromptError(f"model {self.model_info['name']}: {exc}") from None

    def label_table(self, prompt_ids: Sequence[int]) -> list[LabelEntry]:
        """The label entries of the chosen prompts: value 1..K in prompt order."""
        table = []
        for value, pid in enumerate(prompt_ids, start=1):
            p = self.label_space.prompts[pid]
            table.append(LabelEntry(value, p.name, tuple(p.color), p.snomed.to_dict() if p.snomed else None, pid))
        return table

    def hidden_entries(self, hidden_prompt_ids: Sequence[int]) -> list[LabelEntry]:
        """The entries a model-space hook gets for hidden prompts (``hidden=True``, value 0)."""
        return [dataclasses.replace(entry, value=0, hidden=True) for entry in self.label_table(hidden_prompt_ids)]

    def resolve_hidden_prompts(
        self, hidden_prompts: str | Iterable[str] | Iterable[int] | None, prompt_ids: Sequence[int]
    ) -> list[int]:
        """Hidden prompt ids (see :meth:`predict`), less those already chosen (they stay labels).

        Raises:
            UnknownPromptError: a name the model's label space lacks.
        """
        if hidden_prompts is None:
            return []
        if not isinstance(hidden_prompts, str):
            hidden_prompts = list(hidden_prompts)
            if not hidden_prompts:
                return []
        chosen = set(prompt_ids)
        return [pid for pid in self.resolve_prompts(hidden_prompts) if pid not in chosen]

    def effective_spec(self, quality: str | None = None, spec: PreprocessingSpec | None = None) -> PreprocessingSpec:
        """The preprocessing used for a quality level (fast = coarser spacing).

        Args:
            quality: ``"default"`` or ``"fast"``; default: the predictor's.
            spec: The base spec (e.g. a :class:`PreprocessingGroup`'s); default: the first dataset's.
        """
        quality = quality or self.quality
        spec = spec or self.spec
        if quality == "fast":
            return dataclasses.replace(
                spec, target_spacing=tuple(s * FAST_SPACING_FACTOR for s in spec.target_spacing)
            )
        return spec

    # --- prediction -----------------------------------------------------------------------------
    def predict(
        self,
        image: sitk.Image,
        prompts: str | Iterable[str] | Iterable[int] = "all",
        *,
        roi: Sequence[int] | str | None = None,
        return_probabilities: bool = False,
        probability_sink: ProbabilitySink | None = None,
        progress: ProgressReporter | None = None,
        image_name: str = "input image",
        model_space_hook: ModelSpaceHook | None = None,
        hidden_prompts: str | Iterable[str] | Iterable[int] | None = None,
    ) -> PredictionResult:
        """Segment ``image`` for the given prompts.

        Args:
            image: A scalar 3D SimpleITK image on any grid (oblique, anisotropic, any orientation).
            prompts: See :meth:`resolve_prompts`.
            roi: Only segment this box: ``(x0, y0, z0, x1, y1, z1)`` voxel indices of ``image``
                (start inclusive, end exclusive) or the same as a comma-separated string; outside
                it the labelmap is 0.
            return_probabilities: Keep every prompt's probability image (memory: 4 bytes per voxel
                per prompt) in ``result.probabilities``.
            probability_sink: Called with each prompt's probability image as soon as it exists
                (e.g. to write it to disk), so they need not all be kept.
            progress: Progress reporter (stages preprocess -> inference -> export).
            image_name: How to name the image in error messages (its path).
            model_space_hook: See :data:`ModelSpaceHook`.
            hidden_prompts: Prompts (names, ids or ``"all_foreground"``, as ``prompts``) computed in
                the first group's backbone pass and shown to ``model_space_hook`` only: their
                model-spacing probabilities follow the group's in ``probs``, with entries marked
                ``hidden=True`` (value 0). They never reach the labelmap, ``result.labels``,
                ``result.probabilities``, the probability sink or the files, so the labelmap is
                exactly the one without them; ``result.info["hidden_prompts"]`` names them. A
                hidden prompt that is also chosen in ``prompts`` stays an ordinary label. Use: the
                synthetic prompt for a review score (:mod:`versemi.inference.pseudolabel`).

        Returns:
            The labelmap on exactly the input grid, the label table, and optional probabilities.

        Raises:
            InputImageError: not a scalar 3D image, or non-finite voxels.
            UnknownPromptError: a prompt the model does not know.
            PredictionError: a bad ROI.
        """
        t_start = time.perf_counter()
        prompt_ids = self.resolve_prompts(prompts)
        hidden_ids = self.resolve_hidden_prompts(hidden_prompts, prompt_ids)
        labels = self.label_table(prompt_ids)
        hidden_labels = self.hidden_entries(hidden_ids)
        validate_input_image(image, image_name)
        box = self._check_roi(roi, image, image_name)
        work = image if box is None else image[box[0]:box[3], box[1]:box[4], box[2]:box[5]]

        groups = self.preprocessing_groups(prompt_ids, hidden_ids)
        for group in groups:  # before any allocation: a scan that cannot fit is refused in a second
            spec = self.effective_spec(spec=group.spec)
            check_preprocessing_memory(work, spec.target_spacing, spec.orientation, name=image_name,
                                       prompts=len(group.positions) + len(group.hidden_prompt_ids),
                                       advice=MEMORY_ADVICE)
        shape = tuple(reversed(work.GetSize()))
        label_array = np.zeros(shape, dtype=np.uint8 if len(labels) < 256 else np.uint16)
        maxprob = np.zeros(shape, dtype=np.uint16)
        kept: dict[str, sitk.Image] | None = {} if return_probabilities else None
        hook_fields: dict[str, Any] = {}
        group_info: list[dict[str, Any]] = []
        seconds = {"preprocess": 0.0, "inference": 0.0, "export": 0.0}
        first_spec: PreprocessingSpec | None = None
        # One group at a time: only its preprocessed volume and probabilities exist at once.
        for index, group in enumerate(groups):
            t0 = time.perf_counter()
            pre = _sub_stage(progress, "preprocess", index, len(groups))
            pre(0.0, "preprocessing")
            spec = self.effective_spec(spec=group.spec)
            first_spec = first_spec or spec
            case = preprocess_case(work, spec)
            pre(1.0, f"preprocessed to {list(case.image.shape)} voxels (z, y, x) at {list(spec.target_spacing)} mm"
                     + (f" ({', '.join(group.datasets)})" if len(groups) > 1 else ""))
            t1 = time.perf_counter()
            group_ids = [prompt_ids[i] for i in group.positions]
            group_labels = [labels[i] for i in group.positions]
            group_hidden = [e for e in hidden_labels if e.prompt_id in group.hidden_prompt_ids]
            # Hidden prompts ride in the same pass, as the last channels.
            probs = self._sliding_window(
                case.image, group_ids + [e.prompt_id for e in group_hidden], case.record.get("background_value", 0.0),
                _sub_stage(progress, "inference", index, len(groups)), group.patch_size_zyx,
            )
            del case.image  # the preprocessed volume is no longer needed
            t2 = time.perf_counter()
            if model_space_hook is not None and index == 0:
                hook_fields = dict(model_space_hook(probs, group_labels + group_hidden, case.record) or {})
            # Only the visible channels (the first len(group_labels)) are restored and merged.
            self._restore_and_merge(
                probs, case.record, group_labels, label_array, maxprob, work,
                _sub_stage(progress, "export", index, len(groups)), kept, probability_sink, image, box,
            )
            del probs
            t3 = time.perf_counter()
            seconds["preprocess"] += t1 - t0
            seconds["inference"] += t2 - t1
            seconds["export"] += t3 - t2
            group_info.append({
                "datasets": list(group.datasets),
                "modality": spec.modality,
                "spacing_mm": list(spec.target_spacing),
                "patch_size": list(reversed(group.patch_size_zyx)),
                "normalization": case.record.get("normalization", {}).get("kind"),
                "prompts": [e.name for e in group_labels],
                **({"hidden_prompts": [e.name for e in group_hidden]} if group_hidden else {}),
            })
        if kept is not None:
            kept = {e.name: kept[e.name] for e in labels}  # prompt order, whatever the group order
        labelmap = self._on_input_grid(label_array, image, box)
        StageProgress(progress, "export")(1.0, "labelmap ready")
        t_end = time.perf_counter()
        assert first_spec is not None  # resolve_prompts never returns an empty list

        info = {
            "prompts": [e.name for e in labels],
            **({"hidden_prompts": [e.name for e in hidden_labels]} if hidden_labels else {}),
            "device": str(self.device),
            "fell_back_to_cpu": self.fell_back_to_cpu,
            "quality": self.quality,
            "spacing_mm": list(first_spec.target_spacing),
            "preprocessing": group_info,
            "patch_size": list(reversed(groups[0].patch_size_zyx)),
            "overlap": self.overlap,
            "batch_size": self.batch_size,
            "tta": self.tta,
            "threshold": THRESHOLD,
            "roi": list(box) if box is not None else None,
            "seconds": {
                **{k: round(v, 3) for k, v in seconds.items()},
                "total": round(t_end - t_start, 3),
            },
            **hook_fields,
        }
        return PredictionResult(labelmap=labelmap, labels=labels, probabilities=kept, info=info)

    def _check_roi(
        self, roi: Sequence[int] | str | None, image: sitk.Image, name: str
    ) -> tuple[int, ...] | None:
        if roi is None:
            return None
        box = parse_roi(roi) if isinstance(roi, str) else tuple(int(v) for v in roi)
        if len(box) != 6:
            raise PredictionError(f"ROI must have six values x0,y0,z0,x1,y1,z1, got {list(box)}")
        size = image.GetSize()
        for axis in range(3):
            lo, hi = box[axis], box[axis + 3]
            if not 0 <= lo < hi <= size[axis]:
                raise PredictionError(
                    f"{name}: ROI {list(box)} does not fit the image of size {list(size)} (x, y, z); "
                    "give voxel indices x0,y0,z0,x1,y1,z1 with 0 <= start < end <= size"
                )
            if hi - lo < 2:
                raise PredictionError(f"{name}: ROI {list(box)} is thinner than 2 voxels along axis {'xyz'[axis]}")
        return box

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """See :func:`versemi.inference.sliding.inference_autocast_dtype` (training validation uses it too)."""
        return inference_autocast_dtype(self.device, self.amp)

    def _sliding_window(
        self, volume: np.ndarray, prompt_ids: list[int], pad_value: float, stage: StageProgress,
        patch_size_zyx: tuple[int, int, int],
    ) -> torch.Tensor:
        settings = SlidingWindowSettings(
            patch_size_zyx=patch_size_zyx, overlap=self.overlap, batch_size=self.batch_size, tta=self.tta
        )

        def on_windows(done: int, total: int) -> None:
            stage(done / total, f"window {done}/{total}")

        stage(0.0, self.device_reason)
        try:
            return sliding_window_probabilities(
                self.model, volume, prompt_ids, settings, self.device, self.autocast_dtype, pad_value, on_windows
            )
        except torch.cuda.OutOfMemoryError:
            if self.device.type != "cuda":
                raise
            # Users ask for this: finish on the CPU instead of failing (slower, but it completes).
            report_info(stage.reporter, "CUDA out of memory: falling back to the CPU (slower)")
            self.model.to("cpu")
            torch.cuda.empty_cache()
            self.device = torch.device("cpu")
            self.device_reason = "using the CPU after CUDA ran out of memory"
            self.batch_size = 1
            self.fell_back_to_cpu = True
            settings = dataclasses.replace(settings, batch_size=1)
            return sliding_window_probabilities(
                self.model, volume, prompt_ids, settings, self.device, self.autocast_dtype, pad_value, on_windows
            )

    def _restore_and_merge(
        self,
        probs: torch.Tensor,
        record: Mapping[str, Any],
        labels: list[LabelEntry],
        label: np.ndarray,
        maxprob: np.ndarray,
        work: sitk.Image,
        export: StageProgress,
        kept: dict[str, sitk.Image] | None,
        sink: ProbabilitySink | None,
        full_image: sitk.Image,
        box: tuple[int, ...] | None,
    ) -> None:
        """Restore each prompt's probabilities to the input grid and fold them into the labelmap.

        Only probabilities >= :data:`THRESHOLD` can decide a voxel, so a voxel takes a prompt's label
        value where that prompt reaches the threshold and beats the running maximum: no separate
        arg-max array and no final thresholding pass. ``label`` and ``maxprob`` are updated in place,
        so several preprocessing groups fold into the same arrays. The running maximum is kept as
        uint16 (``floor(p * 65535)``, 2 bytes per voxel; prompts closer than 1.5e-5 tie and the
        lower label value wins, whatever the order of the groups). Unless the caller wants the
        probability maps, each prompt is restored only inside the box where it can reach the
        threshold and in slabs of :data:`_RESTORE_SLAB` slices (see
        :func:`restore_above_threshold`): exact, with a cost proportional to the size of the
        structures and memory bounded by the slab instead of the scan.
        """
        keep = kept is not None
        for k, entry in enumerate(labels):
            export(k / len(labels), f"restoring {entry.name} to the input grid")
            channel = probs[k].numpy()
            if keep or sink is not None:
                restored = restore_to_input_grid(channel, record, is_label=False)
                _merge(label, maxprob, sitk.GetArrayViewFromImage(restored), entry.value)
                full = (
                    copy_geometry(restored, full_image)  # already the whole input grid: no copy
                    if box is None
                    else self._on_input_grid(sitk.GetArrayFromImage(restored), full_image, box)
                )
                if sink is not None:
                    sink(entry, full)
                if kept is not None:
                    kept[entry.name] = full
            else:
                # Nothing is yielded for a prompt that reaches the threshold nowhere.
                for region, values, _image in restore_above_threshold(channel, record, work, THRESHOLD):
                    _merge(label[region], maxprob[region], values, entry.value)

    @staticmethod
    def _on_input_grid(array: np.ndarray, image: sitk.Image, box: tuple[int, ...] | None) -> sitk.Image:
        """An image on exactly ``image``'s grid; an ROI result is pasted into zeros."""
        if box is not None:
            full = np.zeros(tuple(reversed(image.GetSize())), dtype=array.dtype)
            full[box[2]:box[5], box[1]:box[4], box[0]:box[3]] = array
            array = full
        out = sitk.GetImageFromArray(array)
        return copy_geometry(out, image)

    # --- files ----------------------------------------------------------------------------------
    def sidecar(self, result: PredictionResult, input_path: str | Path) -> dict[str, Any]:
        """The sidecar JSON of the output contract (plus a ``prediction`` section with settings)."""
        return {
            "labels": [e.to_dict() for e in result.labels],
            "model": self.model_info,
            "input": str(input_path),
            "versemi_version": __version__,
            "prediction": result.info,
        }

    def predict_file(
        self,
        input_path: str | Path,
        output_path: str | Path,
        prompts: str | Iterable[str] | Iterable[int] = "all",
        *,
        probabilities_dir: str | Path | None = None,
        probabilities_dtype: str = "float32",
        series_uid: str | None = None,
        roi: Sequence[int] | str | None = None,
        progress: ProgressReporter | None = None,
        model_space_hook: ModelSpaceHook | None = None,
        hidden_prompts: str | Iterable[str] | Iterable[int] | None = None,
        allow_gaps: bool = False,
    ) -> PredictFileResult:
        """Segment a file (or DICOM folder) and write the labelmap, sidecar, ``.ctbl`` and probabilities.

        Before any work the outputs are checked (:func:`versemi.images.check_output_paths`): a format
        that holds a 3D labelmap and the input's geometry, no output that is an input (scan or
        checkpoint, also through a link), folders that can be created and written. Temporary files
        that killed runs left in the output folders are removed first. All outputs are written
        under temporary names and renamed together at the end; on any error nothing is left behind.

        Args:
            input_path: Image file or DICOM series folder.
            output_path: Labelmap path; its extension picks the format (``.nii.gz``, ``.nrrd``, ...).
            prompts: See :meth:`resolve_prompts`.
            probabilities_dir: Write ``<dir>/<prompt name>.nii.gz`` per prompt.
            probabilities_dtype: ``"float32"`` (probability 0..1) or ``"uint8"`` (round(255 * p):
                4x smaller, resolution 1/255).
            series_uid: DICOM series to read when the folder holds several.
            roi: See :meth:`predict`.
            progress: Progress reporter.
            model_space_hook: See :meth:`predict`; what it returns lands in the sidecar's
                ``prediction`` section.
            hidden_prompts: See :meth:`predict`: seen by ``model_space_hook`` only, never written
                (not in the labelmap, the sidecar's labels, the colour table or ``probabilities_dir``).
            allow_gaps: Read a DICOM series with missing or unevenly spaced slices anyway.

        Raises:
            versemi.images.OutputPathError: an output that cannot hold the labelmap or is an input.
            OSError: an output that cannot be written (naming it); found before the inference.
            InputImageError, PredictionError, CheckpointError, MemoryLimitError: see :meth:`predict`.
        """
        if probabilities_dtype not in PROBABILITY_DTYPES:
            raise PredictionError(
                f"probabilities dtype must be one of {', '.join(PROBABILITY_DTYPES)}, got {probabilities_dtype!r}"
            )
        output_path = Path(output_path)
        sidecar_path, ctbl_path = sidecar_paths(output_path)
        prompt_ids = self.resolve_prompts(prompts)  # fail on a bad prompt before reading the image
        hidden_ids = self.resolve_hidden_prompts(hidden_prompts, prompt_ids)
        prob_dir = Path(probabilities_dir) if probabilities_dir is not None else None
        prob_targets = [prob_dir / f"{e.name}.nii.gz" for e in self.label_table(prompt_ids)] if prob_dir else []
        image_targets = [output_path, *prob_targets]
        check_output_paths(image_targets, [ctbl_path, sidecar_path], inputs=[Path(input_path), self.checkpoint_path])
        StageProgress(progress, "preprocess")(0.0, f"reading {input_path}")
        image = read_input_image(input_path, series_uid, allow_gaps=allow_gaps)
        check_output_geometry(image_targets, image)
        for folder in dict.fromkeys(t.parent for t in image_targets):
            remove_stale_temp_files(folder)
        written_probs: list[Path] = []
        with AtomicOutputs() as out:
            out.check_writable([*image_targets, ctbl_path, sidecar_path])  # now, not after the inference
            sink = None
            if prob_dir is not None:

                def sink(entry: LabelEntry, prob: sitk.Image) -> None:
                    if probabilities_dtype == "uint8":
                        prob = sitk.Cast(sitk.Round(sitk.Clamp(prob, sitk.sitkFloat32, 0.0, 1.0) * 255.0), sitk.sitkUInt8)
                    written_probs.append(out.write_image(prob, prob_dir / f"{entry.name}.nii.gz"))

            result = self.predict(
                image, prompt_ids, roi=roi, probability_sink=sink, progress=progress, image_name=str(input_path),
                model_space_hook=model_space_hook, hidden_prompts=hidden_ids,
            )
            out.write_image(result.labelmap, output_path)
            out.write_text(colour_table_text([e.to_dict() for e in result.labels]), ctbl_path)
            out.write_json(self.sidecar(result, input_path), sidecar_path)  # last: marks completion
        return PredictFileResult(output_path, sidecar_path, ctbl_path, written_probs, result)


def _merge(label: np.ndarray, maxprob: np.ndarray, values: np.ndarray, value: int) -> None:
    """Where ``values`` >= the threshold and beats ``maxprob`` (uint16, ``floor(p * 65535)``): take it
    and set ``label`` to ``value`` (slab by slab, in place). On a tie the lower label value wins, so
    the result does not depend on the order in which prompts (or preprocessing groups) are merged."""
    for sl in iter_slabs(values.shape[0], _MERGE_SLAB):
        p = values[sl]
        q = (p * np.float32(65535.0)).astype(np.uint16)
        current = maxprob[sl]
        better = (p >= THRESHOLD) & ((q > current) | ((q == current) & (label[sl] > value)))
        np.copyto(maxprob[sl], q, where=better)
        label[sl][better] = value


def restore_above_threshold(
    channel: np.ndarray, record: Mapping[str, Any], work: sitk.Image, threshold: float,
    slab: int | None = None,
) -> Iterator[tuple[tuple[slice, ...], np.ndarray, sitk.Image]]:
    """Restore one probability map onto the input grid, only where it can reach ``threshold``.

    Linear interpolation is a convex combination of the 2x2x2 surrounding voxels, so a restored value
    can only reach the threshold near a model-spacing voxel that does. Restoring the box around
    those voxels, grown by one voxel (whose outer layer is then below the threshold) and zero-padded
    like :func:`~versemi.data.preprocessing.restore_to_input_grid` pads the crop, gives exactly the
    values the full restore gives wherever they reach the threshold; everywhere else both are below
    it. (Uses the record's documented ``resampled`` grid and ``crop_bbox_zyx``.)

    Args:
        channel: ``(d, h, w)`` probabilities on the preprocessed (cropped) grid.
        record: The preprocessing record.
        work: The image that was preprocessed (its grid is the target grid).
        threshold: The decision threshold.
        slab: Input-grid z-slices resampled per step (default :data:`_RESTORE_SLAB`), which bounds
            the memory of the restored values.

    Yields:
        ``(region, values, image)`` per slab of the box: the input-grid region as ``(z, y, x)``
        slices, a float32 array view of the values there and the image that owns them (keep it
        while using the view). Nothing when the threshold is reached nowhere.
    """
    slab = slab or _RESTORE_SLAB
    hits = [np.flatnonzero((channel >= threshold).any(axis=tuple(a for a in range(3) if a != axis)))
            for axis in range(3)]
    if hits[0].size == 0:
        return
    grid = record["resampled"]
    full_zyx = [int(n) for n in reversed(grid["size"])]
    crop = [(int(a), int(b)) for a, b in record["crop_bbox_zyx"]]
    lo = [max(int(h[0]) + c[0] - 1, 0) for h, c in zip(hits, crop)]
    hi = [min(int(h[-1]) + 1 + c[0] + 1, n) for h, c, n in zip(hits, crop, full_zyx)]
    sub = np.zeros([b - a for a, b in zip(lo, hi)], dtype=np.float32)
    # Copy the part of the box that lies inside the crop; the rest stays 0 like the full restore's fill.
    src = tuple(slice(max(a, c0) - c0, min(b, c1) - c0) for a, b, (c0, c1) in zip(lo, hi, crop))
    dst = tuple(slice(max(a, c0) - a, min(b, c1) - a) for a, b, (c0, c1) in zip(lo, hi, crop))
    sub[dst] = channel[src]

    spacing = np.asarray(grid["spacing"], dtype=float)
    direction = np.asarray(grid["direction"], dtype=float).reshape(3, 3)
    lo_xyz = np.asarray(lo[::-1], dtype=float)
    sub_image = sitk.GetImageFromArray(sub)
    sub_image.SetSpacing(spacing.tolist())
    sub_image.SetDirection(direction.ravel().tolist())
    sub_image.SetOrigin((np.asarray(grid["origin"], dtype=float) + direction @ (spacing * lo_xyz)).tolist())

    # The input-grid box covering the sub-image's physical extent (voxel edges, all 8 corners).
    size_xyz = np.asarray(sub_image.GetSize(), dtype=float)
    corners = [
        work.TransformPhysicalPointToContinuousIndex(
            sub_image.TransformContinuousIndexToPhysicalPoint([(-0.5 if c == 0 else n - 0.5) for c, n in zip(bits, size_xyz)])
        )
        for bits in np.ndindex(2, 2, 2)
    ]
    corners_arr = np.asarray(corners)
    work_size = np.asarray(work.GetSize())
    out_lo = np.clip(np.floor(corners_arr.min(axis=0)).astype(int), 0, work_size)
    out_hi = np.clip(np.ceil(corners_arr.max(axis=0)).astype(int) + 1, 0, work_size)
    if np.any(out_hi <= out_lo):
        return
    for z0 in range(int(out_lo[2]), int(out_hi[2]), slab):
        z1 = min(z0 + slab, int(out_hi[2]))
        start = [int(out_lo[0]), int(out_lo[1]), z0]
        restored = sitk.Resample(
            sub_image,
            [int(out_hi[0] - out_lo[0]), int(out_hi[1] - out_lo[1]), z1 - z0],
            sitk.Transform(),
            sitk.sitkLinear,
            work.TransformIndexToPhysicalPoint(start),
            work.GetSpacing(),
            work.GetDirection(),
            0.0,
            sitk.sitkFloat32,
        )
        region = (slice(z0, z1), slice(int(out_lo[1]), int(out_hi[1])), slice(int(out_lo[0]), int(out_hi[0])))
        # A view, not a copy (no fresh array per slab); it keeps no reference to the image, so the
        # image rides along with it.
        yield region, sitk.GetArrayViewFromImage(restored), restored


def default_output_path(input_path: str | Path, output_dir: str | Path | None = None) -> Path:
    """``scan.nrrd`` -> ``scan_seg.nii.gz`` beside it (or in ``output_dir``); a DICOM folder -> ``<folder>_seg.nii.gz``."""
    from versemi.inference.io import split_image_extension

    input_path = Path(input_path)
    root, _ = split_image_extension(input_path.name)
    folder = Path(output_dir) if output_dir else input_path.parent
    return folder / f"{root}_seg.nii.gz"


__all__ = [
    "LabelEntry",
    "PredictFileResult",
    "PredictionError",
    "PredictionResult",
    "Predictor",
    "PreprocessingGroup",
    "default_output_path",
    "parse_roi",
    "resolve_device",
]

