"""Fine-tuning from Python on your own labelled networks: the committed torchvision zoo,
labelled with the ImageNet top-1 that torchvision ships in its weights' metadata (offline)."""

import csv

import pytest

import nape
from conftest import ZOO

FAST = dict(epochs=8, folds=3)


@pytest.fixture(scope="module")
def labelled(zoo):
    torchvision = pytest.importorskip("torchvision")
    rows = []
    for f in zoo:
        w = torchvision.models.get_model_weights(f.stem).DEFAULT
        rows.append((f, w.meta["_metrics"]["ImageNet-1K"]["acc@1"]))
    return rows


def test_finetune_a_labels_file_then_predict(labelled, tmp_path, cli):
    labels = tmp_path / "zoo.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "top1"])
        w.writerows((str(f), y) for f, y in labelled)
    models = tmp_path / "models"
    report = nape.finetune(labels, save_as="zoo-top1", models=models, runs=tmp_path / "runs", **FAST)
    assert report["n"] == len(labelled) and report["target"] == "top1"
    assert report["skipped"] == []
    files = [f for f, _ in labelled]
    got = nape.predict(files, model="zoo-top1", models=models)
    want = cli("predict", "--json", "--model", "zoo-top1", "--models", models, *files)
    assert got == want["predictions"]
    p = nape.Predictor("zoo-top1", models=models)
    assert "top1" in p.info["predicts"]
    ys = [y for _, y in labelled]
    # now in the labels' units (percent top-1), not the zero-shot model's CIFAR-10 fraction
    for g in got:
        assert min(ys) - 15 < g["prediction"] < max(ys) + 15, g


def test_naslib_shaped_predictor(labelled, tmp_path):
    xs = [str(f) for f, _ in labelled]
    ys = [y for _, y in labelled]
    p = nape.NapePredictor(workdir=tmp_path, **FAST)
    before = p.query(xs)
    # zero-shot: the default model's relative score, as nape.predict gives it
    assert before.shape == (len(xs),)
    assert list(before) == [g["prediction"] for g in nape.predict(xs)]
    report = p.fit(xs, ys)
    assert report["n"] == len(xs)
    after = p.query(xs)
    again = [g["prediction"] for g in nape.predict(xs, model=report["model_dir"])]
    assert list(after) == again
    assert abs(sum(after) / len(after) - sum(ys) / len(ys)) < 10


def test_too_few_labels_is_a_usage_error(labelled, tmp_path):
    (f, y), = labelled[:1]
    with pytest.raises(nape.DataError) as e:
        nape.finetune(([f], [y]), save_as="one", models=tmp_path / "m", runs=tmp_path / "r")
    assert e.value.exit_code == 3 and "one.csv" in str(e.value)
