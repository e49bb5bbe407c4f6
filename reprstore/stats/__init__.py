"""Streamed sufficient statistics, numpy only (the dask graphs that feed them are
:mod:`reprstore.engine.dask_graph`).

* :mod:`.linear` — per-representation and per-pair moments of the linear-kernel CKA;
* :mod:`.minibatch` — per-batch HSIC sums of minibatch CKA (:mod:`.batch_kernels`: the
  batches of a task, all pairs at once);
* :mod:`.hsic`, :mod:`.kernels` — HSIC terms and small kernel matrices.
"""
