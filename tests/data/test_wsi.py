"""Online whole-slide patching on the two real slides shipped in data/wsi: reading, resolution, Otsu mask,
random and grid sampling, reproducibility across DataLoader workers, and one-line errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.data import wsi
from evalkit.data.wsi import (
    GridPatches,
    RandomPatches,
    Slide,
    WSIPatches,
    box_fractions,
    field_size,
    foreground_mask,
    magnification_to_mpp,
    otsu_threshold,
)

WSI = Path(__file__).resolve().parents[2] / "data" / "wsi"  # shipped with the repo (data/wsi/ATTRIBUTION.md)
CMU = WSI / "cmu-1-small-region.svs"  # Aperio JPEG, 2220 x 2967, one level, 0.499 µm/px, AppMag 20
TCGA = WSI / "tcga-cr-7395-01a-01-ts1.svs"  # Aperio JPEG 2000, 2 levels, records no resolution
TCGA_MPP = 0.5  # assumed (the file records none): it only has to be given


def _has_reader() -> bool:
    return bool(wsi._available_readers())


def _decodes_jpeg2000() -> bool:
    if importlib.util.find_spec("tiffslide") and importlib.util.find_spec("imagecodecs"):
        import imagecodecs

        if imagecodecs.JPEG2K.available:
            return True
    return "openslide" in wsi._available_readers()  # OpenSlide decodes Aperio JPEG 2000 itself


needs_reader = pytest.mark.skipif(not _has_reader(), reason="no slide reader: pip install tiffslide imagecodecs")
needs_jpeg2000 = pytest.mark.skipif(
    not _decodes_jpeg2000(), reason="TCGA slide is JPEG 2000: needs tiffslide + imagecodecs (with JPEG2K) or openslide")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def _as_tensor(image) -> torch.Tensor:  # module level: DataLoader workers pickle it
    return torch.from_numpy(np.asarray(image).copy())


@pytest.fixture(scope="module")
def cmu() -> Slide:
    return Slide(CMU)


@pytest.fixture(scope="module")
def both_20x() -> RandomPatches:
    return RandomPatches([str(CMU), str(TCGA)], magnification_to_mpp(20), samples_per_epoch=64, seed=0,
                         fallback_mpp=TCGA_MPP)


# ---- reading slides -------------------------------------------------------------------------------


@needs_reader
def test_cmu_opens_with_recorded_resolution(cmu: Slide) -> None:
    assert cmu.dimensions == (2220, 2967) and cmu.level_downsamples == [1.0]
    assert cmu.mpp == pytest.approx(0.499) and cmu.mpp_source == "recorded mpp"
    assert cmu.magnification == 20
    print(f"\nCMU: reader {cmu.reader}, {cmu.mpp} µm/px, {cmu.magnification}×")


@needs_reader
@needs_jpeg2000
def test_tcga_jpeg2000_opens_and_needs_a_resolution() -> None:
    with pytest.raises(EvalkitError) as exc:
        Slide(TCGA)
    message = _one_line(exc)
    assert str(TCGA) in message and "fallback_mpp" in message
    slide = Slide(TCGA, fallback_mpp=TCGA_MPP)
    assert slide.dimensions == (4443, 3567) and len(slide.level_downsamples) == 2
    assert slide.level_downsamples[1] == pytest.approx(2.0, rel=1e-3)
    assert (slide.mpp, slide.mpp_source, slide.magnification) == (TCGA_MPP, "fallback_mpp", 20)
    patch = np.asarray(slide.read_patch(1500, 1500, 448, 224))  # decodes JPEG 2000 tiles of level 1
    assert patch.shape == (224, 224, 3) and patch.std() > 5


@pytest.mark.skipif(set(wsi._available_readers()) != set(wsi.READERS), reason="needs both tiffslide and openslide")
def test_readers_agree() -> None:
    slides = [Slide(CMU, reader=name) for name in wsi.READERS]
    assert len({(s.dimensions, s.mpp, s.magnification) for s in slides}) == 1
    patches = [np.asarray(s.read_patch(900, 1200, 224, 224), dtype=float) for s in slides]
    assert np.abs(patches[0] - patches[1]).mean() < 1


@needs_reader
def test_unreadable_or_missing_slide_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    garbage = tmp_path / "broken.svs"
    garbage.write_bytes(b"not a slide" * 100)
    truncated = tmp_path / "truncated.svs"
    truncated.write_bytes(CMU.read_bytes()[:300_000])
    for path in (garbage, truncated):
        with pytest.raises(EvalkitError) as exc:
            Slide(path)
        message = _one_line(exc)
        assert str(path) in message and "pip install tiffslide imagecodecs" in message
    with pytest.raises(EvalkitError, match="slide not found"):
        Slide(tmp_path / "absent.svs")
    monkeypatch.setattr(wsi, "_available_readers", lambda: [])
    with pytest.raises(EvalkitError) as exc:
        Slide(CMU)
    assert "no whole-slide reader" in _one_line(exc) and "pip install tiffslide imagecodecs" in str(exc.value)


# ---- foreground -----------------------------------------------------------------------------------


def _brute_force_otsu(values: np.ndarray) -> int:
    """Every cut tried one by one, between-class variance from the two classes themselves."""
    values = values.ravel().astype(np.float64)
    best, best_t = -1.0, int(values[0])
    for t in range(255):
        above = values > t
        if above.all() or not above.any():
            continue
        w1 = above.mean()
        variance = (1 - w1) * w1 * (values[~above].mean() - values[above].mean()) ** 2
        if variance > best:
            best, best_t = variance, t
    return best_t


def _bimodal(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    parts = [rng.normal(rng.uniform(0, 255), rng.uniform(2, 40), n // 2 + k) for k in (0, n % 2)]
    return np.clip(np.concatenate(parts), 0, 255).astype(np.uint8)


@pytest.mark.skipif("tiffslide" not in wsi._available_readers(), reason="needs tiffslide")
def test_16bit_slides_are_scaled_and_float_slides_refused(tmp_path: Path) -> None:
    """Slide pixels go through the same conversion as image files: 16-bit greyscale by the full range,
    round(v / 257), not clipped to white; float pixels refused in one line naming the slide."""
    import tifffile

    values = np.minimum(np.arange(16 * 16).reshape(16, 16) * 257 + 128, 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "grey16.tif", values, tile=(16, 16))
    patch = Slide(tmp_path / "grey16.tif", fallback_mpp=0.5, reader="tiffslide").read_patch(0, 0, 16, 16)
    expected = np.arange(16 * 16).reshape(16, 16)  # (k · 257 + 128) / 257 and 65535 / 257 round to k
    assert patch.mode == "RGB" and np.array_equal(np.asarray(patch), np.repeat(expected[..., None], 3, axis=2))
    tifffile.imwrite(tmp_path / "float.tif", values.astype(np.float32), tile=(16, 16))
    with pytest.raises(EvalkitError) as exc:
        Slide(tmp_path / "float.tif", fallback_mpp=0.5, reader="tiffslide").read_patch(0, 0, 16, 16)
    assert _one_line(exc).startswith(f"cannot read image {tmp_path / 'float.tif'}: its pixels are 32-bit floats")


def test_otsu_matches_brute_force_and_skimage() -> None:
    samples = [_bimodal(seed) for seed in range(25)] + [np.array([3, 3, 200, 200, 201], np.uint8)]
    skimage_otsu = None
    if importlib.util.find_spec("skimage"):
        from skimage.filters import threshold_otsu as skimage_otsu
    for values in samples:
        t = otsu_threshold(values)
        assert t == _brute_force_otsu(values)
        if skimage_otsu is not None:
            assert t == skimage_otsu(values)
    assert otsu_threshold(np.full(10, 7, np.uint8)) == 7  # one class: nothing above
    with pytest.raises(TypeError, match="uint8"):
        otsu_threshold(np.zeros(4))


def test_box_fractions_match_loops() -> None:
    mask = np.random.default_rng(0).random((23, 31)) < 0.4
    for height, width in [(1, 1), (4, 7), (23, 31), (30, 2)]:
        fractions = box_fractions(mask, height, width)
        expected = [[mask[i:i + height, j:j + width].sum() / (height * width) for j in range(31)] for i in range(23)]
        np.testing.assert_allclose(fractions, expected, atol=1e-6)


@needs_reader
def test_cmu_mask_fraction_and_alignment(cmu: Slide) -> None:
    mask = foreground_mask(cmu)
    print(f"\nCMU foreground: {mask.fraction:.3f} of the slide, saturation > {mask.threshold}, mask {mask.mask.shape}")
    assert max(mask.mask.shape) <= 2048 and mask.mask.shape[0] > mask.mask.shape[1]  # portrait, like the slide
    assert 0.2 < mask.fraction < 0.4  # measured 0.298 (Otsu threshold 62)
    # The mask must say what the full-resolution pixels say, patch by patch (catches x/y or scale mix-ups).
    grid = GridPatches(str(CMU), magnification_to_mpp(10), min_foreground=0.0)
    field = grid.fields[0]
    by_mask, by_pixels = [], []
    for _, x, y in grid.positions:
        saturation = np.asarray(grid.read(0, int(x), int(y)).convert("HSV"))[..., 1]
        by_mask.append(grid.masks[0].patch_fraction(int(x), int(y), field))
        by_pixels.append(float((saturation > mask.threshold).mean()))
    assert np.corrcoef(by_mask, by_pixels)[0, 1] > 0.95
    assert np.abs(np.subtract(by_mask, by_pixels)).max() < 0.1


# ---- random patches -------------------------------------------------------------------------------


@needs_reader
@needs_jpeg2000
def test_random_patches_are_tissue_of_the_requested_size(both_20x: RandomPatches) -> None:
    ds = both_20x
    assert ds.fields == [field_size(0.499, 0.5, 224), 224] == [224, 224]
    located = [ds.locate(i, draw) for i in range(len(ds)) for draw in range(4)]
    for slide_index, x, y in located:
        width, height = ds.slides[slide_index].dimensions
        assert 0 <= x <= width - ds.fields[slide_index] and 0 <= y <= height - ds.fields[slide_index]
        assert ds.masks[slide_index].patch_fraction(x, y, ds.fields[slide_index]) >= 0.4
    assert 0.4 < np.mean([s for s, _, _ in located]) < 0.6  # slides drawn uniformly
    # White glass is never drawn: the CMU corner is background, and so is its patch.
    cmu_mask = ds.masks[0]
    assert cmu_mask.patch_fraction(0, 0, 224) < 0.05
    assert np.asarray(ds.read(0, 0, 0)).mean() > 220
    assert 0 not in set(ds.candidates[0].tolist())
    for i in range(6):
        image = ds[i]
        assert image.size == (224, 224) and image.mode == "RGB"


@needs_reader
def test_magnification_sets_the_field_of_view(cmu: Slide) -> None:
    at20, at10 = (GridPatches(str(CMU), magnification_to_mpp(m), min_foreground=0.0) for m in (20, 10))
    level20, side20 = cmu.region_for(at20.fields[0], 224)
    level10, side10 = cmu.region_for(at10.fields[0], 224)
    assert (level20, level10) == (0, 0) and side10 / side20 == pytest.approx(2.0, rel=0.01)  # 449 vs 224 px
    # Same top-left corner: the 20× patch, halved, is the top-left quadrant of the 10× patch.
    x, y = 900, 1300
    coarse = np.asarray(at10.read(0, x, y), dtype=float)[:112, :112]
    fine = np.asarray(at20.read(0, x, y).resize((112, 112)), dtype=float)
    elsewhere = np.asarray(at20.read(0, x + 300, y + 300).resize((112, 112)), dtype=float)
    assert np.abs(coarse - fine).mean() < 0.3 * np.abs(coarse - elsewhere).mean()
    with pytest.raises(EvalkitError, match="upsample"):
        GridPatches(str(CMU), magnification_to_mpp(40))


@needs_reader
@needs_jpeg2000
def test_pyramid_level_choice() -> None:
    slide = Slide(TCGA, fallback_mpp=TCGA_MPP)
    assert slide.region_for(field_size(0.5, 0.5, 224), 224) == (0, 224)  # 20×: level 0 as is
    assert slide.region_for(field_size(0.5, 1.0, 224), 224) == (1, 224)  # 10×: level 1 (downsample 2.0005)
    assert slide.region_for(field_size(0.5, 2.0, 224), 224) == (1, 448)  # 5×: level 1, then halved
    assert slide.read_patch(2000, 1500, 896, 224).size == (224, 224)


@needs_reader
def test_random_patches_reproducible_across_workers() -> None:
    def build(seed: int) -> RandomPatches:
        return RandomPatches(str(CMU), magnification_to_mpp(10), samples_per_epoch=12, seed=seed, transform=_as_tensor)

    def epoch(ds: RandomPatches, workers: int) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers)
        return torch.cat(list(loader))

    single, pair, other = build(0), build(0), build(1)
    first = epoch(single, 0)
    assert torch.equal(first, epoch(pair, 2))  # same patches whichever worker reads them
    flat = first.flatten(1).float()
    assert torch.cdist(flat, flat).add(torch.eye(len(flat)) * 1e9).min() > 0  # no two reads alike
    assert not torch.equal(first, epoch(other, 0))  # another seed
    second = epoch(pair, 2)
    assert not torch.equal(first, second)  # fresh patches each epoch ...
    assert torch.equal(second, epoch(single, 0))  # ... still reproducible
    single.set_epoch(0)
    assert torch.equal(first, epoch(single, 0))  # resume replays an epoch


# ---- grid -----------------------------------------------------------------------------------------


@needs_reader
@needs_jpeg2000
def test_grid_keeps_each_tissue_position_once() -> None:
    every = GridPatches([str(CMU), str(TCGA)], magnification_to_mpp(10), min_foreground=0.0, fallback_mpp=TCGA_MPP)
    kept = GridPatches([str(CMU), str(TCGA)], magnification_to_mpp(10), fallback_mpp=TCGA_MPP)
    assert every.fields == [449, 448]
    assert np.bincount(every.positions[:, 0]).tolist() == [(2220 // 449) * (2967 // 449), (4443 // 448) * (3567 // 448)]
    rows = [tuple(p) for p in kept.positions.tolist()]
    assert len(set(rows)) == len(rows) and rows == sorted(rows, key=lambda p: (p[0], p[2], p[1]))  # row-major
    for s, x, y in every.positions.tolist():
        field = every.fields[s]
        assert x % field == 0 and y % field == 0
        assert ((s, x, y) in set(rows)) == (every.masks[s].patch_fraction(x, y, field) >= 0.4)
    print(f"\ngrid at 10×: {len(kept)} of {len(every)} positions kept ({np.bincount(kept.positions[:, 0]).tolist()})")
    image, s, x, y = kept[len(kept) - 1]
    assert image.size == (224, 224) and (s, x, y) == rows[-1]


# ---- config ---------------------------------------------------------------------------------------


@needs_reader
@needs_jpeg2000
def test_config_builds_both_datasets() -> None:
    config = WSIPatches(paths=str(WSI), magnification=10, samples_per_epoch=8, fallback_mpp=TCGA_MPP)
    assert config.target_mpp() == 1.0 and WSIPatches(paths=str(WSI), mpp=0.7).target_mpp() == 0.7
    random = config.random_dataset()
    assert len(random) == 8 and [s.path.name for s in random.slides] == [CMU.name, TCGA.name]
    assert len(WSIPatches(paths=str(WSI / "cmu-*.svs"), magnification=10).grid_dataset()) > 0
    with pytest.raises(EvalkitError, match="fallback_mpp"):  # the folder holds the TCGA slide
        WSIPatches(paths=str(WSI)).random_dataset()
    with pytest.raises(EvalkitError, match="magnification"):
        WSIPatches(paths=str(WSI), magnification=None).target_mpp()


def test_config_errors_without_slides(tmp_path: Path) -> None:
    with pytest.raises(EvalkitError, match="no slide"):
        WSIPatches(paths=str(tmp_path)).random_dataset()
    with pytest.raises(EvalkitError, match="no slide matches"):
        WSIPatches(paths=str(tmp_path / "*.svs")).grid_dataset()
    with pytest.raises(EvalkitError, match="magnification"):
        magnification_to_mpp(0)
