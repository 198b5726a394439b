"""The emoji builtin, built offline from a fake npm tarball of the same layout (package/emoji.json, package/LICENSE,
package/img/google/64/*.png): hash check, de-duplication of identical pictures, captions, splits by emoji, and the
`image_text` task reading it with --data emoji."""

import io
import json
import urllib.request
from pathlib import Path

import pytest

import plmkit.vlp.data as data
from plmkit.core.errors import DataError
from plmkit.core.tasks import DataSource, build_task
from plmkit.core.testing import write_tarball
from plmkit.vlp.testing import COLORS, SHAPES, draw


def _png(color, shape):
    buffer = io.BytesIO()
    draw(color, shape).save(buffer, format="PNG")
    return buffer.getvalue()


def _entries():
    """24 distinct pictures, one entry whose picture repeats an earlier one's pixels (saved differently), one entry
    without a Google image and one whose image file is missing from the package."""
    entries = []
    for i, (color, shape) in enumerate((c, s) for c in COLORS for s in SHAPES):
        entries.append({"name": f"{color.upper()} {shape.upper()}", "unified": f"{i:04X}", "image": f"{i:04x}.png",
                        "short_names": [f"{color}_{shape}", f"{color}-box", shape, "Square" if shape == "square" else shape], "category": shape.title(),
                        "sort_order": i, "has_img_google": True})
    entries.append({"name": "RED SQUARE AGAIN", "unified": "0100", "image": "0100.png", "short_names": ["dup"],
                    "category": "Square", "sort_order": 100, "has_img_google": True})
    entries.append({"name": "NO GOOGLE PICTURE", "unified": "0101", "image": "0000.png", "short_names": [],
                    "category": "Square", "sort_order": 101, "has_img_google": False})
    entries.append({"name": "NOT IN THE PACKAGE", "unified": "0102", "image": "0102.png", "short_names": [],
                    "category": "Square", "sort_order": 102, "has_img_google": True})
    return entries


def _tarball(path):
    files = {"package/emoji.json": json.dumps(_entries()).encode(), "package/LICENSE": b"MIT License (fake)\n"}
    for i, (color, shape) in enumerate((c, s) for c in COLORS for s in SHAPES):
        files[f"package/img/google/64/{i:04x}.png"] = _png(color, shape)
    from PIL import Image

    buffer = io.BytesIO()  # the same pixels as 0000.png, another encoding (a palette-free RGBA with other chunks)
    Image.open(io.BytesIO(files["package/img/google/64/0000.png"])).save(buffer, format="PNG", compress_level=0)
    files["package/img/google/64/0100.png"] = buffer.getvalue()
    assert files["package/img/google/64/0100.png"] != files["package/img/google/64/0000.png"]
    return write_tarball(path, files)


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """PLMKIT_CACHE in tmp_path, a fake tarball served by a patched `urlopen`, splits of 6 test / 4 validation."""
    source = tmp_path / "served.tgz"
    digest = _tarball(source)
    monkeypatch.setenv("PLMKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data.EmojiSource, "sha256", digest)
    monkeypatch.setattr(data.EmojiSource, "n_test", 6)
    monkeypatch.setattr(data.EmojiSource, "n_validation", 4)
    downloads = []

    def urlopen(url, timeout=None):
        downloads.append(url)
        return io.BytesIO(source.read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return downloads


def test_emoji_builtin_dedupes_captions_and_splits_by_picture(fake_npm, tmp_path):
    folder = data.prepare_emoji()
    assert fake_npm == [data.EmojiSource.tarball]
    assert folder == tmp_path / "cache" / "datasets" / data.CACHE_VERSION / "emoji"
    splits = {s: [json.loads(line) for line in (folder / f"{s}.jsonl").read_text().splitlines()]
              for s in ("train", "validation", "test")}
    assert {s: len(r) for s, r in splits.items()} == {"train": 14, "validation": 4, "test": 6}
    rows = [r for s in splits.values() for r in s]
    names = {r["name"] for r in rows}
    # the pixel-identical duplicate, the entry without a Google picture and the missing file are left out
    assert len(rows) == 24 and not names & {"RED SQUARE AGAIN", "NO GOOGLE PICTURE", "NOT IN THE PACKAGE"}
    images = [{r["image"] for r in s} for s in splits.values()]
    assert not (images[0] & images[1] or images[0] & images[2] or images[1] & images[2])  # no picture in two splits
    assert all((folder / r["image"]).is_file() for r in rows)
    red = next(r for r in rows if r["name"] == "RED SQUARE")
    # the lower-cased name, then the short names read with _ and - as spaces, without the name itself or repeats
    assert red["text"] == "red square: red box, square"
    assert red["label"] == "Square" and red["unified"] == "0000"
    assert "Apache" in (folder / "NOTICE").read_text() and (folder / "LICENSE").read_text().startswith("MIT")
    # cached: a second call neither downloads nor rebuilds; the split is fixed
    before = (folder / "test.jsonl").read_text()
    assert data.prepare_emoji() == folder and fake_npm == [data.EmojiSource.tarball]
    data.prepare_emoji(force=True)
    assert (folder / "test.jsonl").read_text() == before


def test_emoji_tarball_with_another_hash_is_refused_and_deleted(fake_npm, monkeypatch):
    monkeypatch.setattr(data.EmojiSource, "sha256", "0" * 64)
    with pytest.raises(DataError, match="expected 0000.*refusing"):
        data.prepare_emoji()
    assert not data._tarball_path().exists()


def test_image_text_task_reads_the_emoji_builtin(fake_npm):
    task = build_task("image_text", {}, DataSource(data="emoji"))
    splits = task.load()
    assert {k: len(v) for k, v in splits.items()} == {"train": 14, "validation": 4, "test": 6}
    assert splits["test"][0]["image"].endswith(".png") and ":" in splits["test"][0]["text"]
    labels = build_task("image_text_classification", {}, DataSource(data="emoji")).label_names()
    assert labels == ["Bar", "Dot", "Square"]
    with pytest.raises(DataError, match="unknown image-text builtin dataset 'clipart'"):
        build_task("image_text", {}, DataSource(data="clipart")).load()
    with pytest.raises(DataError, match="either --data"):
        build_task("image_text", {}, DataSource(data="emoji", train_file="x.jsonl")).load()


def test_prepare_data_command_then_train_and_retrieve_on_the_builtin(fake_npm, tiny_model_dir, tmp_path, capsys):
    from plmkit.core.cli import main

    assert main(["vlp", "prepare-data", "emoji"]) == 0
    assert capsys.readouterr().out.strip().endswith(str(tmp_path / "cache" / "datasets" / data.CACHE_VERSION / "emoji"))
    out = tmp_path / "run"
    assert main(["train", "--model_name_or_path", str(tiny_model_dir), "--data", "emoji", "--task", "image_text",
                 "--method", "semvlp", "--max_steps", "2", "--per_device_train_batch_size", "7",
                 "--method.codebook_samples", "64", "--output_dir", str(out), "--report_to", "none",
                 "--disable_tqdm", "true", "--save_strategy", "no", "--seed", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_retrieval_images"] == 6 and metrics["eval_retrieval_images"] == 4
    capsys.readouterr()
    assert main(["vlp", "retrieve", str(out), "--query", "red square", "--top", "2"]) == 0
    found = json.loads(capsys.readouterr().out)
    test_images = {r["image"] for r in data.load_builtin_pairs("emoji")["test"]}
    assert len(found) == 2 and {r["image"] for r in found} <= test_images
    assert fake_npm == [data.EmojiSource.tarball]  # downloaded once
    assert main(["vlp", "prepare-data", "clipart"]) == 2
    assert "unknown image-text dataset 'clipart'; known: ['emoji']" in capsys.readouterr().err


def test_the_emoji_config_runs(fake_npm, tiny_model_dir, tmp_path):
    """configs/emoji_semvlp_alternate.yaml, with a tiny model and 2 steps instead of its own model and budget."""
    import yaml

    from plmkit.core.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "emoji_semvlp_alternate.yaml"
    assert yaml.safe_load(config.read_text())["method"]["mode_schedule"] == "alternate"
    out = tmp_path / "run"
    assert main(["train", str(config), "--model_name_or_path", str(tiny_model_dir), "--max_steps", "2",
                 "--per_device_train_batch_size", "7", "--method.codebook_samples", "64", "--output_dir", str(out),
                 "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["semvlp_single_stream_micro_batches"] == 1 and metrics["semvlp_two_stream_micro_batches"] == 1
    assert "test_itm_two_t2i_r1" in metrics and metrics["test_retrieval_images"] == 6


@pytest.mark.parametrize(("name", "content"), [("pairs.jsonl", b'{"image": "x.png", "text": "caf\xe9"}\n'),
                                               ("pairs.csv", b"image,text\nx.png,caf\xe9\n")])
def test_a_non_utf8_pairs_file_is_a_data_error_naming_file_and_line(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    line = 1 if name.endswith(".jsonl") else 2
    with pytest.raises(DataError, match=rf"{name}:{line}: not UTF-8 text \(byte 0xe9"):
        data.read_pairs(tmp_path / name)


@pytest.mark.slow
def test_the_real_emoji_builtin():
    """The real npm tarball (fetched once into $PLMKIT_CACHE; skipped when the npm registry cannot be reached): its
    pinned SHA-256 is checked by `prepare_emoji`, and the split is the documented one."""
    try:
        splits = data.load_builtin_pairs("emoji")
    except DataError as err:
        pytest.skip(f"the emoji tarball cannot be fetched here: {str(err).splitlines()[0]}")
    assert {s: len(r) for s, r in splits.items()} == {"train": 1447, "validation": 150, "test": 300}
    images = [{r["image"] for r in rows} for rows in splits.values()]
    assert not (images[0] & images[1] or images[0] & images[2] or images[1] & images[2])  # no picture in two splits
    texts = {r["text"] for rows in splits.values() for r in rows}
    assert "thinking face" in texts and all(Path(r["image"]).is_file() for r in splits["test"])
