"""Pure-Python parts of the Slicer module's library: no Slicer, no subprocess unless stated."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from VerSemiSegmenterLib import catalogue, device, parameters
from VerSemiSegmenterLib.process import DoneEvent, ErrorEvent, LogLine, ProgressEvent, Signal, parse_progress_line
from VerSemiSegmenterLib.segmentation_import import (
    LabelTableError,
    parse_label_table,
    read_label_table,
    terminology_tag,
)

# --- parameters -> command line -------------------------------------------------------------------


def test_command_line_has_absolute_paths_and_every_setting(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "my models" / "tiny.pt"
    model.parent.mkdir()
    model.write_bytes(b"x")
    settings = parameters.RunSettings(
        input_path="in put/scan ü.nrrd",
        output_path="out/seg 東京.nrrd",
        model=str(model.relative_to(tmp_path)),
        prompts=["liver", " spleen "],
        device="cuda",
        quality="fast",
        threads=3,
        python_executable="/opt/Slicer/bin/PythonSlicer",
    )
    command = settings.to_command()
    assert command[:4] == ["/opt/Slicer/bin/PythonSlicer", "-m", "versemi.cli", "predict"]
    options = dict(zip(command[4::2], command[5::2]))
    assert options == {
        "--input": str(tmp_path / "in put" / "scan ü.nrrd"),
        "--output": str(tmp_path / "out" / "seg 東京.nrrd"),
        "--model": str(model),
        "--prompts": "liver,spleen",
        "--device": "cuda",
        "--quality": "fast",
        "--threads": "3",
        "--progress": "json",
    }


def test_one_name_per_idea_in_the_cli_the_library_and_the_panel() -> None:
    """Devices and qualities are offered under the names ``versemi predict`` takes and the library checks."""
    import argparse

    from versemi.cli import _inference_args
    from versemi.devices import DEVICES
    from versemi.inference.planning import QUALITIES

    parser = argparse.ArgumentParser()
    _inference_args.add_model_arguments(parser)
    cli = {a.dest: tuple(a.choices) for a in parser._actions if a.dest in ("device", "quality")}  # noqa: SLF001
    assert set(cli["device"]) == set(DEVICES) == set(parameters.DEVICES)
    assert cli["quality"] == QUALITIES == parameters.QUALITIES
    assert parameters.RunSettings("a", "b", "m.pt", ["x"]).quality == "default"


def test_catalogue_model_name_is_passed_unchanged() -> None:
    settings = parameters.RunSettings("a.nrrd", "b.nrrd", "abdomen-ct@1.0", ["liver"])
    command = settings.to_command()
    assert command[command.index("--model") + 1] == "abdomen-ct@1.0"
    assert command[command.index("--quality") + 1] == "default"
    assert int(command[command.index("--threads") + 1]) == max(1, (os.cpu_count() or 2) - 1)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"prompts": []}, "no structure"),
        ({"prompts": ["a,b"]}, "commas"),
        ({"device": "tpu"}, "unknown device"),
        ({"quality": "best"}, "unknown quality"),
        ({"model": ""}, "no model"),
        ({"threads": 0}, "threads"),
        ({"output_mode": "merge"}, "output mode"),
    ],
)
def test_bad_settings_are_refused(change: dict, message: str) -> None:
    settings = parameters.RunSettings("a.nrrd", "b.nrrd", "m.pt", ["liver"])
    for key, value in change.items():
        setattr(settings, key, value)
    with pytest.raises(ValueError, match=message):
        settings.to_command()


# --- progress lines --------------------------------------------------------------------------------


def test_progress_lines_become_events() -> None:
    assert parse_progress_line('{"type": "progress", "stage": "inference", "fraction": 0.42, "message": "w 3/7"}\n') == (
        ProgressEvent("inference", 0.42, "w 3/7")
    )
    assert parse_progress_line('{"type": "progress", "stage": "export", "fraction": 7}') == ProgressEvent("export", 1.0, "")
    assert parse_progress_line('{"type": "done", "output": "/o/seg.nrrd", "sidecar": "/o/seg.json", "seconds": 3}') == (
        DoneEvent("/o/seg.nrrd", "/o/seg.json")
    )
    assert parse_progress_line('{"type": "error", "message": "scan.nrrd: NaN voxels"}') == ErrorEvent("scan.nrrd: NaN voxels")
    # Anything else is a log line, never an exception.
    for line in ["Loading model...", "{not json", '{"type": "progress", "fraction": "abc"}', '{"type": "done"}', "[1, 2]"]:
        assert isinstance(parse_progress_line(line), LogLine), line


def test_signal_connect_emit_disconnect() -> None:
    seen: list[tuple] = []
    signal = Signal()
    callback = lambda *args: seen.append(args)  # noqa: E731
    signal.connect(callback)
    signal.connect(callback)  # connecting twice calls once
    signal.emit(1, "a")
    signal.disconnect(callback)
    signal.emit(2, "b")
    assert seen == [(1, "a")]


# --- label table -> names, colours, terminology ------------------------------------------------------

SIDECAR = {
    "labels": [
        {"value": 2, "name": "organ_x", "color": [60, 180, 75], "snomed": None, "prompt_id": 2},
        {
            "value": 1,
            "name": "liver",
            "color": [221, 130, 101],
            "snomed": {"code": "10200004", "meaning": "Liver", "category_code": "123037004",
                       "category_meaning": "Anatomical Structure"},
            "prompt_id": 0,
        },
        {
            "value": 3,
            "name": "tumor",
            "color": [253, 232, 158],
            "snomed": {"code": "108369006", "meaning": "Neoplasm", "category_code": "49755003",
                       "category_meaning": "Morphologically Altered Structure"},
            "prompt_id": 4,
        },
    ],
    "model": {"name": "tiny", "version": "1", "sha256": "0" * 64},
}


def test_label_table_names_colours_terms(tmp_path: Path) -> None:
    path = tmp_path / "seg ü.json"
    path.write_text(json.dumps(SIDECAR), encoding="utf-8")
    entries = read_label_table(path)
    assert [(e.value, e.name, e.prompt_id) for e in entries] == [(1, "liver", 0), (2, "organ_x", 2), (3, "tumor", 4)]
    assert entries[0].color_float == pytest.approx((221 / 255, 130 / 255, 101 / 255))
    assert entries[0].terminology_tag == (
        "Segmentation category and type - DICOM master list"
        "~SCT^123037004^Anatomical Structure~SCT^10200004^Liver~^^"
        "~Anatomic codes - DICOM master list~^^~^^"
    )
    assert entries[1].terminology_tag is None
    assert "~SCT^49755003^Morphologically Altered Structure~SCT^108369006^Neoplasm~" in entries[2].terminology_tag


def test_terminology_tag_matches_versemi_label_space() -> None:
    """The codes versemi puts in the sidecar (from its label space) produce the Slicer tag."""
    from versemi.labels import lookup_structure

    snomed, _ = lookup_structure("spleen")
    entry = parse_label_table({"labels": [{"value": 1, "name": "spleen", "color": [1, 2, 3], "snomed": snomed.to_dict()}]})[0]
    assert "~SCT^123037004^Anatomical Structure~SCT^78961009^Spleen~" in entry.terminology_tag


@pytest.mark.parametrize(
    "labels, message",
    [
        ("nope", "no 'labels' list"),
        ([{"value": 1, "name": "a"}], "needs 'value'"),
        ([{"value": 0, "name": "a", "color": [1, 2, 3]}], "positive"),
        ([{"value": 1, "name": "a", "color": [1, 2, 3]}, {"value": 1, "name": "b", "color": [1, 2, 3]}], "duplicate"),
        ([{"value": 1, "name": "a", "color": [1, 2]}], "color"),
        ([{"value": 1, "name": "a", "color": [1, 2, 300]}], "color"),
        ([{"value": 1, "name": " ", "color": [1, 2, 3]}], "empty name"),
        ([{"value": 1, "name": "a", "color": [1, 2, 3], "snomed": {"code": "1"}}], "snomed"),
    ],
)
def test_bad_label_tables_are_refused(labels, message: str) -> None:
    with pytest.raises(LabelTableError, match=message):
        parse_label_table({"labels": labels}, "x.json")


def test_unreadable_label_table_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(LabelTableError, match="broken.json"):
        read_label_table(bad)
    with pytest.raises(LabelTableError, match="not found"):
        read_label_table(tmp_path / "missing.json")
    with pytest.raises(LabelTableError, match="reserved"):
        terminology_tag(parse_label_table({"labels": [
            {"value": 1, "name": "a", "color": [1, 2, 3], "snomed": {"code": "1~2", "meaning": "m"}}]})[0].snomed)


# --- catalogue ---------------------------------------------------------------------------------------


def test_models_list_json_becomes_choices() -> None:
    text = json.dumps({
        "catalogue": "packaged",
        "models_dir": "/cache",
        "models": [
            {"name": "abdomen-ct", "version": "1.0", "status": "installed", "source": "catalogue",
             "path": "/cache/abdomen-ct-1.0.pt", "label_space": ["liver", "spleen", "all_foreground"],
             "description": "Abdominal CT", "supported": True},
            {"name": "heart-mr", "version": "2", "status": "not installed", "source": "catalogue", "path": None,
             "label_space": ["left_atrium"], "supported": False},
            {"name": "mine", "version": "local", "status": "installed", "source": "local", "path": "/cache/mine.pt",
             "label_space": []},
        ],
    })
    choices = catalogue.parse_models_list(text)
    assert [c.key for c in choices] == ["abdomen-ct@1.0", "heart-mr@2", "mine@local"]
    assert [c.source for c in choices] == ["catalogue", "catalogue", "imported"]
    assert [p.name for p in choices[0].prompts] == ["liver", "spleen", "all_foreground"]
    assert [p.synthetic for p in choices[0].prompts] == [False, False, True]
    assert choices[1].path is None and "newer versemi" in choices[1].label
    with pytest.raises(catalogue.ModelInfoError):
        catalogue.parse_models_list("not json")


def test_versemi_models_list_runs_offline(tmp_path: Path, monkeypatch) -> None:
    """The real ``versemi models list --json`` (subprocess) with an empty model cache."""
    monkeypatch.setenv("VERSEMI_MODELS_DIR", str(tmp_path / "models"))
    choices = catalogue.list_catalogue_models(sys.executable)
    assert all(isinstance(c, catalogue.ModelChoice) for c in choices)


def test_checkpoint_prompts_are_read_without_torch_in_this_process(tmp_path: Path) -> None:
    """Prompts of a real checkpoint, read by a subprocess; a damaged file gives a clear error."""
    from VerSemiSegmenterLib.selftest import TINY_PROMPTS, make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path / "tiny model ü.pt", sys.executable)
    prompts = catalogue.read_checkpoint_prompts(path, sys.executable)
    assert [p.name for p in prompts] == [*TINY_PROMPTS, "all_foreground"]
    assert prompts[-1].synthetic and not prompts[0].synthetic
    assert prompts[0].color == (221, 130, 101)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(catalogue.ModelInfoError, match="bad.pt"):
        catalogue.read_checkpoint_prompts(bad, sys.executable)
    choice = catalogue.local_checkpoint_choice(path)
    assert choice.installed and choice.source == "local" and choice.key == os.path.abspath(path)


# --- device ------------------------------------------------------------------------------------------

CPU_TORCH = device.TorchInfo(torch_version="2.13.0+cpu", cuda_build=None)
CUDA_TORCH = device.TorchInfo(torch_version="2.13.0+cu126", cuda_build="12.6", cuda_available=True, cuda_device="RTX")


@pytest.mark.parametrize(
    "requested, info, nvidia, want_device, reason_part",
    [
        ("auto", CUDA_TORCH, True, "cuda", "CUDA GPU is available (RTX)"),
        ("auto", CPU_TORCH, True, "cpu", "CPU-only build although an NVIDIA GPU seems present"),
        ("auto", CPU_TORCH, False, "cpu", "no GPU is available"),
        ("auto", device.TorchInfo("2.13.0", None, mps_available=True), False, "mps", "Apple GPU"),
        ("auto", device.TorchInfo("2.13.0+cu126", "12.6"), False, "cpu", "no usable GPU/driver"),
        ("cpu", CUDA_TORCH, True, "cpu", "CPU was selected"),
        ("cuda", CUDA_TORCH, True, "cuda", "CUDA was selected"),
        ("auto", device.TorchInfo(), False, "cpu", "not installed yet"),
    ],
)
def test_device_choice_says_why(requested, info, nvidia, want_device, reason_part) -> None:
    choice = device.choose_device(requested, info, nvidia)
    assert choice.device == want_device
    assert reason_part in choice.reason
    assert choice.describe().startswith("will use: ")


def test_impossible_device_requests_are_errors() -> None:
    with pytest.raises(ValueError, match="CPU-only build"):
        device.choose_device("cuda", CPU_TORCH, True)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        device.choose_device("cuda", CPU_TORCH, False)
    with pytest.raises(ValueError, match="MPS"):
        device.choose_device("mps", CPU_TORCH, False)


@pytest.mark.parametrize("conv3d", [False, True])
def test_slicer_choice_and_cli_auto_agree_where_conv3d_fails_on_mps(monkeypatch, conv3d: bool) -> None:
    """On a Mac whose MPS cannot run Conv3d the panel says CPU, the run (which gets ``--device auto``)
    uses the CPU, and an explicit MPS request is refused by both; where Conv3d runs, both take MPS."""
    from test_devices import fake_accelerators  # tests/ is on the path (rootdir conftest)

    from versemi import devices

    fake_accelerators(monkeypatch, mps=True, conv3d=conv3d)
    facts = devices.accelerator_facts()  # what the module's probe process prints (see device._PROBE)
    panel = device.choose_device("auto", device.TorchInfo(**facts), nvidia_present=False)
    run, _ = devices.resolve_device("auto")
    assert panel.device == run.type == ("mps" if conv3d else "cpu")
    if not conv3d:
        with pytest.raises(ValueError, match="MPS"):
            device.choose_device("mps", device.TorchInfo(**facts), nvidia_present=False)
        with pytest.raises(devices.DeviceError, match="MPS"):
            devices.resolve_device("mps")
    command = parameters.RunSettings("a.nrrd", "b.nrrd", "m.pt", ["liver"], device="auto").to_command()
    assert command[command.index("--device") + 1] == "auto"  # passed through: versemi decides


def test_torch_probe_runs_in_a_subprocess() -> None:
    info = device.probe_torch(sys.executable)
    import torch

    assert info.torch_version == torch.__version__
    assert info.cuda_available == torch.cuda.is_available()
    assert device.probe_torch("/nonexistent/python").error


# --- held-out Dice, "all", licence and intended use -----------------------------------------------------


def test_prompts_carry_their_heldout_dice_and_all_means_every_fitting_prompt() -> None:
    text = json.dumps({"models_dir": "/cache", "models": [
        {"name": "versemi-default", "version": "1.1.0", "status": "installed", "source": "catalogue",
         "path": "/x.pt", "label_space": ["hippocampus_anterior", "spleen", "all_foreground"],
         "heldout_dice": {"hippocampus_anterior": 0.884}, "licence": "CC-BY-NC-SA-4.0"}]})
    (choice,) = catalogue.parse_models_list(text)
    labels = [p.label for p in choice.prompts]
    assert labels == ["hippocampus_anterior  (held-out Dice 88.4 %)", "spleen  (no held-out Dice)",
                      "all_foreground  (union of all targets)"]
    assert "hippocampus_anterior 88.4 %" in catalogue.model_card_text(choice)
    read = [catalogue.PromptInfo("hippocampus_anterior", color=(1, 2, 3)), catalogue.PromptInfo("spleen")]
    merged = catalogue.with_heldout_dice(read, choice)
    assert merged[0].color == (1, 2, 3) and merged[0].heldout_dice == 0.884 and merged[1].heldout_dice is None
    prompts = choice.prompts
    assert catalogue.requested_prompts(["hippocampus_anterior", "spleen"], prompts) == ["all"]
    assert catalogue.requested_prompts(["spleen"], prompts) == ["spleen"]
    assert catalogue.requested_prompts(["hippocampus_anterior", "spleen", "all_foreground"], prompts) == [
        "hippocampus_anterior", "spleen", "all_foreground"]


def test_licence_and_intended_use_are_accepted_once_per_model_and_licence() -> None:
    from VerSemiSegmenterLib import terms

    store: dict = {}
    gate = terms.TermsGate(store.get, store.__setitem__)
    choice = catalogue.ModelChoice("versemi-default@1.1.0", "default", "catalogue", licence="CC-BY-NC-SA-4.0")
    shown: list = []
    cards: list = []

    def card() -> str:
        cards.append(1)
        return "# versemi-default 1.1.0"

    assert not gate.ask(choice, card, lambda text: shown.append(text) or False)  # declined: asked again
    assert not gate.accepted(choice) and store == {}
    assert gate.ask(choice, card, lambda text: shown.append(text) or True)
    assert gate.ask(choice, card, lambda text: pytest.fail("asked twice"))  # remembered
    assert len(cards) == 2 and len(shown) == 2
    text = shown[0]
    assert "CC-BY-NC-SA-4.0 (non-commercial: research use only" in text and "not for clinical use" in text
    assert text.index("Licence") < text.index("--- Model card ---") < text.index("# versemi-default 1.1.0")
    relicensed = catalogue.ModelChoice(choice.key, "default", "catalogue", licence="CC-BY-4.0")
    assert not gate.accepted(relicensed)  # another licence: asked again
    assert list(store) == [f"acceptedTerms/{terms.acceptance_key(choice)}"]
