"""The dataset registry (its own module so dataset files can import it without cycles).

Its entries register when their module is imported, on the registry's first lookup. The modules
are listed: ``wsi.py`` (scipy) and ``check.py`` register nothing and are left out.
"""

from evalkit.registry import Registry

DATASETS: Registry[type] = Registry("dataset", "evalkit.data",
                                    ("bach", "consep", "crc", "image_folder", "mhist", "pcam", "precomputed"))
