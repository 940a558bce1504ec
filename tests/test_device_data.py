"""`--data-on-device`: the splits held on the device give the DataLoader's batches bit for bit
(same order, same augmentation draws, same dtypes), so a run trains the same with or without it."""

from __future__ import annotations

import json

import pytest

from repeval.app.cli import main
from repeval.training.config import TrainConfig
from repeval.training.loop import train
from tests.fixtures import make_imagefolder, make_nyuv2_folder


def _losses_and_tests(run) -> list[tuple[dict, dict]]:
    return [(m["train_loss"], m["test"]) for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


@pytest.mark.parametrize(("dataset", "method"), [("nyuv2", "autol"), ("multidigits", "ew")])
def test_a_run_on_device_trains_exactly_as_with_the_loader(tmp_path, dataset, method):
    # NYUv2: per-sample augmentation (scale, crop, flip) and Auto-lambda's second, meta order;
    # MultiDigits: an array dataset.
    if dataset == "nyuv2":
        args = dict(data_dir=str(make_nyuv2_folder(tmp_path / "nyu", n_train=6, n_test=3, size=32)),
                    backbone="test_resnet", aspp_width=4, batch_size=4)
    else:
        args = dict(dataset_args=dict(n_train=96, n_test=32), batch_size=32)
    runs = [train(TrainConfig(dataset=dataset, method=method, epochs=2, data_on_device=on, progress=False,
                              out_dir=str(tmp_path / f"on={on}"), **args)) for on in (False, True)]
    assert _losses_and_tests(runs[0]) == _losses_and_tests(runs[1])
    stored = json.loads((runs[1] / "config.json").read_text())
    assert stored["execution"]["data_on_device"] is True and stored["config"]["data_on_device"] is True


def test_data_on_device_refuses_what_it_cannot_hold(tmp_path, capsys, monkeypatch):
    folder = make_imagefolder(tmp_path / "images")
    before = sorted(tmp_path.rglob("*"))
    assert main(["train", "imagefolder", "--data-dir", str(folder), "--data-option", "size=16", "--data-on-device",
                 "--out", str(tmp_path / "runs")]) == 2
    assert "--data-on-device holds array and dense datasets; ImageFolderSplit decodes its files per sample" in capsys.readouterr().err
    import repeval.resources

    monkeypatch.setattr(repeval.resources, "available_memory", lambda device: 2**20)  # a batch fits, 10,000 canvases do not
    assert main(["train", "--data-on-device", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "holding the dataset on the device needs at least" in err and "leave out --data-on-device" in err
    assert sorted(tmp_path.rglob("*")) == before
