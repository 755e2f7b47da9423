"""``versemi models``: list, download, import, verify and locate trained models.

::

    versemi models list [--verify] [--json]
    versemi models download NAME[@VERSION] [--force] [--progress auto|tqdm|json|none]
    versemi models import FILE [--name NAME] [--version VERSION]
    versemi models verify [NAME[@VERSION]]
    versemi models info|path|remove NAME[@VERSION]
    versemi models entry FILE --name N --version V --url URL --licence L   (publishing helper)

Every action takes ``--catalogue FILE|URL`` and ``--models-dir DIR`` (docs/MODELS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from versemi.cli import CliError

COMMAND = "models"
HELP = "list, download (verified, resumable), import offline, verify and locate trained models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--catalogue",
        metavar="FILE|URL",
        default=None,
        help="model catalogue (JSON); default: $VERSEMI_CATALOGUE, else the catalogue shipped with versemi",
    )
    common.add_argument(
        "--models-dir",
        metavar="DIR",
        default=None,
        help="model cache folder; default: $VERSEMI_MODELS_DIR, else the user cache (~/.cache/versemi/models)",
    )
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION")
    actions.required = True

    p = actions.add_parser("list", parents=[common], help="catalogue entries and installed models")
    p.add_argument("--verify", action="store_true", help="re-hash installed files (slower)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")

    p = actions.add_parser("download", parents=[common], help="download a model, verify its SHA-256, install it")
    p.add_argument("model", metavar="NAME[@VERSION]")
    p.add_argument("--force", action="store_true", help="download again even if a verified copy is installed")
    p.add_argument(
        "--progress",
        choices=["auto", "tqdm", "json", "none"],
        default="auto",
        help="progress display: tqdm bar on stderr, JSON lines on stdout, or none (auto: bar on a terminal)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")

    p = actions.add_parser("import", parents=[common], help="install a checkpoint file obtained elsewhere (offline)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", default=None, help="model name (a catalogue name: the file must match its SHA-256)")
    p.add_argument("--version", default=None, help="model version (default: newest catalogue version, or 'local')")

    p = actions.add_parser("verify", parents=[common], help="re-hash installed models against catalogue/manifest")
    p.add_argument("model", metavar="NAME[@VERSION]", nargs="?", default=None, help="default: every installed model")

    p = actions.add_parser("info", parents=[common], help="print a model's card (markdown) and its catalogue entry")
    p.add_argument("model", metavar="NAME[@VERSION]", help="default version: the newest listed or installed one")

    p = actions.add_parser("path", parents=[common], help="print the verified local path of an installed model")
    p.add_argument("model", metavar="NAME[@VERSION]")

    p = actions.add_parser("remove", parents=[common], help="delete an installed model from the model cache")
    p.add_argument("model", metavar="NAME[@VERSION]", help="default version: the newest installed one")

    p = actions.add_parser("entry", help="print the catalogue entry (JSON) for a checkpoint you publish")
    p.add_argument("file", metavar="FILE", help="the checkpoint, exactly as it will be uploaded")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--url", required=True, help="where the file will be downloadable (absolute, or relative to the catalogue)")
    p.add_argument("--licence", required=True, help="licence of the weights, e.g. CC-BY-4.0")
    p.add_argument("--description", default="")
    p.add_argument("--min-versemi", default=None, help="oldest versemi release that can use the model")
    p.add_argument("--embedded", metavar="PATH", default=None,
                   help="the file's path relative to the catalogue's folder when it ships with the catalogue "
                        "(packaged catalogue: relative to versemi/resources/, e.g. models/NAME-VERSION.pt)")
    p.add_argument("--card", metavar="PATH", default=None,
                   help="the model card (markdown), relative to the catalogue's folder like --embedded")
    p.add_argument("--default", action="store_true",
                   help="mark it as the default model (used by `versemi predict` without --model)")
    p.add_argument("--heldout", metavar="DATASET=CASE,CASE", action="append", default=[],
                   help="cases of DATASET the model never trained on (repeat per dataset); `versemi demo` "
                        "marks the other bundled cases as trained on")


def run(args: argparse.Namespace) -> int:
    from versemi.checkpoint import CheckpointError
    from versemi.models import ModelError

    action = {
        "list": _list,
        "download": _download,
        "import": _import,
        "verify": _verify,
        "info": _info,
        "path": _path,
        "remove": _remove,
        "entry": _entry,
    }[args.models_action]
    json_progress = getattr(args, "progress", None) == "json"
    try:
        return action(args)
    except (ModelError, CheckpointError) as exc:
        if json_progress:
            _emit({"type": "error", "message": str(exc)})
        raise CliError(str(exc)) from exc
    except OSError as exc:
        if json_progress:
            _emit({"type": "error", "message": str(exc)})
        raise CliError(f"{getattr(exc, 'filename', None) or 'models'}: {exc.strerror or exc}") from exc


# --- helpers -------------------------------------------------------------------------------------


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def _catalogue(args: argparse.Namespace, required: bool):
    """Load the catalogue; for actions that can work from the manifest, tolerate an offline one."""
    from versemi.models import catalogue_or_empty, load_catalogue

    if required:
        return load_catalogue(args.catalogue)
    catalogue, problem = catalogue_or_empty(args.catalogue)
    if problem:
        print(f"versemi models: warning: {problem}; using installed models only", file=sys.stderr)
    return catalogue


def _progress(mode: str, description: str) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A ``(done, total)`` callback for ``mode`` and a function that closes it."""
    if mode == "auto":
        mode = "tqdm" if sys.stderr.isatty() else "none"
    if mode == "json":
        last = [-1.0]

        def report(done: int, total: int) -> None:
            fraction = done / total if total else 1.0
            # At most ~200 lines per download: readers only need a smooth bar.
            if fraction - last[0] >= 0.005 or done >= total:
                last[0] = fraction
                _emit(
                    {
                        "type": "progress",
                        "stage": "download",
                        "fraction": round(fraction, 4),
                        "message": f"{description}: {done}/{total} bytes",
                    }
                )

        return report, lambda: None
    if mode == "tqdm":
        from tqdm import tqdm

        bar: list[Any] = []

        def report(done: int, total: int) -> None:
            if not bar:
                bar.append(
                    tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=description, file=sys.stderr)
                )
            else:
                bar[0].update(done - bar[0].n)

        return report, lambda: bar[0].close() if bar else None
    return None, lambda: None


def _human_size(size: int) -> str:
    from versemi.data.memory import format_bytes  # the one byte formatter

    return format_bytes(size)


# --- actions -------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    from versemi.models import entry_file, models_dir, read_manifest, verify_model

    catalogue = _catalogue(args, required=False)
    cache = models_dir(args.models_dir)
    manifest = {m.spec: m for m in read_manifest(cache)}
    rows: list[dict[str, Any]] = []

    def status(spec: str, file_present: bool, cheap_ok: bool) -> str:
        if not file_present:
            return "not installed"
        if not args.verify:
            return "installed" if cheap_ok else "unverified"
        return "verified" if verify_model(spec, catalogue, cache).ok else "DAMAGED"

    for entry in catalogue:
        path = entry_file(entry, cache)
        record = manifest.get(entry.spec)
        present = path.is_file()
        embedded = present and path == entry.embedded_path
        # Without re-hashing: trust the manifest's record of a verified install of this exact hash
        # (an embedded file has no record: its size, as shipped).
        trusted = embedded or (record is not None and record.sha256 == entry.sha256)
        cheap_ok = present and trusted and path.stat().st_size == entry.size
        state = status(entry.spec, present, cheap_ok)
        rows.append(
            {
                **entry.to_dict(),
                "source": "catalogue",
                "status": state,
                "embedded": embedded,
                "supported": entry.is_supported(),
                "default": entry.default,
                "path": str(path) if present else None,
            }
        )
    for spec, record in manifest.items():
        if catalogue.find(record.name, record.version) is not None:
            continue
        path = cache / record.file
        present = path.is_file()
        rows.append(
            {
                "name": record.name,
                "version": record.version,
                "sha256": record.sha256,
                "size": record.size,
                "label_space": record.label_space,
                "source": record.source,
                "origin": record.origin,
                "status": status(spec, present, present and path.stat().st_size == record.size),
                "path": str(path) if present else None,
            }
        )

    if args.json:
        print(json.dumps({"catalogue": catalogue.source, "models_dir": str(cache), "models": rows}, indent=2))
        return 0
    print(f"catalogue: {catalogue.source}")
    print(f"models dir: {cache}")
    if not rows:
        print("no models in the catalogue and none installed")
        return 0
    width = max(len(f"{r['name']}@{r['version']}") for r in rows)
    # The table says where an installed file is: "(embedded)" = shipped with versemi, not in the cache.
    statuses = [r["status"] + (" (embedded)" if r.get("embedded") else "") for r in rows]
    status_width = max(13, *(len(text) for text in statuses))
    for r, state in zip(rows, statuses):
        spec = f"{r['name']}@{r['version']}"
        notes = r.get("description") or (f"imported from {r['origin']}" if r.get("origin") else "")
        if r.get("supported") is False:
            notes = f"needs versemi >= {r['min_versemi']}; {notes}"
        if r.get("default"):
            notes = f"default model; {notes}" if notes else "default model"
        print(f"{spec:<{width}}  {state:<{status_width}}  {_human_size(r['size']):>10}  "
              f"{', '.join(r['label_space'])}")
        if notes:
            print(f"{'':<{width}}  {notes}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from versemi.models import download_model

    catalogue = _catalogue(args, required=True)
    entry = catalogue.get(args.model)
    report, close = _progress(args.progress, entry.spec)
    try:
        path = download_model(entry, args.models_dir, report, timeout=args.timeout, force=args.force)
    finally:
        close()
    if args.progress == "json":
        _emit({"type": "done", "output": str(path), "sha256": entry.sha256})
    else:
        print(f"{entry.spec}: verified (SHA-256 {entry.sha256}) and installed at {path}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from versemi.models import import_model, models_dir

    catalogue = _catalogue(args, required=False)
    record = import_model(args.file, args.name, args.version, catalogue, args.models_dir)
    how = "matches the catalogue entry" if record.source == "catalogue" else "local checkpoint, hash recorded"
    print(f"{record.spec}: imported ({how}; SHA-256 {record.sha256}) at {record.path(models_dir(args.models_dir))}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from versemi.models import verify_all, verify_model

    catalogue = _catalogue(args, required=False)
    if args.model:
        results = [verify_model(args.model, catalogue, args.models_dir)]
    else:
        results = verify_all(catalogue, args.models_dir)
        if not results:
            print("no installed models")
            return 0
    for result in results:
        print(result.message, file=sys.stdout if result.ok else sys.stderr)
    return 0 if all(r.ok for r in results) else 1


def heldout_dice_table(entry) -> str:  # noqa: ANN001 - a CatalogueEntry
    """Markdown: each prompt's held-out Dice from the catalogue entry, or that it has none."""
    lines = ["## Held-out Dice per prompt", "", "| prompt | held-out Dice (%) |", "|---|---|"]
    for name in entry.label_space:
        if name == "all_foreground":
            continue
        dice = entry.heldout_dice.get(name)
        lines.append(f"| {name} | {'-- (no held-out evaluation)' if dice is None else f'{100 * dice:.1f}'} |")
    return "\n".join(lines) + "\n"


def _info(args: argparse.Namespace) -> int:
    from versemi.models import (
        ModelNotInstalledError,
        UnknownModelError,
        entry_file,
        find_installed,
        models_dir,
        parse_model_spec,
    )

    catalogue = _catalogue(args, required=False)
    cache = models_dir(args.models_dir)
    name, version = parse_model_spec(args.model)
    entry = catalogue.find(name, version)
    if entry is None:
        record = find_installed(name, version, cache)
        if record is None:
            listed = ", ".join(e.spec for e in catalogue) or "none"
            raise UnknownModelError(f"model {args.model!r} is neither in the catalogue ({catalogue.source}; "
                                    f"listed: {listed}) nor installed in {cache}")
        print(f"# {record.spec}\n\nNo model card: this model is not in the catalogue ({record.source} model, "
              f"imported from {record.origin or '?'}).\n")
        print("## Installed model\n\n```json")
        print(json.dumps({**record.__dict__, "path": str(cache / record.file)}, indent=2))
        print("```")
        return 0
    if entry.card_path is not None:
        try:
            card = entry.card_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelNotInstalledError(f"{entry.card_path}: cannot read the model card of {entry.spec}: {exc}") from None
        print(card.rstrip("\n") + "\n")
    else:
        print(f"# {entry.spec}\n\n{entry.description or 'No model card is listed for this model.'}\n")
    print(heldout_dice_table(entry))
    path = entry_file(entry, cache)
    present = path.is_file()
    where = {"path": str(path) if present else None, "status": "installed" if present else "not installed",
             "embedded": present and path == entry.embedded_path}
    print(f"## Catalogue entry ({catalogue.source})\n\n```json")
    print(json.dumps({**entry.to_dict(), **where}, indent=2))
    print("```")
    return 0


def _path(args: argparse.Namespace) -> int:
    from versemi.models import resolve_model

    catalogue = _catalogue(args, required=False)
    print(resolve_model(args.model, catalogue, args.models_dir))
    return 0


def _remove(args: argparse.Namespace) -> int:
    from versemi.models import (
        ModelError,
        catalogue_or_empty,
        find_installed,
        models_dir,
        parse_model_spec,
        remove_installed,
    )

    name, version = parse_model_spec(args.model)
    if find_installed(name, version, args.models_dir) is None:
        catalogue, _ = catalogue_or_empty(args.catalogue)  # only to explain a model that ships with versemi
        entry = catalogue.find(name, version)
        if entry is not None and entry.embedded_path is not None and entry.embedded_path.is_file():
            raise ModelError(f"{entry.spec} ships with versemi ({entry.embedded_path}), not in the model cache "
                             f"{models_dir(args.models_dir)}: there is nothing to remove")
    record = remove_installed(name, version, args.models_dir)
    print(f"{record.spec}: removed {models_dir(args.models_dir) / record.file} ({_human_size(record.size)} freed)")
    return 0


def _entry(args: argparse.Namespace) -> int:
    from versemi.models.publish import catalogue_entry, parse_heldout

    raw = catalogue_entry(
        args.file, args.name, args.version, args.url, args.licence, description=args.description,
        min_versemi=args.min_versemi, embedded=args.embedded, card=args.card, default=args.default,
        heldout=parse_heldout(args.heldout),
    )
    print(json.dumps(raw, indent=2))
    return 0
