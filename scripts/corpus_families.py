"""The model families ``export_corpus.py`` exports: what to build, with which input, and the
published facts that travel with each model.  Nothing here downloads anything: torchvision's
published metrics are in the package, timm and Hugging Face models are built from their code
and configs with random weights."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn as nn

FAMILIES = ("torchvision_cls", "hf", "torchvision_seg", "torchvision_det", "timm", "pytorchcv_in1k",
            "pytorchcv_cifar10", "darts", "resnet_macro")


@dataclasses.dataclass
class Case:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[], tuple]
    input_names: list[str]
    meta: dict
    dynamic: dict | None = None


def _image(size, batch=1):
    h, w = (size, size) if isinstance(size, int) else size
    return lambda: (torch.randn(batch, 3, h, w),)


# --------------------------------------------------------------------------------------------
# torchvision classification: every architecture, at its DEFAULT weights' evaluation resolution
# --------------------------------------------------------------------------------------------


def _tv_crop(weights) -> int:
    crop = weights.transforms.keywords.get("crop_size", 224)
    return int(crop[0] if isinstance(crop, (list, tuple)) else crop)


def _tv_cls_case(name: str) -> Case:
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    meta = weights.meta
    crop = _tv_crop(weights)
    kwargs: dict = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        # the auxiliary heads do not run in eval mode, so an export never holds them
        kwargs.update(aux_logits=False, init_weights=True)
    if name.startswith("vit_") and crop != 224:
        kwargs["image_size"] = crop  # the position embedding is sized for the resolution
    return Case(
        name=name,
        build=lambda: torchvision.models.get_model(name, **kwargs),
        inputs=_image(crop),
        input_names=["input"],
        meta={
            "top1": meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1"),
            "top5": meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@5"),
            "gflops_published": meta.get("_ops"),
            "num_params_published": meta.get("num_params"),
            "weights_published": str(weights).split(".", 1)[-1],
            "build_kwargs": {k: v for k, v in kwargs.items() if k != "weights"},
        },
    )


def torchvision_cls(_args) -> list[Case]:
    import torchvision

    return [_tv_cls_case(n) for n in sorted(torchvision.models.list_models(module=torchvision.models))]


# --------------------------------------------------------------------------------------------
# torchvision segmentation and detection (outputs are dicts / lists: wrapped to plain tensors)
# --------------------------------------------------------------------------------------------


class _SegOut(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)["out"]


def torchvision_seg(_args) -> list[Case]:
    import torchvision
    from torchvision.models import segmentation

    def case(name):
        def build():
            return _SegOut(torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                                        num_classes=21, aux_loss=False))

        return Case(name, build, _image(320), ["input"], {"task": "segmentation", "num_classes": 21})

    return [case(n) for n in sorted(torchvision.models.list_models(module=segmentation))]


class _DetOut(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner([x[0]])[0]
        return tuple(out[k] for k in sorted(out))


def torchvision_det(_args) -> list[Case]:
    import torchvision
    from torchvision.models import detection

    def case(name):
        def build():
            return _DetOut(torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                                        num_classes=91))

        return Case(name, build, _image(320), ["input"], {"task": "detection", "num_classes": 91})

    return [case(n) for n in sorted(torchvision.models.list_models(module=detection))]


# --------------------------------------------------------------------------------------------
# Hugging Face transformers from their configs (no download)
# --------------------------------------------------------------------------------------------


class _FirstOut(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x, return_dict=False)[0]


def hf(_args) -> list[Case]:
    def bert():
        from transformers import BertConfig, BertModel

        return _FirstOut(BertModel(BertConfig()))

    def gpt2():
        from transformers import GPT2Config, GPT2LMHeadModel

        return _FirstOut(GPT2LMHeadModel(GPT2Config(use_cache=False)))

    def vit():
        from transformers import ViTConfig, ViTForImageClassification

        return _FirstOut(ViTForImageClassification(ViTConfig(num_labels=1000)))

    def tokens():
        return (torch.randint(0, 1000, (1, 128), generator=torch.Generator().manual_seed(0)),)

    return [
        Case("bert_base_uncased", bert, tokens, ["input_ids"], {"config": "BertConfig()", "seq_len": 128}),
        Case("gpt2_small", gpt2, tokens, ["input_ids"],
             {"config": "GPT2Config(use_cache=False)", "seq_len": 128, "note": "lm_head tied to wte"}),
        Case("vit_base_patch16_224", vit, _image(224), ["pixel_values"], {"config": "ViTConfig(num_labels=1000)"}),
    ]


# --------------------------------------------------------------------------------------------
# timm: a deterministic spread of architectures, small enough to export on a laptop
# --------------------------------------------------------------------------------------------

TIMM_MAX_PARAMS = 120_000_000


def _timm_params_on_meta(name: str):
    import timm

    try:
        with torch.device("meta"):
            m = timm.create_model(name, pretrained=False)
        return int(sum(p.numel() for p in m.parameters()))
    except Exception:  # noqa: BLE001 - some models cannot be built on meta; try them for real
        return None


def _timm_pick(count: int) -> list[str]:
    """Every architecture name in timm's registry, sorted; drop the giants (over
    TIMM_MAX_PARAMS parameters when built on the meta device), then take ``count`` spread
    evenly over the alphabet so every family is represented."""
    import timm

    names = sorted(timm.list_models())
    keep = []
    for n in names:
        p = _timm_params_on_meta(n)
        if p is None or p <= TIMM_MAX_PARAMS:
            keep.append(n)
    if len(keep) <= count:
        return keep
    step = len(keep) / count
    return [keep[int(i * step)] for i in range(count)]


def timm(args) -> list[Case]:
    import timm as timm_lib

    def case(name):
        def build():
            return timm_lib.create_model(name, pretrained=False)

        cfg = timm_lib.models.get_pretrained_cfg(name)
        size = tuple(cfg.input_size[1:]) if cfg is not None and cfg.input_size else (224, 224)
        return Case(name, build, _image(size), ["input"], {"timm_version": timm_lib.__version__})

    return [case(n) for n in _timm_pick(args.timm_count)]


# --------------------------------------------------------------------------------------------
# pytorchcv (imgclsmob): a test family labelled by the package itself.  Its model store ships
# model_metainfos.csv: every pretrained model's weight count and the error its weights reach
# (ImageNet-1K: top-5 error; CIFAR: top-1 error), in hundredths of a percent.  The families
# nape never trains on, to measure zero-shot ranking outside the zoo it was trained with.
# --------------------------------------------------------------------------------------------

PYTORCHCV_MAX_PARAMS = 120_000_000


def _pytorchcv_rows(dataset: str) -> list[dict]:
    import csv

    from pytorchcv.models.common import model_store

    with open(model_store.get_model_metainfos_file_path(), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if dataset == "in1k":
        keep = [r for r in rows if r["test_dataset"] == "in1k"]
    else:  # CIFAR rows share the code "cf"; the dataset is the name's suffix
        keep = [r for r in rows if r["test_dataset"] == "cf" and r["model_name"].endswith("_" + dataset)]
    keep = [r for r in keep if r["error_value"] != "NA" and int(r["net_weights"]) <= PYTORCHCV_MAX_PARAMS]
    return sorted(keep, key=lambda r: r["model_name"])


def _pytorchcv_case(row: dict, metric: str) -> Case:
    """One model of the store, built as its pretrained weights were (each model's default
    ``in_size`` is the resolution the metainfo lists), fed at that resolution."""
    from pytorchcv.model_provider import get_model

    import pytorchcv

    name = row["model_name"]
    size = int(row["img_size"]) if row["img_size"] != "NA" else (224 if metric == "top5" else 32)
    error = int(row["error_value"]) / 100
    meta = {
        metric: round(100 - error, 2),
        f"{metric}_error_published": error,
        "num_params_published": int(row["net_weights"]),
        "pytorchcv_version": pytorchcv.__version__,
        "paper": None if row["arxiv_paper"] == "NA" else row["arxiv_paper"],
    }
    return Case(name, lambda: get_model(name, pretrained=False), _image(size), ["input"], meta)


def pytorchcv_in1k(_args) -> list[Case]:
    """ImageNet-1K classifiers at their evaluation resolution, labelled with top-5 accuracy."""
    return [_pytorchcv_case(r, "top5") for r in _pytorchcv_rows("in1k")]


def pytorchcv_cifar10(_args) -> list[Case]:
    """CIFAR-10 classifiers (32x32), labelled with top-1 accuracy."""
    return [_pytorchcv_case(r, "top1") for r in _pytorchcv_rows("cifar10")]


# --------------------------------------------------------------------------------------------
# two unlabelled search spaces of the held-back kinds (corpus_spaces.py): coverage, counts
# --------------------------------------------------------------------------------------------

SPACE_COUNT = 150


def darts(_args) -> list[Case]:
    import corpus_spaces

    return corpus_spaces.cases("darts", SPACE_COUNT, Case, _image)


def resnet_macro(_args) -> list[Case]:
    import corpus_spaces

    return corpus_spaces.cases("resnet_macro", SPACE_COUNT, Case, _image)


def cases(family: str, args) -> list[Case]:
    return globals()[family](args)
