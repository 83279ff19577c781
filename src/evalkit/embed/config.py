"""Settings of the embedding stage, importable without Lightning (the CLI builds its parser from them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from evalkit.data.base import MAX_IMAGE_PIXELS, check_pixel_limit
from evalkit.env import env_int, env_str


@dataclass
class EmbedConfig:
    """How the embedding stage runs.

    Args:
        batch_size: images per forward pass (per device).
        num_workers: DataLoader worker processes; default ``$NUM_WORKERS`` or min(4, cores).
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``); default ``$ACCELERATOR``.
        devices: devices to use (several run DDP); default ``$DEVICES``.
        dtype: storage type of the embeddings in the cache.
        skip_unreadable: leave images that cannot be decoded out of the cache (counted in its
            attributes and in results.json) instead of stopping at the first one.
        max_image_pixels: largest image decoded, in pixels (width × height, read from the file's
            header before decoding); a larger one is refused as a possible decompression bomb, or
            counted as unreadable with ``skip_unreadable``. Default: PIL's own limit, 89,478,485.
    """

    batch_size: int = 64
    num_workers: int | None = field(default_factory=lambda: env_int("NUM_WORKERS"))
    accelerator: str = field(default_factory=lambda: env_str("ACCELERATOR"))
    devices: int | str = field(default_factory=lambda: env_str("DEVICES"))
    dtype: Literal["float32", "float16"] = "float32"
    skip_unreadable: bool = False
    max_image_pixels: int = MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        check_pixel_limit(self.max_image_pixels)
