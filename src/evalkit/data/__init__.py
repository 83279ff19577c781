"""Datasets: specs that list and read a split, behind the ``DATASETS`` registry.

The classes are imported on first access (:mod:`evalkit.lazy`): the command line imports this
package for its registry, and a dataset module imports torch.
"""

from evalkit.data.registry import DATASETS
from evalkit.lazy import lazy_exports

_EXPORTS = {"BACH": "bach", "CRC": "crc", "CoNSeP": "consep", "DatasetSpec": "base", "ImageCSV": "image_folder",
            "ImageFolder": "image_folder", "ImageSplitDataset": "base", "MHIST": "mhist", "PatchCamelyon": "pcam",
            "PrecomputedEmbeddings": "precomputed", "SplitListing": "base", "read_rgb": "base"}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["DATASETS", *_EXPORTS]
