"""Installing the predictor's packages into Slicer: supported range, plan, safe install flow.

The flow's commands are recorded by a fake command starter (no pip runs) except in the tests marked
"real pip": a dry run against a Slicer-like environment, and the offline install of the bundled
versemi source.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from VerSemiSegmenterLib import dependencies
from VerSemiSegmenterLib.process import RunResult

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "VerSemiSegmenter"
REQUIREMENTS = MODULE_DIR / "Resources" / "requirements.txt"
REQS = dependencies.parse_requirements("torch>=2.2\nmonai>=1.3\nPyYAML>=6  # yaml\n\nnumpy>=9\nSimpleITK\nvtk\n")


# --- supported Slicer range ------------------------------------------------------------------------


@pytest.mark.parametrize("slicer_version, python", [("5.8.1", (3, 9)), ("5.6.2", (3, 9)), ("5.10.0", (3, 9))])
def test_unsupported_slicer_gets_a_message_saying_what_to_do(slicer_version: str, python: tuple) -> None:
    message = dependencies.platform_problem(slicer_version, python)
    assert message is not None
    assert "Slicer 5.10 or newer" in message and slicer_version in message
    assert f"Python {python[0]}.{python[1]}" in message and dependencies.SLICER_DOWNLOAD_URL in message


@pytest.mark.parametrize("slicer_version", ["5.10.0", "5.10.1", "5.11.0-2025-11-02", "6.0.0"])
def test_supported_slicer_has_no_problem(slicer_version: str) -> None:
    assert dependencies.platform_problem(slicer_version, (3, 12)) is None


def test_package_metadata_docs_and_module_agree_on_the_supported_range() -> None:
    pyproject = (ROOT / "training" / "pyproject.toml").read_text(encoding="utf-8")
    minimum = ".".join(map(str, dependencies.MIN_PYTHON_VERSION))
    assert re.search(rf'^requires-python = ">={re.escape(minimum)}"$', pyproject, re.MULTILINE)
    slicer = ".".join(map(str, dependencies.MIN_SLICER_VERSION))
    docs = (ROOT / "docs" / "SLICER.md").read_text(encoding="utf-8")
    assert f"Slicer {slicer} or newer" in docs and f"Python {minimum}" in docs
    assert "5.6 or newer" not in docs
    module = (MODULE_DIR / "VerSemiSegmenter.py").read_text(encoding="utf-8")
    assert "dependencies.platform_problem(" in module


def _older_python() -> str | None:
    """A Python 3.9 (what Slicer 5.8 ships), if this machine has one."""
    for candidate in (shutil.which("python3.9"), os.path.expanduser("~/.pyenv/versions/3.9.18/bin/python3.9")):
        if candidate and os.path.isfile(candidate):
            try:
                out = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 9))"],
                                     capture_output=True, text=True, timeout=60)
            except OSError:
                continue
            if out.stdout.strip() == "True":
                return candidate
    return None


def test_module_loads_on_slicer_5_8_python_to_show_its_message() -> None:
    """On Slicer 5.8 (Python 3.9) the module must still import, to tell the user what to do."""
    python = _older_python()
    if python is None:
        pytest.skip("no Python 3.9 on this machine (pyenv 3.9.18 is used where present)")
    code = (
        "import ast, sys, importlib\n"
        f"sys.path.insert(0, {str(MODULE_DIR)!r})\n"
        f"compile(open({str(MODULE_DIR / 'VerSemiSegmenter.py')!r}, encoding='utf-8').read(), 'm', 'exec')\n"
        "import VerSemiSegmenterLib.dependencies as d, VerSemiSegmenterLib.catalogue, VerSemiSegmenterLib.panel\n"
        "import VerSemiSegmenterLib.process, VerSemiSegmenterLib.parameters, VerSemiSegmenterLib.device\n"
        "import VerSemiSegmenterLib.pipeline, VerSemiSegmenterLib.review, VerSemiSegmenterLib.selftest\n"
        "import VerSemiSegmenterLib.segmentation_import, VerSemiSegmenterLib.volume_export\n"
        "import VerSemiSegmenterLib.sampledata\n"
        "print(d.platform_problem('5.8.1'))\n"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "needs 3D Slicer 5.10 or newer" in out.stdout and "Python 3.9" in out.stdout


# --- requirements ----------------------------------------------------------------------------------


def test_requirements_parse_and_refuse_unsupported_forms() -> None:
    assert [str(r) for r in REQS] == ["torch>=2.2", "monai>=1.3", "PyYAML>=6", "numpy>=9", "SimpleITK", "vtk"]
    with pytest.raises(ValueError, match="req.txt:1"):
        dependencies.parse_requirements("monai[all]==1.3", "req.txt")


def test_module_requirements_match_the_package_dependencies() -> None:
    """versemi is installed --no-deps in Slicer: requirements.txt must bring the same floors."""
    text = (ROOT / "training" / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.MULTILINE | re.DOTALL).group(1)
    declared = {}
    for spec in re.findall(r'"([^"]+)"', block):
        match = re.match(r"([A-Za-z0-9._-]+)\s*(?:>=\s*([0-9.]+))?", spec)
        declared[dependencies.canonical_name(match.group(1))] = match.group(2)
    listed = {r.key: r.min_version for r in dependencies.read_requirements(REQUIREMENTS)}
    expected = {k: v for k, v in declared.items() if k not in dependencies.PROTECTED_PACKAGES}
    assert listed == expected


# --- plan --------------------------------------------------------------------------------------------


def _bundle(tmp_path: Path, version: str = "0.1.0") -> Path:
    training = tmp_path / "versemi-package" / "training"
    (training / "src" / "versemi").mkdir(parents=True, exist_ok=True)
    (training / "pyproject.toml").write_text(f'[project]\nname = "versemi"\nversion = "{version}"\n', encoding="utf-8")
    (tmp_path / "versemi-package" / "README.md").write_text("readme", encoding="utf-8")
    return training


@pytest.mark.parametrize("torch, needed", [(None, True), ("2.1.2+cu118", True), ("2.2.0", False), ("2.13.0+cpu", False)])
def test_torch_is_checked_against_the_minimum(tmp_path: Path, torch: str | None, needed: bool) -> None:
    versions = {"torch": torch, "monai": "1.4", "PyYAML": "6.0", "versemi": "0.1.0"}
    plan = dependencies.plan_dependencies(REQS, _bundle(tmp_path), versions.get)
    assert plan.torch is needed
    assert plan.packages == [] and plan.versemi_source is None  # numpy/SimpleITK/vtk never planned
    if needed and torch:
        assert f"replacing torch {torch}" in plan.describe() and "torch>=2.2" in plan.describe()


def test_constraints_pin_what_slicer_and_the_pytorch_extension_provide() -> None:
    versions = {"numpy": "1.26.4", "SimpleITK": "2.4.1", "simpleitk": "2.4.1", "torch": "2.5.1+cu121", "vtk": None,
                "pip": "24.0"}
    assert dependencies.constraint_lines(versions.get) == [
        "numpy==1.26.4", "pip==24.0", "simpleitk==2.4.1", "torch==2.5.1+cu121"]


# --- the install flow (commands recorded, not run) ------------------------------------------------


class FakeEnvironment:
    python_executable = "/opt/Slicer/bin/PythonSlicer"

    def __init__(self, testing: bool = False, answers: tuple[bool, ...] = (True, True, True)) -> None:
        self.testing = testing
        self.answers = list(answers)
        self.questions: list[str] = []

    def confirm(self, message: str) -> bool:
        self.questions.append(message)
        return self.answers.pop(0)

    def torch_install_args(self, requirement: str) -> list[str]:
        return ["install", requirement, "torchvision"]


class FakeCommands:
    """Starts nothing: records commands, writes the dry-run report, "installs" by editing versions."""

    def __init__(self, versions: dict, report: list[tuple[str, str]], fail: str | None = None,
                 ltt_report: list[tuple[str, str]] = (("light-the-torch", "0.8.0"),)) -> None:
        self.versions = versions
        self.report = report
        self.ltt_report = list(ltt_report)
        self.fail = fail
        self.commands: list[list[str]] = []
        self.files_seen: dict[str, str] = {}

    def __call__(self, command: list[str]):
        self.commands.append(list(command))
        failed = self.fail is not None and self.fail in " ".join(command)
        if "--dry-run" in command and not failed:
            constraints = command[command.index("-c") + 1]
            self.files_seen["constraints"] = Path(constraints).read_text(encoding="utf-8")
            listed = self.ltt_report if "light-the-torch>=0.5" in command else self.report
            report = {"version": "1", "install": [{"metadata": {"name": n, "version": v}} for n, v in listed]}
            Path(command[command.index("--report") + 1]).write_text(json.dumps(report), encoding="utf-8")
        elif "light_the_torch" in command and not failed:
            self.versions["torch"] = "2.5.1+cu121"
        elif "light-the-torch>=0.5" in command and not failed:
            self.versions["light-the-torch"] = "0.8.0"
        elif "--no-deps" in command:
            self.files_seen["versemi_project"] = command[command.index("--upgrade") + 1]
            assert Path(self.files_seen["versemi_project"], "pyproject.toml").is_file()

        class Run:
            def poll(self_inner):
                return RunResult(returncode=1 if failed else 0, stderr_tail=["ERROR: network is down"] if failed else [])

            def cancel(self_inner):
                pass

        return Run()


def _run(flow: dependencies.InstallFlow) -> dependencies.InstallResult:
    flow.start()
    for _ in range(20):
        result = flow.poll()
        if result is not None:
            return result
    raise AssertionError("the flow did not finish")


def test_first_install_asks_installs_torch_first_then_exactly_what_the_dry_run_reported(tmp_path: Path) -> None:
    versions = {"numpy": "1.26.4", "torch": None, "monai": None, "PyYAML": "6.0.1", "versemi": None,
                "light-the-torch": None, "pip": "24.0"}
    commands = FakeCommands(versions, report=[("monai", "1.4.0")])
    env = FakeEnvironment()
    flow = dependencies.InstallFlow(env, REQS, _bundle(tmp_path), versions.get, loaded_modules={"monai"},
                                    start_command=commands)
    result = _run(flow)
    assert result.succeeded, result.error
    python = env.python_executable
    kinds = [c[1:5] for c in commands.commands]
    assert kinds == [
        ["-m", "pip", "install", "--dry-run"],  # light-the-torch: what would it change? (pip pinned)
        ["-m", "pip", "install", "-c"],
        ["-m", "light_the_torch", "install", "torch>=2.2"],
        ["-m", "pip", "install", "--dry-run"],
        ["-m", "pip", "install", "-c"],
        ["-m", "pip", "install", "--no-deps"],
    ]
    assert all(c[0] == python for c in commands.commands)
    # Only what is missing (PyYAML is new enough; never numpy/SimpleITK/vtk/torch).
    assert "light-the-torch>=0.5" in commands.commands[1] and "-c" in commands.commands[1]
    assert [a for a in commands.commands[4] if ">=" in a] == ["monai>=1.3"]
    # The torch that was just installed is pinned, like Slicer's numpy and pip.
    assert commands.files_seen["constraints"].split() == ["numpy==1.26.4", "pip==24.0", "torch==2.5.1+cu121"]
    assert len(env.questions) == 2
    assert "torch>=2.2" in env.questions[0] and "PyTorch extension" in env.questions[0]
    assert "- light-the-torch 0.8.0 (new)" in env.questions[0]  # listed, not installed silently
    assert "- monai 1.4.0 (new)" in env.questions[1] and "versemi 0.1.0" in env.questions[1]
    assert result.installed == ["light-the-torch", "torch", "monai", "versemi 0.1.0"]
    assert not result.restart_needed  # monai was imported but is new, not replaced
    assert not Path(commands.files_seen["versemi_project"]).exists()  # temporary copy removed


def test_light_the_torch_that_would_change_slicers_pip_installs_nothing(tmp_path: Path) -> None:
    versions = {"numpy": "1.26.4", "torch": None, "monai": None, "versemi": None, "light-the-torch": None,
                "pip": "25.1"}
    commands = FakeCommands(versions, report=[], ltt_report=[("light-the-torch", "0.8.0"), ("pip", "24.0")])
    env = FakeEnvironment()
    result = _run(dependencies.InstallFlow(env, REQS, _bundle(tmp_path), versions.get, start_command=commands))
    assert not result.succeeded and "pip 25.1 -> 24.0" in result.error
    assert env.questions == []  # refused before asking
    assert [c[3] for c in commands.commands] == ["install"] and "--dry-run" in commands.commands[0]
    assert "pip==25.1" in commands.files_seen["constraints"].split()


def test_upgrading_an_imported_package_asks_for_a_restart(tmp_path: Path) -> None:
    versions = {"torch": "2.4.0", "monai": "1.2.0", "PyYAML": "6.0", "versemi": "0.1.0"}
    commands = FakeCommands(versions, report=[("monai", "1.4.0")])
    env = FakeEnvironment()
    result = _run(dependencies.InstallFlow(env, REQS, _bundle(tmp_path), versions.get, loaded_modules={"monai"},
                                           start_command=commands))
    assert result.succeeded and result.restart_needed and result.installed == ["monai"]
    assert "- monai 1.2.0 -> 1.4.0" in env.questions[0]


def test_a_dry_run_that_would_replace_slicer_packages_installs_nothing(tmp_path: Path) -> None:
    versions = {"torch": "2.4.0", "numpy": "1.26.4", "monai": None, "PyYAML": "6.0", "versemi": "0.1.0"}
    commands = FakeCommands(versions, report=[("monai", "1.6.1"), ("numpy", "2.3.0"), ("torch", "2.9.0")])
    env = FakeEnvironment()
    result = _run(dependencies.InstallFlow(env, REQS, _bundle(tmp_path), versions.get, start_command=commands))
    assert not result.succeeded
    assert "numpy 1.26.4 -> 2.3.0" in result.error and "torch 2.4.0 -> 2.9.0" in result.error
    assert "nothing was installed" in result.error
    assert env.questions == [] and [c for c in commands.commands if "--dry-run" not in c] == []


def test_declined_failed_and_testing_mode_install_nothing(tmp_path: Path) -> None:
    versions = {"torch": "2.4.0", "monai": None, "PyYAML": "6.0", "versemi": "0.0.9"}
    declined = FakeCommands(dict(versions), report=[("monai", "1.4.0")])
    result = _run(dependencies.InstallFlow(FakeEnvironment(answers=(False,)), REQS, _bundle(tmp_path),
                                           versions.get, start_command=declined))
    assert not result.succeeded and "monai 1.4.0" in result.error
    assert [c for c in declined.commands if "--dry-run" not in c] == []

    failing = FakeCommands(dict(versions), report=[], fail="--dry-run")
    result = _run(dependencies.InstallFlow(FakeEnvironment(), REQS, _bundle(tmp_path), versions.get,
                                           start_command=failing))
    assert not result.succeeded and "Checking what pip would install failed" in result.error
    assert "network is down" in result.error and len(failing.commands) == 1

    testing = FakeCommands(dict(versions), report=[])
    flow = dependencies.InstallFlow(FakeEnvironment(testing=True), REQS, _bundle(tmp_path), versions.get,
                                    start_command=testing)
    with pytest.raises(dependencies.DependencyError, match="testing mode installs nothing"):
        flow.start()
    assert testing.commands == []


def test_nothing_missing_finishes_at_once(tmp_path: Path) -> None:
    versions = {"torch": "2.4.0", "monai": "1.5", "PyYAML": "6.0", "versemi": "0.1.0"}
    commands = FakeCommands(versions, report=[])
    env = FakeEnvironment(testing=True)
    flow = dependencies.InstallFlow(env, REQS, _bundle(tmp_path), versions.get, start_command=commands)
    flow.start()
    assert flow.result is not None and flow.result.succeeded and commands.commands == [] and env.questions == []


# --- real pip ----------------------------------------------------------------------------------------

# A Slicer-like Python: Slicer's numpy and SimpleITK and the PyTorch extension's torch are installed
# (registered as distributions: pip resolves against their metadata; their code is not needed).
SLICER_LIKE = {"numpy": "1.26.4", "SimpleITK": "2.4.1", "torch": "2.3.1"}
_OFFLINE_SIGNS = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                  "No matching distribution found", "Could not find a version that satisfies")


def _slicer_like_python(tmp_path: Path) -> Path:
    python = os.path.expanduser("~/.pyenv/versions/3.12.1/bin/python3.12")  # Slicer >= 5.10 ships 3.12
    if not os.path.isfile(python):
        python = sys.executable
    env_dir = tmp_path / "slicer-python"
    subprocess.run([python, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    exe = next(p for p in (bindir / "python", bindir / "python.exe") if p.exists())
    site = Path(subprocess.run([str(exe), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, timeout=60).stdout.strip())
    for name, version in SLICER_LIKE.items():
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
        (info / "INSTALLER").write_text("pip\n", encoding="utf-8")
        (info / "RECORD").write_text("", encoding="utf-8")
    return exe


def _dry_run(exe: Path, requirements: list, tmp_path: Path, constraints: list[str]) -> list:
    constraints_file = tmp_path / "constraints.txt"
    constraints_file.write_text("\n".join(constraints) + "\n", encoding="utf-8")
    report = tmp_path / "report.json"
    # The same command the module runs, through this pip acting on the Slicer-like Python.
    command = dependencies.dry_run_command(sys.executable, requirements, str(constraints_file), str(report))
    command[3:3] = ["--python", str(exe)]
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # this machine's pip settings are not Slicer's
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    if out.returncode != 0 and any(sign in out.stderr for sign in _OFFLINE_SIGNS):
        pytest.skip(f"the package index cannot be reached: {out.stderr.strip().splitlines()[-1]}")
    assert out.returncode == 0, out.stderr[-3000:]
    versions = {name.lower(): v for name, v in SLICER_LIKE.items()}
    return dependencies.parse_install_report(json.loads(report.read_text(encoding="utf-8")),
                                             lambda n: versions.get(n.lower()))


@pytest.mark.slow
def test_real_pip_dry_run_against_a_slicer_like_python_changes_none_of_its_packages(tmp_path: Path) -> None:
    """The module's requirements, resolved by pip with its constraints: numpy/SimpleITK/torch stay.

    Without the constraints, the same resolution replaces torch (and numpy): the check can fail.
    """
    exe = _slicer_like_python(tmp_path)
    requirements = [r for r in dependencies.read_requirements(REQUIREMENTS) if r.key != "torch"]
    versions = {name.lower(): v for name, v in SLICER_LIKE.items()}
    constraints = dependencies.constraint_lines(lambda n: versions.get(n.lower()))
    assert constraints == ["numpy==1.26.4", "simpleitk==2.4.1", "torch==2.3.1"]
    changes = _dry_run(exe, requirements, tmp_path, constraints)
    names = {c.key for c in changes}
    assert {"monai", "scipy", "pyyaml", "tqdm", "psutil", "filelock"} <= names
    assert dependencies.protected_changes(changes) == []
    dependencies.check_no_protected_changes(changes)

    unconstrained = _dry_run(exe, [dependencies.Requirement("monai", "1.3")], tmp_path, [])
    touched = {c.key for c in dependencies.protected_changes(unconstrained)}
    assert "torch" in touched
    with pytest.raises(dependencies.DependencyError, match="nothing was installed"):
        dependencies.check_no_protected_changes(unconstrained)


def test_bundled_versemi_really_installs_offline(tmp_path: Path) -> None:
    """The module's versemi command (--no-deps --no-build-isolation, from a copy) needs no network."""
    bundle = tmp_path / "Resources" / "versemi-package"
    shutil.copytree(ROOT / "training" / "src", bundle / "training" / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "training" / "pyproject.toml", bundle / "training")
    if (ROOT / "README.md").is_file():
        shutil.copy(ROOT / "README.md", bundle)
    else:  # the README is written by the team lead; the build only needs the file to exist
        (bundle / "README.md").write_text("VerSemi\n", encoding="utf-8")
    source = dependencies.bundled_versemi_source(tmp_path / "Resources")
    assert source == bundle / "training"
    target = tmp_path / "site"
    work = tmp_path / "work"
    work.mkdir()
    project = dependencies.copy_versemi_project(source, work)
    command = dependencies.versemi_install_command(sys.executable, project)
    subprocess.run([*command, "--no-index", "--quiet", "--target", str(target)], check=True, capture_output=True,
                   timeout=300)
    # The bundle is left untouched (it may be read-only): no build folders, no egg-info.
    assert sorted(p.name for p in (bundle / "training").iterdir()) == ["pyproject.toml", "src"]
    installed = list(target.glob("versemi-*.dist-info"))
    assert installed and (target / "versemi" / "labels.py").is_file()
    assert dependencies.bundled_versemi_version(source) in installed[0].name


def test_source_checkout_is_found_when_there_is_no_bundle() -> None:
    assert dependencies.bundled_versemi_source(MODULE_DIR / "Resources") == ROOT / "training"


class _Pending:
    """A command that runs until told: poll() is None until finish() or cancel()."""

    def __init__(self, command: list[str], log: list) -> None:
        self.command, self.outcome = command, None
        log.append(self)

    def finish(self) -> None:
        self.outcome = RunResult(returncode=0)

    def poll(self):
        return self.outcome

    def cancel(self) -> None:
        self.outcome = RunResult(returncode=-9, cancelled=True)


def test_cancel_stops_a_dry_run_at_once_and_an_install_after_its_step(tmp_path: Path) -> None:
    versions = {"torch": "2.4.0", "monai": None, "versemi": None}
    runs: list[_Pending] = []

    def start(command):
        if "--dry-run" in command:
            report = {"version": "1", "install": [{"metadata": {"name": "monai", "version": "1.4.0"}}]}
            Path(command[command.index("--report") + 1]).write_text(json.dumps(report), encoding="utf-8")
        return _Pending(command, runs)

    # Cancel during the dry run (nothing changes yet): over at once, nothing installed.
    flow = dependencies.InstallFlow(FakeEnvironment(), REQS, _bundle(tmp_path), versions.get, start_command=start)
    flow.start()
    assert "--dry-run" in runs[-1].command
    assert flow.cancel() is True and flow.result.cancelled and flow.result.installed == []

    # Cancel during the pip install: pip is left to finish, versemi is not installed afterwards.
    flow = dependencies.InstallFlow(FakeEnvironment(), REQS, _bundle(tmp_path), versions.get, start_command=start)
    flow.start()
    runs[-1].finish()
    flow.poll()
    install = runs[-1]
    assert "-c" in install.command and "--dry-run" not in install.command
    assert flow.cancel() is False and "Cancelling after this step: Installing monai" in flow.status
    assert install.outcome is None  # not killed
    install.finish()
    result = flow.poll()
    assert result.cancelled and result.installed == ["monai"]
    assert not any("--no-deps" in r.command for r in runs)  # versemi never started
