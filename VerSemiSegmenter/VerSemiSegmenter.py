"""VerSemi Segmenter: segment many structures with one task-prompted VerSemi model.

This file is the thin Slicer layer (module, GUI, logic entry points, self-test). The work is done by
the plain-Python library in ``VerSemiSegmenterLib`` (tested outside Slicer with pytest and the
``slicer-core`` package): building the ``versemi predict`` command, running it in a background
process, reading model information, installing dependencies, importing the result, and the review
loop over a ``versemi pseudolabel`` folder (``review.ReviewController``).
"""

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Annotated, Optional

import qt
import vtk

import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.util import VTKObservationMixin
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

from VerSemiSegmenterLib import catalogue, dependencies, device, parameters, pipeline, process, review, selftest

SETTINGS_PREFIX = "VerSemiSegmenter"
BROWSE_ITEM_TEXT = "Browse local checkpoint..."


#
# VerSemiSegmenter
#


class VerSemiSegmenter(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "VerSemi Segmenter"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["VerSemi developers"]
        self.parent.helpText = """
Segment many anatomical structures with ONE task-prompted 3D model trained with VerSemi
(semi-supervised learning over several partially labeled datasets plus unlabeled scans).
Choose a volume and a model, tick the structures, and click Apply. The model runs in a background
process (progress, Cancel); the result is a segmentation with named, coloured segments carrying
SNOMED CT terminology. The Review section walks a pseudo-label review folder case by case
(highest review score first): edit, then save the refined label or reject the case. See the
<a href="https://github.com/versemi/SlicerVerSemiSegmenter/blob/main/docs/SLICER.md">documentation</a>.
"""
        self.parent.acknowledgementText = """
Based on the VerSemi method (IEEE Transactions on Medical Imaging). Uses PyTorch, MONAI and SimpleITK.
"""


#
# Parameter node (GUI state saved with the scene)
#


@parameterNodeWrapper
class VerSemiSegmenterParameterNode:
    """
    inputVolume - the volume to segment.
    outputSegmentation - None: create a new segmentation; a node: replace its segments.
    model - catalogue spec (name@version) or checkpoint path.
    device - auto/cpu/cuda/mps.
    quality - full/fast.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    model: str = ""
    device: Annotated[str, Choice(list(parameters.DEVICES))] = "auto"
    quality: Annotated[str, Choice(list(parameters.QUALITIES))] = "full"


def pythonExecutable() -> str:
    """The Python that runs the predictor: Slicer's own (same site-packages as the module)."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    home = getattr(slicer.app, "slicerHome", "") if hasattr(slicer, "app") else ""
    for name in ("PythonSlicer.exe", "PythonSlicer"):
        candidate = os.path.join(home, "bin", name)
        if os.path.isfile(candidate):
            return candidate
    return sys.executable


class SlicerInstaller:
    """The :class:`VerSemiSegmenterLib.dependencies.Installer` for Slicer."""

    def __init__(self):
        self.testing = slicer.app.testingEnabled()

    def confirm(self, message: str) -> bool:
        return slicer.util.confirmOkCancelDisplay(message, "VerSemi Segmenter: install packages")

    def torch_installed(self) -> bool:
        # Metadata only: importing torch into Slicer's process is not needed (the predictor runs apart).
        return dependencies.installed_version("torch") is not None

    def install_torch(self) -> bool:
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise dependencies.DependencyError(
                "PyTorch is needed: install the 'PyTorch' extension from the Extensions Manager, restart Slicer, "
                "and try again."
            ) from None
        # One confirmation was already given for the whole list (ensure_dependencies).
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
        return torch is not None

    def pip_install(self, args: list) -> None:
        slicer.util.pip_install(args)


#
# VerSemiSegmenterLogic
#


class VerSemiSegmenterLogic(ScriptedLoadableModuleLogic):
    """Entry points usable without the GUI (Python console, scripts, the self-test)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.pythonExecutable = pythonExecutable()
        # PythonSlicer is a launcher: start it from Slicer's startup environment, as Slicer does.
        process.set_base_environment(slicer.util.startupEnvironment())
        self._torchInfo = None
        self._nvidiaPresent = None

    def getParameterNode(self):
        return VerSemiSegmenterParameterNode(super().getParameterNode())

    def moduleResourcesDir(self) -> str:
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources")

    def ensureDependencies(self) -> dependencies.EnsureResult:
        """Install what the predictor misses (asks once; silent in testing mode)."""
        resources = self.moduleResourcesDir()
        requirements = dependencies.read_requirements(os.path.join(resources, "requirements.txt"))
        source = dependencies.bundled_versemi_source(resources)
        if source is None and dependencies.installed_version("versemi") is None:
            raise dependencies.DependencyError(
                f"the versemi package is neither installed nor bundled in {resources}/versemi-package"
            )
        return dependencies.ensure_dependencies(SlicerInstaller(), requirements, source)

    # --- models -----------------------------------------------------------------------------------
    def listModels(self) -> list:
        """Catalogue/imported models (``versemi models list``); empty if versemi is not installed yet."""
        if dependencies.installed_version("versemi") is None:
            return []
        return catalogue.list_catalogue_models(self.pythonExecutable)

    def modelPrompts(self, choice: catalogue.ModelChoice) -> list:
        """Prompts of a model: read from the checkpoint when it is on disk, else from the catalogue."""
        if choice.installed:
            return catalogue.read_checkpoint_prompts(choice.path, self.pythonExecutable)
        return list(choice.prompts)

    # --- device -----------------------------------------------------------------------------------
    def probeDevice(self) -> None:
        """Collect torch/GPU facts (slow: starts a Python; call from a worker thread)."""
        self._nvidiaPresent = device.nvidia_gpu_present()
        self._torchInfo = device.probe_torch(self.pythonExecutable)

    @property
    def deviceProbed(self) -> bool:
        return self._torchInfo is not None

    def deviceChoice(self, requested: str) -> device.DeviceChoice:
        if self._torchInfo is None:
            self.probeDevice()
        return device.choose_device(requested, self._torchInfo, bool(self._nvidiaPresent))

    # --- segmentation -----------------------------------------------------------------------------
    def startSegmentation(
        self,
        inputVolume,
        model: str,
        prompts: list,
        device: str = "auto",
        quality: str = "full",
        outputSegmentation=None,
    ) -> pipeline.SegmentationJob:
        """Start a background segmentation; poll the returned job (``job.poll()``) until it ends."""
        settings = parameters.RunSettings(
            input_path="",
            output_path="",
            model=model,
            prompts=list(prompts),
            device=device,
            quality=quality,
            python_executable=self.pythonExecutable,
            output_mode="replace" if outputSegmentation is not None else "new",
        )
        job = pipeline.SegmentationJob(
            inputVolume, settings, segmentation_node=outputSegmentation, temp_parent=slicer.app.temporaryPath
        )
        job.start()
        return job

    def process(
        self,
        inputVolume,
        model: str,
        prompts: list,
        device: str = "auto",
        quality: str = "full",
        outputSegmentation=None,
        timeout: Optional[float] = None,
    ):
        """Segment and wait (keeps the GUI painting). Returns the ``ImportResult``; raises on failure."""
        job = self.startSegmentation(inputVolume, model, prompts, device, quality, outputSegmentation)
        deadline = None if timeout is None else time.monotonic() + timeout
        while job.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                job.cancel()
                raise TimeoutError(f"segmentation did not finish within {timeout} s")
            slicer.app.processEvents()
            time.sleep(0.05)
        if not job.succeeded:
            raise pipeline.PredictionError(job.error or "segmentation failed")
        return job.import_result

    # --- review -----------------------------------------------------------------------------------
    def openReview(self, reviewDir: str, user: Optional[str] = None) -> review.ReviewController:
        """A review controller on a ``versemi pseudolabel`` folder, loading cases into the scene."""
        return review.open_review(reviewDir, review.MrmlReviewScene(slicer.mrmlScene), user=user)


#
# VerSemiSegmenterWidget
#


class VerSemiSegmenterWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._downloadRunner = None
        self._models = []
        self._modelsLoaded = False
        self._deviceThread = None
        self._updatingPrompts = False
        self._startTime = 0.0
        self._dependenciesReady = False
        self._review = None  # review.ReviewController of the open review folder

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/VerSemiSegmenter.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = VerSemiSegmenterLogic()

        # Choice items must exist before the parameter node binds the combo boxes.
        self.ui.deviceComboBox.addItems(list(parameters.DEVICES))
        self.ui.qualityComboBox.addItems(list(parameters.QUALITIES))
        self.ui.downloadModelButton.visible = False
        self.ui.progressBar.visible = False

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.connect("activated(int)", self.onModelActivated)
        self.ui.downloadModelButton.connect("clicked(bool)", self.onDownloadModel)
        self.ui.promptFilterLineEdit.connect("textChanged(QString)", self.onPromptFilterChanged)
        self.ui.promptListWidget.connect("itemChanged(QListWidgetItem*)", self.onPromptItemChanged)
        self.ui.selectAllButton.connect("clicked(bool)", lambda: self.setVisiblePromptsChecked(True))
        self.ui.selectNoneButton.connect("clicked(bool)", lambda: self.setVisiblePromptsChecked(False))
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.updateDeviceInfo)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        self.setupReviewSection(uiWidget)

        # Background work (predictor, download, device probe) is polled: the GUI never blocks.
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(200)
        self.pollTimer.connect("timeout()", self.onPoll)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.cancelRunning()
        self.pollTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        if not self._modelsLoaded:
            self.refreshModels()
        if self._deviceThread is None and not self.logic.deviceProbed:
            self._deviceThread = threading.Thread(target=self._probeDevice, daemon=True)
            self._deviceThread.start()
            self.pollTimer.start()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelRunning()
        self.setParameterNode(None)
        if self._review is not None:
            self._review.forget_open_case()  # its nodes go with the scene; the case stays pending
            self.updateReviewPanel()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        if self._job is not None and self._job.is_running:
            self.ui.applyButton.enabled = True
            return
        reasons = []
        if not (self._parameterNode and self._parameterNode.inputVolume):
            reasons.append("select an input volume")
        if not self.currentModelChoice():
            reasons.append("select a model")
        if not self.checkedPrompts():
            reasons.append("tick at least one structure")
        busy = self._downloadRunner is not None
        self.ui.applyButton.enabled = not reasons and not busy
        self.ui.applyButton.toolTip = (
            "Run the segmentation in the background." if not reasons else "To segment: " + ", ".join(reasons) + "."
        )

    def ensureDependencies(self) -> bool:
        """Install missing packages once per session (asks first). False: restart needed first."""
        if self._dependenciesReady:
            return True
        result = self.logic.ensureDependencies()
        if result.restart_needed:
            if slicer.util.confirmYesNoDisplay(
                "Packages that Slicer had already loaded were updated. Restart Slicer now to use them?",
                windowTitle="VerSemi Segmenter",
            ):
                slicer.util.restart()
            return False
        self._dependenciesReady = True
        if result.installed:
            self.logic._torchInfo = None  # torch may have just been installed: probe again
            self.refreshModels()
        return True

    # --- models -----------------------------------------------------------------------------------
    def refreshModels(self, selectKey: Optional[str] = None) -> None:
        models = []
        with slicer.util.tryWithErrorDisplay("Failed to list VerSemi models.", waitCursor=True):
            models = self.logic.listModels()
        local = [catalogue.local_checkpoint_choice(p) for p in self.rememberedCheckpoints() if os.path.isfile(p)]
        self._models = models + local
        self._modelsLoaded = True
        combo = self.ui.modelComboBox
        combo.blockSignals(True)
        combo.clear()
        for choice in self._models:
            combo.addItem(choice.label, choice.key)
            combo.setItemData(combo.count - 1, choice.description or choice.key, qt.Qt.ToolTipRole)
        combo.addItem(BROWSE_ITEM_TEXT, "")
        wanted = selectKey or (self._parameterNode.model if self._parameterNode else "")
        index = next((i for i, c in enumerate(self._models) if c.key == wanted), 0 if self._models else -1)
        combo.setCurrentIndex(index)
        combo.blockSignals(False)
        self.onModelChanged()

    def rememberedCheckpoints(self) -> list:
        value = qt.QSettings().value(f"{SETTINGS_PREFIX}/localCheckpoints", "")
        return [p for p in str(value or "").split("\n") if p]

    def rememberCheckpoint(self, path: str) -> None:
        paths = [path] + [p for p in self.rememberedCheckpoints() if p != path]
        qt.QSettings().setValue(f"{SETTINGS_PREFIX}/localCheckpoints", "\n".join(paths[:10]))

    def currentModelChoice(self):
        index = self.ui.modelComboBox.currentIndex
        return self._models[index] if 0 <= index < len(self._models) else None

    def onModelActivated(self, index: int) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to install the packages VerSemi needs.", waitCursor=True):
            if not self.ensureDependencies():
                return
        if self.ui.modelComboBox.itemText(index) == BROWSE_ITEM_TEXT:
            path = qt.QFileDialog.getOpenFileName(
                slicer.util.mainWindow(), "Choose a VerSemi checkpoint", "", "VerSemi checkpoints (*.pt *.pth);;All files (*)"
            )
            if path:
                self.rememberCheckpoint(os.path.abspath(path))
                self.refreshModels(selectKey=os.path.abspath(path))
            else:
                self.refreshModels()
            return
        self.onModelChanged()

    def onModelChanged(self) -> None:
        choice = self.currentModelChoice()
        if self._parameterNode:
            self._parameterNode.model = choice.key if choice else ""
        prompts = list(choice.prompts) if choice else []
        versemiInstalled = dependencies.installed_version("versemi") is not None
        if not versemiInstalled:
            info = "VerSemi's Python packages are not installed yet: choose a model to install them (asks first)."
        elif choice is None:
            info = "No model found: choose 'Browse local checkpoint...' or install one (see the documentation)."
        elif choice.source != "local" and not choice.installed:
            info = "Not installed yet: click Download (SHA-256 verified), or import a file with 'versemi models import'."
        else:
            info = choice.path or ""
            with slicer.util.tryWithErrorDisplay(f"Failed to read model {choice.key}.", waitCursor=True):
                prompts = self.logic.modelPrompts(choice)
        self.ui.modelInfoLabel.text = info
        self.ui.downloadModelButton.visible = (
            versemiInstalled and choice is not None and choice.source != "local" and not choice.installed
        )
        self.populatePrompts(prompts)

    def onDownloadModel(self) -> None:
        choice = self.currentModelChoice()
        if choice is None or self._downloadRunner is not None:
            return
        with slicer.util.tryWithErrorDisplay("Failed to start the model download.", waitCursor=True):
            if not self.ensureDependencies():
                return
            runner = process.ProcessRunner(catalogue.download_command(choice.key, self.logic.pythonExecutable))
            runner.progress.connect(self.onProgress)
            runner.start()
            self._downloadRunner = runner
            self.ui.progressBar.visible = True
            self.ui.statusLabel.text = f"Downloading {choice.key}..."
            self.pollTimer.start()
        self._checkCanApply()

    # --- prompts ----------------------------------------------------------------------------------
    def promptSettingsKey(self) -> str:
        choice = self.currentModelChoice()
        model = choice.key.split("@")[0] if choice else ""
        return f"{SETTINGS_PREFIX}/selectedPrompts/{model.replace('/', '_').replace(os.sep, '_')}"

    def populatePrompts(self, prompts: list) -> None:
        saved = qt.QSettings().value(self.promptSettingsKey(), None)
        selected = set(str(saved).split(",")) if saved else None
        self._updatingPrompts = True
        widget = self.ui.promptListWidget
        widget.clear()
        for prompt in prompts:
            text = f"{prompt.name}  (union of all targets)" if prompt.synthetic else prompt.name
            item = qt.QListWidgetItem(text)
            item.setData(qt.Qt.UserRole, prompt.name)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            checked = (prompt.name in selected) if selected is not None else not prompt.synthetic
            item.setCheckState(qt.Qt.Checked if checked else qt.Qt.Unchecked)
            if prompt.color:
                pixmap = qt.QPixmap(12, 12)
                pixmap.fill(qt.QColor(*prompt.color))
                item.setIcon(qt.QIcon(pixmap))
            widget.addItem(item)
        self._updatingPrompts = False
        self.onPromptFilterChanged(self.ui.promptFilterLineEdit.text)
        self.updatePromptCount()

    def promptItems(self) -> list:
        widget = self.ui.promptListWidget
        return [widget.item(i) for i in range(widget.count)]

    def checkedPrompts(self) -> list:
        return [item.data(qt.Qt.UserRole) for item in self.promptItems() if item.checkState() == qt.Qt.Checked]

    def onPromptFilterChanged(self, text: str) -> None:
        needle = (text or "").strip().lower()
        for item in self.promptItems():
            item.setHidden(bool(needle) and needle not in item.text().lower())

    def setVisiblePromptsChecked(self, checked: bool) -> None:
        self._updatingPrompts = True
        for item in self.promptItems():
            if not item.isHidden():
                item.setCheckState(qt.Qt.Checked if checked else qt.Qt.Unchecked)
        self._updatingPrompts = False
        self.onPromptItemChanged(None)

    def onPromptItemChanged(self, item) -> None:
        if self._updatingPrompts:
            return
        qt.QSettings().setValue(self.promptSettingsKey(), ",".join(self.checkedPrompts()))
        self.updatePromptCount()

    def updatePromptCount(self) -> None:
        self.ui.promptCountLabel.text = f"{len(self.checkedPrompts())} of {self.ui.promptListWidget.count}"
        self._checkCanApply()

    # --- device -----------------------------------------------------------------------------------
    def _probeDevice(self) -> None:
        try:
            self.logic.probeDevice()
        except Exception as exc:  # shown in the label by the poll
            logging.warning(f"VerSemi: device probe failed: {exc}")

    def updateDeviceInfo(self, *args) -> None:
        if not self.logic.deviceProbed:
            self.ui.deviceInfoLabel.text = "will use: (checking PyTorch and GPU...)"
            return
        try:
            self.ui.deviceInfoLabel.text = self.logic.deviceChoice(self.ui.deviceComboBox.currentText).describe()
        except ValueError as exc:
            self.ui.deviceInfoLabel.text = f"cannot run: {exc}"

    # --- review -----------------------------------------------------------------------------------
    def setupReviewSection(self, uiWidget) -> None:
        """The collapsible Review section (built here: the .ui file holds the segmentation panel)."""
        import ctk

        section = ctk.ctkCollapsibleButton()
        section.text = "Review"
        section.collapsed = True
        layout = uiWidget.layout()
        # Above the .ui's bottom spacer, so the section sits right under the others.
        layout.insertWidget(max(layout.count() - 1, 0), section)
        form = qt.QFormLayout(section)

        self.reviewFolderSelector = ctk.ctkPathLineEdit()
        self.reviewFolderSelector.filters = ctk.ctkPathLineEdit.Dirs
        self.reviewFolderSelector.settingKey = f"{SETTINGS_PREFIX}/reviewFolder"
        self.reviewFolderSelector.toolTip = "A folder made by 'versemi pseudolabel' (it holds manifest.json)."
        self.reviewOpenButton = qt.QPushButton("Open")
        folderRow = qt.QHBoxLayout()
        folderRow.addWidget(self.reviewFolderSelector, 1)
        folderRow.addWidget(self.reviewOpenButton)
        form.addRow("Review folder:", folderRow)

        self.reviewTable = qt.QTableWidget(0, 4)
        self.reviewTable.setHorizontalHeaderLabels(["Case", "Status", "Score", "Updated by"])
        self.reviewTable.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self.reviewTable.setSelectionMode(qt.QAbstractItemView.SingleSelection)
        self.reviewTable.setEditTriggers(qt.QAbstractItemView.NoEditTriggers)
        self.reviewTable.horizontalHeader().setStretchLastSection(True)
        self.reviewTable.verticalHeader().visible = False
        self.reviewTable.toolTip = "Highest review score first. Double-click a case to open it."
        form.addRow(self.reviewTable)

        self.reviewNextButton = qt.QPushButton("Next case")
        self.reviewNextButton.toolTip = "Load the highest-scored pending case (an open case is skipped and stays pending)."
        self.reviewEditorButton = qt.QPushButton("Segment Editor")
        self.reviewEditorButton.toolTip = "Edit the open case's segmentation in the Segment Editor."
        self.reviewSaveButton = qt.QPushButton("Save refined label")
        self.reviewSaveButton.toolTip = "Store the segments as the case's refined label (a new file), then load the next case."
        self.reviewRejectButton = qt.QPushButton("Reject")
        self.reviewRejectButton.toolTip = "Mark the case as not worth fixing (stays unlabeled for training), then load the next case."
        self.reviewReasonEdit = qt.QLineEdit()
        self.reviewReasonEdit.placeholderText = "reason for rejecting (optional)"
        buttons = qt.QHBoxLayout()
        for button in (self.reviewNextButton, self.reviewEditorButton, self.reviewSaveButton, self.reviewRejectButton):
            buttons.addWidget(button)
        form.addRow(buttons)
        form.addRow("Reject reason:", self.reviewReasonEdit)
        self.reviewStatusLabel = qt.QLabel("Choose a review folder and click Open.")
        self.reviewStatusLabel.wordWrap = True
        form.addRow(self.reviewStatusLabel)

        self.reviewOpenButton.connect("clicked(bool)", self.onReviewOpen)
        self.reviewNextButton.connect("clicked(bool)", self.onReviewNext)
        self.reviewEditorButton.connect("clicked(bool)", self.onReviewSegmentEditor)
        self.reviewSaveButton.connect("clicked(bool)", self.onReviewSave)
        self.reviewRejectButton.connect("clicked(bool)", self.onReviewReject)
        self.reviewTable.connect("cellDoubleClicked(int,int)", self.onReviewCaseDoubleClicked)
        self.updateReviewPanel()

    def onReviewOpen(self) -> None:
        folder = self.reviewFolderSelector.currentPath
        with slicer.util.tryWithErrorDisplay("Failed to open the review folder.", waitCursor=True):
            if not folder:
                raise review.ReviewPanelError("choose a review folder first")
            if review.missing_review_packages() and not self.ensureDependencies():
                return
            if not self.confirmLeaveReviewCase():
                return
            if self._review is not None:
                self._review.close_case()
            self._review = None
            self._review = self.logic.openReview(folder)
            self.reviewFolderSelector.addCurrentPathToHistory()
        self.updateReviewPanel()

    def confirmLeaveReviewCase(self) -> bool:
        """Ask before unloading an open case (its edits are not saved; it stays pending)."""
        if self._review is None or self._review.current is None:
            return True
        return slicer.util.confirmOkCancelDisplay(
            f"Leave case {self._review.current.case_id} without saving? Its edits are discarded; it stays pending.",
            windowTitle="VerSemi Review",
        )

    def onReviewNext(self) -> None:
        if self._review is None or not self.confirmLeaveReviewCase():
            return
        self.loadNextReviewCase()
        self.showReviewCase()

    def onReviewCaseDoubleClicked(self, row: int, column: int) -> None:
        item = self.reviewTable.item(row, 0)
        if self._review is None or item is None:
            return
        caseId = item.text()
        if self._review.current is not None and self._review.current.case_id == caseId:
            return
        if not self.confirmLeaveReviewCase():
            return
        with slicer.util.tryWithErrorDisplay(f"Failed to open case {caseId}.", waitCursor=True):
            self._review.open_case(caseId)
        self.showReviewCase()

    def onReviewSave(self) -> None:
        if self._review is None:
            return
        saved = None
        with slicer.util.tryWithErrorDisplay("Failed to save the refined label.", waitCursor=True):
            saved = self._review.save_refined(move_on=False)
            slicer.util.showStatusMessage(f"Saved {saved.case_id} as {saved.refined_label}", 5000)
        if saved is not None:
            self.loadNextReviewCase()
        self.showReviewCase()

    def onReviewReject(self) -> None:
        if self._review is None:
            return
        rejected = None
        with slicer.util.tryWithErrorDisplay("Failed to reject the case.", waitCursor=True):
            rejected = self._review.reject(self.reviewReasonEdit.text.strip() or None, move_on=False)
            self.reviewReasonEdit.text = ""
            slicer.util.showStatusMessage(f"Rejected {rejected.case_id}", 5000)
        if rejected is not None:
            self.loadNextReviewCase()
        self.showReviewCase()

    def loadNextReviewCase(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to load the next case.", waitCursor=True):
            self._review.next_case()

    def onReviewSegmentEditor(self) -> None:
        loaded = self._review.current if self._review is not None else None
        if loaded is None:
            return
        with slicer.util.tryWithErrorDisplay("Failed to open the Segment Editor.", waitCursor=True):
            slicer.util.selectModule("SegmentEditor")
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
            editor.setSegmentationNode(loaded.segmentation_node)
            if hasattr(editor, "setSourceVolumeNode"):  # Slicer >= 5.4
                editor.setSourceVolumeNode(loaded.volume_node)
            else:
                editor.setMasterVolumeNode(loaded.volume_node)

    def showReviewCase(self) -> None:
        """Show the open case in the views, then refresh the table and buttons."""
        loaded = self._review.current if self._review is not None else None
        if loaded is not None:
            slicer.util.setSliceViewerLayers(background=loaded.volume_node, fit=True)
        self.updateReviewPanel()

    def updateReviewPanel(self) -> None:
        controller = self._review
        rows = []
        if controller is not None:
            try:
                rows = controller.rows()
                self.reviewStatusLabel.text = f"{controller.review_dir}: {controller.status_text()}"
            except ValueError as exc:  # the manifest became unreadable (ReviewError)
                self.reviewStatusLabel.text = f"Cannot read the review: {exc}"
        table = self.reviewTable
        table.setRowCount(len(rows))
        current = controller.current.case_id if controller is not None and controller.current else None
        for index, row in enumerate(rows):
            for column, text in enumerate((row.case_id, row.status, row.score_text, row.updated_by or "")):
                table.setItem(index, column, qt.QTableWidgetItem(text))
            if row.case_id == current:
                table.selectRow(index)
        isOpen = controller is not None and controller.current is not None
        self.reviewNextButton.enabled = controller is not None
        for button in (self.reviewEditorButton, self.reviewSaveButton, self.reviewRejectButton):
            button.enabled = isOpen

    # --- run --------------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._job is not None and self._job.is_running:
            self.cancelRunning()
            return
        with slicer.util.tryWithErrorDisplay("Failed to start the segmentation.", waitCursor=True):
            params = self._parameterNode
            output = params.outputSegmentation
            if output is not None and not slicer.util.confirmYesNoDisplay(
                f"Replace ALL segments of '{output.GetName()}' with the new result?\n"
                "(Choose 'Create new segmentation' to keep them.)",
                windowTitle="VerSemi Segmenter",
            ):
                return
            if not self.ensureDependencies():
                return
            choice = self.logic.deviceChoice(params.device)
            self.ui.deviceInfoLabel.text = choice.describe()
            self._job = self.logic.startSegmentation(
                params.inputVolume, params.model, self.checkedPrompts(), choice.device, params.quality, output
            )
            self._job.progress.connect(self.onProgress)
            self._startTime = time.monotonic()
            self.setRunningState(True)
            self.ui.statusLabel.text = f"Starting ({choice.describe()})..."
            self.pollTimer.start()

    def setRunningState(self, running: bool) -> None:
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        self.ui.applyButton.enabled = True
        self.ui.progressBar.visible = running
        self.ui.progressBar.value = 0
        for widget in (
            self.ui.inputVolumeSelector,
            self.ui.modelComboBox,
            self.ui.promptListWidget,
            self.ui.deviceComboBox,
            self.ui.qualityComboBox,
            self.ui.outputSegmentationSelector,
        ):
            widget.enabled = not running
        if not running:
            self._checkCanApply()

    def onProgress(self, event) -> None:
        self.ui.progressBar.value = int(round(event.fraction * 1000))
        if event.message:
            self.ui.statusLabel.text = f"{event.stage}: {event.message}"

    def cancelRunning(self) -> None:
        if self._job is not None and self._job.is_running:
            self.ui.statusLabel.text = "Cancelling..."
            self._job.cancel()
            self.onPoll()
        if self._downloadRunner is not None:
            self._downloadRunner.cancel()
            self.onPoll()

    def onPoll(self) -> None:
        if self._deviceThread is not None and not self._deviceThread.is_alive():
            self._deviceThread = None
            self.updateDeviceInfo()
        if self._job is not None and self._job.poll() is not None:  # also after a cancel
            self.onJobFinished(self._job)
        if self._downloadRunner is not None:
            result = self._downloadRunner.poll()
            if result is not None:
                self._downloadRunner = None
                self.ui.progressBar.visible = False
                if result.succeeded:
                    self.ui.statusLabel.text = "Model downloaded and verified."
                    self.refreshModels()
                elif result.cancelled:
                    self.ui.statusLabel.text = "Download cancelled."
                else:
                    self.ui.statusLabel.text = "Download failed."
                    slicer.util.errorDisplay(f"Download failed:\n{result.error_message()}")
                self._checkCanApply()
        busy = (self._job is not None and self._job.is_running) or self._downloadRunner or self._deviceThread
        if not busy:
            self.pollTimer.stop()

    def onJobFinished(self, job) -> None:
        self.setRunningState(False)
        seconds = time.monotonic() - self._startTime
        if job.succeeded:
            result = job.import_result
            node = result.segmentation_node
            node.CreateClosedSurfaceRepresentation()
            message = f"Done in {seconds:.0f} s: {len(result.segment_ids)} segments in '{node.GetName()}'."
            if result.empty_segments:
                message += f" Nothing found for: {', '.join(result.empty_segments)} (kept as empty segments)."
            self.ui.statusLabel.text = message
            slicer.util.setSliceViewerLayers(background=job.volume_node)
        elif job.cancelled:
            self.ui.statusLabel.text = "Cancelled; nothing was added to the scene."
        else:
            self.ui.statusLabel.text = "Failed (see the error message)."
            slicer.util.errorDisplay(f"Segmentation failed:\n{job.error}", windowTitle="VerSemi Segmenter")
        self._job = None


#
# VerSemiSegmenterTest
#


class VerSemiSegmenterTest(ScriptedLoadableModuleTest):
    """Runs a tiny randomly initialised model end to end (same library calls as the pytest tests)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        # Slicer calls runTest directly (no unittest runner, so no addCleanup): clean up explicitly.
        self.workDir = tempfile.mkdtemp(prefix="VerSemi test ü ")
        try:
            self.setUp()
            self.test_segment_with_tiny_model()
            self.setUp()
            self.test_cancel_adds_nothing()
            self.setUp()
            self.test_ReviewRoundTrip()
        finally:
            shutil.rmtree(self.workDir, ignore_errors=True)

    def _prepare(self):
        logic = VerSemiSegmenterLogic()
        logic.ensureDependencies()
        checkpoint = os.path.join(self.workDir, "tiny model.pt")
        if not os.path.isfile(checkpoint):
            selftest.make_tiny_checkpoint(checkpoint, logic.pythonExecutable)
        volume = selftest.add_sample_volume(slicer.mrmlScene)
        return logic, checkpoint, volume

    def test_segment_with_tiny_model(self):
        self.delayDisplay("Segmenting a small volume with a tiny VerSemi model")
        logic, checkpoint, volume = self._prepare()
        prompts = ["liver", "spleen", "organ_x"]
        colors = {p.name: p.color for p in catalogue.read_checkpoint_prompts(checkpoint, logic.pythonExecutable)}
        result = logic.process(volume, checkpoint, prompts, device="cpu", quality="full", timeout=600)
        problems = selftest.check_segmentation(
            result.segmentation_node, volume, prompts, colors, selftest.TINY_PROMPT_CODES
        )
        self.assertEqual(problems, [])
        # Replace mode: same node, new segments.
        again = logic.process(volume, checkpoint, ["spleen"], device="cpu", outputSegmentation=result.segmentation_node)
        self.assertIs(again.segmentation_node, result.segmentation_node)
        self.assertEqual(result.segmentation_node.GetSegmentation().GetNumberOfSegments(), 1)
        self.delayDisplay("Test passed")

    def test_cancel_adds_nothing(self):
        self.delayDisplay("Cancelling a running segmentation")
        logic, checkpoint, volume = self._prepare()
        before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
        job = logic.startSegmentation(volume, checkpoint, ["liver"], device="cpu")
        pid = job.pid
        started = time.monotonic()
        job.cancel()
        self.assertLess(time.monotonic() - started, 2.5)
        self.assertFalse(job.is_running)
        self.assertTrue(job.cancelled)
        import psutil

        self.assertFalse(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), before)
        self.delayDisplay("Test passed")

    def test_ReviewRoundTrip(self):
        self.delayDisplay("Reviewing a tiny folder: next case, save refined, reject")
        if review.missing_review_packages():
            VerSemiSegmenterLogic().ensureDependencies()
        # Raises selftest.SelfTestError listing the problems; removes its nodes and folder either way.
        selftest.run_review_round_trip(slicer.mrmlScene, self.workDir)
        self.delayDisplay("Test passed")
