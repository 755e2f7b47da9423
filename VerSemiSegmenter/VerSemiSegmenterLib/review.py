"""The review panel's logic: walk a review folder case by case, edit in Slicer, save or reject.

:class:`ReviewController` is what the module's *Review* section calls; it holds no Qt or Slicer state.
Its two dependencies are injected: ``session``, a :class:`versemi.review.ReviewSession` (or anything
with the same methods), which owns the manifest and the files; and ``scene``, a :class:`ReviewScene`
that loads a case, exports the edited segmentation and removes the case's nodes
(:class:`MrmlReviewScene` in Slicer and ``slicer-core``, a fake in tests). ``slicer``, ``vtk`` and
``versemi`` are imported inside functions, so the library imports before ``versemi`` is installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

from VerSemiSegmenterLib.segmentation_import import (
    PROMPT_TAG,
    LabelEntry,
    LabelTableError,
    import_labelmap,
    parse_label_table,
    read_label_table,
)
from .i18n import _

# Colours for manifest label tables that carry none (the sidecar of ``versemi predict`` always has them).
DEFAULT_COLORS = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 190),
)


# What ``versemi.review`` needs besides what Slicer bundles (numpy, SimpleITK); never torch.
REVIEW_PACKAGES = ("versemi", "filelock")


class ReviewPanelError(ValueError):
    """A review action the panel cannot do; the message says what to do instead."""


@dataclass(frozen=True)
class CaseRow:
    """One row of the panel's case table."""

    case_id: str
    status: str
    score: float | None
    updated_by: str | None

    @property
    def score_text(self) -> str:
        return "" if self.score is None else f"{self.score:.3f}"


@dataclass
class LoadedCase:
    """The nodes of the case being edited."""

    case_id: str
    volume_node: Any
    segmentation_node: Any
    entries: list[LabelEntry]
    segment_ids: list[str]
    edited_label: Path | None  # the file that was loaded for editing (pseudo-label or refined label)
    revision: int = 0  # the case's revision when opened: saves and decisions are compare-and-swap on it
    case: Any = None  # the ``ReviewCase`` as opened (status, who refined it)


class ReviewScene(Protocol):
    """Where cases are shown and edited (the MRML scene in Slicer)."""

    def load(self, case_id: str, image: Path, label: Path | None, entries: list[LabelEntry]) -> LoadedCase:
        """Load the image as a volume and ``label`` as an editable segmentation (``None``: empty segments)."""

    def export(self, loaded: LoadedCase) -> Any:
        """The segmentation as a labelmap on the image's grid (a ``SimpleITK.Image`` or a label file)."""

    def remove(self, loaded: LoadedCase) -> None:
        """Remove the case's nodes."""


def label_entries(sidecar: Path | None, manifest_table: Sequence[Mapping[str, Any]] | None, where: str) -> list[LabelEntry]:
    """The label table of a case: its pseudo-label's sidecar, else the manifest's table.

    Manifest entries without a ``color`` get one from :data:`DEFAULT_COLORS`.

    Raises:
        LabelTableError: no table anywhere, or a malformed one (the message names the file).
    """
    if sidecar is not None:
        return read_label_table(sidecar)
    if not manifest_table:
        raise LabelTableError(_("{where}: no label table (neither a pseudo-label sidecar nor manifest 'labels')").format(where=where))
    table = []
    for i, entry in enumerate(manifest_table):
        entry = dict(entry)
        if not entry.get("color"):
            entry["color"] = list(DEFAULT_COLORS[i % len(DEFAULT_COLORS)])
        table.append(entry)
    return parse_label_table({"labels": table}, where)


class ReviewController:
    """Next case -> edit -> save refined / reject, for one review folder.

    Args:
        session: the folder's :class:`versemi.review.ReviewSession`, or anything with its ``root``,
            ``cases``, ``case``, ``counts``, ``next_case``, ``save_refined``, ``reject``, ``restore``,
            ``undo``, ``reopen`` and ``label_table``.
        scene: loads, exports and removes a case's nodes.
    """

    def __init__(self, session: Any, scene: ReviewScene) -> None:
        self.session = session
        self.scene = scene
        self.current: LoadedCase | None = None
        # Cases passed over with "Next case" since the folder was opened (they stay pending in the manifest).
        self.skipped: list[str] = []

    # --- queries ---------------------------------------------------------------------------------
    @property
    def review_dir(self) -> Path:
        return Path(self.session.root)

    def rows(self) -> list[CaseRow]:
        """Every case, highest score first (the manifest's order)."""
        return [CaseRow(c.case_id, c.status, c.score, c.updated_by) for c in self.session.cases()]

    def status_text(self) -> str:
        """One line: the counts per status and the case being edited."""
        counts = self.session.counts()
        shown = ("pending", "refined", "rejected") + (("failed",) if counts.get("failed") else ())
        text = ", ".join(f"{counts.get(s, 0)} {s}" for s in shown)
        if self.current is not None:
            text = _("Editing {case_id}. ").format(case_id=self.current.case_id) + text
        elif counts.get("pending", 0) == 0:
            text += _(". Nothing left to review.")
        return text

    # --- actions ---------------------------------------------------------------------------------
    def next_case(self) -> LoadedCase | None:
        """Load the highest-scored pending case; the open one, if any, is skipped (stays pending).

        When every pending case was skipped, the skipped ones come round again.

        Returns:
            The loaded case, or ``None`` when no case is pending (the open one is then closed).
        """
        current = self.current.case_id if self.current is not None else None
        if current is not None and current not in self.skipped:
            self.skipped.append(current)
        case = self.session.next_case(skip=self.skipped)
        if case is None and self.skipped:
            # Every pending case was skipped: another round over them, the one just open last.
            self.skipped = [current] if current is not None else []
            case = self.session.next_case(skip=self.skipped)
            if case is None and current is not None and self.session.case(current).status == "pending":
                self.skipped = []
                return self.current  # the only pending case is the open one: keep it (and its edits)
        self.close_case()
        if case is None:
            return None
        return self._load(case)

    def open_case(self, case_id: str) -> LoadedCase:
        """Load a given case (any status: a refined case opens its latest refined label)."""
        case = self.session.case(case_id)
        self.close_case()
        return self._load(case)

    def save_refined(self, move_on: bool = True) -> Any:
        """Store the edited segmentation as the open case's refined label, then load the next case.

        Args:
            move_on: load the next pending case afterwards; ``False`` only closes the saved case
                (the panel then calls :meth:`next_case`, so a case that fails to load is not
                reported as a failed save).

        Returns:
            The case as now recorded (``ReviewCase``, status ``refined``).

        Raises:
            ReviewPanelError: no case is open, or a segment is not in the label table.
            versemi.review.ReviewConflict: someone changed the case since it was opened; the label
                was kept as a revision that is not current (see :meth:`keep_mine`,
                :meth:`load_newer`) and the case stays open.
            versemi.review.ReviewError: the library refused the label (grid, values); nothing was
                saved and the case stays open.
        """
        loaded = self._require_open("save")
        labelmap = self.scene.export(loaded)
        saved = self.session.save_refined(loaded.case_id, labelmap, expected_revision=loaded.revision)
        self._forget(loaded.case_id)
        self.close_case()
        if move_on:
            self.next_case()
        return saved

    def reject(self, reason: str | None = None, move_on: bool = True) -> Any:
        """Mark the open case rejected, then load the next case.

        Args:
            reason: recorded in the case's history.
            move_on: as for :meth:`save_refined`.

        Returns:
            The case as now recorded (``ReviewCase``, status ``rejected``).
        """
        loaded = self._require_open("reject")
        rejected = self.session.reject(loaded.case_id, reason=reason or None, expected_revision=loaded.revision)
        self._forget(loaded.case_id)
        self.close_case()
        if move_on:
            self.next_case()
        return rejected

    def keep_mine(self, conflict: Any) -> Any:
        """After a save conflict: make the kept label the current one, on top of the newer save.

        Returns:
            The case as now recorded (status ``refined``).

        Raises:
            versemi.review.ReviewConflict: the case changed again meanwhile.
        """
        restored = self.session.restore(conflict.case.case_id, conflict.kept.number,
                                        expected_revision=conflict.case.revision)
        if self.current is not None and self.current.case_id == restored.case_id:
            self._forget(restored.case_id)
            self.close_case()
        return restored

    def load_newer(self) -> LoadedCase:
        """After a save conflict: open the case again with its newer label (the open edits were
        kept on disk as a revision)."""
        loaded = self._require_open("reload")
        return self.open_case(loaded.case_id)

    def undo(self, case_id: str, revision: int) -> Any:
        """Undo the last decision on a case, if it is still the case's last change (``revision``)."""
        return self.session.undo(case_id, expected_revision=revision)

    def reopen(self, case_id: str) -> Any:
        """Set a rejected or refined case back to pending (a refined label stays the label to edit)."""
        return self.session.reopen(case_id)

    def close_case(self) -> None:
        """Remove the open case's nodes from the scene (nothing is saved)."""
        if self.current is not None:
            loaded, self.current = self.current, None
            self.scene.remove(loaded)

    def forget_open_case(self) -> None:
        """Drop the open case without touching the scene (the scene is being closed with its nodes)."""
        self.current = None

    # --- helpers ---------------------------------------------------------------------------------
    def _load(self, case: Any) -> LoadedCase:
        try:
            entries = label_entries(case.sidecar, self.session.label_table(), f"{self.review_dir} case {case.case_id}")
            self.current = self.scene.load(case.case_id, Path(case.image), case.label_to_edit, entries)
            self.current.revision = int(getattr(case, "revision", 0))
            self.current.case = case
        except Exception:
            # A case that cannot be loaded must not block the queue: the next "Next case" passes it.
            if case.case_id not in self.skipped:
                self.skipped.append(case.case_id)
            raise
        return self.current

    def _require_open(self, action: str) -> LoadedCase:
        if self.current is None:
            raise ReviewPanelError(_("no case is open to {action}: click 'Next case' first").format(action=action))
        return self.current

    def _forget(self, case_id: str) -> None:
        self.skipped = [c for c in self.skipped if c != case_id]


def missing_review_packages() -> list[str]:
    """Import names the review needs in Slicer's Python that are not installed (``versemi``, ``filelock``)."""
    import importlib
    import importlib.util

    importlib.invalidate_caches()  # packages pip just installed into this process's site-packages
    return [name for name in REVIEW_PACKAGES if importlib.util.find_spec(name) is None]


def open_review(review_dir: str | os.PathLike[str], scene: ReviewScene, user: str | None = None) -> ReviewController:
    """A controller on a review folder with a real :class:`versemi.review.ReviewSession`.

    Raises:
        versemi.review.ReviewError: no manifest in the folder, or one that cannot be read.
    """
    from versemi.review import ReviewSession

    return ReviewController(ReviewSession(review_dir, user=user), scene)


# --- MRML ------------------------------------------------------------------------------------------


class MrmlReviewScene:
    """:class:`ReviewScene` on a ``vtkMRMLScene`` (Slicer's, or a ``slicer-core`` one in tests).

    Args:
        scene: the MRML scene.
        name_prefix: prefix of the node names (``"<prefix> <case>"``).
    """

    def __init__(self, scene: Any, name_prefix: str = "Review") -> None:
        self.scene = scene
        self.name_prefix = name_prefix

    def load(self, case_id: str, image: Path, label: Path | None, entries: list[LabelEntry]) -> LoadedCase:
        volume = load_volume_node(image, self.scene, f"{self.name_prefix} {case_id}")
        try:
            result = import_labelmap(label, entries, volume, name=f"{self.name_prefix} {case_id} label")
        except BaseException:
            remove_nodes(self.scene, [volume])
            raise
        return LoadedCase(case_id, volume, result.segmentation_node, entries, result.segment_ids, label)

    def export(self, loaded: LoadedCase) -> Any:
        return export_segmentation(loaded.segmentation_node, loaded.volume_node, loaded.entries)

    def remove(self, loaded: LoadedCase) -> None:
        remove_nodes(self.scene, [loaded.segmentation_node, loaded.volume_node])


def load_volume_node(path: str | os.PathLike[str], scene: Any, name: str) -> Any:
    """Read an image file into a new ``vtkMRMLScalarVolumeNode`` with display nodes.

    Raises:
        ReviewPanelError: the file cannot be read (the message names it).
    """
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    try:
        storage.SetFileName(os.fspath(path))
        storage.SetSingleFile(True)  # only this file, not a series globbed from its siblings
        if not storage.ReadData(node) or node.GetImageData() is None:
            raise ReviewPanelError(_("{path}: cannot read the case image").format(path=path))
        node.CreateDefaultDisplayNodes()
    except BaseException:
        remove_nodes(scene, [node])
        raise
    finally:
        scene.RemoveNode(storage)
    return node


def export_segmentation(segmentation_node: Any, reference_volume: Any, entries: list[LabelEntry]) -> Any:
    """The segments as one labelmap on ``reference_volume``'s grid, with the label table's values.

    Segments are matched to labels by name (the names the import gave them); where segments
    overlap, the later label in the table wins. A deleted segment simply gives no voxels.

    Returns:
        A ``SimpleITK.Image`` (LPS geometry of the reference volume's voxel grid).

    Raises:
        ReviewPanelError: a segment whose name is not in the label table (the library could not
            store it), or Slicer could not export.
    """
    import numpy as np
    import SimpleITK as sitk
    import slicer
    import vtk

    segmentation = segmentation_node.GetSegmentation()
    value_by_name = {e.name: e.value for e in entries}
    value_by_name.update({e.segment_name: e.value for e in entries})
    by_value: dict[int, str] = {}
    unknown = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segment_id)
        prompt = vtk.reference("")
        segment.GetTag(PROMPT_TAG, prompt)
        # The prompt tag the import set; else the (possibly renamed or new) segment's name.
        name = str(prompt) if str(prompt) in value_by_name else segment.GetName()
        if name not in value_by_name:
            unknown.append(segment.GetName())
        elif value_by_name[name] in by_value:
            raise ReviewPanelError(_("two segments are named {name!r}: merge them or rename one").format(name=segment.GetName()))
        else:
            by_value[value_by_name[name]] = segment_id
    if unknown:
        raise ReviewPanelError(
            _("segments {unknown} are not in the review's label table {value}: rename them to a label name or delete "
              "them").format(unknown=unknown, value=sorted(e.segment_name for e in entries))
        )
    ordered = [(value, by_value[value]) for value in sorted(by_value)]
    scene = segmentation_node.GetScene()
    # The export adds a colour table for the labelmap it fills: remove it with the labelmap.
    color_tables_before = _node_ids(scene, "vtkMRMLColorTableNode")
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "VerSemi review export")
    try:
        ids = vtk.vtkStringArray()
        for _value, segment_id in ordered:
            ids.InsertNextValue(segment_id)
        array = None
        if ordered:
            logic = slicer.vtkSlicerSegmentationsModuleLogic
            if not logic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, labelmap_node, reference_volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
            ):
                raise ReviewPanelError(_("Slicer could not export '{name}' to a labelmap").format(name=segmentation_node.GetName()))
            # The export numbers segments 1..N in the order given: map them to the table's values.
            exported = slicer.util.arrayFromVolume(labelmap_node)
            lookup = np.zeros(len(ordered) + 1, np.uint16)
            lookup[1:] = [value for value, _ in ordered]
            array = lookup[exported]
        dims = reference_volume.GetImageData().GetDimensions()
        if array is None:
            array = np.zeros(dims[::-1], np.uint16)
        if tuple(array.shape) != tuple(dims[::-1]):
            raise ReviewPanelError(
                _("exported labelmap has shape {shape}, the image {dims}").format(shape=array.shape, dims=tuple(dims[::-1]))
            )
        image = sitk.GetImageFromArray(array.astype(np.uint8 if array.max(initial=0) <= 255 else np.uint16))
        _set_lps_geometry(image, reference_volume)
        return image
    finally:
        new_color_tables = [
            scene.GetNodeByID(i) for i in _node_ids(scene, "vtkMRMLColorTableNode") - color_tables_before
        ]
        remove_nodes(scene, [labelmap_node, *new_color_tables])


def _node_ids(scene: Any, class_name: str) -> set[str]:
    return {scene.GetNthNodeByClass(i, class_name).GetID() for i in range(scene.GetNumberOfNodesByClass(class_name))}


def _set_lps_geometry(image: Any, volume_node: Any) -> None:
    """Copy a volume node's IJK-to-RAS geometry to a SimpleITK image (LPS)."""
    import vtk

    directions = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASDirectionMatrix(directions)
    ras_to_lps = (-1.0, -1.0, 1.0)
    direction = [ras_to_lps[r] * directions.GetElement(r, c) for r in range(3) for c in range(3)]
    origin = [ras_to_lps[i] * volume_node.GetOrigin()[i] for i in range(3)]
    image.SetSpacing(tuple(volume_node.GetSpacing()))
    image.SetOrigin(tuple(origin))
    image.SetDirection(tuple(direction))


def remove_nodes(scene: Any, nodes: Iterable[Any]) -> None:
    """Remove nodes with their display and storage nodes (nodes already gone are skipped)."""
    for node in nodes:
        if node is None or node.GetScene() is None:
            continue
        extra = []
        for getter, count in (("GetNthDisplayNode", "GetNumberOfDisplayNodes"),
                              ("GetNthStorageNode", "GetNumberOfStorageNodes")):
            if hasattr(node, count):
                extra += [getattr(node, getter)(i) for i in range(getattr(node, count)())]
        scene.RemoveNode(node)
        for other in extra:
            if other is not None and other.GetScene() is not None:
                scene.RemoveNode(other)


__all__ = [
    "CaseRow",
    "LoadedCase",
    "MrmlReviewScene",
    "ReviewController",
    "ReviewPanelError",
    "ReviewScene",
    "export_segmentation",
    "label_entries",
    "load_volume_node",
    "missing_review_packages",
    "open_review",
    "remove_nodes",
]
