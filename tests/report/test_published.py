"""The published reference tables under results/published/: their format, a few numbers checked
by hand against the sources, and that `evalkit regress` can load them as a baseline.

The sources and the mapping of names are documented in results/published/README.md.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from synthetic_runs import results, summary, write_run

from evalkit.heads.protocols import PROTOCOLS
from evalkit.report.regress import CSV_COLUMNS, load_baseline
from evalkit.segmentation import SEG_DECODERS

PUBLISHED = Path(__file__).resolve().parents[2] / "results" / "published"
KAIKO = PUBLISHED / "kaiko2024_eva_sgd.csv"
EVA = PUBLISHED / "eva_leaderboard.csv"
# kaiko.ai et al., "Towards Large-Scale Training of Pathology Foundation Models" (arXiv:2404.15217)
TABLE8 = PUBLISHED / "kaiko2024_table8.csv"
TABLE2 = PUBLISHED / "kaiko2024_table2_magnification.csv"
TABLE3 = PUBLISHED / "kaiko2024_table3_tcga_fraction.csv"
TABLE4 = PUBLISHED / "kaiko2024_table4_distinct_patches.csv"
PAPER = {TABLE8: "VIII", TABLE2: "II", TABLE3: "III", TABLE4: "IV"}
FILES = [KAIKO, EVA, *PAPER]

COLUMNS = ["model", "task", "split", "metric", "mean", "std", "protocol", "source"]
# evalkit's task/split names and the metric each task reports
TASK_SPLITS = {("bach", "val"), ("crc", "val"), ("mhist", "test"), ("pcam", "val"), ("pcam", "test"),
               ("consep", "test")}
METRIC = {"bach": "balanced_accuracy", "crc": "balanced_accuracy", "mhist": "balanced_accuracy",
          "pcam": "balanced_accuracy", "consep": "dice"}
# evalkit's own protocols (a segmentation run records its decoder's name, e.g. `mask2former`), plus eva's
# "upscaling + conv with input image" decoder, which evalkit does not implement: its rows must never be
# compared with an evalkit segmentation run.
VALID_PROTOCOLS = set(PROTOCOLS.names()) | set(SEG_DECODERS.names()) | {"segmentation_eva_conv"}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def _value(path: Path, model: str, task: str, split: str) -> dict[str, str]:
    found = [r for r in _rows(path) if (r["model"], r["task"], r["split"]) == (model, task, split)]
    assert len(found) == 1, (model, task, split)
    return found[0]


def test_columns_match_what_regress_reads():
    assert tuple(COLUMNS) == CSV_COLUMNS


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_format(path: Path):
    rows = _rows(path)
    assert rows
    keys = [(r["model"], r["task"], r["split"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate (model, task, split, metric)"
    for r in rows:
        assert r["model"] and r["model"] == r["model"].strip() and " " not in r["model"]
        assert (r["task"], r["split"]) in TASK_SPLITS, r
        assert r["metric"] == METRIC[r["task"]], r
        mean = float(r["mean"])
        assert 0.0 <= mean <= 1.0 and not math.isnan(mean), r
        if r["std"] != "":
            assert 0.0 <= float(r["std"]) <= 1.0, r
        assert r["protocol"] in VALID_PROTOCOLS, r
        expected = "balanced_accuracy" if r["metric"] == "balanced_accuracy" else "dice"
        assert (r["protocol"] in PROTOCOLS) == (expected == "balanced_accuracy"), r
        assert r["source"], r


def test_kaiko_table_shape():
    rows = _rows(KAIKO)
    # 12 models x (BACH, CRC, MHIST, PCam/val, PCam/test); every cell has a published std
    assert len({r["model"] for r in rows}) == 12 and len(rows) == 60
    assert all(r["std"] != "" and r["protocol"] == "sgd_kaiko" for r in rows)


def test_eva_leaderboard_shape():
    rows = _rows(EVA)
    # 15 models x 6 columns (bach, crc, mhist, patch_camelyon, patch_camelyon/test, consep)
    assert len({r["model"] for r in rows}) == 15 and len(rows) == 90
    assert all(r["std"] == "" for r in rows), "eva's leaderboard publishes no stds"
    assert {r["protocol"] for r in rows if r["task"] == "consep"} == {"segmentation_eva_conv"}
    assert {r["protocol"] for r in rows if r["task"] != "consep"} == {"adamw_eva"}


# Numbers typed by hand from the sources (not read from the CSVs).
@pytest.mark.parametrize("model, task, split, mean, std", [
    # eva docs/index.md @ kaiko-ai/eva 3171bba5, row "DINO ViT-S16 | N/A": BACH 0.410 (±0.009)
    ("vit_small_patch16_224-random", "bach", "val", 0.410, 0.009),
    # same row, CRC 0.617 (±0.008)
    ("vit_small_patch16_224-random", "crc", "val", 0.617, 0.008),
    # same table, row "DINO ViT-S16 | ImageNet": PCam/test 0.849 (±0.007)
    ("vit_small_patch16_224-dino", "pcam", "test", 0.849, 0.007),
    # same table, row "Owkin - iBOT ViT-B16 | TCGA": MHIST 0.777 (±0.005)
    ("phikon", "mhist", "test", 0.777, 0.005),
    # same table, row "kaiko.ai - DINO ViT-B8": PCam/test 0.921 (±0.002); the mean is also in
    # Table I of kaiko-ai/towards_large_pathology_fms README.md ("ViT-B/8 ... 0.921")
    ("kaiko_vitb8", "pcam", "test", 0.921, 0.002),
    # same table, row "kaiko.ai - DINOv2 ViT-L14": BACH 0.870 (±0.005)
    ("kaiko_vitl14", "bach", "val", 0.870, 0.005),
])
def test_kaiko_values(model, task, split, mean, std):
    row = _value(KAIKO, model, task, split)
    assert float(row["mean"]) == pytest.approx(mean, abs=1e-9)
    assert float(row["std"]) == pytest.approx(std, abs=1e-9)


@pytest.mark.parametrize("model, task, split, mean", [
    # tools/data/leaderboards/pathology.csv @ kaiko-ai/eva 73b61a7, row paige_virchow2, column crc
    ("paige_virchow2", "crc", "val", 0.967),
    # row mahmood_uni2_h, column bach
    ("mahmood_uni2_h", "bach", "val", 0.915),
    # row owkin_phikon (evalkit's `phikon`), column patch_camelyon/test
    ("phikon", "pcam", "test", 0.92),
    # row kaiko_vits16, column patch_camelyon (the validation split)
    ("kaiko_vits16", "pcam", "val", 0.905),
    # row kaiko_vits16, column consep (Dice)
    ("kaiko_vits16", "consep", "test", 0.603),
    # row lunit_vits16, column mhist
    ("lunit_vits16", "mhist", "test", 0.781),
])
def test_eva_values(model, task, split, mean):
    row = _value(EVA, model, task, split)
    assert float(row["mean"]) == pytest.approx(mean, abs=1e-9)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_load_baseline(path: Path):
    rows = _rows(path)
    baseline = {(e.model, e.task, e.split, e.metric): e for e in load_baseline(path, ["balanced_accuracy", "dice"])}
    assert len(baseline) == len(rows)
    for r in rows:
        entry = baseline[(r["model"], r["task"], r["split"], r["metric"])]
        assert entry.mean == float(r["mean"])
        assert entry.std == (float(r["std"]) if r["std"] else 0.0)
        assert entry.protocol == r["protocol"]


def test_regress_against_the_kaiko_table(tmp_path: Path, capsys: pytest.CaptureFixture):
    """A CRC run of the random ViT-S/16 against kaiko's 0.617 ± 0.008: allowed drop max(0.01, 2 x 0.008)."""
    from evalkit.cli import main

    def run(mean: float) -> Path:
        return write_run(tmp_path / f"run-{mean}", results("crc", "vit_small_patch16_224-random",
                                                             {"val": {"balanced_accuracy": summary(mean, 0.005)}}))

    assert main(["regress", str(run(0.605)), "--baseline", str(KAIKO)]) == 0
    out = capsys.readouterr().out
    assert "| vit_small_patch16_224-random | crc/val | balanced_accuracy | 0.6170 | 0.6050 | -0.0120 | 0.0160 |" in out
    assert "1 of 1 passed; 59 entries of the published table for other models or tasks not compared" in out
    assert main(["regress", str(run(0.59)), "--baseline", str(KAIKO)]) == 1
    assert "FAIL" in capsys.readouterr().out


# ---- the kaiko paper's tables ----------------------------------------------------------------

@pytest.mark.parametrize("path", list(PAPER), ids=lambda p: p.name)
def test_paper_rows_cite_their_table(path: Path):
    cite = f"kaiko.ai et al., Towards Large-Scale Training of Pathology Foundation Models, Table {PAPER[path]}"
    assert {r["source"] for r in _rows(path)} == {cite}


def test_table8_shape():
    rows = _rows(TABLE8)
    # 10 models x (BACH, CRC, MHIST, PCam/val, PCam/test, CoNSeP), every cell with its std; Virchow left out
    assert len({r["model"] for r in rows}) == 10 and len(rows) == 60
    assert all(r["std"] != "" for r in rows)
    assert {r["protocol"] for r in rows if r["task"] == "consep"} == {"mask2former"}  # the paper's decoder
    assert {r["protocol"] for r in rows if r["task"] != "consep"} == {"sgd_kaiko"}


@pytest.mark.parametrize("path, models, splits", [
    (TABLE2, 4, {("bach", "val"), ("crc", "val"), ("mhist", "test"), ("pcam", "val"), ("pcam", "test")}),
    (TABLE3, 5, {("bach", "val"), ("crc", "val"), ("mhist", "test"), ("pcam", "test")}),
    (TABLE4, 6, {("bach", "val"), ("crc", "val"), ("mhist", "test"), ("pcam", "test")}),
], ids=["II", "III", "IV"])
def test_ablation_tables_shape(path: Path, models: int, splits: set):
    rows = _rows(path)
    assert len({r["model"] for r in rows}) == models and len(rows) == models * len(splits)
    assert {(r["task"], r["split"]) for r in rows} == splits
    assert all(r["std"] == "" and r["protocol"] == "sgd_kaiko" for r in rows), "the ablations print no per-cell std"


# Numbers typed by hand from the paper's text (not read from the CSVs).
@pytest.mark.parametrize("path, model, task, split, mean, std", [
    # Table VIII, row "ViT-S16 (rand. weights)": CRC 0.617 (±0.008), CoNSeP 0.583 (±0.012)
    (TABLE8, "vit_small_patch16_224-random", "crc", "val", 0.617, 0.008),
    (TABLE8, "vit_small_patch16_224-random", "consep", "test", 0.583, 0.012),
    # Table VIII, row "DINO ViT-B8 [24]" (ImageNet): PCam/val 0.870 (±0.003)
    (TABLE8, "dino_vitb8_imagenet", "pcam", "val", 0.870, 0.003),
    # Table VIII, row "Phikon [30]": PCam/test 0.915 (±0.003)
    (TABLE8, "phikon", "pcam", "test", 0.915, 0.003),
    # Table VIII, row "DINO ViT-B8 (ours)": MHIST 0.809 (±0.021), CoNSeP 0.741 (±0.002)
    (TABLE8, "kaiko_vitb8", "mhist", "test", 0.809, 0.021),
    (TABLE8, "kaiko_vitb8", "consep", "test", 0.741, 0.002),
    # Table VIII, row "DINOv2 ViT-L14 (ours)": BACH 0.870 (±0.005)
    (TABLE8, "kaiko_vitl14", "bach", "val", 0.870, 0.005),
    # Table II, row "PCam/test (10×)", first column (40×): 0.824; row "BACH (3.47×)*", last column
    # ({5, 10, 20, 40}×): 0.753; row "MHIST (5×)", third column (10×): 0.648
    (TABLE2, "kaiko_ablation_vits16_mag_40x", "pcam", "test", 0.824, None),
    (TABLE2, "kaiko_ablation_vits16_mag_5_10_20_40x", "bach", "val", 0.753, None),
    (TABLE2, "kaiko_ablation_vits16_mag_10x", "mhist", "test", 0.648, None),
    # Table III, row "no training": CRC 0.689 (Table VIII prints 0.617 for the same random ViT-S16)
    (TABLE3, "vit_small_patch16_224-random", "crc", "val", 0.689, None),
    # Table III, row "TCGA 30%": BACH 0.733; row "TCGA 1%": PCam 0.871
    (TABLE3, "kaiko_ablation_vits16_tcga_30pct", "bach", "val", 0.733, None),
    (TABLE3, "kaiko_ablation_vits16_tcga_1pct", "pcam", "test", 0.871, None),
    # Table IV, row "10^5": MHIST 0.790; row "inf": PCam 0.899
    (TABLE4, "kaiko_ablation_vits16_patches_1e5", "mhist", "test", 0.790, None),
    (TABLE4, "kaiko_ablation_vits16_patches_inf", "pcam", "test", 0.899, None),
])
def test_paper_values(path, model, task, split, mean, std):
    row = _value(path, model, task, split)
    assert float(row["mean"]) == pytest.approx(mean, abs=1e-9)
    assert (row["std"] == "") if std is None else float(row["std"]) == pytest.approx(std, abs=1e-9)


def test_table8_agrees_with_the_eva_docs_table_where_both_have_a_cell():
    """The comparison in results/published/README.md: 50 shared cells (10 models x 5 splits), means and stds."""
    def cells(path: Path) -> dict[tuple[str, ...], tuple[str, str]]:
        return {(r["model"], r["task"], r["split"]): (r["mean"], r["std"]) for r in _rows(path)}
    paper, docs = cells(TABLE8), cells(KAIKO)
    shared = paper.keys() & docs.keys()
    assert len(shared) == 50 and all(paper[key] == docs[key] for key in shared)
    assert {key[1] for key in paper.keys() - docs.keys()} == {"consep"}
    assert {key[0] for key in docs.keys() - paper.keys()} == {"dinov2_vitl14_imagenet", "mahmood_uni"}


def test_the_paper_disagrees_with_itself_and_both_rows_are_kept():
    """The random ViT-S16's CRC: Table VIII 0.617, Table III ("no training") 0.689, each in its own file."""
    assert _value(TABLE8, "vit_small_patch16_224-random", "crc", "val")["mean"] == "0.617"
    assert _value(TABLE3, "vit_small_patch16_224-random", "crc", "val")["mean"] == "0.689"
    assert _value(TABLE4, "vit_small_patch16_224-random", "crc", "val")["mean"] == "0.689"


def test_regress_against_table8(tmp_path: Path, capsys: pytest.CaptureFixture):
    """A CRC probe of the random ViT-S/16 against 0.617 ± 0.008; a CoNSeP Mask2Former run against 0.741 ± 0.002."""
    from evalkit.cli import main

    probe = write_run(tmp_path / "probe", results("crc", "vit_small_patch16_224-random",
                                                  {"val": {"balanced_accuracy": summary(0.605, 0.005)}}))
    assert main(["regress", str(probe), "--baseline", str(TABLE8)]) == 0
    out = capsys.readouterr().out
    assert "| vit_small_patch16_224-random | crc/val | balanced_accuracy | 0.6170 | 0.6050 | -0.0120 | 0.0160 |" in out
    assert "1 of 1 passed; 49 entries of the published table for other models or tasks not compared" in out

    def segmentation(name: str, dice: float, decoder: str) -> Path:
        body = results("consep", "kaiko_vitb8", {"test": {"dice": summary(dice, 0.01)}}, evaluation="segmentation",
                       protocol=decoder, primary_metric="dice")
        return write_run(tmp_path / name, body, config={"task": "consep", "seg": {"decoder": decoder}})

    assert main(["regress", str(segmentation("m2f", 0.735, "mask2former")), "--baseline", str(TABLE8),
                 "--metrics", "[dice]"]) == 0
    out = capsys.readouterr().out
    assert "| kaiko_vitb8 | consep/test | dice | 0.7410 | 0.7350 | -0.0060 | 0.0100 |" in out
    assert "1 of 1 passed; 9 entries" in out
    assert main(["regress", str(segmentation("m2f-worse", 0.72, "mask2former")), "--baseline", str(TABLE8),
                 "--metrics", "[dice]"]) == 1
    assert "FAIL" in capsys.readouterr().out
    # another decoder is refused, not compared: the paper's CoNSeP column is Mask2Former's
    assert main(["regress", str(segmentation("linear", 0.8, "linear")), "--baseline", str(TABLE8),
                 "--metrics", "[dice]"]) == 1
    err = capsys.readouterr().err
    assert "'mask2former', the new result with 'linear'" in err and "(--seg.decoder mask2former)" in err
    # and eva's conv-decoder leaderboard refuses the Mask2Former run in turn
    assert main(["regress", str(segmentation("m2f-eva", 0.735, "mask2former")), "--baseline", str(EVA),
                 "--metrics", "[dice]"]) == 1
    assert "'segmentation_eva_conv', the new result with 'mask2former'" in capsys.readouterr().err
