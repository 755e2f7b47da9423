"""``Predictor``: the one inference path of ``versemi predict``, ``pseudolabel``, evaluation and Slicer.

A loaded model (:class:`~versemi.checkpoint.Checkpoint`) on its device that runs the three steps of a
prediction, each in its own module (as nnU-Net splits them): **planning**
(:mod:`versemi.inference.planning`: checks, prompts grouped by their dataset's preprocessing, memory),
per group **preprocessing** and the **sliding window** (:mod:`versemi.inference.sliding`), and
**export** (:mod:`versemi.inference.export`: back onto the input grid, one labelmap, the files written
together). Memory and the CUDA-to-CPU fallback: ``docs/PREDICT.md``.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from versemi.checkpoint import Checkpoint, CheckpointError  # noqa: F401 - CheckpointError: see Raises
from versemi.data.preprocessing import PreprocessingSpec, preprocess_case
from versemi.devices import DeviceError, Precision, PrecisionWarning, autocast_dtype, resolve_device
from versemi.fileio import remove_stale_temp_files, sha256_file
from versemi.images import read_image
from versemi.inference.coarse_to_fine import Localisers, box_slices, installed_localisers
from versemi.inference.export import (THRESHOLD, LabelmapAssembler, check_probability_dtype, probability_image,
                                      sidecar_document)
from versemi.inference.guard import run_guard
from versemi.inference.io import colour_table_text, validate_input_image
from versemi.inference.planning import (QUALITIES, Planner, PreprocessingGroup, check_memory, check_roi, effective_spec,
                                        field_of_view_warnings, sub_stage)
from versemi.inference.postprocess import check_postprocessing
from versemi.inference.progress import ProgressReporter, StageProgress, report_info
from versemi.inference.results import (LabelEntry, ModelSpaceHook, PredictFileResult, PredictionError,
                                       PredictionResult, ProbabilitySink)
from versemi.models import model_record_for_path
from versemi.network.geometry import NetworkGeometry
from versemi.outputs import AtomicOutputs, check_output_geometry, check_output_paths, check_overwrite, sidecar_paths
from versemi.inference import sliding  # called as sliding.sliding_window_probabilities: the one seam tests replace
from versemi.inference.sliding import SlidingWindowSettings


class ModalityWarning(UserWarning):
    """Prompts skipped or run on another modality, or far intensities (:mod:`versemi.inference.guard`)."""


class FieldOfViewWarning(UserWarning):
    """A scan far larger or smaller than what a prompt's dataset was trained on (see
    :func:`versemi.inference.planning.field_of_view_warnings`); the prediction still runs."""


def set_threads(threads: int | None) -> None:
    """Limit torch and SimpleITK to ``threads`` CPU threads (None = leave the defaults)."""
    if threads is None:
        return
    if threads < 1:
        raise PredictionError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


class Predictor:
    """A loaded model ready to segment scans.

    Args:
        checkpoint: Path of a VerSemi checkpoint, a :class:`~versemi.checkpoint.Checkpoint`, or an
            already loaded checkpoint dict (payload).
        device: ``"auto"`` (CUDA, else MPS where it runs Conv3d, else CPU), ``"cuda"``, ``"mps"`` or
            ``"cpu"`` (:func:`versemi.devices.resolve_device`).
        quality: ``"default"`` (the model spacing) or ``"fast"`` (2x the model spacing per axis:
            ~8x fewer voxels and windows, coarser and somewhat less accurate borders).
        overlap: Window overlap fraction; default 0.5 (0.25 in fast mode).
        batch_size: Windows per forward pass; default 4 on CUDA, 1 elsewhere.
        tta: Mirroring test-time augmentation (8x slower).
        threads: CPU threads for torch and SimpleITK (None = library defaults).
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``; the one rule of training and
            prediction is :func:`versemi.devices.autocast_dtype` (a fallback to float32 warns with a
            :class:`~versemi.devices.PrecisionWarning`).
        model_name: Name for the sidecar; default: the installed model's name, else the file stem.
        dataset: Preprocess every input like this training dataset (its name as stored in the
            checkpoint, e.g. ``"Dataset004_SpleenCT"``) whatever the prompts; default (None): each
            prompt uses the preprocessing of the dataset(s) it was trained from.
        postprocess: Apply the checkpoint's per-prompt labelmap post-processing
            (:mod:`versemi.inference.postprocess`).
        localisers: Dataset -> localiser file or :class:`~versemi.inference.localiser.Localiser` for
            coarse-to-fine (:mod:`versemi.inference.coarse_to_fine`); None: the catalogue entry's.
        coarse_to_fine: Locate, then segment inside the located boxes where possible; False: full sweep.
        modality_guard: ``"all"`` runs only the prompts of the scan's modality; warn about named ones
            and far intensities (:mod:`versemi.inference.guard`); False checks nothing.

    Raises:
        CheckpointError: unreadable / incompatible checkpoint, or one lacking inference keys.
        PredictionError: bad option, unknown ``dataset`` or unavailable device.
    """

    def __init__(
        self,
        checkpoint: str | Path | Checkpoint | Mapping[str, Any],
        device: str = "auto",
        *,
        quality: str = "default",
        overlap: float | None = None,
        batch_size: int | None = None,
        tta: bool = False,
        threads: int | None = None,
        precision: str = "auto",
        model_name: str | None = None,
        dataset: str | None = None,
        postprocess: bool = True,
        localisers: Mapping[str, Any] | None = None,
        coarse_to_fine: bool = True,
        modality_guard: bool = True,
    ) -> None:
        if quality not in QUALITIES:
            raise PredictionError(f"unknown quality {quality!r}; expected one of {', '.join(QUALITIES)}")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
            raise PredictionError(f"batch size must be a whole number >= 1 (windows per forward pass), got {batch_size!r}")
        if overlap is not None and not 0.0 <= float(overlap) < 1.0:
            raise PredictionError(f"overlap must be a fraction in [0, 1), got {overlap!r}")
        if precision not in tuple(Precision):
            raise PredictionError(f"unknown precision {precision!r}; expected one of {', '.join(Precision)}")
        set_threads(threads)
        self.checkpoint_path: Path | None = None
        installed = None
        if isinstance(checkpoint, (Mapping, Checkpoint)):
            ckpt = Checkpoint.from_payload(checkpoint)
        else:
            self.checkpoint_path = Path(checkpoint)
            # An installed (or embedded) model's recorded SHA-256 verifies files that carry no checksum
            # of their own.
            installed = self._find_installed()
            ckpt = Checkpoint.load(self.checkpoint_path, expected_sha256=installed.sha256 if installed else None)
        self.source = ckpt.source
        self.label_space = ckpt.label_space
        self.plans = ckpt.plans
        self.model = ckpt.build_model()
        self.planner = Planner(self.label_space, self.plans, dataset, self.source)

        try:
            self.device, self.device_reason = resolve_device(device)
        except DeviceError as exc:
            raise PredictionError(str(exc)) from None
        self.model.to(self.device)
        self.quality = quality
        self.overlap = overlap if overlap is not None else (0.25 if quality == "fast" else 0.5)
        self.batch_size = batch_size or (4 if self.device.type == "cuda" else 1)
        self.tta = tta
        self.precision = precision
        autocast_dtype(precision, self.device, "predicting")  # warns once if it falls back to float32
        self.fell_back_to_cpu = False
        self._payload_meta = {"versemi_version": ckpt.versemi_version, "model_version": ckpt.model_version,
                              "model_name": ckpt.model_name}
        self._model_name = model_name
        self._sha256: str | None = None
        self._installed = installed
        try:
            stored = check_postprocessing(ckpt.postprocessing, self.label_space.names, self.source)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
        self.postprocessing = stored if postprocess else {}
        self.modality_guard = modality_guard
        self.coarse_to_fine = coarse_to_fine
        self.localisers = Localisers(localisers if localisers is not None else installed_localisers(self._installed))

    # --- planning (versemi.inference.planning) ----------------------------------------------------
    @property
    def dataset(self) -> str | None:
        """The ``dataset`` override (None: each prompt's own datasets)."""
        return self.planner.dataset

    @property
    def spec(self) -> PreprocessingSpec:
        """The default (first) training dataset's preprocessing."""
        return self.planner.spec

    @property
    def specs_by_dataset(self) -> dict[str, PreprocessingSpec]:
        """The preprocessing of every dataset (and folder mapped to one) the plans know."""
        return self.planner.specs_by_dataset

    @property
    def patch_size_zyx(self) -> tuple[int, int, int]:
        """The default dataset's window (each group uses its own, see :class:`PreprocessingGroup`)."""
        return self.planner.default_patch_zyx

    def preprocessing_groups(
        self, prompt_ids: Sequence[int], hidden_prompt_ids: Sequence[int] = ()
    ) -> list[PreprocessingGroup]:
        """The chosen prompts grouped by preprocessing (see :meth:`Planner.groups`)."""
        return self.planner.groups(prompt_ids, hidden_prompt_ids)

    def label_table(self, prompt_ids: Sequence[int]) -> list[LabelEntry]:
        """The label entries of the chosen prompts: value 1..K in prompt order."""
        return self.planner.label_table(prompt_ids)

    def effective_spec(self, quality: str | None = None, spec: PreprocessingSpec | None = None) -> PreprocessingSpec:
        """The preprocessing used for a quality level (fast = coarser spacing).

        Args:
            quality: ``"default"`` or ``"fast"``; default: the predictor's.
            spec: The base spec (e.g. a :class:`PreprocessingGroup`'s); default: the first dataset's.
        """
        return effective_spec(spec or self.spec, quality or self.quality)

    # --- model identity -------------------------------------------------------------------------
    def _find_installed(self) -> Any:
        """The model cache's record of the checkpoint file, or the catalogue's for an embedded model
        (:func:`versemi.models.model_record_for_path`); None for any other file."""
        if self.checkpoint_path is None:
            return None
        try:
            return model_record_for_path(self.checkpoint_path)
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

    # --- prompts (versemi.inference.planning) ----------------------------------------------------
    def resolve_prompts(self, prompts: str | Iterable[str] | Iterable[int]) -> list[int]:
        """Prompt ids from ``"liver,spleen"``, ``"all"``, ``"all_foreground"``, names or ids.

        Raises:
            UnknownPromptError: a name the model's label space lacks (message lists the available ones).
        """
        return self.planner.resolve_prompts(prompts, lambda: self.model_info["name"])

    def resolve_hidden_prompts(
        self, hidden_prompts: str | Iterable[str] | Iterable[int] | None, prompt_ids: Sequence[int]
    ) -> list[int]:
        """Hidden prompt ids (see :meth:`predict`), less those already chosen (they stay labels)."""
        return self.planner.resolve_hidden_prompts(hidden_prompts, prompt_ids, lambda: self.model_info["name"])

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
            ImageFileError: not a scalar 3D image, or non-finite voxels.
            UnknownPromptError: a prompt the model does not know.
            PredictionError: a bad ROI.
        """
        t_start = time.perf_counter()
        prompt_ids = self.resolve_prompts(prompts)
        validate_input_image(image, image_name)
        box = check_roi(roi, image, image_name)
        work = image if box is None else image[box[0]:box[3], box[1]:box[4], box[2]:box[5]]
        # Label values are those of the prompts asked for, also when the guard skips some.
        table = {e.prompt_id: e for e in self.label_table(prompt_ids)}
        prompt_ids, guard_notes, guard_info = self._guard(work, prompts, prompt_ids, image_name)
        hidden_ids = self.resolve_hidden_prompts(hidden_prompts, prompt_ids)
        labels = [table[pid] for pid in prompt_ids]
        hidden_labels = self.planner.hidden_entries(hidden_ids)

        groups = self.preprocessing_groups(prompt_ids, hidden_ids)
        # Before any allocation: a scan that cannot fit is refused in a second.
        check_memory(work, groups, self.quality, image_name)
        output = LabelmapAssembler(image, work, box, max(e.value for e in labels), return_probabilities, probability_sink)
        hook_fields: dict[str, Any] = {}
        group_info: list[dict[str, Any]] = []
        seconds = {"preprocess": 0.0, "inference": 0.0, "export": 0.0}
        first_spec: PreprocessingSpec | None = None
        # One group at a time: only its preprocessed volume and probabilities exist at once.
        for index, group in enumerate(groups):
            t0 = time.perf_counter()
            pre = sub_stage(progress, "preprocess", index, len(groups))
            pre(0.0, "preprocessing")
            spec = self.effective_spec(spec=group.spec)
            first_spec = first_spec or spec
            # Coarse-to-fine (not for a model-space hook, which needs the whole scan's probabilities).
            boxes, located = (self.localisers.boxes(work, group, self.plans)
                              if self.coarse_to_fine and model_space_hook is None else (None, {}))
            group_ids = [prompt_ids[i] for i in group.positions]
            group_labels = [labels[i] for i in group.positions]
            group_hidden = [e for e in hidden_labels if e.prompt_id in group.hidden_prompt_ids]
            parts: list[tuple[torch.Tensor, dict[str, Any], tuple[int, ...] | None]] = []
            t2 = t0  # the localisation counts as preprocessing
            for box in boxes or [None]:
                case = preprocess_case(work if box is None else work[box_slices(box)], spec)
                pre(1.0, f"preprocessed to {list(case.image.shape)} voxels (z, y, x) at {list(spec.target_spacing)} mm"
                         + (f" ({', '.join(group.datasets)})" if len(groups) > 1 else "")
                         + (f" inside the located box {list(box)}" if box is not None else ""))
                t1 = time.perf_counter()
                seconds["preprocess"] += t1 - t2
                # Hidden prompts ride in the same pass, as the last channels.
                probs = self._sliding_window(
                    case.image, group_ids + [e.prompt_id for e in group_hidden], case.record.get("background_value", 0.0),
                    sub_stage(progress, "inference", index, len(groups)), group.patch_size_zyx, group.geometry,
                )
                del case.image  # the preprocessed volume is no longer needed
                parts.append((probs, case.record, box))
                t2 = time.perf_counter()
                seconds["inference"] += t2 - t1
            if model_space_hook is not None and index == 0:
                hook_fields = dict(model_space_hook(parts[0][0], group_labels + group_hidden, parts[0][1]) or {})
            # Only the visible channels (the first len(group_labels)) are restored and merged.
            output.add_parts(parts, group_labels, sub_stage(progress, "export", index, len(groups)))
            del parts, probs
            t3 = time.perf_counter()
            seconds["export"] += t3 - t2
            group_info.append({
                "datasets": list(group.datasets),
                "modality": spec.modality,
                "spacing_mm": list(spec.target_spacing),
                "patch_size": list(reversed(group.patch_size_zyx)),
                "normalization": case.record.get("normalization", {}).get("kind"),
                **located,
                "prompts": [e.name for e in group_labels],
                **({"hidden_prompts": [e.name for e in group_hidden]} if group_hidden else {}),
            })
        # After the sweeps: a group segmented inside located boxes needs no field-of-view warning.
        swept = [g for g, info in zip(groups, group_info) if not isinstance(info.get("localised"), list)]
        notes = field_of_view_warnings(work, swept, self.plans, self.label_space, prompt_ids, image_name)
        for note in notes:
            warnings.warn(note, FieldOfViewWarning, stacklevel=2)
        notes = guard_notes + notes
        kept = output.probabilities(labels)  # prompt order, whatever the group order
        postprocessed = {e.name: self.postprocessing[e.name] for e in labels if e.name in self.postprocessing}
        labelmap = output.labelmap(keep_largest=self.planner.postprocessing_groups(labels, postprocessed),
                                   kinds={e.value: postprocessed[e.name] for e in labels if e.name in postprocessed})
        StageProgress(progress, "export")(1.0, "labelmap ready")
        t_end = time.perf_counter()
        assert first_spec is not None  # resolve_prompts never returns an empty list

        info = {
            "prompts": [e.name for e in labels],
            **({"hidden_prompts": [e.name for e in hidden_labels]} if hidden_labels else {}),
            "device": str(self.device),
            "precision": self.precision_name,
            "fell_back_to_cpu": self.fell_back_to_cpu,
            "quality": self.quality,
            "spacing_mm": list(first_spec.target_spacing),
            "preprocessing": group_info,
            "patch_size": list(reversed(groups[0].patch_size_zyx)),
            "overlap": self.overlap,
            "batch_size": self.batch_size,
            "tta": self.tta,
            "threshold": THRESHOLD,
            "postprocessing": postprocessed,
            "roi": list(box) if box is not None else None,
            "modality": guard_info,
            **({"warnings": notes} if notes else {}),
            "seconds": {
                **{k: round(v, 3) for k, v in seconds.items()},
                "total": round(t_end - t_start, 3),
            },
            **hook_fields,
        }
        return PredictionResult(labelmap=labelmap, labels=labels, probabilities=kept, info=info)

    def _guard(self, work: sitk.Image, prompts: Any, prompt_ids: list[int], image_name: str) -> tuple[list[int], list[str], dict[str, Any]]:
        """:func:`~versemi.inference.guard.run_guard`, its notes warned as :class:`ModalityWarning`."""
        kept, notes, info = run_guard(work, self.plans, self.label_space, prompts, prompt_ids, image_name,
                                      self.modality_guard, self.model_info["name"])
        for note in notes:
            warnings.warn(note, ModalityWarning, stacklevel=3)
        return kept, notes, info

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """:func:`versemi.devices.autocast_dtype` on the current device (training validation uses it too)."""
        return autocast_dtype(self.precision, self.device, warn=False)

    @property
    def precision_name(self) -> str:
        """The arithmetic of the forward passes: ``"float32"``, ``"float16"`` or ``"bfloat16"``."""
        dtype = self.autocast_dtype
        return "float32" if dtype is None else str(dtype).replace("torch.", "")

    def _sliding_window(
        self, volume: np.ndarray, prompt_ids: list[int], pad_value: float, stage: StageProgress,
        patch_size_zyx: tuple[int, int, int], geometry: NetworkGeometry | None = None,
    ) -> torch.Tensor:
        settings = SlidingWindowSettings(
            patch_size_zyx=patch_size_zyx, overlap=self.overlap, batch_size=self.batch_size, tta=self.tta,
            geometry=geometry,
        )

        def on_windows(done: int, total: int) -> None:
            stage(done / total, f"window {done}/{total}")

        stage(0.0, self.device_reason)
        try:
            return sliding.sliding_window_probabilities(
                self.model, volume, prompt_ids, settings, self.device, self.autocast_dtype, pad_value, on_windows
            )
        except torch.cuda.OutOfMemoryError:
            if self.device.type != "cuda":
                raise
            # Users ask for this: finish on the CPU instead of failing (slower, but it completes).
            report_info(stage.reporter, "CUDA out of memory: falling back to the CPU (slower)")
            self._fall_back_to_cpu()
            settings = dataclasses.replace(settings, batch_size=1)
            return sliding.sliding_window_probabilities(
                self.model, volume, prompt_ids, settings, self.device, self.autocast_dtype, pad_value, on_windows
            )

    def _fall_back_to_cpu(self) -> None:
        """Move to the CPU for good (see the module docstring): model, device, batch size, the record."""
        self.model.to("cpu")
        torch.cuda.empty_cache()
        self.device = torch.device("cpu")
        self.device_reason = "using the CPU after CUDA ran out of memory"
        self.batch_size = 1
        self.fell_back_to_cpu = True

    # --- files ----------------------------------------------------------------------------------
    def sidecar(self, result: PredictionResult, input_path: str | Path) -> dict[str, Any]:
        """The sidecar JSON of the output contract (:func:`versemi.inference.export.sidecar_document`)."""
        return sidecar_document(result, self.model_info, input_path)

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
        overwrite: bool = False,
    ) -> PredictFileResult:
        """Segment a file (or DICOM folder) and write the labelmap, sidecar, ``.ctbl`` and probabilities.

        Before any work the outputs are checked (:func:`versemi.outputs.check_output_paths`): a format
        that holds a 3D labelmap and the input's geometry, no output that is an input (scan or
        checkpoint, also through a link; no file inside an input folder), no two outputs that are the
        same file, no existing file versemi did not write unless ``overwrite``
        (:func:`versemi.outputs.check_overwrite`), folders that can be created and written. Temporary files
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
            overwrite: Replace existing outputs that versemi did not write (e.g. a JSON with the
                sidecar's name).

        Raises:
            versemi.outputs.OutputPathError: an output that cannot hold the labelmap, is an input, or
                would replace a file versemi did not write.
            OSError: an output that cannot be written (naming it); found before the inference.
            ImageFileError: an input that cannot be read (:func:`versemi.images.read_image`) or used.
            PredictionError, CheckpointError, MemoryLimitError: see :meth:`predict`.
        """
        check_probability_dtype(probabilities_dtype)
        output_path = Path(output_path)
        sidecar_path, ctbl_path = sidecar_paths(output_path)
        prompt_ids = self.resolve_prompts(prompts)  # fail on a bad prompt before reading the image
        hidden_ids = self.resolve_hidden_prompts(hidden_prompts, prompt_ids)
        prob_dir = Path(probabilities_dir) if probabilities_dir is not None else None
        prob_targets = [prob_dir / f"{e.name}.nii.gz" for e in self.label_table(prompt_ids)] if prob_dir else []
        image_targets = [output_path, *prob_targets]
        check_output_paths(image_targets, [ctbl_path, sidecar_path], inputs=[Path(input_path), self.checkpoint_path])
        check_overwrite([*image_targets, ctbl_path, sidecar_path], sidecar_path, ctbl_path, overwrite)
        StageProgress(progress, "preprocess")(0.0, f"reading {input_path}")
        image = read_image(input_path, series_uid, allow_gaps=allow_gaps)
        validate_input_image(image, str(input_path), check_values=False)  # read_image checked the values
        check_output_geometry(image_targets, image, source=input_path)
        for folder in dict.fromkeys(t.parent for t in image_targets):
            remove_stale_temp_files(folder)
        written_probs: list[Path] = []
        with AtomicOutputs() as out:
            out.check_writable([*image_targets, ctbl_path, sidecar_path])  # now, not after the inference
            sink = None
            if prob_dir is not None:

                def sink(entry: LabelEntry, prob: sitk.Image) -> None:
                    image = probability_image(prob, probabilities_dtype)
                    written_probs.append(out.write_image(image, prob_dir / f"{entry.name}.nii.gz"))

            result = self.predict(
                image, prompts, roi=roi, probability_sink=sink, progress=progress, image_name=str(input_path),
                model_space_hook=model_space_hook, hidden_prompts=hidden_ids,
            )
            # Published in this order: the colour table first (it marks the files as versemi's, see
            # check_overwrite), the sidecar last (it marks completion).
            out.write_text(colour_table_text([e.to_dict() for e in result.labels]), ctbl_path)
            out.write_image(result.labelmap, output_path)
            out.write_json(sidecar_document(result, self.model_info, input_path), sidecar_path)  # last: marks completion
        return PredictFileResult(output_path, sidecar_path, ctbl_path, written_probs, result)


__all__ = ["FieldOfViewWarning", "ModalityWarning", "PrecisionWarning", "Predictor", "set_threads"]
