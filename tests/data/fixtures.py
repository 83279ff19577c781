"""Builders of every registered dataset that lists images, keyed by its ``DATASETS`` name: the five
published ones in their exact official on-disk layouts, and the generic folder and CSV layouts.

Every image is one of the real tiles shipped in ``data/crc_demo`` (224×224), re-encoded as the
format each release uses; only the sample counts are small. Each builder returns what a reader
must list: per split, the ids in listing order and their class indices, so the tests
compare against numbers written here, independently of the readers.

Also a small runner of ``evalkit`` subprocesses, a few at a time (each spends most of its
time importing torch and Lightning).
"""

from __future__ import annotations

import csv
import gzip
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from evalkit.data import DATASETS
from helpers import CRC_CLASSES, CRC_DEMO, cli_env, evalkit_cmd

TILES = sorted(p for p in CRC_DEMO.rglob("*") if p.suffix in (".png", ".tif"))  # 41 real tiles, 224×224


def tile(i: int) -> Image.Image:
    """Real tile ``i`` as RGB; past the 41 tiles, the same tiles transposed (still real content)."""
    image = Image.open(TILES[i % len(TILES)]).convert("RGB")
    turns = i // len(TILES)
    return image.transpose(Image.Transpose.ROTATE_90) if turns % 2 else image


def truncate(path: Path, keep: int | None = None) -> Path:
    """Cut a file short, as an interrupted copy leaves it (default: to half its size)."""
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep is not None else len(data) // 2])
    return path


@dataclass
class Expected:
    """What a reader must list for a built dataset: split -> [(id, class index)] in listing order."""

    folder: str  # the dataset's folder under the data root (its spec's ``root``)
    splits: dict[str, list[tuple[str, int]]]
    extra: dict = field(default_factory=dict)

    def ids(self, split: str) -> list[str]:
        return [i for i, _ in self.splits[split]]

    def labels(self, split: str) -> list[int]:
        return [label for _, label in self.splits[split]]

    def counts(self, split: str, num_classes: int) -> list[int]:
        return np.bincount(np.asarray(self.labels(split), dtype=np.int64), minlength=num_classes).tolist()


# ---- BACH --------------------------------------------------------------------------------------------

BACH_CLASSES = ["Benign", "InSitu", "Invasive", "Normal"]
# Three photos per class, picked so that both splits of eva's patient-level split (splits/bach.csv)
# occur, including its one-photo train ranges (b060 = index 59, iv059 = index 258) between val ranges.
BACH_FILES = {
    "Benign": {"b001.tif": "train", "b045.tif": "val", "b060.tif": "train"},
    "InSitu": {"is001.tif": "train", "is040.tif": "val", "is070.tif": "train"},
    "Invasive": {"iv041.tif": "val", "iv059.tif": "train", "iv073.tif": "val"},
    "Normal": {"n045.tif": "train", "n046.tif": "val", "n100.tif": "train"},
}
BACH_SIZE = (288, 216)  # the photos are 2048×1536 (4:3); the model's transform resizes them


def build_bach(data_root: Path) -> Expected:
    photos = data_root / "bach" / "ICIAR2018_BACH_Challenge" / "Photos"
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    k = 0
    for label, name in enumerate(BACH_CLASSES):
        (photos / name).mkdir(parents=True)
        for file, split in sorted(BACH_FILES[name].items()):
            tile(k).resize(BACH_SIZE).save(photos / name / file, format="TIFF")
            splits[split].append((f"{name}/{file}", label))
            k += 1
    # The release also holds the labels as a CSV beside the class folders, and the whole-slide images.
    (photos / "microscopy_ground_truth.csv").write_text(
        "".join(f"{file},{name}\n" for name in BACH_CLASSES for file in sorted(BACH_FILES[name])))
    (photos.parent / "WSI").mkdir()
    return Expected("bach", splits)


# ---- CRC ---------------------------------------------------------------------------------------------

CRC_FOLDERS = {"train": "NCT-CRC-HE-100K", "val": "CRC-VAL-HE-7K"}
CRC_PER_CLASS = {"train": 2, "val": 1}


def build_crc(data_root: Path) -> Expected:
    """Each class folder holds that class's real tiles (as .tif, like the release); BACK, with one
    shipped tile, reuses it rotated."""
    root = data_root / "crc"
    splits: dict[str, list[tuple[str, int]]] = {}
    for label, name in enumerate(CRC_CLASSES):
        sources = sorted((CRC_DEMO / name).iterdir())
        uses = 0
        for split, folder in CRC_FOLDERS.items():
            (root / folder / name).mkdir(parents=True, exist_ok=True)
            for _ in range(CRC_PER_CLASS[split]):
                source = sources[uses % len(sources)]
                image = Image.open(source).convert("RGB")
                if uses >= len(sources):  # a reused tile, turned by 90°, 180°, ...
                    image = image.rotate(90 * (uses // len(sources)))
                stem = source.stem + (f"-{uses}" if uses >= len(sources) else "")
                image.save(root / folder / name / f"{stem}.tif", format="TIFF")
                uses += 1
    for split, folder in CRC_FOLDERS.items():
        splits[split] = [(f"{folder}/{name}/{p.name}", label) for label, name in enumerate(CRC_CLASSES)
                         for p in sorted((root / folder / name).glob("*.tif"))]
    return Expected("crc", splits)


# ---- MHIST -------------------------------------------------------------------------------------------

MHIST_CLASSES = ["SSA", "HP"]  # eva's order: SSA = 0, HP = 1
# annotations.csv rows in file order (the partitions interleaved, as in the release).
MHIST_ROWS = [
    ("MHIST_aaa.png", "SSA", "train"), ("MHIST_aab.png", "HP", "train"), ("MHIST_aac.png", "HP", "test"),
    ("MHIST_aad.png", "SSA", "train"), ("MHIST_aae.png", "HP", "train"), ("MHIST_aaf.png", "SSA", "test"),
    ("MHIST_aag.png", "HP", "train"), ("MHIST_aah.png", "HP", "train"), ("MHIST_aai.png", "SSA", "train"),
    ("MHIST_aaj.png", "HP", "test"), ("MHIST_aak.png", "SSA", "test"),
]
# The release's header, in its order (Wei et al. 2021, annotations.csv).
MHIST_HEADER = ["Image Name", "Majority Vote Label", "Number of Annotators who Selected SSA (Out of 7)", "Partition"]


def build_mhist(data_root: Path, header: list[str] = MHIST_HEADER) -> Expected:
    root = data_root / "mhist"
    (root / "images").mkdir(parents=True)
    with open(root / "annotations.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for k, (name, label, partition) in enumerate(MHIST_ROWS):
            tile(3 * k + 1).save(root / "images" / name, format="PNG")
            row = {"Image Name": name, "Majority Vote Label": label, "Partition": partition,
                   "Number of Annotators who Selected SSA (Out of 7)": 6 if label == "SSA" else 1}
            writer.writerow([row[c] for c in header])
    splits = {split: [(f"images/{name}", MHIST_CLASSES.index(label)) for name, label, p in MHIST_ROWS if p == split]
              for split in ("train", "test")}
    return Expected("mhist", splits)


# ---- PatchCamelyon -----------------------------------------------------------------------------------

PCAM_CLASSES = ["no_tumor", "tumor"]
PCAM_FILES = {"train": "train", "val": "valid", "test": "test"}
PCAM_LABELS = {"train": [0, 1, 1, 0, 1, 0, 0, 1], "val": [1, 0, 0, 1], "test": [0, 1, 1, 0]}


def pcam_file(data_root: Path, split: str, kind: str) -> Path:
    return data_root / "patch_camelyon" / f"camelyonpatch_level_2_split_{PCAM_FILES[split]}_{kind}.h5"


def pcam_patches(split: str) -> np.ndarray:
    """N×96×96×3 uint8: 96 px crops of real tiles at varying offsets."""
    offset = {"train": 0, "val": 10, "test": 20}[split]
    crops = []
    for k in range(len(PCAM_LABELS[split])):
        image = np.asarray(tile(offset + k))
        top, left = (37 * k) % 128, (53 * k + 11) % 128
        crops.append(image[top:top + 96, left:left + 96])
    return np.stack(crops).astype(np.uint8)


def build_pcam(data_root: Path) -> Expected:
    (data_root / "patch_camelyon").mkdir(parents=True)
    splits = {}
    for split, labels in PCAM_LABELS.items():
        with h5py.File(pcam_file(data_root, split, "x"), "w") as f:
            f.create_dataset("x", data=pcam_patches(split), chunks=(1, 96, 96, 3))
        with h5py.File(pcam_file(data_root, split, "y"), "w") as f:
            f.create_dataset("y", data=np.asarray(labels, dtype=np.uint8).reshape(-1, 1, 1, 1))
        stem = f"camelyonpatch_level_2_split_{PCAM_FILES[split]}_x"
        splits[split] = [(f"{stem}/{i}", label) for i, label in enumerate(labels)]
    return Expected("patch_camelyon", splits)


def gzip_file(path: Path) -> Path:
    """``path`` -> ``path.gz`` (as downloaded), the original removed."""
    gz = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return gz


# ---- CoNSeP ------------------------------------------------------------------------------------------

CONSEP_CLASSES = ["background", "other", "inflammatory", "epithelial", "spindle-shaped"]
CONSEP_IMAGES = {"train": ["train_1", "train_2", "train_10"], "test": ["test_1", "test_2"]}
CONSEP_FOLDERS = {"train": "Train", "test": "Test"}
# HoVer-Net's merge of CoNSeP's 7 nucleus types, written out here as the reference.
TYPE_TO_CLASS_REFERENCE = {0: 0, 1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: 4, 7: 4}


def draw_nuclei(seed: int, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """``inst_map`` and ``type_map`` (H×W int32): one filled disc of each type 1..7, a few more at random."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inst = np.zeros((size, size), dtype=np.int32)
    types = np.zeros((size, size), dtype=np.int32)
    kinds = list(range(1, 8)) + rng.integers(1, 8, size=3).tolist()
    for instance, kind in enumerate(kinds, start=1):
        cy, cx = (20 + (instance * 61) % (size - 40), 20 + (instance * 97) % (size - 40))
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= int(rng.integers(6, 14)) ** 2
        inst[disc] = instance
        types[disc] = kind
    return inst, types


def build_consep(data_root: Path) -> Expected:
    from scipy.io import savemat

    root = data_root / "consep"
    splits, type_maps = {}, {}
    for s, (split, stems) in enumerate(CONSEP_IMAGES.items()):
        images, labels = root / CONSEP_FOLDERS[split] / "Images", root / CONSEP_FOLDERS[split] / "Labels"
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for k, stem in enumerate(stems):
            image = tile(20 + 5 * s + k)
            if k == 0:  # a PNG with an alpha channel, as some exports have: read as RGB
                image = image.convert("RGBA")
            image.save(images / f"{stem}.png", format="PNG")
            overlay = root / CONSEP_FOLDERS[split] / "Overlay"  # the release's visualisations: not read
            overlay.mkdir(exist_ok=True)
            image.convert("RGB").save(overlay / f"{stem}.png", format="PNG")
            inst, types = draw_nuclei(seed=10 * s + k)
            n = int(inst.max())
            inst_type = np.array([[types[inst == i][0]] for i in range(1, n + 1)], dtype=np.int32)
            centroid = np.array([np.argwhere(inst == i).mean(axis=0)[::-1] for i in range(1, n + 1)])
            savemat(labels / f"{stem}.mat", {"inst_map": inst, "type_map": types, "inst_type": inst_type,
                                             "inst_centroid": centroid})
            type_maps[f"{CONSEP_FOLDERS[split]}/Images/{stem}.png"] = types
        splits[split] = [(f"{CONSEP_FOLDERS[split]}/Images/{stem}.png", -1) for stem in stems]
    return Expected("consep", splits, {"type_maps": type_maps})


# ---- ImageFolder and ImageCSV -------------------------------------------------------------------------

GENERIC_CLASSES = ["ADI", "NORM", "TUM"]  # sorted: the label order both infer when no classes are given
IMAGE_FOLDER_COUNTS = {"train": {"ADI": 2, "NORM": 1, "TUM": 2}, "val": {"ADI": 1, "NORM": 1, "TUM": 1}}
# split.csv rows in file order: the splits interleaved, one image in a subfolder.
IMAGE_CSV_ROWS = [("a.png", "TUM", "train"), ("b.png", "ADI", "val"), ("sub/c.png", "NORM", "train"),
                  ("d.png", "ADI", "train"), ("e.png", "TUM", "val")]


def build_image_folder(data_root: Path) -> Expected:
    root = data_root / "image_folder"
    splits: dict[str, list[tuple[str, int]]] = {}
    k = 0
    for split, counts in IMAGE_FOLDER_COUNTS.items():
        splits[split] = []
        for label, name in enumerate(GENERIC_CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(counts[name]):
                tile(k).save(root / split / name / f"{name}-{i}.png", format="PNG")
                splits[split].append((f"{split}/{name}/{name}-{i}.png", label))
                k += 1
    return Expected("image_folder", splits)


def build_image_csv(data_root: Path) -> Expected:
    root = data_root / "image_csv"
    (root / "sub").mkdir(parents=True)
    with open(root / "split.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split"])
        for k, (path, label, split) in enumerate(IMAGE_CSV_ROWS):
            tile(k).save(root / path, format="PNG")
            writer.writerow([path, label, split])
    splits = {split: [(path, GENERIC_CLASSES.index(label)) for path, label, s in IMAGE_CSV_ROWS if s == split]
              for split in ("train", "val")}
    return Expected("image_csv", splits)


# Every registered dataset that lists images, by its DATASETS name (tests/data/test_datasets.py checks
# that none is missing); the published ones are those with official counts.
BUILDERS = {"bach": build_bach, "crc": build_crc, "mhist": build_mhist, "pcam": build_pcam, "consep": build_consep,
            "image_folder": build_image_folder, "image_csv": build_image_csv}
PUBLISHED = [name for name, cls in DATASETS.items() if cls.official_counts]
# Registered datasets with no images to list, and where they are tested instead.
WITHOUT_IMAGES = {"precomputed": "the bring-your-own-embeddings tests in tests/data/test_datasets.py"}


def build_all(data_root: Path) -> dict[str, Expected]:
    """The published datasets under one data root."""
    return {name: BUILDERS[name](data_root) for name in PUBLISHED}


# ---- evalkit subprocesses, a few at a time -----------------------------------------------------------

@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    folder: Path  # the case's own folder (cwd, embeddings and results roots)
    seconds: float = 0.0

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("evalkit: error:")]


def run_many(jobs: dict[str, list[str]], base: Path, max_parallel: int = 3, timeout: float = 300) -> dict[str, Outcome]:
    """Run ``evalkit <argv>`` for every job, at most ``max_parallel`` at once, in ``base/<name>``.

    Output goes to files (no pipe can fill up); one thread per process keeps small machines responsive.
    """
    pending = list(jobs.items())
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    done: dict[str, Outcome] = {}
    env = cli_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    while pending or running:
        while pending and len(running) < max_parallel:
            name, argv = pending.pop(0)
            folder = base / name
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / "stdout.txt", "w") as out, open(folder / "stderr.txt", "w") as err:
                running[name] = (subprocess.Popen(evalkit_cmd(*argv), cwd=folder, env=env, stdout=out, stderr=err),
                                 time.monotonic())
        for name, (proc, started) in list(running.items()):
            if proc.poll() is None and time.monotonic() - started < timeout:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            folder = base / name
            done[name] = Outcome(proc.returncode, (folder / "stdout.txt").read_text(),
                                 (folder / "stderr.txt").read_text(), folder, time.monotonic() - started)
            del running[name]
        time.sleep(0.05)
    return done
