"""Importer registry: a format name -> its importer, and `import_dataset`, which `radscale import` calls.

Every importer has the signature `(root, out, *, <its options>) -> ImportSummary` and writes a radscale manifest
(Parquet) at `out`. Options may arrive as strings from a command line ("false", "3", "train.csv,valid.csv");
`import_dataset` converts them by the importer's annotations and refuses unknown names in one line.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from radscale.data.importers.base import ImportSummary
from radscale.data.importers.candid_ptx import import_candid_ptx
from radscale.data.importers.chexpert import import_chexpert
from radscale.data.importers.folder import import_folder
from radscale.data.importers.mimic_cxr import import_mimic_cxr
from radscale.data.importers.nih import import_nih
from radscale.data.importers.padchest import import_padchest
from radscale.data.importers.ranzcr import import_ranzcr
from radscale.data.importers.vindr import import_vindr
from radscale.errors import RadscaleError

__all__ = ["IMPORTERS", "ImportSummary", "import_dataset"]

IMPORTERS: dict[str, Callable[..., ImportSummary]] = {
    "mimic-cxr": import_mimic_cxr,
    "chexpert": import_chexpert,
    "nih": import_nih,
    "padchest": import_padchest,
    "vindr": import_vindr,
    "ranzcr": import_ranzcr,
    "candid-ptx": import_candid_ptx,
    "folder": import_folder,
}
ALIASES = {"mimic-cxr-jpg": "mimic-cxr", "mimic": "mimic-cxr", "nih-cxr14": "nih", "chestx-ray14": "nih",
           "vindr-cxr": "vindr", "ranzcr-clip": "ranzcr", "candid": "candid-ptx"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def import_dataset(fmt: str, root: Path, out: Path, **options) -> ImportSummary:
    """Import the dataset at `root` (layout `fmt`, a key of IMPORTERS or an alias) into the manifest `out`."""
    name = ALIASES.get(fmt.strip().lower().replace("_", "-"), fmt.strip().lower().replace("_", "-"))
    if name not in IMPORTERS:
        raise RadscaleError(f"unknown dataset format {fmt!r}; choose one of {', '.join(IMPORTERS)}")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise RadscaleError(f"{root}: dataset root is not a directory")
    out = Path(out).expanduser().resolve()
    if out.is_dir():
        raise RadscaleError(f"{out}: --out must be a file path (e.g. manifest.parquet), not a directory")
    importer = IMPORTERS[name]
    params = {k: p for k, p in inspect.signature(importer).parameters.items() if p.kind is p.KEYWORD_ONLY}
    kwargs = {}
    for key, value in options.items():
        key = key.replace("-", "_")
        if key not in params:
            raise RadscaleError(f"{name}: unknown option {key!r}; options: {', '.join(params)}")
        kwargs[key] = _coerce(name, key, value, str(params[key].annotation))
    if "chunk_rows" in kwargs and int(kwargs["chunk_rows"]) < 1:
        raise RadscaleError(f"{name}: option chunk_rows must be >= 1, got {kwargs['chunk_rows']}")
    return importer(root, out, **kwargs)


def _coerce(name: str, key: str, value: object, annotation: str) -> object:
    """A command-line string -> the option's type (bool, int, path, list of names); other values pass as given."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if annotation.startswith("bool"):
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise RadscaleError(f"{name}: option {key}={value!r} must be true or false")
    if annotation.startswith("int"):
        if text.lower() in ("", "none") and "None" in annotation:
            return None
        try:
            return int(text)
        except ValueError:
            raise RadscaleError(f"{name}: option {key}={value!r} must be an integer") from None
    if annotation.startswith("Path"):
        return Path(text)
    if annotation.startswith("Sequence"):
        return tuple(part.strip() for part in text.split(",") if part.strip())
    return text
