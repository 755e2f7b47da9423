"""Static checks of the Slicer extension packaging (no Slicer, no CMake run needed).

What the Slicer ExtensionsIndex and the extension build rely on: the top-level CMakeLists metadata,
every module script and resource listed for installation, a 128x128 PNG icon, the catalogue entry.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "VerSemiSegmenter"
INDEX_ENTRY = ROOT / "docs" / "VerSemiSegmenter.json"
REPO_URL = "https://github.com/versemi/SlicerVerSemiSegmenter"
if str(MODULE) not in sys.path:
    sys.path.insert(0, str(MODULE))  # the module's library, as Slicer imports it

# The catalog entry schema (slicer-extension-catalog-entry-schema-v1.0.1), as far as we use it:
# required keys, allowed keys (the schema has additionalProperties: false) and their types.
ENTRY_REQUIRED = {"$schema", "category", "scm_url"}
ENTRY_TYPES = {
    "$schema": str,
    "build_dependencies": list,
    "build_subdirectory": str,
    "category": str,
    "enabled": bool,
    "scm_revision": str,
    "scm_type": str,
    "scm_url": str,
    "tier": int,
}
SCHEMA_URL_RE = re.compile(
    r"^https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/"
    r"slicer-extension-catalog-entry-schema-v1\.0\.\d+\.json#$"
)


def _strip_comment(line: str) -> str:
    """A CMake line without its ``#`` comment (a ``#`` inside a quoted argument is kept)."""
    in_quotes = False
    for i, char in enumerate(line):
        if char == '"' and (i == 0 or line[i - 1] != "\\"):
            in_quotes = not in_quotes
        elif char == "#" and not in_quotes:
            return line[:i]
    return line


def cmake_text(path: Path) -> str:
    """CMake source without comments."""
    return "\n".join(_strip_comment(line) for line in path.read_text(encoding="utf-8").splitlines())


def cmake_set(text: str, name: str) -> str | None:
    match = re.search(rf"set\(\s*{name}\s+\"([^\"]*)\"\s*\)", text)
    return match.group(1) if match else None


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    return struct.unpack(">II", data[16:24])


def test_top_level_cmake_follows_the_extension_template() -> None:
    text = cmake_text(ROOT / "CMakeLists.txt")
    assert re.search(r"^project\(VerSemiSegmenter\)", text, re.MULTILINE)
    for name in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION"):
        assert cmake_set(text, name), f"{name} not set"
    assert cmake_set(text, "EXTENSION_HOMEPAGE").startswith(REPO_URL)
    assert cmake_set(text, "EXTENSION_ICONURL") == (
        "https://raw.githubusercontent.com/versemi/SlicerVerSemiSegmenter/main/VerSemi.png"
    )
    screenshots = cmake_set(text, "EXTENSION_SCREENSHOTURLS").split()
    assert screenshots
    for url in screenshots:
        prefix = "https://raw.githubusercontent.com/versemi/SlicerVerSemiSegmenter/main/"
        assert url.startswith(prefix), url
        assert (ROOT / url[len(prefix):]).is_file(), f"screenshot {url} is not in the repository"
    assert cmake_set(text, "EXTENSION_DEPENDS") == "PyTorch"
    order = [
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "add_subdirectory(VerSemiSegmenter)",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ]
    positions = [text.find(statement) for statement in order]
    assert all(p >= 0 for p in positions), dict(zip(order, positions))
    assert positions == sorted(positions), "statements out of the template's order"


def _listed_files() -> set[str]:
    """Paths (relative to VerSemiSegmenter/) named in the module's CMakeLists files."""
    module_text = cmake_text(MODULE / "CMakeLists.txt").replace("${MODULE_NAME}", "VerSemiSegmenter")
    listed = set(re.findall(r"[\w/.-]+\.(?:py|png|ui|txt|json|csv)\b", module_text))
    for cmake in MODULE.rglob("CMakeLists.txt"):
        if cmake.parent == MODULE:
            continue
        rel_dir = cmake.parent.relative_to(MODULE)
        for name in re.findall(r"SCRIPT\s+([\w.-]+\.py)", cmake_text(cmake)):
            listed.add(str(rel_dir / name))
    return listed


def test_module_cmake_lists_every_script_and_resource() -> None:
    listed = _listed_files()
    on_disk = {
        str(p.relative_to(MODULE))
        for p in MODULE.rglob("*")
        if p.is_file() and p.name != "CMakeLists.txt" and "__pycache__" not in p.parts
    }
    assert on_disk - listed == set(), "files not installed by CMake"
    missing = {p for p in listed if p.endswith((".py", ".png", ".ui")) and not (MODULE / p).is_file()}
    assert missing == set(), "CMake lists files that do not exist"
    text = cmake_text(MODULE / "CMakeLists.txt")
    assert "slicerMacroBuildScriptedModule(" in text
    assert "WITH_GENERIC_TESTS" in text
    assert re.search(r"if\(BUILD_TESTING\).*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text, re.S)


def test_versemi_source_is_bundled_for_offline_install() -> None:
    text = cmake_text(MODULE / "CMakeLists.txt")
    for source in ("training/pyproject.toml", "training/src", "README.md", "LICENSE"):
        assert source in text, f"{source} is not bundled into the extension"
    assert "Resources/versemi-package" in text
    # The bundle mirrors the repository: pyproject.toml refers to ../README.md.


@pytest.mark.parametrize("icon", [ROOT / "VerSemi.png", MODULE / "Resources" / "Icons" / "VerSemiSegmenter.png"])
def test_icons_are_128_pixel_pngs(icon: Path) -> None:
    assert png_size(icon) == (128, 128)


def test_index_entry_is_valid() -> None:
    entry = json.loads(INDEX_ENTRY.read_text(encoding="utf-8"))
    assert ENTRY_REQUIRED <= set(entry), f"missing keys {ENTRY_REQUIRED - set(entry)}"
    assert set(entry) <= set(ENTRY_TYPES), f"keys not allowed by the schema: {set(entry) - set(ENTRY_TYPES)}"
    for key, value in entry.items():
        assert isinstance(value, ENTRY_TYPES[key]), f"{key} must be {ENTRY_TYPES[key].__name__}"
    assert SCHEMA_URL_RE.match(entry["$schema"])
    assert entry["category"] == "Segmentation"
    assert entry["scm_url"] == REPO_URL
    assert entry["build_dependencies"] == ["PyTorch"]
    assert entry["scm_revision"]
    assert entry["tier"] in range(1, 6)


def test_names_follow_index_rules() -> None:
    project = re.search(r"^project\((\w+)\)", cmake_text(ROOT / "CMakeLists.txt"), re.MULTILINE).group(1)
    assert project == INDEX_ENTRY.stem, "project() name must equal the index entry's file name"
    assert not project.startswith("Slicer"), "an extension name must not start with 'Slicer'"
    assert REPO_URL.rsplit("/", 1)[1].startswith("Slicer"), "the repository name should start with 'Slicer'"


def test_license_at_repository_root() -> None:
    license_file = ROOT / "LICENSE"
    assert license_file.is_file(), "the ExtensionsIndex requires a LICENSE file at the repository root"
    assert license_file.stat().st_size > 0


def test_ui_file_names_the_bound_parameters() -> None:
    """Widgets bound by parameterNodeWrapper (SlicerParameterName) match the parameter node fields."""
    ui = (MODULE / "Resources" / "UI" / "VerSemiSegmenter.ui").read_text(encoding="utf-8")
    bound = set(re.findall(r'SlicerParameterName" stdset="0">\s*<string>(\w+)</string>', ui))
    module = (MODULE / "VerSemiSegmenter.py").read_text(encoding="utf-8")
    wrapper = module.split("class VerSemiSegmenterParameterNode", 1)[1].split("\ndef ", 1)[0]
    fields = set(re.findall(r"^    (\w+):", wrapper, re.MULTILINE))
    assert bound and bound <= fields, f"bound {bound} not in the parameter node fields {fields}"


# A stand-in for a Slicer build tree: the variables and macros the extension's CMake code uses, with
# checks (files exist, metadata set). Configuring and installing against it runs the real CMake files.
STUB_SLICER_CONFIG = """
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/GenerateConfig.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.8/qt-scripted-modules)
"""
STUB_USE_SLICER = """
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(_M "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(NOT _M_WITH_GENERIC_TESTS)
    message(FATAL_ERROR "WITH_GENERIC_TESTS missing")
  endif()
  foreach(_f ${_M_SCRIPTS} ${_M_RESOURCES})
    if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${_f})
      message(FATAL_ERROR "listed file does not exist: ${_f}")
    endif()
    get_filename_component(_d ${_f} DIRECTORY)
    install(FILES ${_f} DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/${_d})
  endforeach()
endmacro()
function(slicer_add_python_unittest)
  cmake_parse_arguments(_T "" "SCRIPT" "" ${ARGN})
  if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${_T_SCRIPT})
    message(FATAL_ERROR "test script does not exist: ${_T_SCRIPT}")
  endif()
  file(APPEND ${CMAKE_BINARY_DIR}/python_tests.txt "${_T_SCRIPT}\\n")
endfunction()
"""
STUB_GENERATE_CONFIG = """
foreach(_v HOMEPAGE CONTRIBUTORS DESCRIPTION ICONURL SCREENSHOTURLS DEPENDS)
  if(NOT EXTENSION_${_v})
    message(FATAL_ERROR "EXTENSION_${_v} is not set")
  endif()
endforeach()
"""


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_cmake_configures_and_installs_against_a_stub_slicer(tmp_path: Path) -> None:
    stub = tmp_path / "Slicer-build"
    stub.mkdir()
    (stub / "SlicerConfig.cmake").write_text(STUB_SLICER_CONFIG, encoding="utf-8")
    (stub / "UseSlicer.cmake").write_text(STUB_USE_SLICER, encoding="utf-8")
    (stub / "GenerateConfig.cmake").write_text(STUB_GENERATE_CONFIG, encoding="utf-8")
    (stub / "Empty.cmake").write_text("", encoding="utf-8")
    build, prefix = tmp_path / "build", tmp_path / "install"
    configure = subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={stub}", "-DBUILD_TESTING=ON"],
        capture_output=True, text=True, timeout=120,
    )
    assert configure.returncode == 0, configure.stdout[-3000:] + configure.stderr[-3000:]
    tests = (build / "python_tests.txt").read_text(encoding="utf-8").split()
    assert tests == ["VerSemiSegmenter.py", "VerSemiSegmenterLibTest.py"]
    install = subprocess.run(["cmake", "--install", str(build), "--prefix", str(prefix)],
                             capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr[-3000:]
    modules = prefix / "lib" / "Slicer-5.8" / "qt-scripted-modules"
    assert (modules / "VerSemiSegmenter.py").is_file()
    assert (modules / "VerSemiSegmenterLib" / "pipeline.py").is_file()
    assert (modules / "Resources" / "UI" / "VerSemiSegmenter.ui").is_file()
    package = modules / "Resources" / "versemi-package" / "training"
    assert (package / "pyproject.toml").is_file()
    assert (package / "src" / "versemi" / "cli" / "predict.py").is_file()
    assert not list(package.rglob("__pycache__")), "compiled caches must not be shipped"
    # Sample data (Sample Data module) and its thumbnails are installed with the module.
    from VerSemiSegmenterLib import sampledata

    for sample in sampledata.SAMPLES:
        assert (modules / "Resources" / "SampleData" / sample.path).is_file(), sample.path
        assert (modules / "Resources" / "Icons" / "SampleData" / sample.thumbnail).is_file()
    assert (modules / "Resources" / "SampleData" / "README.md").is_file()  # licence and attribution
    assert sampledata.data_root(modules / "Resources") == modules / "Resources" / "SampleData"
    # The build tree gets the same bundle, for running Slicer from the build folder.
    assert (build / "lib" / "Slicer-5.8" / "qt-scripted-modules" / "Resources" / "versemi-package" / "training"
            / "src" / "versemi" / "labels.py").is_file()


# --- what the ExtensionsIndex reviewer looks at: screenshot, icon, sample data, homepage ----------------


def test_screenshot_is_a_small_real_render_not_a_mock_up() -> None:
    text = cmake_text(ROOT / "CMakeLists.txt")
    prefix = "https://raw.githubusercontent.com/versemi/SlicerVerSemiSegmenter/main/"
    for url in cmake_set(text, "EXTENSION_SCREENSHOTURLS").split():
        path = ROOT / url[len(prefix):]
        width, height = png_size(path)
        assert 600 <= width <= 1600 and 300 <= height <= 1000, (width, height)
        assert path.stat().st_size < 400_000, "keep the screenshot small (the index shows it as is)"
    docs = (ROOT / "docs" / "SLICER.md").read_text(encoding="utf-8")
    assert "](screenshot.png)" in docs
    assert "mock-up" not in docs.lower() and "mockup" not in docs.lower()
    assert (ROOT / "docs" / "render_screenshot.py").is_file(), "the screenshot must be reproducible"


def test_homepage_has_an_image_and_the_paper_link() -> None:
    homepage = cmake_set(cmake_text(ROOT / "CMakeLists.txt"), "EXTENSION_HOMEPAGE")
    assert homepage == f"{REPO_URL}/blob/main/docs/SLICER.md"
    page = (ROOT / "docs" / "SLICER.md").read_text(encoding="utf-8")
    assert re.search(r"!\[[^\]]+\]\(screenshot\.png\)", page)
    assert "https://arxiv.org/abs/2311.11686" in page


def test_sample_data_is_bundled_listed_and_has_thumbnails() -> None:
    from VerSemiSegmenterLib import sampledata

    module_text = cmake_text(MODULE / "CMakeLists.txt")
    block = re.search(r"set\(_sample_files(.*?)\)", module_text, re.S).group(1).split()
    assert set(block) == {s.path for s in sampledata.SAMPLES} | {"README.md"}
    listed = _listed_files()
    for sample in sampledata.SAMPLES:
        assert (ROOT / "examples" / "data" / sample.path).is_file()
        thumbnail = f"Resources/Icons/SampleData/{sample.thumbnail}"
        assert thumbnail in listed, f"{thumbnail} not installed by CMake"
        assert png_size(MODULE / thumbnail) == (128, 128)
    sources = sampledata.sample_sources(MODULE / "Resources")  # from the checkout: examples/data
    assert [s["sampleName"] for s in sources] == [s.name for s in sampledata.SAMPLES]
    for source, sample in zip(sources, sampledata.SAMPLES):
        assert source["uris"] == [(ROOT / "examples" / "data" / sample.path).resolve().as_uri()]
        assert source["checksums"][0] == "SHA256:" + sampledata.sha256_of(ROOT / "examples" / "data" / sample.path)
        assert Path(source["thumbnailFileName"]).is_file()
        assert source["fileNames"] == [sample.file_name] and source["nodeNames"] == [sample.node_name]
