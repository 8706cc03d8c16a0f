"""The Python front against the CLI: same graphs, same predictions, same proxies; errors as
exceptions of the exit code's class; the GIL released while Rust works."""

import threading
import time

import pytest

import nape
from conftest import CELLS, ROOT, ZOO


def test_inspect_is_the_cli_entry(cli):
    f = ZOO / "resnet18.onnx"
    got = nape.inspect(f)
    want = cli("inspect", "--json", f, ZOO / "resnet50.onnx")["files"][0]  # 2 files: summaries
    assert got == want
    assert got["params"] == pytest.approx(11_689_512, rel=0.01)  # torch's count (BN folded)
    assert nape.inspect(f.read_bytes(), name=str(f)) == want


def test_predict_files_equal_the_cli(cli, zoo):
    got = nape.predict(zoo)
    want = cli("predict", "--json", *zoo)
    assert [g["file"] for g in got] == [str(f) for f in zoo]
    assert got == want["predictions"]
    info = nape.Predictor().info
    assert info["model"] == want["model"] and info["predicts"] == want["predicts"]


def test_predict_a_folder_is_its_files(zoo):
    assert nape.predict(ZOO) == nape.predict(zoo)


def test_predict_torch_equals_its_exported_file(cli, tmp_path):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None)
    x = torch.randn(1, 3, 224, 224)
    got = nape.predict_torch(m, x)
    assert m.training, "the module's training flag is restored"
    f = tmp_path / "resnet18.onnx"
    nape.export_torch(m, x, f)
    [from_file] = nape.predict([f])
    for k in ("prediction", "uncertainty", "in_domain", "params", "flops"):
        assert got[k] == from_file[k], k
    assert cli("predict", "--json", f)["predictions"][0]["prediction"] == got["prediction"]
    assert got["params"] == pytest.approx(sum(p.numel() for p in m.parameters()), rel=0.01)


def test_bad_file_raises_onnx_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf")
    with pytest.raises(nape.OnnxError) as e:
        nape.inspect(bad)
    assert e.value.exit_code == 4 and str(bad) in str(e.value)
    with pytest.raises(nape.OnnxError) as e:
        nape.predict([bad])
    assert e.value.exit_code == 4 and str(bad) in str(e.value)
    with pytest.raises(nape.DataError) as e:
        nape.inspect(tmp_path / "missing.onnx")
    assert e.value.exit_code == 3
    assert isinstance(e.value, nape.NapeError)


def test_an_open_image_size_is_refused_until_bound(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
    f = tmp_path / "dynamic.onnx"
    torch.onnx.export(m, torch.zeros(1, 3, 8, 8), str(f), input_names=["x"], opset_version=17,
                      dynamo=False, dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}})
    with pytest.raises(nape.OnnxError) as e:
        nape.inspect(f)
    assert "'H' (dim 2), 'W' (dim 3) are not fixed" in str(e.value)
    macs = 4 * 27 * 8 * 8
    assert nape.inspect(f, dims={"H": 8, "W": 8})["macs"] == macs
    assert nape.inspect(f, input_shape=[1, 3, 8, 8])["macs"] == macs
    [item] = nape.predict([f], errors="keep")
    assert not item["ok"] and item["exit_code"] == 4
    [bound] = nape.predict([f], input_shape=[1, 3, 8, 8])
    assert bound["flops"] == nape.inspect(f, dims={"H": 8, "W": 8})["flops"]
    [scores] = nape.proxies([f], ["params", "synflow"], dims={"H": 8, "W": 8})
    assert scores["proxies"]["params"] == pytest.approx((4 * 27 + 4) / 1e6)  # in millions


def test_a_batch_goes_on_past_a_bad_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    good = ZOO / "squeezenet1_0.onnx"
    items = nape.predict([good, bad, good], errors="keep")
    assert [i["ok"] for i in items] == [True, False, True]
    assert items[1]["exit_code"] == 4 and "bad.onnx" in items[1]["file"]
    # the same network twice in one batch: equal up to float summation order in the batch
    assert items[0]["prediction"] == pytest.approx(items[2]["prediction"], rel=1e-6)


def test_proxies_equal_the_cli(cli):
    files = sorted(CELLS.glob("*.onnx"))
    names = ["params", "flops", "synflow", "l2_norm"]
    got = nape.proxies(files, names, images="gaussian")
    want = cli("proxies", "--names", ",".join(names), "--images", "gaussian", "--json",
               "--cache", ROOT / "runs" / "pytest-proxies", *files)
    assert len(got) == len(files)
    for g, w in zip(got, want["networks"]):
        assert g["errors"] == {} and w["errors"] == {}
        for n in names:
            assert g["proxies"][n] == pytest.approx(w["proxies"][n], rel=1e-9), n


def test_proxies_score_the_network_a_file_holds_as_the_cli_does(cli):
    # a Keras file through tf2onnx (NHWC input, its normalization's statistics as inputs) and an
    # eval-mode export with its BatchNorms folded, put back: the CLI's graphs, the CLI's values
    corpus = ROOT / "tests" / "corpus"
    files = [corpus / "keras" / "keras.onnx", corpus / "folded" / "eval.onnx"]
    names = ["synflow", "snip", "nwot"]
    got = nape.proxies(files, names, images="gaussian")
    want = cli("proxies", "--names", ",".join(names), "--images", "gaussian", "--json",
               "--cache", ROOT / "runs" / "pytest-proxies", *files)
    for g, w in zip(got, want["networks"]):
        assert g["errors"] == {} and w["errors"] == {}, (g, w)
        for n in names:
            assert g["proxies"][n] == pytest.approx(w["proxies"][n], rel=1e-9), n
    kept, = nape.proxies(files[1:], ["snip"], images="gaussian", folded_bn="keep")
    assert kept["proxies"]["snip"] < 0.5 * got[1]["proxies"]["snip"]
    with pytest.raises(ValueError, match="restore, guess, keep"):
        nape.proxies(files[1:], ["snip"], images="gaussian", folded_bn="maybe")


def test_a_network_the_machine_cannot_hold_is_refused_not_run():
    # a batch of 10^12 images: estimated far above twice the machine, so refused before any
    # allocation, with the remedy in the message (as `nape proxies` does)
    f = sorted(CELLS.glob("*.onnx"))[0]
    item, = nape.proxies([f], ["nwot"], images="gaussian", batch=10**12, errors="keep")
    assert not item["ok"] and "out of memory" in item["error"] and "--batch" in item["error"]


def test_long_calls_release_the_gil(zoo):
    ticks = []
    done = threading.Event()

    def tick():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    p = nape.Predictor()
    t = threading.Thread(target=tick)
    t.start()
    start = time.perf_counter()
    p.predict(zoo * 4, progress=lambda n: None)
    end = time.perf_counter()
    done.set()
    t.join()
    during = [x for x in ticks if start < x < end]
    # with the GIL held for the whole call, the other thread could not tick at all
    assert len(during) >= 5, f"{len(during)} ticks in {end - start:.3f} s"
