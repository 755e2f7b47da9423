"""Render ``docs/panel.png``: the module's panel from the real ``VerSemiSegmenter.ui`` with real Qt widgets.

No Slicer GUI can run where the documentation is built, so the panel is rendered with Qt 5.15
(PyQt5) from the module's own ``.ui`` file. What differs from Slicer, and why:

- Slicer's CTK/MRML widgets are not in plain Qt: each is replaced by the Qt widget it extends or
  resembles (``ctkCollapsibleButton`` -> ``QGroupBox`` titled with its text, ``qMRMLNodeComboBox``
  -> ``QComboBox`` showing the node a user would pick, ``ctkSearchBox`` -> ``QLineEdit``);
- the content Slicer fills at run time is filled with what it shows in a real session: the default
  model, its prompts (their names as the module lists them), the device line, a finished run;
- the *Model cache* and *Review* sections, which the module builds in Python, are drawn as the
  collapsed section headers Slicer shows by default.

Run in a throwaway environment (never the project's), under Xvfb::

    python3 -m venv /tmp/qtvenv && /tmp/qtvenv/bin/pip install PyQt5==5.15.11
    xvfb-run -a /tmp/qtvenv/bin/python docs/render_panel_screenshot.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UI_FILE = ROOT / "VerSemiSegmenter" / "Resources" / "UI" / "VerSemiSegmenter.ui"
OUTPUT = ROOT / "docs" / "panel.png"
STAND_INS = {"ctkCollapsibleButton": "QGroupBox", "qMRMLNodeComboBox": "QComboBox", "ctkSearchBox": "QLineEdit",
             "qMRMLWidget": "QWidget"}
CATALOGUE = ROOT / "training" / "src" / "versemi" / "resources" / "catalogue.json"
NODES = {"inputVolumeSelector": "VerSemi hippocampus MRI", "outputSegmentationSelector": "Create new segmentation",
         "roiSelector": "None (whole volume)"}


def default_model() -> tuple[str, list[str], set[str]]:
    """What a real session shows: the packaged default model, its prompts as the panel lists them (with
    their held-out Dice, ``PromptInfo.label``) and the hippocampus prompts ticked."""
    models = json.loads(CATALOGUE.read_text(encoding="utf-8"))["models"]
    entry = max((m for m in models if m.get("default")), key=lambda m: [int(v) for v in m["version"].split(".")])
    dice = entry.get("heldout_dice", {})
    labels = [f"{name}  (union of all targets)" if name == "all_foreground" else
              f"{name}  (held-out Dice {100 * dice[name]:.1f} %)" if name in dice else f"{name}  (no held-out Dice)"
              for name in entry["label_space"]]
    checked = {label for label in labels if label.startswith("hippocampus_")}
    return f"{entry['name']}@{entry['version']}", labels, checked


def plain_qt_ui(ui_file: Path) -> str:
    """The ``.ui`` with Slicer's widgets replaced by their Qt stand-ins (see the module docstring)."""
    tree = ET.parse(ui_file)
    root = tree.getroot()
    for widget in root.iter("widget"):
        cls = widget.get("class")
        if cls in STAND_INS:
            widget.set("class", STAND_INS[cls])
            if cls == "ctkCollapsibleButton":
                for prop in widget.findall("property"):
                    if prop.get("name") == "text":
                        prop.set("name", "title")
                    elif prop.get("name") == "collapsed":
                        widget.remove(prop)
        for prop in list(widget.findall("property")):
            if prop.get("stdset") == "0" or prop.get("name") in ("nodeTypes", "noneEnabled", "addEnabled",
                                                                 "removeEnabled", "showHidden", "showChildNodeTypes",
                                                                 "editEnabled", "renameEnabled", "noneDisplay",
                                                                 "baseName", "selectNodeUponCreation"):
                widget.remove(prop)
    custom = root.find("customwidgets")
    if custom is not None:
        root.remove(custom)
    for connections in root.findall("connections"):
        root.remove(connections)
    return ET.tostring(root, encoding="unicode")


def main() -> int:
    from PyQt5 import QtCore, QtWidgets, uic

    app = QtWidgets.QApplication(sys.argv)
    app.setStyle("Fusion")
    with tempfile.TemporaryDirectory() as tmp:
        ui_path = Path(tmp) / "panel.ui"
        ui_path.write_text(plain_qt_ui(UI_FILE), encoding="utf-8")
        panel = uic.loadUi(str(ui_path))
    find = lambda cls, name: panel.findChild(cls, name)  # noqa: E731
    for name, text in NODES.items():
        find(QtWidgets.QComboBox, name).addItem(text)
    spec, prompt_labels, checked = default_model()
    find(QtWidgets.QComboBox, "modelComboBox").addItem(f"{spec} (installed)")
    find(QtWidgets.QComboBox, "deviceComboBox").addItem("auto")  # the module adds parameters.DEVICES
    find(QtWidgets.QComboBox, "qualityComboBox").addItem("default")
    find(QtWidgets.QLabel, "modelInfoLabel").setText(f"{spec.replace('@', ' ')}, shipped with versemi")
    prompts = find(QtWidgets.QListWidget, "promptListWidget")
    for prompt in prompt_labels:
        item = QtWidgets.QListWidgetItem(prompt)
        item.setFlags(item.flags() | QtCore.Qt.ItemIsUserCheckable)
        item.setCheckState(QtCore.Qt.Checked if prompt in checked else QtCore.Qt.Unchecked)
        prompts.addItem(item)
    find(QtWidgets.QLabel, "promptCountLabel").setText(f"{len(checked)} of {len(prompt_labels)}")
    find(QtWidgets.QLabel, "deviceInfoLabel").setText("will use: CPU (this torch is a CPU-only build)")
    for name in ("installButton", "downloadModelButton", "cancelTaskButton"):
        find(QtWidgets.QPushButton, name).setVisible(False)
    find(QtWidgets.QPushButton, "applyButton").setEnabled(True)
    find(QtWidgets.QPushButton, "exportDicomSegButton").setEnabled(True)
    find(QtWidgets.QProgressBar, "progressBar").setValue(1000)
    find(QtWidgets.QLabel, "statusLabel").setText("Done in 3 s: 2 segments in 'VerSemi hippocampus MRI VerSemi'.")
    layout = panel.layout()
    header = None
    for title in ("Model cache", "Review"):  # built in Python by the module; collapsed by default
        header = QtWidgets.QPushButton(f"\u25b8  {title}")
        header.setStyleSheet("text-align: left; padding: 4px;")
        layout.insertWidget(layout.count() - 1, header)
    panel.resize(640, 1000)  # a widened module panel: the ExtensionsIndex wants 600 px or more
    panel.show()
    app.processEvents()
    bottom = header.geometry().bottom() + 10  # the spacer below the last section is not drawn
    if not panel.grab(QtCore.QRect(0, 0, panel.width(), bottom)).save(str(OUTPUT)):
        print(f"cannot write {OUTPUT}", file=sys.stderr)
        return 1
    print(f"wrote {OUTPUT} ({panel.width()} x {bottom})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
