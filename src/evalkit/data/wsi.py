"""Patches read online from whole-slide images, for pretraining (random) and inference (grid).

Pretraining wants many varied tissue patches from a few very large files. Tiling every slide to
disk first would write millions of small files and fix one magnification and one set of
positions. Instead each patch is read on demand. A per-slide foreground mask, computed once,
says which positions hold tissue.

Conventions:

- **Magnification ↔ resolution**: magnification m is taken to mean ``mpp = 10 / m`` µm per pixel
  (40× = 0.25, 20× = 0.5, 10× = 1.0, 5× = 2.0), the usual Aperio-era rule. A slide's own
  resolution is its recorded microns-per-pixel (``tiffslide.mpp-x``, ``openslide.mpp-x``,
  ``aperio.MPP``). Failing that, it is ``10 / objective power`` (``aperio.AppMag``,
  ``*.objective-power``), and failing both, the user's ``fallback_mpp``.
- **Field of view**: a patch at target resolution ``t`` on a slide of resolution ``s`` covers
  ``round(patch_size · t / s)`` level-0 pixels per side (its *field*). It is read from the
  coarsest pyramid level whose downsample is still ≤ ``t / s`` (1 % tolerance, since the
  recorded downsamples are rarely exact), so the region is never upsampled. The region is then
  resized to ``patch_size`` with PIL's antialiasing bilinear filter. A target more than 10 %
  finer than the scan is refused: it would invent detail.
- **Foreground**: saturation (HSV) of a thumbnail of at most ``mask_size`` px per side, cut at
  its Otsu threshold, but never below ``MIN_SATURATION``: a slide that is all glass has no
  second class, and its Otsu threshold would split the noise. A 3×3 closing then opening
  fills pinholes and drops specks.
- **A patch's foreground fraction** is that of the mask box of the patch's field, anchored at
  the mask cell that holds the patch's top-left corner (:meth:`ForegroundMask.patch_fraction`).
  An integral image gives it for every cell at once.

Sampling. :class:`RandomPatches` is a map-style dataset of ``samples_per_epoch`` items. It is
map-style so that it can be shuffled and concatenated with tile folders like any dataset. For
each read it picks a slide uniformly, then a uniform cell among the cells whose patch has at
least ``min_foreground`` tissue, then a uniform pixel inside that cell. The k-th read of index
``i`` draws from an RNG keyed ``(seed, i, k)``, with the read counts kept in shared memory.
So every epoch brings fresh patches without any ``set_epoch`` call, also with persistent
workers. A patch does not depend on which worker reads it, or on how many workers there are.
Different indices, and so different workers, get independent streams. ``set_epoch(e)`` sets
every count to ``e``, which replays epoch ``e`` exactly (when resuming).
"""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from evalkit.data.base import to_rgb
from evalkit.errors import EvalkitError

MPP_AT_1X = 10.0  # µm per pixel at 1×: magnification m means 10 / m µm/px (40× = 0.25)
MIN_SATURATION = 20  # floor on the Otsu threshold: glass and white background stay below it
LEVEL_TOLERANCE = 0.01  # a level counts as ≤ the needed downsample within 1 % (recorded downsamples are inexact)
UPSAMPLE_TOLERANCE = 0.10  # a target at most 10 % finer than the scan is read as is; beyond that it is refused
MAX_MASK_SOURCE = 16384  # longest side of the level a mask may be computed from; a pyramid-less giant is refused
SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".scn", ".mrxs", ".bif", ".vms", ".vmu", ".svslide")
READERS = ("tiffslide", "openslide")  # tried in this order
INSTALL_HINT = "pip install tiffslide imagecodecs (or openslide-python openslide-bin)"


def magnification_to_mpp(magnification: float) -> float:
    """µm per pixel of a magnification, by the convention 40× = 0.25 µm/px."""
    if not magnification > 0:
        raise EvalkitError(f"magnification must be positive, got {magnification}; use e.g. 5, 10, 20 or 40")
    return MPP_AT_1X / magnification


def mpp_to_magnification(mpp: float) -> float:
    """The magnification whose resolution is ``mpp`` (0.5 µm/px = 20×)."""
    return MPP_AT_1X / mpp


def field_size(slide_mpp: float, target_mpp: float, patch_size: int) -> int:
    """Level-0 pixels per side that one patch of ``patch_size`` px at ``target_mpp`` covers."""
    return max(1, round(patch_size * target_mpp / slide_mpp))


# ---- opening slides -------------------------------------------------------------------------------


def _reader_class(name: str) -> Any:
    if name == "tiffslide":
        import tiffslide

        return tiffslide.TiffSlide
    import openslide

    return openslide.OpenSlide


def _available_readers() -> list[str]:
    found = []
    for name in READERS:
        try:
            _reader_class(name)
        except (ImportError, OSError):  # openslide-python without its C library raises OSError
            continue
        found.append(name)
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _open(path: Path, readers: Sequence[str]) -> tuple[Any, str]:
    """Open ``path`` with the first reader that can also decode a pixel of every level.

    Opening alone only parses the TIFF header. A JPEG 2000 slide opened without ``imagecodecs``
    fails on its first tile, so one pixel per level is decoded here, and the error names the
    file now rather than later inside a DataLoader worker.
    """
    failures = []
    for name in readers:
        try:
            handle = _reader_class(name)(str(path))
            for level in range(handle.level_count):
                handle.read_region((0, 0), level, (1, 1))
            return handle, name
        except Exception as exc:  # noqa: BLE001 -- readers raise many types (TiffFileError, codec, OpenSlideError)
            failures.append(f"{name}: {_first_line(exc)}")
    raise EvalkitError(f"cannot read slide {path} ({'; '.join(failures)}); check the file, or {INSTALL_HINT}")


def _positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _recorded(properties: dict[str, Any], keys: Sequence[str]) -> float | None:
    for key in keys:
        number = _positive_float(properties.get(key))
        if number is not None:
            return number
    return None


class Slide:
    """One whole-slide image: its pyramid, its resolution, and patch reads.

    The file handle is opened again in each process that reads: a handle inherited through
    ``fork`` shares its file offset with the parent's, and a pickled one cannot be sent to a
    spawned worker.

    Args:
        path: the slide file.
        fallback_mpp: µm per pixel to use when the file records neither resolution nor
            objective power (never overrides a recorded value).
        reader: ``tiffslide`` or ``openslide``; by default the first of them that can read the file.
    """

    def __init__(self, path: str | Path, fallback_mpp: float | None = None, reader: str | None = None) -> None:
        self.path = Path(path)
        if fallback_mpp is not None and not fallback_mpp > 0:
            raise EvalkitError(f"fallback_mpp must be positive µm per pixel, got {fallback_mpp}")
        if not self.path.is_file():
            raise EvalkitError(f"slide not found: {self.path}; fix the path or the glob")
        if reader is not None and reader not in READERS:
            raise EvalkitError(f"unknown slide reader '{reader}'; use one of {', '.join(READERS)}")
        readers = [reader] if reader else _available_readers()
        if not readers:
            raise EvalkitError(f"no whole-slide reader is installed to read {self.path}; {INSTALL_HINT}")
        handle, self.reader = _open(self.path, readers)
        self._handle: Any = handle
        self._pid = os.getpid()
        self.dimensions: tuple[int, int] = tuple(int(v) for v in handle.dimensions)  # (width, height) at level 0
        self.level_dimensions = [tuple(int(v) for v in d) for d in handle.level_dimensions]
        self.level_downsamples = [float(d) for d in handle.level_downsamples]
        properties = dict(handle.properties)
        recorded_mpp = _recorded(properties, ("tiffslide.mpp-x", "openslide.mpp-x", "aperio.MPP"))
        power = _recorded(properties, ("tiffslide.objective-power", "openslide.objective-power", "aperio.AppMag"))
        if recorded_mpp is not None:
            self.mpp, self.mpp_source = recorded_mpp, "recorded mpp"
        elif power is not None:
            self.mpp, self.mpp_source = MPP_AT_1X / power, "objective power"
        elif fallback_mpp is not None:
            self.mpp, self.mpp_source = float(fallback_mpp), "fallback_mpp"
        else:
            handle.close()
            raise EvalkitError(f"slide {self.path} records neither microns per pixel nor objective power; pass "
                               "its scan resolution as fallback_mpp (e.g. 0.5 for 20×, 0.25 for 40×)")
        # The objective power as recorded, else the one the resolution implies.
        self.magnification = power if power is not None else mpp_to_magnification(self.mpp)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None
        return state

    def _reader(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            self._handle = _reader_class(self.reader)(str(self.path))
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample is ≤ ``downsample`` (within 1 %): the least to decode
        without ever upsampling."""
        ds = np.asarray(self.level_downsamples)
        fine_enough = np.flatnonzero(ds <= downsample * (1 + LEVEL_TOLERANCE))
        return int(fine_enough[np.argmax(ds[fine_enough])]) if fine_enough.size else 0

    def region_for(self, field: int, patch_size: int) -> tuple[int, int]:
        """``(level, side)``: where a patch of ``field`` level-0 px is read, and its side there in pixels."""
        level = self.best_level(field / patch_size)
        return level, max(1, round(field / self.level_downsamples[level]))

    def read_patch(self, x: int, y: int, field: int, patch_size: int) -> Image.Image:
        """The RGB patch whose top-left corner is (x, y) and which covers ``field`` level-0 px per side."""
        level, side = self.region_for(field, patch_size)
        try:
            region = self._reader().read_region((int(x), int(y)), level, (side, side))
        except Exception as exc:  # noqa: BLE001 -- a damaged tile surfaces as any reader/codec error
            raise EvalkitError(f"cannot read slide {self.path} at ({x}, {y}) level {level}: {_first_line(exc)}; "
                               "check or remove the file") from None
        region = _rgb(region, self.path)
        if side != patch_size:
            region = region.resize((patch_size, patch_size), Image.Resampling.BILINEAR)
        return region

    def thumbnail(self, max_size: int) -> Image.Image:
        """The whole slide as RGB, at most ``max_size`` px per side (aspect kept)."""
        longest = max(self.dimensions)
        level = self.best_level(longest / max_size)
        if max(self.level_dimensions[level]) > MAX_MASK_SOURCE:
            raise EvalkitError(f"slide {self.path} has no level smaller than {MAX_MASK_SOURCE} px to compute its "
                               "tissue mask from; convert it to a pyramidal TIFF (e.g. vips tiffsave --pyramid --tile)")
        try:
            thumbnail = self._reader().get_thumbnail((max_size, max_size))
        except Exception as exc:  # noqa: BLE001
            raise EvalkitError(f"cannot read slide {self.path}: {_first_line(exc)}; check the file, or {INSTALL_HINT}"
                               ) from None
        return _rgb(thumbnail, self.path)


def _rgb(image: Image.Image, path: Path) -> Image.Image:
    """RGB on white: OpenSlide returns RGBA with transparent pixels outside the scanned area. Other modes go
    through the conversion every image gets (:func:`evalkit.data.base.to_rgb`: 16-bit greyscale scaled,
    integer and float pixels refused naming ``path``)."""
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return to_rgb(image, path)


# ---- foreground mask ------------------------------------------------------------------------------


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 values: foreground is ``values > threshold``.

    It maximises the between-class variance ``w0 · w1 · (μ0 - μ1)²`` over all 256 cuts at once,
    from cumulative sums of the histogram. Ties go to the lowest cut, as in scikit-image's
    ``threshold_otsu``. Values that are all equal give that value (nothing is above it).
    """
    values = np.asarray(values)
    if values.dtype != np.uint8:
        raise TypeError(f"expected uint8 values, got {values.dtype}")
    counts = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(counts)  # pixels at or below each cut
    w1 = w0[-1] - w0
    s0 = np.cumsum(counts * levels)
    s1 = s0[-1] - s0
    valid = (w0 > 0) & (w1 > 0)
    if not valid.any():
        return int(values.flat[0]) if values.size else 0
    between = np.full(256, -1.0)
    between[valid] = w0[valid] * w1[valid] * (s0[valid] / w0[valid] - s1[valid] / w1[valid]) ** 2
    return int(np.argmax(between))


def box_fractions(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """For every cell (i, j): the mean of ``mask[i:i+height, j:j+width]``, counting cells past the
    edge as background. One integral image gives them all in O(cells)."""
    rows, cols = mask.shape
    padded = np.zeros((rows + height, cols + width), dtype=np.int64)
    padded[:rows, :cols] = mask
    integral = np.zeros((rows + height + 1, cols + width + 1), dtype=np.int64)
    integral[1:, 1:] = padded.cumsum(0).cumsum(1)
    sums = (integral[height:height + rows, width:width + cols] - integral[:rows, width:width + cols]
            - integral[height:height + rows, :cols] + integral[:rows, :cols])
    return (sums / (height * width)).astype(np.float32)


@dataclass
class ForegroundMask:
    """Tissue mask of one slide: ``mask[i, j]`` covers level-0 pixels ``x`` with ``x · w // width == j``
    (w the mask's width), and likewise for rows. Cell bounds are exact integer arithmetic, so
    a coordinate and its cell never disagree by rounding."""

    mask: np.ndarray  # bool [rows, cols]; True where tissue
    width: int  # level-0 size the mask spans
    height: int
    threshold: int  # saturation cut: tissue is saturation > threshold

    @property
    def fraction(self) -> float:
        return float(self.mask.mean())

    def box(self, field: int) -> tuple[int, int]:
        """Mask cells ``(rows, cols)`` that a patch of ``field`` level-0 px spans."""
        rows, cols = self.mask.shape
        return max(1, round(field * rows / self.height)), max(1, round(field * cols / self.width))

    def cells(self, x: np.ndarray | int, y: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        """Mask ``(row, col)`` of level-0 points."""
        rows, cols = self.mask.shape
        return np.asarray(y) * rows // self.height, np.asarray(x) * cols // self.width

    def cell_starts(self) -> tuple[np.ndarray, np.ndarray]:
        """First level-0 ``y`` of every mask row and ``x`` of every mask column, plus the end."""
        rows, cols = self.mask.shape
        ys = -(-np.arange(rows + 1, dtype=np.int64) * self.height // rows)  # ceil(i · height / rows)
        xs = -(-np.arange(cols + 1, dtype=np.int64) * self.width // cols)
        return ys, xs

    def fractions(self, field: int) -> np.ndarray:
        """Foreground fraction of a patch of ``field`` px anchored in each mask cell."""
        return box_fractions(self.mask, *self.box(field))

    def patch_fraction(self, x: int, y: int, field: int) -> float:
        """Foreground fraction of the patch at (x, y): the definition that :meth:`fractions` vectorises."""
        (i, j), (h, w) = self.cells(x, y), self.box(field)
        return float(self.mask[int(i):int(i) + h, int(j):int(j) + w].sum() / (h * w))


def foreground_mask(slide: Slide, mask_size: int = 2048, cleanup: int = 1) -> ForegroundMask:
    """Tissue mask of ``slide``: Otsu on HSV saturation of a ≤ ``mask_size`` px thumbnail.

    Stained tissue is coloured and glass is grey-white, whatever the stain intensity;
    saturation separates them better than brightness. ``cleanup`` is the number of 3×3
    closing-then-opening iterations (0 turns it off). The mask is padded with its edge
    values first, so tissue that runs off the slide's edge is not eroded.
    """
    thumbnail = slide.thumbnail(mask_size)
    saturation = np.asarray(thumbnail.convert("HSV"))[..., 1]
    threshold = max(otsu_threshold(saturation), MIN_SATURATION)
    mask = saturation > threshold
    if cleanup > 0:
        padded = np.pad(mask, cleanup, mode="edge")
        padded = ndimage.binary_closing(padded, iterations=cleanup)
        padded = ndimage.binary_opening(padded, iterations=cleanup)
        mask = padded[cleanup:-cleanup, cleanup:-cleanup]
    return ForegroundMask(mask=mask, width=slide.dimensions[0], height=slide.dimensions[1], threshold=threshold)


# ---- datasets -------------------------------------------------------------------------------------


def find_slides(paths: str | Sequence[str]) -> list[Path]:
    """Slide files from paths, folders (their slide files, not recursive) and glob patterns, in order given."""
    found: list[Path] = []
    for entry in [paths] if isinstance(paths, (str, Path)) else paths:
        entry = str(entry)
        if any(ch in entry for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(entry, recursive=True))
            if not matches:
                raise EvalkitError(f"no slide matches {entry}; fix the glob")
            found.extend(matches)
        elif Path(entry).is_dir():
            matches = sorted(p for p in Path(entry).iterdir() if p.suffix.lower() in SLIDE_SUFFIXES)
            if not matches:
                raise EvalkitError(f"no slide ({', '.join(SLIDE_SUFFIXES)}) in folder {entry}; fix the path")
            found.extend(matches)
        else:
            found.append(Path(entry))
    if not found:
        raise EvalkitError("no slides given; set the whole-slide paths")
    return found


class _SlidePatches(torch.utils.data.Dataset):
    """Slides opened once, with their masks and patch fields; the base of both samplers."""

    def __init__(self, paths: str | Sequence[str], target_mpp: float, patch_size: int = 224,
                 min_foreground: float = 0.4, fallback_mpp: float | None = None, mask_size: int = 2048,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        if not target_mpp > 0:
            raise EvalkitError(f"target mpp must be positive, got {target_mpp}")
        if patch_size < 1:
            raise EvalkitError(f"patch_size must be a positive number of pixels, got {patch_size}")
        if not 0 <= min_foreground <= 1:
            raise EvalkitError(f"min_foreground is a fraction in [0, 1], got {min_foreground}")
        self.target_mpp = float(target_mpp)
        self.patch_size = patch_size
        self.min_foreground = min_foreground
        self.transform = transform
        self.slides = [Slide(p, fallback_mpp=fallback_mpp) for p in find_slides(paths)]
        for slide in self.slides:
            if self.target_mpp < slide.mpp * (1 - UPSAMPLE_TOLERANCE):
                raise EvalkitError(
                    f"slide {slide.path} is scanned at {slide.mpp:.3g} µm/px ({slide.magnification:.3g}×); "
                    f"{mpp_to_magnification(self.target_mpp):.3g}× ({self.target_mpp:.3g} µm/px) would upsample it: "
                    "choose a lower magnification or leave the slide out")
        self.masks = [foreground_mask(slide, mask_size) for slide in self.slides]
        self.fields = [field_size(slide.mpp, self.target_mpp, patch_size) for slide in self.slides]

    def read(self, slide_index: int, x: int, y: int) -> Image.Image:
        """The patch of slide ``slide_index`` whose top-left level-0 corner is (x, y)."""
        return self.slides[slide_index].read_patch(x, y, self.fields[slide_index], self.patch_size)

    def _apply(self, image: Image.Image) -> Any:
        return self.transform(image) if self.transform is not None else image


class RandomPatches(_SlidePatches):
    """``samples_per_epoch`` random tissue patches, fresh on every epoch (see the module docstring).

    Items are PIL RGB images of ``patch_size`` px, or ``transform(image)``. :meth:`locate` gives a
    read's ``(slide index, x, y)`` without decoding it. Slides without a single position of
    enough tissue are left out with a warning.
    """

    def __init__(self, paths: str | Sequence[str], target_mpp: float, patch_size: int = 224,
                 min_foreground: float = 0.4, samples_per_epoch: int = 10_000, seed: int = 0,
                 fallback_mpp: float | None = None, mask_size: int = 2048,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        super().__init__(paths, target_mpp, patch_size, min_foreground, fallback_mpp, mask_size, transform)
        if samples_per_epoch < 1:
            raise EvalkitError(f"samples_per_epoch must be positive, got {samples_per_epoch}")
        if seed < 0:
            raise EvalkitError(f"seed must be non-negative, got {seed}")
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        # Per slide: flat indices (int32) of the mask cells where a patch may start (≤ 16 MB for a 2048² mask).
        self.candidates: list[np.ndarray] = []
        for slide, mask, field in zip(self.slides, self.masks, self.fields):
            starts_y, starts_x = mask.cell_starts()
            width, height = slide.dimensions
            fits = (starts_y[:-1, None] + field <= height) & (starts_x[None, :-1] + field <= width)
            ok = fits & (mask.fractions(field) >= min_foreground)
            self.candidates.append(np.flatnonzero(ok).astype(np.int32))
            if not ok.any():
                warnings.warn(f"slide {slide.path} has no {self.patch_size} px patch at {self.target_mpp:.3g} µm/px "
                              f"with {min_foreground:.0%} tissue; it is left out of random sampling", stacklevel=2)
        self.usable = [i for i, c in enumerate(self.candidates) if c.size]
        if not self.usable:
            raise EvalkitError(f"no slide has a patch with {min_foreground:.0%} tissue at {self.target_mpp:.3g} "
                               "µm/px; lower min_foreground or the magnification, or check the slides")
        # Reads per index so far, shared with the DataLoader workers (fork or spawn).
        self._draws = torch.zeros(samples_per_epoch, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next read of every index its ``epoch``-th: replays that epoch's patches (e.g. on resume)."""
        self._draws.fill_(epoch)

    def locate(self, index: int, draw: int = 0) -> tuple[int, int, int]:
        """``(slide index, x, y)`` of the ``draw``-th read of ``index``."""
        rng = np.random.default_rng((self.seed, index, draw))
        slide_index = self.usable[int(rng.integers(len(self.usable)))]
        mask = self.masks[slide_index]
        cells = self.candidates[slide_index]
        i, j = divmod(int(cells[rng.integers(cells.size)]), mask.mask.shape[1])
        starts_y, starts_x = mask.cell_starts()
        field = self.fields[slide_index]
        width, height = self.slides[slide_index].dimensions
        # Uniform within the cell; clipping to the slide keeps the corner in the same cell (the cell's start fits).
        x = min(int(rng.integers(starts_x[j], starts_x[j + 1])), width - field)
        y = min(int(rng.integers(starts_y[i], starts_y[i + 1])), height - field)
        return slide_index, x, y

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.samples_per_epoch:
            raise IndexError(f"index {index} out of range for {self.samples_per_epoch} samples")
        draw = int(self._draws[index])
        self._draws[index] = draw + 1  # one worker holds an index at a time: no race
        return self._apply(self.read(*self.locate(index, draw)))


class GridPatches(_SlidePatches):
    """Every non-overlapping patch with ``min_foreground`` tissue, slide by slide in row-major order.

    Items are ``(image, slide index, x, y)`` with (x, y) the level-0 top-left corner. The
    grid starts at (0, 0) with a stride of one field. Partial patches at the right and
    bottom edges are left out.
    """

    def __init__(self, paths: str | Sequence[str], target_mpp: float, patch_size: int = 224,
                 min_foreground: float = 0.4, fallback_mpp: float | None = None, mask_size: int = 2048,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        super().__init__(paths, target_mpp, patch_size, min_foreground, fallback_mpp, mask_size, transform)
        slide_ids, xs, ys = [], [], []
        for s, (slide, mask, field) in enumerate(zip(self.slides, self.masks, self.fields)):
            grid_x = np.arange(0, slide.dimensions[0] - field + 1, field, dtype=np.int64)
            grid_y = np.arange(0, slide.dimensions[1] - field + 1, field, dtype=np.int64)
            rows, cols = mask.cells(grid_x[None, :], grid_y[:, None])
            kept_y, kept_x = np.nonzero(mask.fractions(field)[rows, cols] >= min_foreground)  # row-major
            slide_ids.append(np.full(kept_y.size, s, dtype=np.int64))
            xs.append(grid_x[kept_x])
            ys.append(grid_y[kept_y])
        self.positions = np.stack([np.concatenate(slide_ids), np.concatenate(xs), np.concatenate(ys)], axis=1)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> tuple[Any, int, int, int]:
        slide_index, x, y = (int(v) for v in self.positions[index])
        return self._apply(self.read(slide_index, x, y)), slide_index, x, y


@dataclass
class WSIPatches:
    """Which slides to patch and how; builds the random (pretraining) and grid (inference) datasets.

    Args:
        paths: slide files, folders of slides, or glob patterns (``data/wsi/**/*.svs``).
        magnification: target objective magnification (5, 10, 20, 40), read as ``mpp = 10 / m``.
        mpp: target µm per pixel; when set it overrides ``magnification``.
        patch_size: patch side in pixels.
        min_foreground: least tissue fraction of a patch, by the slide's foreground mask.
        samples_per_epoch: random patches per epoch (random mode).
        seed: seeds the random patches (the same seed gives the same patches).
        fallback_mpp: µm per pixel for slides that record neither resolution nor magnification.
        mask_size: longest side of the thumbnail the foreground mask is computed on.
    """

    paths: str | list[str]
    magnification: float | None = 20.0
    mpp: float | None = None
    patch_size: int = 224
    min_foreground: float = 0.4
    samples_per_epoch: int = 10_000
    seed: int = 0
    fallback_mpp: float | None = None
    mask_size: int = 2048

    def target_mpp(self) -> float:
        if self.mpp is not None:
            if not self.mpp > 0:
                raise EvalkitError(f"mpp must be positive, got {self.mpp}")
            return float(self.mpp)
        if self.magnification is None:
            raise EvalkitError("set magnification (5, 10, 20, 40) or mpp for the whole-slide patches")
        return magnification_to_mpp(self.magnification)

    def random_dataset(self, transform: Callable[[Image.Image], Any] | None = None) -> RandomPatches:
        return RandomPatches(self.paths, self.target_mpp(), self.patch_size, self.min_foreground,
                             self.samples_per_epoch, self.seed, self.fallback_mpp, self.mask_size, transform)

    def grid_dataset(self, transform: Callable[[Image.Image], Any] | None = None) -> GridPatches:
        return GridPatches(self.paths, self.target_mpp(), self.patch_size, self.min_foreground,
                           self.fallback_mpp, self.mask_size, transform)
