"""Arrays → plan → passes: the planner (routes, passes, one memory model), the streamed
passes over dask arrays, their checkpoints and the cluster adapter."""
