"""The CoNSeP protocol around the decoders: the test grid covers every pixel, overlapping tiles
are averaged exactly, the metrics equal torchmetrics', the crop augmentations move image and
mask together, and a short run on a learnable CoNSeP-layout fixture raises the Dice."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from scipy.io import loadmat

from consep_fixture import build_learnable_consep
from evalkit.cli import main
from evalkit.data.consep import merge_types
from evalkit.metrics.segmentation import confusion, segmentation_scores
from evalkit.segmentation.crops import cut, dihedral, grid_positions, sample_crop_pool
from evalkit.segmentation.inference import stitch, tile_origins
from helpers import CONFIGS, REPO

CLASSES = ["background", "other", "inflammatory", "epithelial", "spindle-shaped"]


def test_consep_grid_is_five_tiles_flush_with_the_edge():
    assert grid_positions(1000, 224, 194) == [0, 194, 388, 582, 776]
    assert grid_positions(224, 224, 194) == [0]
    assert grid_positions(300, 224, 194) == [0, 76]  # the last tile is moved back to end at the edge
    assert grid_positions(100, 224, 194) == [0]  # smaller than a tile: one (padded) tile


@pytest.mark.parametrize("height, width", [(1000, 1000), (288, 288), (224, 224), (300, 500), (100, 260)])
def test_every_pixel_is_covered_and_overlaps_are_averaged(height, width):
    origins = tile_origins(height, width, 224, 194)
    coverage = torch.zeros(height, width)
    for top, left in origins:
        coverage[top:top + 224, left:left + 224] += 1
    assert bool((coverage >= 1).all())
    # each tile a constant: every pixel must get the mean of the tiles that cover it
    values = torch.arange(1, len(origins) + 1, dtype=torch.float32)
    scores = values[:, None, None, None].expand(-1, 2, 224, 224).clone()
    stitched = stitch(scores, origins, height, width)
    expected = torch.zeros(height, width)
    for value, (top, left) in zip(values, origins):
        expected[top:top + 224, left:left + 224] += value
    assert torch.allclose(stitched[0], expected / coverage) and torch.allclose(stitched[1], expected / coverage)


def test_scores_equal_torchmetrics_dice_and_iou():
    from torchmetrics.functional.segmentation import dice_score, mean_iou

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (3, 40, 40), generator=g)
    pred = torch.where(torch.rand(3, 40, 40, generator=g) < 0.6, target, torch.randint(0, 5, (3, 40, 40), generator=g))
    ours = segmentation_scores(confusion(pred, target, 5), CLASSES)
    theirs = dice_score(pred.reshape(1, -1), target.reshape(1, -1), 5, average="none", input_format="index",
                        aggregation_level="global")
    iou = mean_iou(pred.reshape(1, -1), target.reshape(1, -1), 5, per_class=True, input_format="index")
    for k, name in enumerate(CLASSES):
        assert ours[f"dice_{name}"] == pytest.approx(float(theirs.flatten()[k]), abs=1e-6)
        assert ours[f"iou_{name}"] == pytest.approx(float(iou.flatten()[k]), abs=1e-6)
    assert ours["dice"] == pytest.approx(float(theirs.flatten()[1:].mean()), abs=1e-6)  # background excluded


def test_crop_symmetries_move_image_and_mask_together():
    image = torch.arange(2 * 6 * 6, dtype=torch.float32).reshape(2, 6, 6)
    assert len({tuple(dihedral(image, k).flatten().tolist()) for k in range(8)}) == 8
    mask = image[0].long()
    for k in range(8):
        assert torch.equal(dihedral(image, k)[0].long(), dihedral(mask, k))
    assert cut(image, 4, 4, 4).shape == (2, 4, 4) and bool((cut(image, 4, 4, 4)[:, 2:, :] == 0).all())
    pool = sample_crop_pool([(300, 300), (224, 400)], 224, 5, seed=1)
    assert len(pool) == 10 and pool.top.max() <= 76 and pool.left[5:].max() <= 176
    again = sample_crop_pool([(300, 300), (224, 400)], 224, 5, seed=1)
    assert (pool.top == again.top).all() and (pool.symmetry == again.symmetry).all()


@pytest.mark.parametrize("decoder,runs,steps", [
    ("mask2former", 1, 60),  # the protocol's decoder: about 10 s on an idle 2-core machine
    pytest.param("linear", 2, 40, marks=pytest.mark.slow),  # the baseline decoder, two runs
])
def test_a_short_run_on_the_fixture_learns_and_writes_its_outputs(tmp_path: Path, decoder: str, runs: int, steps: int):
    data = tmp_path / "data"
    build_learnable_consep(data)
    model = tmp_path / "vit_tiny.yaml"
    model.write_text("model:\n  class_path: evalkit.models.TimmModel\n  init_args:\n    model_name: vit_tiny_patch16_224\n")
    code = main(["predict_fit", "--config", str(CONFIGS / "tasks" / "consep.yaml"), "--config", str(model),
                 "--task.dataset.init_args.allow_subset", "true", "--data_root", str(data),
                 "--embeddings_root", str(tmp_path / "emb"), "--results_root", str(tmp_path / "res"),
                 "--seg.decoder", decoder, "--seg.n_runs", str(runs), "--seg.max_steps", str(steps),
                 "--seg.crops_per_image", "8", "--seg.batch_size", "8", "--seg.eval_every", "5"])
    assert code == 0
    [path] = (tmp_path / "res").rglob("results.json")
    results = json.loads(path.read_text())
    assert results["schema_version"] == 2
    assert results["evaluation"] == "segmentation" and results["protocol"] == decoder
    assert results["primary_metric"] == "dice" and results["n_runs"] == runs and results["num_classes"] == len(CLASSES)
    dice = results["metrics"]["test"]["dice"]["mean"]
    start = results["curves"]["training"]["test"]["untrained"]["dice"]
    assert dice > start + 0.1, (start, dice)
    assert len(results["curves"]["training"]["test"]["runs"]) == runs
    assert len(results["metrics"]["test"]["dice"]["runs"]) == runs
    assert {row["class"] for row in results["per_class"]["test"]} == set(CLASSES)
    assert results["protocol"] == decoder and results["timing"]["seconds_per_epoch"] > 0
    assert results["settings"]["seeds"] == list(range(runs)) and "head" not in results
    # Every metric's metadata, the per-class ones included, as fit recorded it.
    info = results["metric_info"]
    assert {"dice", "miou"} <= set(info) and info["dice"]["higher_is_better"] is True
    assert {f"dice_{name}" for name in CLASSES} <= set(info) and {f"iou_{name}" for name in CLASSES} <= set(info)
    provenance = results["provenance"]
    assert provenance["fingerprint_source"] == "weights" and "config" not in provenance
    assert sorted(provenance["cache_files"]) == ["test", "train"]
    assert Path(provenance["cache_files"]["train"]).name.startswith("train-crop_pool-")
    assert Path(provenance["cache_files"]["test"]).name.startswith("test-grid-")
    config = yaml.safe_load((path.parent / "config.yaml").read_text())
    assert config["seg"]["max_steps"] == steps and "head" not in config
    # predictions.h5: every run's stitched class map of every test image, beside its target.
    with h5py.File(path.parent / "predictions.h5", "r") as f:
        assert list(f) == ["test"] and f["test"].attrs["kind"] == "class_maps"
        assert [s.decode() if isinstance(s, bytes) else s for s in f["test/ids"][()]] == [
            "Test/Images/test_1.png", "Test/Images/test_2.png"]
        for j in range(2):
            assert f[f"test/target/{j}"].shape == (288, 288)
            assert f[f"test/class_maps/{j}"].shape == (runs, 288, 288)
            assert f[f"test/class_maps/{j}"].dtype == "uint8"
            assert int(f[f"test/class_maps/{j}"][()].max()) < len(CLASSES)
    # ... at the image's own resolution (the label file's merged type map, unresized), and the snippet of
    # docs/segmentation.md re-scores them into the three Dice numbers results.json reports for run 0.
    with h5py.File(path.parent / "predictions.h5", "r") as f:
        label = loadmat(data / "consep" / "Test" / "Labels" / "test_1.mat")["type_map"]
        assert Image.open(data / "consep" / "Test" / "Images" / "test_1.png").size == (288, 288)
        assert np.array_equal(f["test/target/0"][()], merge_types(label))
    snippet = _docs_snippet().replace('Path("results/consep/<model>/<run>")', f"Path({str(path.parent)!r})")
    namespace: dict = {}
    exec(snippet, namespace)
    for name in ("dice", "dice_nucleus", "dice_per_image"):
        assert namespace["scores"][name] == pytest.approx(results["metrics"]["test"][name]["runs"][0], abs=1e-12)
        assert info[name]["higher_is_better"] is True
    assert sorted(namespace["per_image"]) == ["Test/Images/test_1.png", "Test/Images/test_2.png"]
    assert {p.name for p in path.parent.glob("*.png")} == {"training_curve_test.png", "overlay_test_test_1.png",
                                                           "overlay_test_test_2.png"}


def _docs_snippet() -> str:
    """The python block of docs/segmentation.md that reads predictions.h5 (marked for this test)."""
    text = (REPO / "docs" / "segmentation.md").read_text()
    return text.split("<!-- run by tests/segmentation/test_protocol.py -->\n```python\n", 1)[1].split("```", 1)[0]


def test_a_label_of_another_size_is_one_line(tmp_path: Path, capsys):
    from scipy.io import savemat

    data = tmp_path / "data"
    build_learnable_consep(data)
    label = sorted((data / "consep" / "Test" / "Labels").glob("*.mat"))[0]
    savemat(label, {"type_map": torch.zeros(100, 120, dtype=torch.int32).numpy()})  # not the image's 224 x 224
    model = tmp_path / "vit_tiny.yaml"
    model.write_text("model:\n  class_path: evalkit.models.TimmModel\n  init_args:\n    model_name: vit_tiny_patch16_224\n")
    code = main(["predict", "--config", str(CONFIGS / "tasks" / "consep.yaml"), "--config", str(model),
                 "--task.dataset.init_args.allow_subset", "true", "--data_root", str(data),
                 "--embeddings_root", str(tmp_path / "emb"), "--seg.crops_per_image", "2"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("evalkit: error: ") and "(100, 120)" in err and "differ in size" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="refuses a GPU only where there is none")
def test_embedding_on_an_absent_gpu_is_one_line(tmp_path: Path, capsys):
    data = tmp_path / "data"
    build_learnable_consep(data)
    model = tmp_path / "vit_tiny.yaml"
    model.write_text("model:\n  class_path: evalkit.models.TimmModel\n  init_args:\n    model_name: vit_tiny_patch16_224\n")
    code = main(["predict", "--config", str(CONFIGS / "tasks" / "consep.yaml"), "--config", str(model),
                 "--task.dataset.init_args.allow_subset", "true", "--data_root", str(data),
                 "--embeddings_root", str(tmp_path / "emb"), "--embed.accelerator", "gpu"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    # the same line as for classification: both embed through the one predict loop
    assert err.startswith("evalkit: error: --embed.accelerator gpu") and "use --embed.accelerator auto or cpu" in err
    assert not list((tmp_path / "emb").rglob("*.h5"))
