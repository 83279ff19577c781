"""Result tables (and, later, plots) from results.json files."""

from evalkit.report.tables import comparison_table, load_results, write_report

__all__ = ["comparison_table", "load_results", "write_report"]
