"""Datasets: specs that list and read a split, behind the ``DATASETS`` registry."""

from evalkit.data.bach import BACH
from evalkit.data.base import DatasetSpec, ImageSplitDataset, SplitListing, read_rgb
from evalkit.data.consep import CoNSeP
from evalkit.data.crc import CRC
from evalkit.data.image_folder import ImageCSV, ImageFolder
from evalkit.data.mhist import MHIST
from evalkit.data.pcam import PatchCamelyon
from evalkit.data.precomputed import PrecomputedEmbeddings
from evalkit.data.registry import DATASETS

__all__ = ["BACH", "CRC", "DATASETS", "CoNSeP", "DatasetSpec", "ImageCSV", "ImageFolder", "ImageSplitDataset", "MHIST",
           "PatchCamelyon", "PrecomputedEmbeddings", "SplitListing", "read_rgb"]
