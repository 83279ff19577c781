"""Datasets as cheap specs: a config that lists a split's samples and reads one image.

Listing is separate from reading so that a split's identity (ids and labels) is known
before any pixel is decoded, and the torch ``Dataset`` is a thin view over that list.
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from evalkit.errors import EvalkitError

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
# The largest image decoded whole, in pixels: PIL's own default (Image.MAX_IMAGE_PIXELS, about 9459², a quarter
# GiB as RGB). The largest images of the published datasets (BACH's 2048×1536 photos) are 28 times smaller; an
# image above it is a decompression bomb or a whole slide, which data/wsi.py reads patch by patch instead.
MAX_IMAGE_PIXELS = 89_478_485
LIMIT_FLAGS = "--embed.max_image_pixels (evalkit data check: --max_image_pixels)"
# Modes whose samples are 8-bit (or 1-bit) and which PIL converts to RGB exactly; alpha is dropped, not composited.
EIGHT_BIT_MODES = frozenset({"1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
# Unsigned 16-bit greyscale, scaled to 8 bits by the type's full range (0..65535 -> 0..255).
GREY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


@dataclass
class SplitListing:
    """The samples of one split, in dataset order."""

    ids: list[str]  # identity of each sample: path relative to the dataset root
    labels: np.ndarray  # int64 class index, -1 where unlabelled
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self) -> str:
        """Hash of ids, labels and file sizes: changes when the data on disk change."""
        sizes: dict[Path, int] = {}  # several samples may live in one file (PCam)
        h = hashlib.sha256()
        for sample_id, label, path in zip(self.ids, self.labels.tolist(), self.paths):
            if path not in sizes:
                sizes[path] = path.stat().st_size
            h.update(f"{sample_id}\t{label}\t{sizes[path]}\n".encode())
        return h.hexdigest()

    def class_counts(self, num_classes: int) -> list[int]:
        labelled = self.labels[self.labels >= 0]
        return np.bincount(labelled, minlength=num_classes).tolist()


class DatasetSpec:
    """Base of every dataset: where it lives, its classes, its splits, how to read a sample.

    A dataset with published split sizes declares them in ``official_counts`` (split ->
    class -> count); a listing that differs is refused unless ``allow_subset`` is set.

    Args:
        root: the dataset folder; a relative path is taken under ``data_root`` (``DATA_ROOT``).
        allow_subset: accept splits whose per-class counts differ from the official ones.
    """

    official_counts: dict[str, dict[str, int]] = {}
    # The evaluations (registry names, :mod:`evalkit.evaluations`) a task on these data runs unless its config
    # names others; the first is the default, ``--evaluation`` picks another.
    evaluations: tuple[str, ...] = ("linear_probe", "knn")
    class_names: list[str] | None = None  # the fixed class list of a published dataset, in label order

    def __init__(self, root: str, allow_subset: bool = False) -> None:
        self.root = root
        self.allow_subset = allow_subset

    def resolve_root(self, data_root: str | Path) -> Path:
        root = Path(data_root) / self.root
        if not root.is_dir():
            raise EvalkitError(f"dataset folder not found: {root}; set --data_root (DATA_ROOT) or the task's dataset root")
        return root

    @property
    def classes(self) -> list[str]:
        if self.class_names is None:
            raise NotImplementedError(f"{type(self).__name__} declares no class_names and does not override classes")
        return self.class_names

    def _list(self, data_root: str | Path, split: str) -> SplitListing:
        raise NotImplementedError

    def list_split(self, data_root: str | Path, split: str, check_counts: bool = True) -> SplitListing:
        """The samples of ``split``, checked against the official counts (unless ``check_counts`` is false)."""
        listing = self._list(data_root, split)
        if not check_counts:
            return listing
        mismatched = [row for row in self.count_rows(listing, split) if row[2] is not None and row[1] != row[2]]
        if mismatched and not self.allow_subset:
            shown = ", ".join(f"{name} {found}/{official}" for name, found, official in mismatched[:5])
            raise EvalkitError(
                f"{type(self).__name__} {split}: {len(listing)} samples whose counts differ from the official "
                f"ones (found/official: {shown}); check the data under {Path(data_root) / self.root}, or pass "
                "--task.dataset.allow_subset true to use a subset"
            )
        return listing

    def count_rows(self, listing: SplitListing, split: str) -> list[tuple[str, int, int | None]]:
        """Per class: name, count found, official count (None where none is published)."""
        official = self.official_counts.get(split, {})
        found = listing.class_counts(len(self.classes))
        return [(name, found[i], official.get(name)) for i, name in enumerate(self.classes)]

    def read_image(self, listing: SplitListing, index: int, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
        """Decode sample ``index`` of ``listing`` as 8-bit RGB (one file per sample by default), refusing
        images of more than ``max_pixels`` pixels (see :func:`read_rgb`)."""
        return read_rgb(listing.paths[index], max_pixels)

    def read_mask(self, listing: SplitListing, index: int) -> np.ndarray:
        """The class map (H×W) of sample ``index``, for dense evaluations; datasets with label maps override it."""
        raise EvalkitError(f"{type(self).__name__} has no label maps, which segmentation needs; use a dataset with "
                           "masks (e.g. CoNSeP) or another evaluation")

    def declared_splits(self) -> list[str]:
        """The splits this dataset's config declares (a task that uses none of some is warned); none by default."""
        return []

    def sample_files(self, listing: SplitListing, index: int) -> tuple[Path, ...]:
        """The files sample ``index`` is read from (image, label map...): their bytes decide its features."""
        return (listing.paths[index],)

    def check_sample(self, listing: SplitListing, index: int, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
        """Decode everything sample ``index`` holds (``evalkit data check``); raises EvalkitError if it cannot."""
        self.read_image(listing, index, max_pixels).load()

    def cache_file(self, split: str) -> Path | None:
        """A cache file that already holds this split's features (bring-your-own embeddings), else None."""
        return None

    def config(self) -> dict[str, Any]:
        """The arguments that decide which samples a split holds (enters the cache key)."""
        skip = {"allow_subset"}
        return {"class": type(self).__name__,
                **{k: v for k, v in vars(self).items() if not k.startswith("_") and k not in skip}}

    def identity(self) -> str:
        return json.dumps(self.config(), sort_keys=True, default=str)


def check_pixel_limit(max_pixels: int) -> int:
    """``max_pixels`` if it is a positive whole number of pixels; raises EvalkitError otherwise."""
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise EvalkitError(f"max_image_pixels must be a positive number of pixels, got {max_pixels!r}; "
                           f"the default is {MAX_IMAGE_PIXELS:,}")
    return max_pixels


def check_pixels(size: tuple[int, int], max_pixels: int, source: object) -> None:
    """Refuse an image of ``size`` (width, height) with more than ``max_pixels`` pixels, in one line."""
    width, height = size
    if width * height > max_pixels:
        raise EvalkitError(f"cannot read image {source}: {width}×{height} = {width * height:,} pixels, more than the "
                           f"limit of {max_pixels:,} (a decompression bomb, or an image too large to decode whole); "
                           f"if it is genuine, raise the limit with {LIMIT_FLAGS}")


_PIL_CHECK_LOCK = threading.Lock()
_decodes_running = 0  # decodes of this process inside _own_pixel_check
_pil_limit_saved: int | None = None


@contextmanager
def _own_pixel_check() -> Iterator[None]:
    """Switch PIL's bomb check off while this process runs any of our decodes; :func:`check_pixels` replaces it.

    PIL checks each ``Image.open`` (and each TIFF load) against the process-global ``Image.MAX_IMAGE_PIXELS``:
    it warns above that limit, raises above twice it, and a DataLoader worker started by spawn does not see a
    value set in the main process. The limit in force is the one passed to the reader instead. The global is
    None while at least one decode runs (threads of ``data check`` overlap) and gets its value back when the
    last one ends.
    """
    global _decodes_running, _pil_limit_saved
    with _PIL_CHECK_LOCK:
        if _decodes_running == 0:
            _pil_limit_saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _decodes_running += 1
    try:
        yield
    finally:
        with _PIL_CHECK_LOCK:
            _decodes_running -= 1
            if _decodes_running == 0:
                Image.MAX_IMAGE_PIXELS = _pil_limit_saved


def _check_tiff_planes(image: Image.Image, source: object) -> None:
    """Refuse a TIFF whose samples are wider than 8 bits and stored plane by plane: PIL reads them as 8-bit
    garbage when uncompressed (tested), so such files are refused whether compressed or not."""
    if image.format != "TIFF":
        return
    tags = image.tag_v2  # type: ignore[attr-defined]
    bits = tags.get(258, 1)  # BitsPerSample: one value, or one per sample
    bits = max(bits) if isinstance(bits, tuple) else int(bits)
    if tags.get(284, 1) == 2 and tags.get(277, 1) > 1 and bits > 8:  # PlanarConfiguration 2, SamplesPerPixel > 1
        raise EvalkitError(f"cannot read image {source}: a TIFF of {bits}-bit samples stored plane by plane, which "
                           "PIL misreads; save it interleaved (e.g. tiffcp -p contig in.tif out.tif) or as 8-bit RGB")


def _is_grey16(image: Image.Image) -> bool:
    """Unsigned 16-bit greyscale; older Pillow releases open 16-bit PNGs as mode ``I`` (PNG has no 32-bit)."""
    return image.mode in GREY16_MODES or (image.mode == "I" and image.format == "PNG")


def check_mode(image: Image.Image, source: object) -> None:
    """Refuse, in one line naming ``source``, pixels that :func:`to_rgb` cannot map to 8 bits unambiguously."""
    if image.mode in EIGHT_BIT_MODES or _is_grey16(image):
        return
    kinds = {"I": "signed 16-bit or 32-bit integers", "F": "32-bit floats"}
    what = (f"its pixels are {kinds[image.mode]} (PIL mode {image.mode}), whose range is the writer's choice"
            if image.mode in kinds else f"its pixel mode {image.mode} is not one evalkit converts to RGB")
    raise EvalkitError(f"cannot read image {source}: {what}; convert it to 8-bit RGB first (e.g. with numpy: "
                       "scale your range to 0..255, cast to uint8, save with PIL)")


def to_rgb(image: Image.Image, source: object) -> Image.Image:
    """8-bit RGB of a decoded image, or EvalkitError naming ``source`` where no conversion is unambiguous.

    - 8-bit and 1-bit modes (:data:`EIGHT_BIT_MODES`): PIL's conversion; alpha (RGBA, LA, PA) is dropped,
      the colour channels are kept as stored.
    - Unsigned 16-bit greyscale (:data:`GREY16_MODES`): scaled by the type's full range,
      ``v -> round(v / 257)`` (= v · 255 / 65535), exactly.
    - Signed 16-bit and 32-bit integers (``I``), floats (``F``) and any other mode: refused (:func:`check_mode`).
    """
    check_mode(image, source)
    if _is_grey16(image):
        values = np.asarray(image).astype(np.uint32)  # I;16B arrives big-endian; astype makes it native
        return Image.fromarray(((values + 128) // 257).astype(np.uint8)).convert("RGB")  # round(v / 257)
    return image.convert("RGB")


def read_rgb(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an image fully to 8-bit RGB, so a bad file fails here, naming the file, not later in a batch.

    Refused in one line (EvalkitError): a truncated or corrupt file; more than ``max_pixels`` pixels
    (judged from the header, before any pixel is decoded); pixels with no unambiguous 8-bit form
    (:func:`to_rgb`); TIFFs that PIL misreads (:func:`_check_tiff_planes`).
    """
    try:
        with warnings.catch_warnings(), _own_pixel_check():
            warnings.simplefilter("ignore", UserWarning)  # PIL warns about damaged metadata before failing on the pixels
            with Image.open(path) as image:
                check_pixels(image.size, max_pixels, path)
                _check_tiff_planes(image, path)
                check_mode(image, path)
                image.load()
                return to_rgb(image, path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise EvalkitError(f"cannot read image {path}: {exc}; replace or remove the file") from None


class ImageSplitDataset(torch.utils.data.Dataset):
    """The torch view of a :class:`SplitListing`: returns ``(image tensor, index, readable)``.

    With ``skip_unreadable`` an image that cannot be decoded (or that has more than
    ``max_image_pixels`` pixels) becomes a zero tensor marked unreadable, which the embedding
    stage leaves out of the cache and counts; without it the error names the file and stops
    the run. The limit travels with the dataset into every DataLoader worker, forked or spawned.
    """

    def __init__(self, spec: DatasetSpec, listing: SplitListing, transform: Callable[[Image.Image], torch.Tensor],
                 input_size: int, skip_unreadable: bool = False, max_image_pixels: int = MAX_IMAGE_PIXELS) -> None:
        self.spec = spec
        self.listing = listing
        self.transform = transform
        self.input_size = input_size
        self.skip_unreadable = skip_unreadable
        self.max_image_pixels = check_pixel_limit(max_image_pixels)

    def __len__(self) -> int:
        return len(self.listing)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, bool]:
        try:
            return self.transform(self.spec.read_image(self.listing, index, self.max_image_pixels)), index, True
        except EvalkitError:
            if not self.skip_unreadable:
                raise
            return torch.zeros(3, self.input_size, self.input_size), index, False
