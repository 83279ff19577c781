"""Datasets: specs that list and read a split, behind the ``DATASETS`` registry."""

from evalkit.data.base import DatasetSpec, ImageSplitDataset, SplitListing, read_rgb
from evalkit.data.image_folder import ImageCSV, ImageFolder
from evalkit.data.precomputed import PrecomputedEmbeddings
from evalkit.data.registry import DATASETS

__all__ = ["DATASETS", "DatasetSpec", "ImageCSV", "ImageFolder", "ImageSplitDataset", "PrecomputedEmbeddings",
           "SplitListing", "read_rgb"]
