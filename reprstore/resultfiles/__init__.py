"""Result files: tables written and read as CSV, JSON or Parquet, and the provenance
sidecar next to each. Below analysis and report, which both read them."""
