"""Analyses of finished result tables and checkpoint files: no zarr, no torch at import.

Rooms: :mod:`~reprstore.analysis.results` (reading result files, naming columns and
values), :mod:`~reprstore.analysis.summary` (seed summaries), :mod:`~reprstore.analysis.
contrast` (group contrasts with exact permutation p-values and ratio intervals),
:mod:`~reprstore.analysis.steps` (checkpoint labels on a step axis) and
:mod:`~reprstore.analysis.drift` (weight drift between checkpoint files; the files are read
by :mod:`reprstore.extract.weights`, imported only when called).
"""
