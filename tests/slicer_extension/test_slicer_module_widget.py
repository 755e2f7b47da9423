"""The module's widget (VerSemiSegmenter.py) driven like a user would, with fake Qt widgets.

The widget classes come from the module file itself; Qt widgets, ``slicer.app`` and the message
boxes are the small fakes of ``fake_slicer_app`` (a fake per widget named in the real .ui file).
Everything else is real: the MRML scene (slicer-core), ``versemi models list`` and ``versemi
predict`` subprocesses, the review folder.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from fake_slicer_app import FakeFileDialog, FakeQObject, load_module, load_ui, child_widget_variables

pytest.importorskip("versemi.review")


class MessageBoxes:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.questions: list[str] = []
        self.status: list[str] = []
        self.widgets: list = []


@pytest.fixture
def app(monkeypatch, tmp_path: Path):
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' module found is not slicer-core")
    # The model cache and catalogue of this test only (nothing from the user's cache).
    monkeypatch.setenv("VERSEMI_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(tmp_path / "no-catalogue.json"))
    module = load_module(monkeypatch, str(tmp_path))
    boxes = MessageBoxes()
    util = slicer.util
    monkeypatch.setattr(util, "loadUI", load_ui, raising=False)
    monkeypatch.setattr(util, "childWidgetVariables", child_widget_variables, raising=False)
    monkeypatch.setattr(util, "errorDisplay", lambda text, **kw: boxes.errors.append(text), raising=False)
    monkeypatch.setattr(util, "confirmOkCancelDisplay", lambda text, *a, **kw: boxes.questions.append(text) or True,
                        raising=False)
    monkeypatch.setattr(util, "confirmYesNoDisplay", lambda text, *a, **kw: boxes.questions.append(text) or True,
                        raising=False)
    monkeypatch.setattr(util, "showStatusMessage", lambda text, *a: boxes.status.append(text), raising=False)
    monkeypatch.setattr(util, "setSliceViewerLayers", lambda *a, **kw: None, raising=False)
    monkeypatch.setattr(util, "mainWindow", lambda: None, raising=False)
    yield module, boxes
    for widget in boxes.widgets:  # as Slicer does when the module is unloaded: observers removed
        widget.cleanup()


def _widget(module, boxes):
    widget = module.VerSemiSegmenterWidget()
    widget.setup()
    boxes.widgets.append(widget)
    return widget


def _poll_until_idle(widget, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        widget.onPoll()
        if not widget.pollTimer.active:
            return
        assert time.monotonic() < deadline, "the widget's background work did not finish"
        time.sleep(0.05)


def test_widget_lists_models_browses_a_checkpoint_and_segments(app, tmp_path: Path) -> None:
    import slicer

    from VerSemiSegmenterLib import selftest

    module, boxes = app
    widget = _widget(module, boxes)
    ui = widget.ui
    widget.enter()
    _poll_until_idle(widget)
    assert boxes.errors == []
    assert [item[0] for item in ui.modelComboBox.items] == ["Browse local checkpoint..."]
    assert ui.deviceInfoLabel.text.startswith("will use: CPU")
    assert not ui.installButton.visible and not ui.applyButton.enabled

    checkpoint = selftest.make_tiny_checkpoint(tmp_path / "tiny model.pt", sys.executable)
    FakeFileDialog.answer = str(checkpoint)
    ui.modelComboBox.emit("activated(int)", 0)
    _poll_until_idle(widget)
    assert boxes.errors == []
    assert ui.modelComboBox.currentText == "tiny model.pt (local file)"
    prompts = [(item.data(256), item.checkState()) for item in ui.promptListWidget.items]
    assert prompts == [("liver", 2), ("organ_x", 2), ("spleen", 2), ("all_foreground", 0)]
    assert ui.promptCountLabel.text == "3 of 4 (all: those that fit the scan)"

    volume = selftest.add_sample_volume(slicer.mrmlScene)
    widget._parameterNode.inputVolume = volume
    widget._checkCanApply()
    assert ui.applyButton.enabled
    ui.applyButton.emit("clicked(bool)", False)
    assert ui.applyButton.text == "Cancel"
    _poll_until_idle(widget)
    assert boxes.errors == [], boxes.errors
    assert ui.statusLabel.text.startswith("Done in") and "3 segments" in ui.statusLabel.text
    assert ui.applyButton.text == "Apply" and ui.applyButton.enabled
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1


def test_widget_after_a_failing_models_list(app, monkeypatch) -> None:
    module, boxes = app
    from VerSemiSegmenterLib import catalogue

    calls = []

    def failing(python, timeout=120.0):
        calls.append(python)
        raise catalogue.ModelInfoError("'versemi models list' failed: catalogue.json: line 1: invalid JSON")

    monkeypatch.setattr(catalogue, "list_catalogue_models", failing)
    widget = _widget(module, boxes)
    widget.enter()
    _poll_until_idle(widget)
    assert len(boxes.errors) == 1 and "invalid JSON" in boxes.errors[0]
    assert [item[0] for item in widget.ui.modelComboBox.items] == ["Browse local checkpoint..."]
    assert "Could not list the VerSemi models" in widget.ui.modelInfoLabel.text
    assert not widget.ui.applyButton.enabled
    widget.exit()
    widget.enter()  # the next visit lists again
    _poll_until_idle(widget)
    assert len(calls) == 2


def test_widget_review_save_failure_keeps_the_case(app, tmp_path: Path) -> None:
    from VerSemiSegmenterLib import selftest

    module, boxes = app
    widget = _widget(module, boxes)
    folder = selftest.make_review_folder(tmp_path / "r")
    widget.reviewFolderSelector.currentPath = str(folder)
    widget.reviewOpenButton.emit("clicked(bool)", False)
    widget.reviewNextButton.emit("clicked(bool)", False)
    case = widget.reviewPanel.controller.current
    assert case is not None and widget.reviewSaveButton.enabled
    case.segmentation_node.GetSegmentation().AddEmptySegment("stray", "tumour")
    widget.reviewSaveButton.emit("clicked(bool)", False)
    assert len(boxes.errors) == 1 and "Failed to save the refined label" in boxes.errors[0]
    assert widget.reviewPanel.controller.current is case and widget.reviewSaveButton.enabled
    assert widget.reviewStatusLabel.text.endswith(f"Editing {case.case_id}. 2 pending, 0 refined, 0 rejected")
    widget.reviewPanel.controller.close_case()


def test_unsupported_slicer_shows_only_what_to_do(monkeypatch, tmp_path: Path) -> None:
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    module = load_module(monkeypatch, str(tmp_path), version="5.8.1")
    widget = module.VerSemiSegmenterWidget()
    widget.setup()
    assert widget.ui is None
    (label,) = [w for w in widget.layout.widgets if isinstance(w, FakeQObject)]
    assert "needs 3D Slicer 5.10 or newer" in label.text and "https://download.slicer.org" in label.text
    widget.enter()
    widget.cleanup()


@pytest.mark.slow
def test_widget_downloads_a_catalogue_model_then_lists_and_removes_it_in_the_cache(
    app, tmp_path: Path, monkeypatch
) -> None:
    import hashlib
    import json

    from VerSemiSegmenterLib import selftest

    module, boxes = app
    tiny = selftest.make_tiny_checkpoint(tmp_path / "published" / "tiny.pt", sys.executable)
    data = Path(tiny).read_bytes()
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"format": "versemi-catalogue", "format_version": 1, "models": [{
        "name": "tiny", "version": "1", "url": Path(tiny).as_uri(), "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data), "label_space": list(selftest.TINY_PROMPTS), "licence": "CC0-1.0",
        "description": "a tiny random model",
    }]}), encoding="utf-8")
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(catalogue))
    widget = _widget(module, boxes)
    ui = widget.ui
    widget.enter()
    _poll_until_idle(widget)
    assert ui.modelComboBox.currentText == "tiny@1 (not installed)" and ui.downloadModelButton.visible
    assert [item.data(256) for item in ui.promptListWidget.items] == list(selftest.TINY_PROMPTS)  # catalogue's

    ui.downloadModelButton.emit("clicked(bool)", False)
    _poll_until_idle(widget)  # download, then the list is read again, then the checkpoint's prompts
    assert boxes.errors == [], boxes.errors
    assert ui.statusLabel.text == "Model downloaded and verified."
    assert ui.modelComboBox.currentText == "tiny@1 (installed)" and not ui.downloadModelButton.visible
    assert [item.data(256) for item in ui.promptListWidget.items] == [*selftest.TINY_PROMPTS, "all_foreground"]

    widget.refreshCache()
    _poll_until_idle(widget)
    assert widget.cacheTable.rows == 1 and widget.cacheTable.item(0, 0).text() == "tiny@1"
    status = widget.cacheStatusLabel.text  # with the cache's total size (the tiny checkpoint's)
    assert status.startswith("1 model installed, ") and status.endswith(" KiB in the model cache."), status
    widget.cacheTable.emit("currentCellChanged(int,int,int,int)", 0, 0, -1, -1)
    _poll_until_idle(widget)
    assert "a tiny random model" in widget.cacheCard.plainText
    widget.cacheTable.selected = 0
    widget.cacheRemoveButton.emit("clicked(bool)", False)
    _poll_until_idle(widget)
    assert boxes.errors == [] and any("Remove tiny@1" in q for q in boxes.questions)
    assert widget.cacheStatusLabel.text == "0 models installed, 0 B in the model cache."
    assert widget.cacheTable.rows == 0 and not (tmp_path / "models" / "tiny-1.pt").exists()
    assert ui.modelComboBox.currentText == "tiny@1 (not installed)"  # the selector was refreshed too


def test_widget_install_button_runs_the_install_flow_in_the_background_then_lists(app, monkeypatch) -> None:
    """Backend missing: Install asks, runs each step as a background command, then lists the models."""
    from VerSemiSegmenterLib import dependencies
    from VerSemiSegmenterLib.process import RunResult

    module, boxes = app
    versions = {"torch": "2.4.0", "monai": None, "versemi": "0.1.0"}
    started: list[list[str]] = []

    class Run:
        def __init__(self, command):
            self.polls = 0
            if "--dry-run" in command:
                report = command[command.index("--report") + 1]
                Path(report).write_text('{"install": [{"metadata": {"name": "monai", "version": "1.4.0"}}]}')

        def poll(self):
            self.polls += 1  # each command takes a few timer ticks
            return RunResult(returncode=0) if self.polls >= 3 else None

        def cancel(self):
            pass

    def start(command):
        started.append(command)
        if "-c" in command and "--dry-run" not in command:
            versions["monai"] = "1.4.0"  # the install step "installs" monai
        return Run(command)

    real_flow = module.VerSemiSegmenterLogic.dependencyFlow

    def flow(logic):
        template = real_flow(logic)
        return dependencies.InstallFlow(template.env, dependencies.parse_requirements("torch>=2.2\nmonai>=1.3\n"),
                                        None, versions.get, loaded_modules=set(), start_command=start)

    monkeypatch.setattr(module.VerSemiSegmenterLogic, "dependencyFlow", flow)
    def not_testing(self, python):  # as in a user's Slicer: installs are allowed after asking
        self.testing = False
        self.python_executable = python

    monkeypatch.setattr(module.SlicerInstallEnvironment, "__init__", not_testing)
    widget = _widget(module, boxes)
    ui = widget.ui
    widget.enter()
    _poll_until_idle(widget)
    assert ui.installButton.visible and "click Install" in ui.modelInfoLabel.text
    assert [item[0] for item in ui.modelComboBox.items] == ["Browse local checkpoint..."]

    ui.installButton.emit("clicked(bool)", False)
    assert widget._installFlow is not None and not ui.installButton.enabled  # running in the background
    assert ui.statusLabel.text.startswith("Checking what pip would install")
    _poll_until_idle(widget)
    assert boxes.errors == [], boxes.errors
    assert [c[3] for c in started] == ["install", "install"] and "--dry-run" in started[0]
    assert len(boxes.questions) == 1 and "monai 1.4.0 (new)" in boxes.questions[0]
    assert ui.statusLabel.text == "Installed: monai."
    assert not ui.installButton.visible and ui.installButton.enabled
    assert widget.models.loaded  # the models were listed once the install was done


@pytest.mark.slow
def test_widget_preselects_the_embedded_default_model_and_segments_without_a_download(
    app, tmp_path: Path, monkeypatch
) -> None:
    """A catalogue whose default model ships beside it (as the packaged one does): preselected, its
    prompts read from the shipped file, Apply works, nothing is downloaded; then a crop with an ROI."""
    import slicer

    from models.embedded import make_embedded_catalogue
    from VerSemiSegmenterLib import selftest

    module, boxes = app
    tiny = Path(selftest.make_tiny_checkpoint(tmp_path / "tiny.pt", sys.executable))
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(make_embedded_catalogue(tmp_path / "shipped", tiny)))
    widget = _widget(module, boxes)
    ui = widget.ui
    widget.enter()
    _poll_until_idle(widget)
    assert boxes.errors == [], boxes.errors
    assert ui.modelComboBox.currentText == "tiny-default@1.0.0 (installed, ships with versemi) - default"
    assert not ui.downloadModelButton.visible
    assert [item.data(256) for item in ui.promptListWidget.items] == [*selftest.TINY_PROMPTS, "all_foreground"]
    assert ui.modelInfoLabel.text == str(tmp_path / "shipped" / "models" / "tiny-default-1.0.0.pt")

    volume = selftest.add_sample_volume(slicer.mrmlScene)
    widget._parameterNode.inputVolume = volume
    boxes_used = []
    start = widget.logic.startSegmentation

    def recording(*args, **kwargs):
        job = start(*args, **kwargs)
        boxes_used.append(job.settings.roi)
        return job

    monkeypatch.setattr(widget.logic, "startSegmentation", recording)
    widget._checkCanApply()
    ui.applyButton.emit("clicked(bool)", False)
    _poll_until_idle(widget)
    assert boxes.errors == [], boxes.errors
    assert ui.statusLabel.text.startswith("Done in") and "3 segments" in ui.statusLabel.text
    assert not (tmp_path / "models").exists()  # the model cache was never needed

    # Crop: "Fit ROI to volume" places a box around the volume (no cropping yet); a smaller box crops.
    ui.roiFitButton.emit("clicked(bool)", False)
    box_node = widget._parameterNode.roi
    assert box_node is not None and box_node.IsA("vtkMRMLMarkupsROINode")
    assert widget.logic.cropBox(volume, box_node) is None  # covers every voxel
    box_node.SetSize([s / 2 for s in box_node.GetSize()])
    ui.applyButton.emit("clicked(bool)", False)
    _poll_until_idle(widget)
    assert boxes.errors == [], boxes.errors
    assert boxes_used[0] is None and boxes_used[1] is not None
    x0, y0, z0, x1, y1, z1 = boxes_used[1]
    assert 0 < (x1 - x0) * (y1 - y0) * (z1 - z0) < 28 * 24 * 20  # a crop of the (oblique) volume
    assert ui.statusLabel.text.startswith("Done in")
    box_node.SetCenter([1000.0, 1000.0, 1000.0])  # moved off the volume: refused before any run
    ui.applyButton.emit("clicked(bool)", False)
    _poll_until_idle(widget)
    assert len(boxes.errors) == 1 and "lies outside volume" in boxes.errors[0]
