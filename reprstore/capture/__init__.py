"""PyTorch → row blocks: the only subpackage that imports torch.

Rooms: :mod:`~reprstore.capture.models` (model specs, checkpoints, devices),
:mod:`~reprstore.capture.data` (data sources, text length bucketing),
:mod:`~reprstore.capture.hooks` (layer patterns, the hook context manager),
:mod:`~reprstore.capture.reduce`, :mod:`~reprstore.capture.runner` (the loop and the
background writer), :mod:`~reprstore.capture.recorder` and
:mod:`~reprstore.capture.sink` (the interface the store side implements, in
:mod:`reprstore.workflows.extraction`). The public ``reprstore.extract(...)`` is
:func:`reprstore.workflows.extraction.extract`. Importing this package does not import
torch; the submodules do.
"""
