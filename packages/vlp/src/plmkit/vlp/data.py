"""Image-text data: the `emoji` builtin (downloaded from the npm registry, checked, cached) and user files.

`emoji`: Google's Noto emoji as 64x64 PNGs with their Unicode names and short names as captions, from the npm package
`emoji-datasource-google` 16.0.0 (iamcal/emoji-data: the data is MIT-licensed, the Noto Emoji images Apache-2.0).
`prepare_emoji` downloads the package tarball from https://registry.npmjs.org with Python (no npm client), checks its
SHA-256, extracts `emoji.json` and the 64 px images, and writes under `$PLMKIT_CACHE/datasets/vlp-v1/emoji/`:
`images/*.png`, `train.jsonl`, `validation.jsonl`, `test.jsonl` (fields `image` (path relative to the folder),
`text` (the caption), `label` (the Unicode category), `name`, `short_names`, `unified`), `LICENSE` and
`NOTICE`. Each line of a split is one emoji:
- caption: the lower-cased Unicode name, then its short names (`_`/`-` read as spaces) that differ from it, e.g.
  "thumbs up sign: +1, thumbsup", "dog face: dog";
- emoji whose pictures are pixel-identical (flags shared by territories, family variants) are kept once (the first in
  the package's sort order), so no picture has two captions and none is in two splits;
- skin-tone variations are left out (each base emoji once);
- split by emoji with a fixed permutation (seeded with `plmkit.core.data.SPLIT_SEED`): 300 test, 150 validation, the
  rest (1,447) train.

User files (`read_pairs`): .csv, .tsv, .jsonl or .json with an image path column and a text column; relative paths
are read relative to the file's folder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from plmkit.core.data import SPLIT_SEED, cache_dir, fetch_checked, read_jsonl, read_lines
from plmkit.core.errors import DataError

__all__ = ["BUILTIN", "EMOJI", "EmojiDataset", "EmojiSource", "load_builtin_pairs", "prepare_emoji", "read_pairs"]

CACHE_VERSION = "vlp-v1"


class EmojiSource:
    """The pinned npm package the `emoji` builtin is built from."""

    package = "emoji-datasource-google"
    version = "16.0.0"
    registry = "https://registry.npmjs.org"
    tarball = "https://registry.npmjs.org/emoji-datasource-google/-/emoji-datasource-google-16.0.0.tgz"
    sha256 = "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438"
    image_folder = "package/img/google/64/"
    n_test = 300
    n_validation = 150


EMOJI = "emoji"
BUILTIN = {EMOJI: "Noto emoji (64x64 PNG) with their Unicode names and short names as captions, split by emoji "
                  "(1,447 train / 150 validation / 300 test); labels: the 10 Unicode categories"}
NOTICE = """The emoji data come from the npm package emoji-datasource-google {version} (https://github.com/iamcal/emoji-data):
emoji.json is MIT-licensed (see LICENSE); the images are Google's Noto Emoji, licensed under the Apache License 2.0
(https://github.com/googlefonts/noto-emoji). plmkit-vlp made the captions and the splits.
"""


def _tarball_path() -> Path:
    return cache_dir() / "downloads" / f"{EmojiSource.package}-{EmojiSource.version}.tgz"


def _checked_tarball() -> Path:
    return fetch_checked(EmojiSource.tarball, EmojiSource.sha256, _tarball_path().name)


def caption(entry: dict[str, Any]) -> str:
    """"name: short name, short name" (lower case; short names equal to the name dropped)."""
    name = " ".join(str(entry.get("name") or "").lower().split())
    keywords: list[str] = []
    for short in entry.get("short_names") or []:
        word = " ".join(str(short).replace("_", " ").replace("-", " ").lower().split())
        if word and word != name and word not in keywords:
            keywords.append(word)
    return f"{name}: {', '.join(keywords)}" if keywords else name


def _pixel_key(raw: bytes) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as img:
        return hashlib.sha256(np.asarray(img.convert("RGBA")).tobytes()).hexdigest()


def prepare_emoji(force: bool = False) -> Path:
    """Build (once) and return the folder of the `emoji` builtin (see the module docstring)."""
    target = cache_dir() / "datasets" / CACHE_VERSION / EMOJI
    if (target / "test.jsonl").exists() and not force:
        return target
    tarball = _checked_tarball()
    rows: list[dict[str, Any]] = []
    images: dict[str, bytes] = {}
    seen: set[str] = set()
    files: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as tar:  # one pass in archive order (a gzip stream cannot seek back cheaply)
        for member in tar:
            if member.isfile() and (member.name.startswith(EmojiSource.image_folder)
                                    or member.name in ("package/emoji.json", "package/LICENSE")):
                files[member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    entries = json.loads(files["package/emoji.json"])
    license_text = files["package/LICENSE"].decode("utf-8")
    for entry in sorted(entries, key=lambda e: (e.get("sort_order", 0), e["unified"])):
        raw = files.get(EmojiSource.image_folder + entry["image"])
        if raw is None or not entry.get("has_img_google", True):
            continue
        key = _pixel_key(raw)
        if key in seen:
            continue
        seen.add(key)
        images[entry["image"]] = raw
        rows.append({"image": f"images/{entry['image']}", "text": caption(entry), "label": entry["category"],
                     "name": entry["name"], "short_names": list(entry.get("short_names") or []),
                     "unified": entry["unified"]})
    order = np.random.default_rng(SPLIT_SEED).permutation(len(rows))
    n_test, n_val = EmojiSource.n_test, EmojiSource.n_validation
    splits = {"test": order[:n_test], "validation": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{EMOJI}-"))
    (tmp / "images").mkdir()
    for name, raw in images.items():
        (tmp / "images" / name).write_bytes(raw)
    for split, index in splits.items():
        lines = [json.dumps(rows[i], ensure_ascii=False) for i in index]
        (tmp / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp / "LICENSE").write_text(license_text, encoding="utf-8")
    (tmp / "NOTICE").write_text(NOTICE.format(version=EmojiSource.version), encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)  # atomic: a half-written cache never looks complete
    return target


class EmojiDataset:
    """`plmkit data prepare emoji` (entry point `plmkit.datasets`)."""

    description = BUILTIN[EMOJI]

    @staticmethod
    def prepare(force: bool = False) -> Path:
        return prepare_emoji(force)


def load_builtin_pairs(name: str) -> dict[str, list[dict[str, Any]]]:
    """The rows of every split of builtin `name` (image paths absolute)."""
    if name not in BUILTIN:
        known = "\n".join(f"  {n:10s} {d}" for n, d in BUILTIN.items())
        raise DataError(f"unknown image-text builtin dataset {name!r}. Builtin image-text datasets:\n{known}")
    folder = prepare_emoji()
    return {split: read_pairs(folder / f"{split}.jsonl", split=split) for split in ("train", "validation", "test")}


def _rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return [record for _, record in read_jsonl(path)]
    text = "\n".join(read_lines(path))  # UTF-8 checked, the byte-order mark dropped
    if suffix in (".csv", ".tsv"):
        return [dict(r) for r in csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")]
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} is not valid JSON: {err.msg}") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records")
        return data
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl or .json")


def read_pairs(path: str | Path, image_column: str = "image", text_column: str = "text",
               split: str = "train") -> list[dict[str, Any]]:
    """The records of an image-text file, with `image` made an absolute path (relative paths are relative to the
    file's folder). A missing file, a missing column or an empty value is a `DataError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{split} file {path} does not exist")
    rows = _rows(path)
    if not rows:
        raise DataError(f"{path} has no rows")
    out = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError(f"{path} record {number} is not an object")
        for column in (image_column, text_column):
            if column not in row:
                raise DataError(f"{path} record {number} has no {column!r} column (it has {sorted(row)}); choose the "
                                f"columns with --task.image_column / --text_columns")
        image, text = row[image_column], row[text_column]
        if not isinstance(image, str) or not image.strip():
            raise DataError(f"{path} record {number}: empty image path")
        if not isinstance(text, str):
            raise DataError(f"{path} record {number}: {text_column!r} must be a string, got {type(text).__name__}")
        image_path = Path(image.strip())
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        out.append({**row, "image": str(image_path), "text": text})
    return out
