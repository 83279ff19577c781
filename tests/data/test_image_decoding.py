"""Image decoding that never misreads and never tracebacks: the pixel limit (decompression bombs), pixel
types that are not 8-bit, and how ``read_rgb``, ``ImageSplitDataset`` (also in a spawned DataLoader
worker), ``evalkit data check`` and ``evalkit predict`` report them. Every image is built here, a few
pixels each; the "bomb" is a 1×1 PNG whose header claims 20000×20000."""

from __future__ import annotations

import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from evalkit.cli import main
from evalkit.data import ImageFolder, ImageSplitDataset, PatchCamelyon, read_rgb
from evalkit.data.base import MAX_IMAGE_PIXELS
from evalkit.data.check import check_task
from evalkit.errors import EvalkitError
from evalkit.task import Task
from fixtures import BUILDERS, pcam_file
from helpers import CONFIGS, CRC_DEMO, model_yaml, read_h5

BOMB_SIDE = 20_000  # 400,000,000 pixels: over twice PIL's default limit, where PIL raises instead of warning
# 16-bit values and their 8-bit images by the full range, round(v / 257), written out by hand.
GREY16 = [0, 128, 129, 257, 1000, 32768, 65278, 65407, 65535]
GREY16_AS_8BIT = [0, 0, 1, 1, 4, 128, 254, 255, 255]
TILE = sorted(CRC_DEMO.rglob("*.png"))[0]  # a real 224×224 RGB tile


def _one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    return message


def write_bomb(path: Path, width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> Path:
    """A valid 1×1 PNG whose IHDR (CRC fixed) claims ``width``×``height``: 70 bytes that PIL opens as huge."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("1", (1, 1)).save(path, format="PNG")
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def write_png16(path: Path, values: np.ndarray, color_type: int) -> Path:
    """A 16-bit PNG written byte by byte (PIL cannot write 16-bit RGB): 0 grey, 2 RGB, 6 RGBA."""
    height, width = values.shape[:2]
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path


def _tensor(image: Image.Image) -> torch.Tensor:  # module level: a spawned DataLoader worker unpickles it
    return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32).copy()).permute(2, 0, 1)


# ---- the pixel limit -----------------------------------------------------------------------------------


def test_a_decompression_bomb_is_refused_in_one_line(tmp_path):
    """Today's failure: PIL's DecompressionBombError (not an OSError) escaped read_rgb as a traceback."""
    bomb = write_bomb(tmp_path / "bomb.png")
    with pytest.raises(EvalkitError) as info:
        read_rgb(bomb)
    message = _one_line(info)
    assert message == (f"cannot read image {bomb}: 20000×20000 = 400,000,000 pixels, more than the limit of "
                       "89,478,485 (a decompression bomb, or an image too large to decode whole); if it is genuine, "
                       "raise the limit with --embed.max_image_pixels (evalkit data check: --max_image_pixels)")
    assert MAX_IMAGE_PIXELS == 89_478_485 == Image.MAX_IMAGE_PIXELS  # PIL's default; PIL's global is left as it was


def test_the_limit_is_the_one_passed_not_pils_global(tmp_path, monkeypatch):
    """20×20 = 400 pixels: accepted at a limit of 400 whatever PIL's global says (here 50, where PIL itself
    would raise), refused at 399, also between the limit and twice it, where PIL would only warn."""
    path = tmp_path / "tile.png"
    Image.open(TILE).resize((20, 20)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        assert read_rgb(path, max_pixels=400).size == (20, 20)
    with pytest.raises(EvalkitError) as info:
        read_rgb(path, max_pixels=399)
    assert "20×20 = 400 pixels, more than the limit of 399" in _one_line(info)
    with pytest.raises(EvalkitError, match="more than the limit of 300"):
        read_rgb(path, max_pixels=300)  # 400 is within twice 300
    assert Image.MAX_IMAGE_PIXELS == 50  # restored after each decode


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_a_limit_that_is_not_a_positive_count_is_refused(tmp_path, bad):
    with pytest.raises(EvalkitError, match="max_image_pixels must be a positive number of pixels"):
        ImageSplitDataset(ImageFolder(str(tmp_path)), None, _tensor, 8, max_image_pixels=bad)


def _folder_with(root: Path, images: dict[str, Path]) -> ImageFolder:
    """An ImageFolder at ``root`` whose train split is ``A/<name>`` for each given file, in name order."""
    for name, source in images.items():
        (root / "train" / "A").mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / "train" / "A" / name)
    return ImageFolder(str(root), splits={"train": "train"})


def test_the_limit_applies_in_a_spawned_dataloader_worker(tmp_path):
    """A spawned worker sees no setting of the main process: the limit travels with the dataset.
    With skip_unreadable, an image over the limit and a header bomb are unreadable, not a traceback."""
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.open(TILE).resize((8, 8)).save(small)  # 64 pixels
    Image.open(TILE).resize((12, 12)).save(large)  # 144 pixels
    spec = _folder_with(tmp_path / "ds", {"a.png": small, "b.png": large, "c.png": write_bomb(tmp_path / "bomb.png")})
    listing = spec.list_split(tmp_path, "train")
    dataset = ImageSplitDataset(spec, listing, _tensor, 8, skip_unreadable=True, max_image_pixels=100)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=1, multiprocessing_context="spawn")
    [(images, indices, readable)] = list(loader)
    assert indices.tolist() == [0, 1, 2] and readable.tolist() == [True, False, False]
    assert images[0].std() > 0 and not images[1:].any()
    strict = ImageSplitDataset(spec, listing, _tensor, 8, max_image_pixels=100)
    with pytest.raises(EvalkitError, match="12×12 = 144 pixels, more than the limit of 100"):
        strict[1]


# ---- pixel types ---------------------------------------------------------------------------------------


def _grey16_files(folder: Path) -> dict[str, Path]:
    values = np.asarray([GREY16], dtype=np.uint16)
    Image.fromarray(values).save(folder / "grey16.png")  # PIL mode I;16
    tifffile.imwrite(folder / "grey16_le.tif", values)  # I;16
    tifffile.imwrite(folder / "grey16_be.tif", values, byteorder=">")  # I;16B
    return {"png": folder / "grey16.png", "tiff": folder / "grey16_le.tif", "big-endian tiff": folder / "grey16_be.tif"}


@pytest.mark.parametrize("kind", ["png", "tiff", "big-endian tiff"])
def test_16bit_greyscale_is_scaled_by_the_full_range(tmp_path, kind):
    """Today's failure: convert("RGB") clipped every value above 255 to white."""
    rgb = np.asarray(read_rgb(_grey16_files(tmp_path)[kind]))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, len(GREY16), 3)
    assert rgb[0].tolist() == [[v, v, v] for v in GREY16_AS_8BIT]


def test_16bit_rgb_keeps_the_high_byte_of_each_sample(tmp_path):
    """PIL reads 16-bit RGB(A) PNGs and interleaved TIFFs as 8-bit by keeping the high byte (v // 256,
    at most one level below round(v / 257)): scaled by the full range, not clipped. Pinned here."""
    red = np.asarray([GREY16], dtype=np.uint16)
    values = np.stack([red, red[:, ::-1], red // 3], axis=-1)
    expected = (values >> 8).astype(np.uint8)
    rgba = np.concatenate([values, np.full_like(red, 1000)[..., None]], axis=-1)  # alpha 1000/65535: dropped
    files = [write_png16(tmp_path / "rgb16.png", values, 2), write_png16(tmp_path / "rgba16.png", rgba, 6)]
    tifffile.imwrite(tmp_path / "rgb16.tif", values, photometric="rgb")
    files.append(tmp_path / "rgb16.tif")
    for path in files:
        assert np.array_equal(np.asarray(read_rgb(path)), expected), path
        assert np.abs(np.asarray(read_rgb(path)).astype(int) - np.round(values / 257)).max() <= 1


def test_16bit_rgb_tiff_in_separate_planes_is_refused(tmp_path):
    """Today's failure: PIL read the planes' 16-bit samples as 8-bit ones, a garbled image, without a word."""
    values = np.stack([np.asarray([GREY16], dtype=np.uint16)] * 3)
    path = tmp_path / "planar16.tif"
    tifffile.imwrite(path, values, photometric="rgb", planarconfig="separate")
    with pytest.raises(EvalkitError) as info:
        read_rgb(path)
    assert _one_line(info) == (f"cannot read image {path}: a TIFF of 16-bit samples stored plane by plane, which "
                               "PIL misreads; save it interleaved (e.g. tiffcp -p contig in.tif out.tif) or as "
                               "8-bit RGB")
    tifffile.imwrite(tmp_path / "planar8.tif", (values // 257).astype(np.uint8), photometric="rgb",
                     planarconfig="separate")  # 8-bit planes PIL reads right
    assert np.asarray(read_rgb(tmp_path / "planar8.tif"))[0].tolist() == [[v // 257] * 3 for v in GREY16]


@pytest.mark.parametrize("dtype, mode, what", [
    (np.float32, "F", "32-bit floats"),
    (np.int32, "I", "signed 16-bit or 32-bit integers"),
    (np.uint32, "I", "signed 16-bit or 32-bit integers"),
    (np.int16, "I", "signed 16-bit or 32-bit integers"),
])
def test_float_and_wide_integer_pixels_are_refused(tmp_path, dtype, mode, what):
    """Today's failure: they were clipped to black and white by convert("RGB"), without a word."""
    path = tmp_path / f"{np.dtype(dtype).name}.tif"
    tifffile.imwrite(path, np.asarray([GREY16], dtype=np.float64).astype(dtype))
    assert Image.open(path).mode == mode
    with pytest.raises(EvalkitError) as info:
        read_rgb(path)
    assert _one_line(info) == (f"cannot read image {path}: its pixels are {what} (PIL mode {mode}), whose range is "
                               "the writer's choice; convert it to 8-bit RGB first (e.g. with numpy: scale your "
                               "range to 0..255, cast to uint8, save with PIL)")


@pytest.mark.parametrize("mode, suffix", [("1", ".png"), ("L", ".png"), ("P", ".png"), ("LA", ".png"),
                                          ("RGB", ".png"), ("RGBA", ".png"), ("CMYK", ".tif"), ("RGB", ".jpg"),
                                          ("L", ".bmp")])
def test_8bit_modes_convert_as_pil_does(tmp_path, mode, suffix):
    """The 8-bit modes are unchanged: PIL's conversion of the stored image; RGBA and LA lose their alpha
    (the colour of a fully transparent pixel is kept, not composited)."""
    source = Image.open(TILE).resize((16, 16)).convert("RGBA")
    source.putpixel((0, 0), (200, 30, 40, 0))  # transparent, coloured
    image = source.convert("RGB").convert(mode) if mode not in ("RGBA", "LA") else source.convert(mode)
    path = tmp_path / f"image{suffix}"
    image.save(path)
    with Image.open(path) as stored:
        expected = np.asarray(stored.convert("RGB"))
    decoded = read_rgb(path)
    assert decoded.mode == "RGB" and np.array_equal(np.asarray(decoded), expected)
    if mode == "RGBA":
        assert decoded.getpixel((0, 0)) == (200, 30, 40)


def test_pcam_refuses_patches_that_are_not_8bit(tmp_path):
    """Today's failure: a uint16 x array listed fine, then PIL's TypeError escaped read_image as a traceback."""
    BUILDERS["pcam"](tmp_path)
    path = pcam_file(tmp_path, "val", "x")
    with h5py.File(path, "r+") as f:
        x = f["x"][...].astype(np.uint16) * 257
        del f["x"]
        f.create_dataset("x", data=x)
    with pytest.raises(EvalkitError) as info:
        PatchCamelyon(allow_subset=True).list_split(tmp_path, "val")
    assert str(path) in _one_line(info) and "uint16" in str(info.value) and "N×96×96×3 uint8" in str(info.value)
    spec = PatchCamelyon(allow_subset=True)
    listing = spec.list_split(tmp_path, "train")
    assert spec.read_image(listing, 0).mode == "RGB"


# ---- evalkit data check and evalkit predict ------------------------------------------------------------


def _mixed_folder(root: Path) -> tuple[Path, dict[str, Path]]:
    """``root/ds/{train,val}/<class>/``: real tiles, plus a bomb, a float TIFF and a 16-bit grey PNG in train."""
    staging = root / "staging"
    staging.mkdir(parents=True)
    float_tif = staging / "float.tif"
    tifffile.imwrite(float_tif, np.ones((4, 4), dtype=np.float32))
    grey16 = _grey16_files(staging)["png"]
    tiles = iter(sorted(CRC_DEMO.rglob("*.png")))
    ds = root / "ds"
    for split, count in (("train", 2), ("val", 1)):
        for name in ("A", "B"):
            (ds / split / name).mkdir(parents=True)
            for i in range(count):
                shutil.copy(next(tiles), ds / split / name / f"tile{i}.png")
    bad = {"A/bomb.png": write_bomb(ds / "train" / "A" / "bomb.png"),
           "B/float.tif": Path(shutil.copy(float_tif, ds / "train" / "B" / "float.tif"))}
    shutil.copy(grey16, ds / "train" / "B" / "grey16.png")
    return ds, bad


def test_data_check_reports_bombs_and_pixel_types_one_line_each(tmp_path):
    """Today's failure: the bomb's DecompressionBombError escaped the decoding threads as a traceback,
    and the float TIFF was clipped and called readable."""
    ds, bad = _mixed_folder(tmp_path)
    task = Task("mixed", ImageFolder(str(ds)))
    lines: list[str] = []
    counts, unreadable = check_task(task, tmp_path, log=lines.append)
    assert counts == [] and len(unreadable) == 2, unreadable
    assert unreadable[0].startswith(f"train: cannot read image {ds / 'train' / 'A' / 'bomb.png'}: 20000×20000")
    assert unreadable[1].startswith(f"train: cannot read image {ds / 'train' / 'B' / 'float.tif'}: its pixels are "
                                    "32-bit floats (PIL mode F)")
    assert "  unreadable: 2 of 7" in lines and "  unreadable: 0 of 2" in lines
    reasons = [line for line in lines if line.startswith("    cannot read image")]
    assert [r.strip() for r in reasons] == [u.removeprefix("train: ") for u in unreadable]
    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS  # the threads gave PIL's global back


def _cli_folder_task(tmp_path: Path, ds: Path) -> list[str]:
    return ["--config", str(CONFIGS / "tasks" / "image_folder.yaml"), "--task.dataset.init_args.root", str(ds)]


def test_cli_data_check_names_the_bomb_and_takes_the_limit_flag(tmp_path, capsys):
    ds, bad = _mixed_folder(tmp_path)
    code = main(["data", "check", *_cli_folder_task(tmp_path, ds), "--data_root", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code != 0 and "Traceback" not in err and "  unreadable: 2 of 7" in out
    [error] = [line for line in err.splitlines() if line.startswith("evalkit: error:")]
    assert error.startswith(f"evalkit: error: 2 unreadable file(s) in my_dataset: train: cannot read image "
                            f"{bad['A/bomb.png']}: 20000×20000 = 400,000,000 pixels, more than the limit of 89,478,485")
    code = main(["data", "check", *_cli_folder_task(tmp_path, ds), "--data_root", str(tmp_path),
                 "--max_image_pixels", "100"])
    out, err = capsys.readouterr()
    assert code != 0 and "  unreadable: 6 of 7" in out and "more than the limit of 100 " in err  # grey16: 9 px
    code = main(["data", "check", *_cli_folder_task(tmp_path, ds), "--max_image_pixels", "0"])
    err = capsys.readouterr().err
    assert code != 0 and "max_image_pixels must be a positive number of pixels, got 0" in err
    assert "Traceback" not in err


def _predict(tmp_path: Path, ds: Path, *extra: str) -> list[str]:
    model = model_yaml(tmp_path / "resnet18.yaml", "evalkit.models.TimmModel", model_name="resnet18",
                       pretrained=False, seed=0, preprocessing={"input_size": 32})
    return ["predict", *_cli_folder_task(tmp_path, ds), "--config", str(model), "--data_root", str(tmp_path),
            "--embeddings_root", str(tmp_path / "emb"), "--embed.num_workers", "0", "--embed.accelerator", "cpu",
            "--embed.batch_size", "4", *extra]


def test_cli_predict_refuses_a_bomb_in_one_line_and_skips_it_when_asked(tmp_path, capsys):
    """Today's failure: DecompressionBombError stopped predict with a traceback, with or without
    --embed.skip_unreadable."""
    ds, bad = _mixed_folder(tmp_path)
    (ds / "train" / "B" / "float.tif").unlink()
    code = main(_predict(tmp_path, ds))
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    [error] = [line for line in err.splitlines() if line.startswith("evalkit: error:")]
    assert error == (f"evalkit: error: cannot read image {bad['A/bomb.png']}: 20000×20000 = 400,000,000 pixels, "
                     "more than the limit of 89,478,485 (a decompression bomb, or an image too large to decode "
                     "whole); if it is genuine, raise the limit with --embed.max_image_pixels (evalkit data check: "
                     "--max_image_pixels)")
    code = main(_predict(tmp_path, ds, "--embed.skip_unreadable", "true"))
    err = capsys.readouterr().err
    assert code in (0, None) and "Traceback" not in err, err
    assert "left out 1 unreadable image(s), first: train/A/bomb.png" in err
    [train] = [p for p in (tmp_path / "emb").rglob("train-*.h5")]
    data = read_h5(train)
    assert json.loads(data["attrs"]["skipped_ids"]) == ["train/A/bomb.png"]
    assert "train/B/grey16.png" in data["ids"] and len(data["ids"]) == 5


def test_cli_embed_max_image_pixels_is_checked(tmp_path, capsys):
    code = main(_predict(tmp_path, tmp_path, "--embed.max_image_pixels", "-5"))
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    assert "max_image_pixels must be a positive number of pixels, got -5" in err
