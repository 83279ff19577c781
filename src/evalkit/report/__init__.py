"""Result tables, statistics and plots from results.json (and predictions.h5) files.

Modules, each importing only those listed before it: ``runs`` (the results model), ``tables``
(Markdown/CSV), ``compare`` (paired tests, Friedman), ``plots``, ``html``, ``regress`` and ``write``
(``evalkit report``).
"""

from evalkit.report.runs import Run, load_results
from evalkit.report.tables import comparison_table
from evalkit.report.write import write_report

__all__ = ["Run", "comparison_table", "load_results", "write_report"]
