"""Result tables and plots: CSV/JSON/Parquet files and a heatmap PNG of a CKA grid."""

from reprstore.report.plot import plot_heatmap, plot_measures
from reprstore.report.tables import check_output, records, write_results

__all__ = ["check_output", "plot_heatmap", "plot_measures", "records", "write_results"]
