"""The image_text task: data files, bad input, caption truncation, ITM negatives, retrieval metrics."""

import warnings

import numpy as np
import PIL.Image
import pytest
import torch

from plmkit.core.errors import DataError, TaskError
from plmkit.core.models import load_tokenizer
from plmkit.core.tasks import DataSource, build_task
from plmkit.vlp.images import load_rgb, to_rgb
from plmkit.vlp.retrieval import recall_at_k
from plmkit.vlp.task import PairCollator
from plmkit.vlp.testing import draw, write_image_text


def _task(paths, name="image_text", **options):
    source = DataSource(train_file=str(paths["train"]), validation_file=str(paths.get("validation") or "") or None,
                        test_file=str(paths.get("test") or "") or None)
    return build_task(name, options, source)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_files_load_with_relative_image_paths(tmp_path, fmt):
    paths = write_image_text(tmp_path, fmt=fmt)
    splits = _task(paths).load()
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "validation": 6, "test": 6}
    image = splits["train"][0]["image"]
    assert image.startswith(str(tmp_path)) and load_rgb(image).mode == "RGB"
    assert set(splits["train"][0]) == {"image", "text"}


def test_missing_or_unreadable_image_files_are_named(tmp_path):
    paths = write_image_text(tmp_path)
    task = _task(paths)
    splits = task.load()
    tokenizer = load_tokenizer("tiny-bert")
    (tmp_path / "img" / "red_square.png").unlink()
    with pytest.raises(DataError, match=r"image file .*red_square\.png does not exist"):
        task.encode(splits, tokenizer, 16)
    (tmp_path / "img" / "red_square.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"cannot read image file .*red_square\.png"):
        task.encode(splits, tokenizer, 16)
    with pytest.raises(DataError, match=r"cannot read image file .*red_square\.png"):
        PairCollator(tokenizer, (None, None)).image(str(tmp_path / "img" / "red_square.png"))


def test_other_image_modes_become_rgb(tmp_path):
    rgba = draw("red", "square", mode="RGBA")
    white = np.asarray(to_rgb(rgba))
    assert white.shape == (32, 32, 3) and tuple(white[0, 0]) == (255, 255, 255) and tuple(white[16, 16]) == (220, 30, 30)
    for mode in ("L", "P", "LA", "CMYK", "I;16", "1"):
        converted = to_rgb(rgba.convert("RGB").convert(mode) if mode != "LA" else rgba.convert("LA"))
        assert converted.mode == "RGB" and converted.size == (32, 32)
    grey16 = PIL.Image.fromarray(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32))
    assert np.asarray(to_rgb(grey16)).max() == 255
    palette = rgba.convert("P")  # a palette image with transparency is composited too
    palette.info["transparency"] = 0
    assert to_rgb(palette).mode == "RGB"


def test_long_captions_are_truncated_with_a_count(tmp_path):
    paths = write_image_text(tmp_path)
    lines = paths["train"].read_text().splitlines()
    lines[0] = lines[0].replace('"text": "a ', '"text": "' + "very " * 20 + "a ")
    lines[1] = lines[1].replace('"text": "a ', '"text": "' + "very " * 30 + "a ")
    paths["train"].write_text("\n".join(lines) + "\n")
    task = _task(paths)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoded = task.encode(task.load(), load_tokenizer("tiny-bert"), 16)
    messages = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert messages == ["train: 2 of 12 captions are longer than max_length=16 tokens and were truncated "
                        f"(longest: {messages[0].split('longest: ')[1].split(' ')[0]} tokens)"]
    assert max(len(x) for x in encoded["train"]["input_ids"]) == 16
    assert encoded["train"][0]["input_ids"][-1] == load_tokenizer("tiny-bert").sep_token_id


def test_bad_options_and_data_are_one_line_errors(tmp_path):
    paths = write_image_text(tmp_path)
    with pytest.raises(TaskError, match="eval_modes"):
        _task(paths, eval_modes=["three"])
    with pytest.raises(TaskError, match="itm_negative_probability"):
        _task(paths, itm_negative_probability=2.0)
    with pytest.raises(DataError, match="no 'picture' column"):
        _task(paths, image_column="picture").load()
    with pytest.raises(DataError, match="does not exist"):
        _task({"train": tmp_path / "nope.jsonl"}).load()
    with pytest.raises(TaskError, match="needs a SemVLP model"):
        _task(paths).check_config(type("C", (), {"model_type": "bert"})(), "tiny-bert")


def _collator(p=0.5, seed=0):
    return PairCollator(load_tokenizer("tiny-bert"), (None, lambda img: torch.zeros(3, 4, 4)), negative_probability=p,
                        seed=seed)


def _features(images, captions, ids=None):
    tok = load_tokenizer("tiny-bert")
    return [{"input_ids": tok(c)["input_ids"], "attention_mask": [1] * len(tok(c)["input_ids"]), "image": im,
             "example_id": i} for i, (im, c) in enumerate(zip(images, captions, strict=True))] if ids is None else [
        {"input_ids": tok(c)["input_ids"], "attention_mask": [1] * len(tok(c)["input_ids"]), "image": im, "example_id": i}
        for i, im, c in zip(ids, images, captions, strict=True)]


def test_itm_negatives_are_never_the_true_caption(tmp_path, monkeypatch):
    collator = _collator()
    monkeypatch.setattr(collator, "image", lambda path: None)
    tok = load_tokenizer("tiny-bert")
    # duplicates: image "a" has two captions, caption "a red dot" belongs to two images
    images = ["a", "a", "b", "c", "d", "e", "f", "g"]
    captions = ["a red dot", "a round red thing", "a red dot", "a blue bar", "a pink dot", "a grey bar", "a black bar",
                "a green dot"]
    true = {(im, c) for im, c in zip(images, captions, strict=True)}
    swapped = 0
    for start in range(200):
        ids = list(range(start * 8, start * 8 + 8))
        batch = collator(_features(images, captions, ids))
        for row in range(8):
            text = tok.decode(batch["input_ids"][row][batch["attention_mask"][row].bool()], skip_special_tokens=True)
            matched = bool(batch["itm_labels"][row])
            assert matched == (text == captions[row])
            if not matched:
                swapped += 1
                assert (images[row], text) not in true and text != captions[row]
                assert text not in {c for im, c in true if im == images[row]}
    assert 0.4 < swapped / 1600 < 0.6  # p = 0.5 (a few draws have no valid partner)
    again = collator(_features(images, captions, list(range(8))))
    first = collator(_features(images, captions, list(range(8))))
    assert torch.equal(again["input_ids"], first["input_ids"])  # a batch's negatives are fixed by its example ids


def test_a_batch_without_a_valid_partner_stays_matched(monkeypatch):
    collator = _collator(p=1.0)
    monkeypatch.setattr(collator, "image", lambda path: None)
    batch = collator(_features(["x", "x", "x"], ["a dog", "a cat", "a cow"]))  # one image: no negative exists
    assert batch["itm_labels"].tolist() == [1, 1, 1]
    batch = collator(_features(["x", "y", "z"], ["same", "same", "same"]))  # one caption: none either
    assert batch["itm_labels"].tolist() == [1, 1, 1]


def test_recall_at_k_counts_ties_against_and_takes_the_best_caption():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.3], [0.5, 0.5, 0.5], [0.1, 0.7, 0.2]])
    gold = [0, 1, 2, 2]  # image 2 has two captions (rows 2 and 3)
    r = recall_at_k(scores, gold, ks=(1, 2, 3))
    assert r["t2i_r1"] == 0.5 and r["t2i_r2"] == 0.75 and r["t2i_r3"] == 1.0  # row 2 ties: rank 2; row 3: rank 1
    # image 2 among captions: column [0.0, 0.3, 0.5, 0.2] -> caption 2 ranks first
    assert r["i2t_r1"] == 1.0
    constant = recall_at_k(torch.zeros(4, 4), [0, 1, 2, 3], ks=(1,))
    assert constant["t2i_r1"] == 0.0 and constant["i2t_r1"] == 0.0


def test_negatives_know_every_caption_of_an_image_in_the_split(tmp_path, monkeypatch):
    """Image a's captions are "x dog" and "y cat"; image b's is "x dog" too. A batch holding (a, "y cat") and
    (b, "x dog") but not (a, "x dog") must still never give "x dog" to image a."""
    import json

    for name in ("a", "b", "c"):
        draw("red", "dot").save(tmp_path / f"{name}.png")
    rows = [("a.png", "x dog"), ("a.png", "y cat"), ("b.png", "x dog"), ("c.png", "z cow")]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"image": i, "text": t}) + "\n" for i, t in rows))
    task = _task({"train": tmp_path / "train.jsonl"})
    tok = load_tokenizer("tiny-bert")
    encoded = task.encode(task.load(), tok, 16)["train"]
    assert encoded["caption_owners"] == [[0, 1], [0], [0, 1], [2]]
    collator = _collator(p=1.0)
    monkeypatch.setattr(collator, "image", lambda path: None)
    for seed in range(50):
        collator.seed = seed
        batch = collator([encoded[1], encoded[2], encoded[3]])
        got = tok.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()], skip_special_tokens=True)
        assert got != "x dog" and (got == "z cow") == (batch["itm_labels"][0] == 0)


def test_answers_count_when_only_later_rows_have_them(tmp_path):
    import json

    paths = write_image_text(tmp_path)
    rows = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    rows[3]["answer"], rows[5]["answer"] = "red", "blue"  # the first row has no answer field at all
    paths["train"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = _task(paths)
    assert task.answers() == ["blue", "red"] and task.model_options()["num_answers"] == 2
    encoded = task.encode(task.load(), load_tokenizer("tiny-bert"), 16)
    assert encoded["train"]["answer_targets"] == [-100, -100, -100, 1, -100, 0] + [-100] * 6
