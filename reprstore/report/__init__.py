"""Result tables and plots: CSV/JSON/Parquet files and a heatmap PNG of a CKA grid."""

from reprstore.report.plot import plot_heatmap, plot_measures
from reprstore.resultfiles.provenance import make_provenance, read_provenance
from reprstore.resultfiles.tables import check_output, read_results, records, write_results

__all__ = [
    "check_output",
    "make_provenance",
    "plot_heatmap",
    "plot_measures",
    "read_provenance",
    "read_results",
    "records",
    "write_results",
]
