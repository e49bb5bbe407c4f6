"""Pure functions over finished result tables: no zarr, no torch, no dask at import.

Rooms: :mod:`~reprstore.analysis.results` (result tables as analyses see them: columns
and values), :mod:`~reprstore.analysis.summary` (seed summaries),
:mod:`~reprstore.analysis.contrasts` (group contrasts with exact permutation p-values and
ratio intervals), :mod:`~reprstore.analysis.steps` (checkpoint labels on a step axis) and
:mod:`~reprstore.analysis.moments` (the checkpoints where a timeline jumps). What computes
comparisons or reads checkpoint files (timelines, weight drift) is a use case in
:mod:`reprstore.workflows`.
"""
