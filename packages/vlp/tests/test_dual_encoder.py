"""The dual-encoder contrastive baseline of the reproduction: its loss and a short training run on tiny data."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from plmkit.vlp.data import read_pairs
from plmkit.vlp.dual_encoder import DualEncoder, clip_loss, train_dual_encoder, train_tower
from plmkit.vlp.testing import write_image_text


def test_clip_loss_is_symmetric_infonce():
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * image @ text.t()
    i2t = -torch.log_softmax(logits, dim=1).diagonal().mean()
    t2i = -torch.log_softmax(logits, dim=0).diagonal().mean()
    torch.testing.assert_close(clip_loss(image, text, scale), (i2t + t2i) / 2)
    aligned = clip_loss(text, text, torch.tensor(100.0))
    assert float(aligned) < 1e-3  # perfectly aligned rows, a sharp scale: no loss


def test_dual_encoder_trains_and_retrieves_over_the_whole_split(tmp_path, monkeypatch):
    model = DualEncoder("test_resnet", 64, text_dim=16)
    assert math.isclose(float(model.scale().detach()), 1 / 0.07, rel_tol=1e-5)
    vectors = model.encode_image(torch.randn(3, 3, 64, 64))
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3))
    paths = write_image_text(tmp_path)
    train, test = read_pairs(paths["train"]), read_pairs(paths["test"], split="test")
    metrics = train_dual_encoder(train, test, "test_resnet", 64, steps=3, batch_size=4, learning_rate=1e-3, seed=0,
                                 text_model="tiny-bert")
    assert set(metrics) == {f"emb_{d}_r{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)} | {"train_seconds"}
    assert all(0.0 <= metrics[f"emb_t2i_r{k}"] <= 1.0 for k in (1, 5, 10))
    assert metrics["emb_t2i_r1"] <= metrics["emb_t2i_r5"] <= metrics["emb_t2i_r10"] == 1.0  # 6 images: R@10 is 1
    threads = torch.get_num_threads()
    monkeypatch.setenv("PLMKIT_NUM_THREADS", "1")  # the threads follow plmkit's setting, as in `plmkit train`
    try:
        torch.set_num_threads(2)
        again = train_dual_encoder(train, test, "test_resnet", 64, steps=3, batch_size=4, learning_rate=1e-3, seed=0,
                                   text_model="tiny-bert")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert {k: v for k, v in again.items() if k != "train_seconds"} == {
        k: v for k, v in metrics.items() if k != "train_seconds"}  # seeded


def test_the_trained_tower_warm_starts_a_semvlp_image_encoder(tmp_path, capsys):
    from safetensors.torch import load_file

    from plmkit.core.cli import main
    from plmkit.core.models import load_model

    paths = write_image_text(tmp_path / "data")
    train, test = read_pairs(paths["train"]), read_pairs(paths["test"], split="test")
    weights = tmp_path / "tower.safetensors"
    train_dual_encoder(train, test, "test_resnet", 64, steps=2, batch_size=4, learning_rate=1e-3, seed=0,
                       text_model="tiny-bert", save_to=weights)
    saved = load_file(str(weights))
    folder = tmp_path / "init"
    assert main(["vlp", "init", "--output_dir", str(folder), "--text", "tiny-bert", "--timm", "test_resnet",
                 "--image_encoder_from", str(weights), "--set", "codebook_size=4"]) == 0
    model = load_model(str(folder), kind="masked-lm")[0]
    loaded = model.base_model.image_encoder.backbone.state_dict()
    assert set(loaded) == set(saved) and all(torch.equal(loaded[k], saved[k]) for k in saved)
    capsys.readouterr()
    assert main(["vlp", "init", "--output_dir", str(tmp_path / "bad"), "--text", "tiny-bert", "--timm", "test_vit",
                 "--image_size", "32", "--image_encoder_from", str(weights)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "tower.safetensors" in err and "do not fit this timm model" in err
    assert main(["vlp", "init", "--output_dir", str(tmp_path / "none"), "--text", "tiny-bert",
                 "--image_encoder_from", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_tower_is_trained_once_with_its_metrics_beside_it(tmp_path):
    paths = write_image_text(tmp_path / "data")
    splits = {"train": read_pairs(paths["train"]), "test": read_pairs(paths["test"], split="test")}
    folder = tmp_path / "tower"
    weights, metrics = train_tower(folder, splits, "test_resnet", 64, steps=2, batch_size=4, text_model="tiny-bert")
    assert weights == folder / "tower-2.safetensors" and weights.exists()
    assert json.loads((folder / "tower-2.json").read_text()) == metrics
    assert metrics["encoder"] == "test_resnet" and metrics["steps"] == 2 and metrics["seed"] == 1
    assert 0.0 <= metrics["emb_t2i_r1"] <= 1.0
    stamp = weights.stat().st_mtime_ns
    assert train_tower(folder, {}, "test_resnet", 64, steps=2) == (weights, metrics)  # kept: not trained again
    assert weights.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="is a test_resnet tower, not test_vit"):
        train_tower(folder, splits, "test_vit", 32, steps=2)
