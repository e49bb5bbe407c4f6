"""Benchmarks of reprstore against in-memory references and the peer CKA libraries.

Run ``python -m benchmarks --quick`` (a couple of minutes) or ``python -m benchmarks``
(the full set). Every measurement runs in a fresh subprocess (:mod:`benchmarks.harness`)
so that its peak memory is honest; results land in ``benchmarks/results/`` as JSON, a
Markdown table and PNG plots (:mod:`benchmarks.report`).

Modules
-------
config     the sizes of the quick, full and tiny (test) sets
synth      reproducible synthetic representations, written once per size into a store
references float64/float32 numpy references (feature space and Gram space)
peers      adapters for torch-cka, ckatorch and cka-pytorch
tasks_cka  the CKA measurements (reprstore, references, peers)
tasks_io   import, extraction and the machine's GEMM and disk ceilings
harness    the subprocess runner (peak RSS, wall time, memory cap, timeout)
report     JSON, Markdown and plots
runner     the command line: ``python -m benchmarks``
"""
