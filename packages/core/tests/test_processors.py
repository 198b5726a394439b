"""Image transforms from timm, the text+image processor, and what load_model returns as the processor."""

import pickle

import numpy as np
import PIL.Image
import pytest
import torch

from plmkit.core.errors import ConfigError
from plmkit.core.models import load_model
from plmkit.core.processors import TextImageProcessor, image_data_config, image_transform, text_tokenizer
from plmkit.core.testing import tiny_model

timm = pytest.importorskip("timm")

VIT = "vit_tiny_patch16_224"
TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 4}


def _image(seed=0, size=(40, 50)):
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


def test_data_config_is_timms_with_the_image_size_given():
    config = image_data_config(VIT, img_size=32)
    reference = timm.data.resolve_data_config({}, model=timm.create_model(VIT, pretrained=False))
    assert config["input_size"] == (3, 32, 32) and reference["input_size"] == (3, 224, 224)
    for key in ("mean", "std", "interpolation", "crop_pct"):
        assert config[key] == reference[key]
    assert image_data_config(VIT) == reference


def test_image_transform_eval_is_deterministic_and_training_augments():
    eval_transform = image_transform(VIT, training=False, img_size=32)
    train_transform = image_transform(VIT, training=True, img_size=32)
    image = _image()
    a, b = eval_transform(image), eval_transform(image)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32 and torch.equal(a, b)
    # normalised with the model's mean/std (0.5, 0.5): values in [-1, 1]
    assert a.min() >= -1.0 and a.max() <= 1.0
    torch.manual_seed(0)
    augmented = [train_transform(image) for _ in range(3)]
    assert all(x.shape == (3, 32, 32) for x in augmented)
    assert not torch.equal(augmented[0], augmented[1])


def test_unknown_timm_model_is_one_clear_error():
    with pytest.raises(ConfigError, match="timm has no model 'no_such_vit'"):
        image_transform("no_such_vit", training=False)


def test_text_image_processor_encodes_both_and_acts_as_the_tokenizer():
    _, tokenizer = tiny_model("bert")
    processor = TextImageProcessor(tokenizer, VIT, TINY_VIT)
    batch = processor(text=["a good movie", "bad"], images=[_image(1), _image(2)], padding=True, return_tensors="pt")
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert torch.equal(batch["input_ids"], tokenizer(["a good movie", "bad"], padding=True, return_tensors="pt")["input_ids"])
    assert processor(images=_image())["pixel_values"].shape == (1, 3, 32, 32)
    # text-only code can use it as the tokenizer
    assert processor("a good movie")["input_ids"] == tokenizer("a good movie")["input_ids"]
    assert processor.pad_token_id == tokenizer.pad_token_id and len(processor) == len(tokenizer)
    assert text_tokenizer(processor) is tokenizer and text_tokenizer(tokenizer) is tokenizer
    with pytest.raises(ValueError, match="needs text, images or both"):
        processor()
    # a model from the timm tower accepts the pixels
    vit = timm.create_model(VIT, pretrained=False, num_classes=2, **TINY_VIT).eval()
    assert vit(batch["pixel_values"]).shape == (2, 2)
    clone = pickle.loads(pickle.dumps(processor))  # datasets.map and DataLoader workers pickle processors
    assert torch.equal(clone(images=_image())["pixel_values"], processor(images=_image())["pixel_values"])


def test_load_model_returns_a_saved_text_image_processor(tmp_path):
    model, tokenizer = tiny_model("bert")
    model.save_pretrained(tmp_path)
    TextImageProcessor(tokenizer, VIT, TINY_VIT).save_pretrained(tmp_path)
    assert (tmp_path / "plmkit_processor.json").exists()
    _, processor = load_model(str(tmp_path))
    assert isinstance(processor, TextImageProcessor) and processor.model_args == TINY_VIT
    assert processor(text="good", images=[_image()])["pixel_values"].shape == (1, 3, 32, 32)
    assert len(processor.tokenizer) == len(tokenizer)
    # without a processor file the processor is the tokenizer
    plain = tmp_path / "plain"
    model.save_pretrained(plain)
    tokenizer.save_pretrained(plain)
    _, tok = load_model(str(plain))
    assert type(tok) is type(tokenizer)


def test_load_model_returns_a_transformers_processor_saved_with_the_model(tmp_path):
    from transformers import ViltImageProcessor, ViltProcessor

    model, tokenizer = tiny_model("bert")
    model.save_pretrained(tmp_path)
    ViltProcessor(image_processor=ViltImageProcessor(size={"shortest_edge": 32}), tokenizer=tokenizer).save_pretrained(
        tmp_path)
    _, processor = load_model(str(tmp_path))
    assert type(processor) is ViltProcessor and len(text_tokenizer(processor)) == len(tokenizer)
    batch = processor(images=[_image()], text=["a good movie"], return_tensors="pt")
    assert batch["pixel_values"].shape[:2] == (1, 3) and batch["input_ids"].shape[0] == 1
