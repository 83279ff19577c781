"""Settings of the embedding stage, importable without Lightning (the CLI builds its parser from them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from evalkit.data.base import MAX_IMAGE_PIXELS, check_pixel_limit
from evalkit.env import env_int, env_str
from evalkit.errors import EvalkitError

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class EmbedConfig:
    """How the embedding stage runs.

    Args:
        batch_size: images per forward pass (per device).
        num_workers: DataLoader worker processes (per device); default ``$NUM_WORKERS``, else chosen from the
            cores this process may use: on a GPU all but one per device (at most 8), on the CPU one per 8 cores
            (at least one: it decodes the next batch while the forward pass runs, and sleeps most of the time).
        threads: torch intra-op threads of the embedding process; default on the CPU: the cores this process
            may use, per device (never more than torch's own default); on a GPU: torch's own.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``); default ``$ACCELERATOR``.
        devices: devices to use (several run DDP); default ``$DEVICES``.
        precision: arithmetic of the forward pass: ``fp32``, or ``bf16``/``fp16`` autocast on the device
            (``fp16`` needs a GPU). Enters the cache key: each precision has its own cache file (fp32 keeps
            the key of caches written before this option). Not the storage type: that is ``dtype``.
        dtype: storage type of the pooled embeddings in the cache (``float32`` or ``float16``; feature maps
            are always float16), whatever ``precision`` computed them in; does not enter the cache key.
        skip_unreadable: leave images that cannot be decoded out of the cache (counted in its
            attributes and in results.json) instead of stopping at the first one.
        max_image_pixels: largest image decoded, in pixels (width × height, read from the file's
            header before decoding); a larger one is refused as a possible decompression bomb, or
            counted as unreadable with ``skip_unreadable``. Default: PIL's own limit, 89,478,485.
    """

    batch_size: int = 64
    num_workers: int | None = field(default_factory=lambda: env_int("NUM_WORKERS"))
    threads: int | None = None
    accelerator: str = field(default_factory=lambda: env_str("ACCELERATOR"))
    devices: int | str = field(default_factory=lambda: env_str("DEVICES"))
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    dtype: Literal["float32", "float16"] = "float32"
    skip_unreadable: bool = False
    max_image_pixels: int = MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        check_pixel_limit(self.max_image_pixels)
        if self.precision not in PRECISIONS:
            raise EvalkitError(f"--embed.precision: expected one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        for name in ("num_workers", "threads"):
            value = getattr(self, name)
            if value is not None and value < (1 if name == "threads" else 0):
                raise EvalkitError(f"--embed.{name}: expected {'at least 1' if name == 'threads' else '0 or more'}, "
                                   f"got {value}")
