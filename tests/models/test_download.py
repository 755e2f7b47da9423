"""Downloads over a real HTTP server on 127.0.0.1: verification, resume with Range, offline import.

The test server serves a temp folder, implements ``Range: bytes=N-`` (206 + Content-Range), can
ignore Range (plain 200), and can drop the connection after N body bytes to simulate a broken
transfer. It logs every request so tests can assert what was actually sent over the wire.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import torch

from versemi.data.plans import Plans
from versemi.data.preprocessing import PreprocessingSpec

from versemi.checkpoint import CheckpointError, save_checkpoint
from versemi.labels import LabelSpace
from versemi.cli import main as cli_main
from versemi.models import (
    CatalogueEntry,
    ChecksumError,
    DownloadError,
    IncompatibleModelError,
    ModelError,
    ModelNotInstalledError,
    catalogue_document,
    download_model,
    import_model,
    installed_for_path,
    load_catalogue,
    read_manifest,
    resolve_model,
    verify_all,
    verify_model,
)
from versemi.models.catalogue import Catalogue

# --- a real HTTP server with Range support --------------------------------------------------------


class _RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_TestServer"

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        srv = self.server
        path = srv.root / self.path.lstrip("/")
        range_header = self.headers.get("Range")
        entry = {"path": self.path, "range": range_header, "status": 0, "sent": 0}
        srv.requests.append(entry)
        if not path.is_file():
            entry["status"] = 404
            self._reply(404, b"not found")
            return
        data = path.read_bytes()
        start, end, status = 0, len(data) - 1, 200
        if range_header and not srv.ignore_range:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if not match or int(match.group(1)) >= len(data):
                entry["status"] = 416
                self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            start = int(match.group(1))
            end = min(int(match.group(2)), len(data) - 1) if match.group(2) else len(data) - 1
            status = 206
        body = data[start : end + 1]
        headers = {"Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        drop, srv.drop_after = srv.drop_after, None  # one broken transfer, then normal again
        entry["status"] = status
        if drop is None:
            entry["sent"] = len(body)
            self._reply(status, body, headers)
            return
        # Announce the full length, send only `drop` bytes, then cut the connection.
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:drop])
        self.wfile.flush()
        entry["sent"] = min(drop, len(body))
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet test output
        pass


class _TestServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.root = root
        self.requests: list[dict] = []
        self.ignore_range = False
        self.drop_after: int | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_TestServer]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "served"
    root.mkdir()
    srv = _TestServer(root)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


# --- fixtures: a small real checkpoint and its catalogue entry ------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    # the default location must never be touched by tests
    monkeypatch.setenv("VERSEMI_MODELS_DIR", str(tmp_path / "default-cache-not-used"))
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(tmp_path / "no-default-catalogue.json"))
    return path


def _inference_checkpoint(path: Path) -> Path:
    payload = {
        "model_config": {"backbone": "tiny"},
        # A valid label space (import reads it as predict does); the weights need not fit a network.
        "label_space": LabelSpace.from_dataset_labels({"Dataset901_Alpha": {"labels": {"background": 0, "organ_a": 1}}}).to_dict(),
        "plans": Plans.single(PreprocessingSpec(target_spacing=(1.0, 1.0, 1.0)), (16, 16, 16), ["Dataset901_Alpha"]).to_dict(),
        "model": {"weight": torch.linspace(-1, 1, 4096)},
    }
    return save_checkpoint(payload, path)


@pytest.fixture
def model_file(server: _TestServer) -> Path:
    return _inference_checkpoint(server.root / "tiny.pt")


def _entry_for(path: Path, url: str, **overrides) -> CatalogueEntry:
    data = path.read_bytes()
    fields = {
        "name": "tiny",
        "version": "1.0",
        "url": url,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "label_space": ("organ_a", "all_foreground"),
        "licence": "CC0-1.0",
        "description": "test model",
    }
    fields.update(overrides)
    return CatalogueEntry(**fields)


@pytest.fixture
def entry(server: _TestServer, model_file: Path) -> CatalogueEntry:
    return _entry_for(model_file, server.url("tiny.pt"))


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) if cache.exists() else []


# --- downloads ------------------------------------------------------------------------------------


def test_download_success_and_resolve(server: _TestServer, entry: CatalogueEntry, cache: Path, model_file: Path) -> None:
    progress: list[tuple[int, int]] = []
    path = download_model(entry, cache, lambda done, total: progress.append((done, total)))
    assert path == cache / "tiny-1.0.pt"
    assert path.read_bytes() == model_file.read_bytes()
    assert _cache_files(cache) == ["installed.json", "tiny-1.0.pt"]
    assert progress[-1] == (entry.size, entry.size)
    assert [r["range"] for r in server.requests] == [None]
    (record,) = read_manifest(cache)
    assert (record.spec, record.sha256, record.source) == ("tiny@1.0", entry.sha256, "catalogue")
    catalogue = Catalogue([entry])
    assert resolve_model("tiny", catalogue, cache) == path
    assert resolve_model("tiny@1.0", catalogue, cache) == path
    assert installed_for_path(path, cache) == record
    # installed and verified: a second call does not touch the network
    assert download_model(entry, cache) == path
    assert len(server.requests) == 1
    # the manifest alone (no catalogue, e.g. offline) still verifies and resolves it
    assert resolve_model("tiny", Catalogue([]), cache) == path


def test_tampered_file_is_rejected_and_nothing_is_installed(
    server: _TestServer, entry: CatalogueEntry, cache: Path, model_file: Path
) -> None:
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    model_file.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as info:
        download_model(entry, cache)
    message = str(info.value)
    assert entry.sha256 in message and hashlib.sha256(data).hexdigest() in message
    assert _cache_files(cache) == []  # no .part, no model, no manifest
    with pytest.raises(ModelNotInstalledError):
        resolve_model("tiny", Catalogue([entry]), cache)


def test_interrupted_transfer_resumes_with_range(
    server: _TestServer, entry: CatalogueEntry, cache: Path, model_file: Path
) -> None:
    server.drop_after = 5000
    with pytest.raises(DownloadError, match="interrupted after 5000 of"):
        download_model(entry, cache)
    assert _cache_files(cache) == ["tiny-1.0.pt.part"]
    assert (cache / "tiny-1.0.pt.part").stat().st_size == 5000
    with pytest.raises(ModelNotInstalledError):
        resolve_model("tiny", Catalogue([entry]), cache)

    progress: list[int] = []
    path = download_model(entry, cache, lambda done, total: progress.append(done))
    last = server.requests[-1]
    assert last["range"] == "bytes=5000-" and last["status"] == 206
    assert last["sent"] == entry.size - 5000  # only the remainder crossed the wire
    assert progress[0] > 5000 and progress[-1] == entry.size
    assert path.read_bytes() == model_file.read_bytes()
    assert _cache_files(cache) == ["installed.json", "tiny-1.0.pt"]
    assert verify_model("tiny", Catalogue([entry]), cache).ok


def test_server_ignoring_range_restarts_from_zero(
    server: _TestServer, entry: CatalogueEntry, cache: Path, model_file: Path
) -> None:
    server.drop_after = 3000
    with pytest.raises(DownloadError):
        download_model(entry, cache)
    server.ignore_range = True
    path = download_model(entry, cache)
    last = server.requests[-1]
    assert last["range"] == "bytes=3000-" and last["status"] == 200 and last["sent"] == entry.size
    assert path.read_bytes() == model_file.read_bytes()


def test_stale_part_with_wrong_bytes_fails_then_recovers(
    server: _TestServer, entry: CatalogueEntry, cache: Path, model_file: Path
) -> None:
    cache.mkdir(parents=True)
    (cache / "tiny-1.0.pt.part").write_bytes(b"\0" * 4000)  # e.g. left from another file
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        download_model(entry, cache)
    assert _cache_files(cache) == []  # the bad part file is gone
    assert download_model(entry, cache).read_bytes() == model_file.read_bytes()


def test_part_longer_than_file_and_complete_part(
    server: _TestServer, entry: CatalogueEntry, cache: Path, model_file: Path
) -> None:
    cache.mkdir(parents=True)
    part = cache / "tiny-1.0.pt.part"
    part.write_bytes(model_file.read_bytes() + b"extra")
    assert download_model(entry, cache).is_file()  # restarted from zero
    assert server.requests[-1]["range"] is None
    (cache / "tiny-1.0.pt").unlink()
    part.write_bytes(model_file.read_bytes())  # complete part from a run killed before the rename
    n = len(server.requests)
    assert download_model(entry, cache).read_bytes() == model_file.read_bytes()
    assert len(server.requests) == n  # verified from disk, no transfer


def test_damaged_installed_file_is_replaced(server: _TestServer, entry: CatalogueEntry, cache: Path) -> None:
    path = download_model(entry, cache)
    path.write_bytes(b"garbage")
    result = verify_model("tiny", Catalogue([entry]), cache)
    assert not result.ok and entry.sha256 in result.message
    with pytest.raises(ModelNotInstalledError, match="damaged"):
        resolve_model("tiny", Catalogue([entry]), cache)
    assert download_model(entry, cache) == path
    assert verify_model("tiny", Catalogue([entry]), cache).ok


def test_size_mismatch_and_http_errors(server: _TestServer, entry: CatalogueEntry, cache: Path) -> None:
    wrong_size = CatalogueEntry(**{**entry.__dict__, "size": entry.size + 10})
    with pytest.raises(ChecksumError, match=f"server file has {entry.size} bytes"):
        download_model(wrong_size, cache)
    missing = CatalogueEntry(**{**entry.__dict__, "url": server.url("missing.pt")})
    with pytest.raises(DownloadError, match=r"missing\.pt: HTTP 404"):
        download_model(missing, cache)
    unreachable = CatalogueEntry(**{**entry.__dict__, "url": "http://127.0.0.1:9/tiny.pt"})
    with pytest.raises(DownloadError, match="cannot connect"):
        download_model(unreachable, cache, timeout=5)
    too_new = CatalogueEntry(**{**entry.__dict__, "min_versemi": "999.0"})
    with pytest.raises(IncompatibleModelError, match="needs versemi >= 999.0"):
        download_model(too_new, cache)
    assert _cache_files(cache) == []


def test_catalogue_served_over_http_with_relative_url(
    server: _TestServer, entry: CatalogueEntry, cache: Path, model_file: Path
) -> None:
    relative = CatalogueEntry(**{**entry.__dict__, "url": "tiny.pt"})
    doc = catalogue_document([relative])
    (server.root / "catalogue.json").write_text(json.dumps(doc))
    catalogue = load_catalogue(server.url("catalogue.json"))
    assert catalogue.get("tiny").url == server.url("tiny.pt")
    assert download_model(catalogue.get("tiny"), cache).read_bytes() == model_file.read_bytes()
    # a local mirror folder works too (file:// URLs; no Range there)
    mirror = load_catalogue(server.root / "catalogue.json")
    assert mirror.get("tiny").url.startswith("file://")
    path = download_model(mirror.get("tiny"), cache, force=True)
    assert path.read_bytes() == model_file.read_bytes()


# --- offline import -------------------------------------------------------------------------------


def test_import_catalogue_model_right_and_wrong_hash(entry: CatalogueEntry, cache: Path, model_file: Path, tmp_path: Path) -> None:
    catalogue = Catalogue([entry])
    bad = tmp_path / "bad.pt"
    data = model_file.read_bytes()
    bad.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(ChecksumError) as info:
        import_model(bad, name="tiny", catalogue=catalogue, cache_dir=cache)
    assert entry.sha256 in str(info.value) and str(bad) in str(info.value)
    assert _cache_files(cache) == [] and not list(cache.glob(".import-*"))

    record = import_model(model_file, name="tiny", catalogue=catalogue, cache_dir=cache)
    assert (record.spec, record.source) == ("tiny@1.0", "catalogue")
    assert resolve_model("tiny", catalogue, cache).read_bytes() == model_file.read_bytes()


def test_import_recognises_catalogue_file_by_hash(entry: CatalogueEntry, cache: Path, model_file: Path) -> None:
    record = import_model(model_file, catalogue=Catalogue([entry]), cache_dir=cache)
    assert (record.spec, record.source) == ("tiny@1.0", "catalogue")


def test_import_local_checkpoint_records_hash(cache: Path, tmp_path: Path) -> None:
    source = _inference_checkpoint(tmp_path / "my model.pt")
    record = import_model(source, catalogue=Catalogue([]), cache_dir=cache)
    assert (record.name, record.version, record.source) == ("my_model", "local", "local")
    assert record.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record.label_space == ["organ_a", "all_foreground"]
    assert read_manifest(cache) == [record]
    path = resolve_model("my_model", Catalogue([]), cache)
    assert path == cache / "my_model-local.pt"

    named = import_model(source, name="mine", version="2", catalogue=Catalogue([]), cache_dir=cache)
    assert resolve_model("mine", Catalogue([]), cache) == cache / named.file
    assert [r.ok for r in verify_all(Catalogue([]), cache)] == [True, True]

    path.write_bytes(path.read_bytes()[:-4])  # damage after install
    assert not verify_model("my_model", Catalogue([]), cache).ok
    with pytest.raises(ModelNotInstalledError):
        resolve_model("my_model", Catalogue([]), cache)


def test_import_rejects_non_checkpoints(cache: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match=str(junk)):
        import_model(junk, catalogue=Catalogue([]), cache_dir=cache)
    training_only = save_checkpoint({"model": {"w": torch.zeros(3)}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="needed for prediction"):
        import_model(training_only, catalogue=Catalogue([]), cache_dir=cache)
    with pytest.raises(ModelError, match="file not found"):
        import_model(tmp_path / "absent.pt", catalogue=Catalogue([]), cache_dir=cache)
    assert _cache_files(cache) == []


def test_resolve_paths_as_given(tmp_path: Path, cache: Path) -> None:
    file = tmp_path / "some.pt"
    file.write_bytes(b"x")
    assert resolve_model(str(file), Catalogue([]), cache) == file
    assert resolve_model(file, Catalogue([]), cache) == file
    with pytest.raises(ModelError, match="model file not found"):
        resolve_model(str(tmp_path / "missing.pt"), Catalogue([]), cache)
    with pytest.raises(ModelNotInstalledError, match="versemi models import"):
        resolve_model("nothing", Catalogue([]), cache)


# --- the command line -----------------------------------------------------------------------------


def test_cli_download_list_path_verify(
    server: _TestServer, entry: CatalogueEntry, cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    catalogue_path = tmp_path / "catalogue.json"
    catalogue_path.write_text(json.dumps(catalogue_document([entry])))
    common = ["--catalogue", str(catalogue_path), "--models-dir", str(cache)]

    assert cli_main(["models", "list", "--json", *common]) == 0
    (row,) = json.loads(capsys.readouterr().out)["models"]
    assert row["status"] == "not installed"

    assert cli_main(["models", "download", "tiny", "--progress", "json", *common]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    fractions = [line["fraction"] for line in lines if line["type"] == "progress"]
    assert all(line.get("stage") == "download" for line in lines[:-1])
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert lines[-1] == {"type": "done", "output": str(cache / "tiny-1.0.pt"), "sha256": entry.sha256}

    assert cli_main(["models", "list", "--verify", "--json", *common]) == 0
    (row,) = json.loads(capsys.readouterr().out)["models"]
    assert row["status"] == "verified" and row["path"] == str(cache / "tiny-1.0.pt")
    assert cli_main(["models", "list", *common]) == 0
    assert "tiny@1.0" in capsys.readouterr().out

    assert cli_main(["models", "path", "tiny", *common]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "tiny-1.0.pt")
    assert cli_main(["models", "verify", *common]) == 0

    (cache / "tiny-1.0.pt").write_bytes(b"broken")
    assert cli_main(["models", "verify", "tiny", *common]) == 1
    assert "damaged" in capsys.readouterr().err
    assert cli_main(["models", "path", "tiny", *common]) == 2


def test_cli_errors_are_one_line(
    server: _TestServer, entry: CatalogueEntry, cache: Path, tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture
) -> None:
    tampered = CatalogueEntry(**{**entry.__dict__, "sha256": "0" * 64})
    catalogue_path = tmp_path / "catalogue.json"
    catalogue_path.write_text(json.dumps(catalogue_document([tampered])))
    common = ["--catalogue", str(catalogue_path), "--models-dir", str(cache)]

    assert cli_main(["models", "download", "tiny", "--progress", "json", *common]) == 2
    captured = capsys.readouterr()
    error = json.loads(captured.out.splitlines()[-1])
    assert error["type"] == "error" and "0" * 64 in error["message"]
    assert "SHA-256 mismatch" in captured.err and "Traceback" not in captured.err
    assert _cache_files(cache) == []

    assert cli_main(["models", "download", "unknown", *common]) == 2
    assert "not in the catalogue" in capsys.readouterr().err
    assert cli_main(["models", "import", str(model_file), "--name", "tiny", *common]) == 2
    assert "does not match catalogue entry tiny@1.0" in capsys.readouterr().err

    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert cli_main(["models", "list", "--catalogue", str(broken), "--models-dir", str(cache)]) == 2
    assert str(broken) in capsys.readouterr().err


def test_cli_offline_catalogue_falls_back_to_manifest(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = _inference_checkpoint(tmp_path / "local.pt")
    offline = ["--catalogue", "http://127.0.0.1:9/catalogue.json", "--models-dir", str(cache)]
    assert cli_main(["models", "import", str(source), "--name", "site-model", "--version", "3", *offline]) == 0
    assert "warning" in capsys.readouterr().err
    assert cli_main(["models", "path", "site-model", *offline]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "site-model-3.pt")
    assert cli_main(["models", "download", "site-model", *offline]) == 2
    assert "cannot fetch" in capsys.readouterr().err


def test_cli_entry_for_publishing(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = _inference_checkpoint(tmp_path / "release.pt")
    args = ["models", "entry", str(source), "--name", "tiny", "--version", "2.0", "--url", "release.pt",
            "--licence", "CC-BY-4.0", "--description", "demo"]
    assert cli_main(args) == 0
    raw = json.loads(capsys.readouterr().out)
    assert raw["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert raw["size"] == source.stat().st_size and raw["label_space"] == ["organ_a", "all_foreground"]
    # the printed entry, put in a catalogue beside the file, downloads and verifies
    (tmp_path / "catalogue.json").write_text(json.dumps(catalogue_document([]) | {"models": [raw]}))
    catalogue = load_catalogue(tmp_path / "catalogue.json")
    assert download_model(catalogue.get("tiny@2.0"), cache).read_bytes() == source.read_bytes()


def test_concurrent_downloads_of_one_model_do_not_collide(
    server: _TestServer, entry: CatalogueEntry, cache: Path, model_file: Path
) -> None:
    results: list[object] = []

    def fetch() -> None:
        try:
            results.append(download_model(entry, cache))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [cache / "tiny-1.0.pt"] * 3
    assert len(server.requests) == 1  # the others waited on the lock, then found it verified
    assert (cache / "tiny-1.0.pt").read_bytes() == model_file.read_bytes()


def test_installed_plain_checkpoint_is_verified_by_its_recorded_hash_on_every_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint written without an embedded checksum (plain torch.save) and installed: loading the
    cached file, even by path, checks it against installed.json, so damage is found and no warning."""
    import warnings

    from inference.helpers import tiny_payload
    from versemi.checkpoint import FORMAT, FORMAT_VERSION, CheckpointError, CheckpointIntegrityWarning
    from versemi.inference import Predictor

    cache = tmp_path / "models"
    monkeypatch.setenv("VERSEMI_MODELS_DIR", str(cache))
    plain = tmp_path / "plain.pt"
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **tiny_payload()}, plain)
    record = import_model(plain, name="plain", catalogue=Catalogue([]))
    installed = cache / record.file
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointIntegrityWarning)
        Predictor(installed, device="cpu")
    with pytest.warns(CheckpointIntegrityWarning):
        Predictor(plain, device="cpu")  # the same bytes outside the cache: nothing to check against
    data = bytearray(installed.read_bytes())
    data[len(data) // 2] ^= 0x01
    installed.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the recorded"):
        Predictor(installed, device="cpu")
