"""Run one measurement in a fresh subprocess: wall time and peak RSS above the baseline.

A *task* is a function ``task(params) -> run`` in a module of this package. Calling it
does the imports and cheap set-up (opening a store, building a parameter-free model); the
child then records its baseline after imports, calls ``run()`` once under a wall clock,
and reports the peak RSS above that baseline. It records ``ru_maxrss − baseline`` and,
as the headline figure where Linux allows it, the same thing from ``VmHWM`` reset after
imports: ``ru_maxrss`` of a child starts at its parent's RSS at fork time (the pre-exec
high-water mark survives exec), which hides the peak of a small child of a big parent.
``run()`` returns a dict of values (a CKA value, a matrix, byte counts …) that ends up in
the result row.

The parent watches the child's process tree: above ``mem_cap`` bytes of RSS (all
processes of the tree together) or past ``timeout`` seconds the tree is killed and the
result says so, so a reference that would need 80 GB records that instead of taking the
machine down. A task raises :class:`Skip` to record why it did not run, and a missing
peer library becomes ``"not installed"``.

Usage of the child (internal): ``python -m benchmarks.harness SPEC.json RESULT.json``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024**2
POLL_S = 0.05
#: Python packages of the peers -> the distribution name in results.
PEER_MODULES = {
    "torch_cka": "torch-cka",
    "ckatorch": "ckatorch",
    "cka_pytorch": "cka-pytorch",
    "rsatoolbox": "rsatoolbox",
}


class Skip(Exception):
    """Raised by a task's set-up: the measurement is not run, the reason is recorded."""


Task = Callable[[dict[str, Any]], Callable[[], dict[str, Any]]]


# ------------------------------------------------------------------------------ child


def _rss_now_kib() -> int:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _hwm_kib() -> int:
    """VmHWM: the peak RSS of this process image only (not inherited across exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _not_installed(err: ImportError) -> str | None:
    name = (err.name or "").split(".")[0]
    if name in PEER_MODULES:
        return f"not installed ({PEER_MODULES[name]})"
    if name in {"lightning", "torchmetrics", "seaborn", "yaml"}:
        return f"not installed ({name}, needed by a peer)"
    return None


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Set up, measure and run one task in this process; return the result row fields."""
    # the tasks raise benchmarks.harness.Skip, which is not __main__.Skip in the child
    from benchmarks.harness import Skip as TaskSkip

    module, func = spec["task"].split(":")
    try:
        task: Task = getattr(importlib.import_module(module), func)
        run = task(spec.get("params", {}))
    except (Skip, TaskSkip) as err:
        return {"status": f"skipped: {err}"}
    except ImportError as err:
        reason = _not_installed(err)
        if reason is None:
            raise
        return {"status": reason}
    gc.collect()
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    current = _rss_now_kib()
    reset = _reset_hwm()
    t0 = time.perf_counter()
    out = run()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm = _hwm_kib()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "status": "ok",
        "wall_s": wall,
        # ru_maxrss carries the parent's RSS at fork time over exec (Linux keeps the
        # pre-exec high-water mark), so a big parent hides a child's peak: VmHWM, reset
        # after imports, is the same measure without that; ru_maxrss is kept as a check.
        "peak_rss_mib": max((hwm if reset else peak) - (current if reset else baseline), 0) / 1024,
        "peak_ru_maxrss_mib": max(peak - baseline, 0) / 1024,
        "baseline_rss_mib": baseline / 1024,
        "rss_at_start_mib": current / 1024,
        "children_max_rss_mib": kids / 1024,
        **out,
    }


def _child_main(spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = run_child(spec)
    except Exception as err:
        result = {"status": f"error: {type(err).__name__}: {err}"[:500]}
        traceback.print_exc()
    Path(result_path).write_text(json.dumps(result, default=_jsonable))


def _jsonable(x: Any) -> Any:
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    return str(x)


# ----------------------------------------------------------------------------- parent


def _tree_rss(proc: Any) -> int:
    import psutil

    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _kill_tree(proc: Any) -> None:
    import psutil

    try:
        kids = proc.children(recursive=True)
    except psutil.Error:
        kids = []
    for p in [*kids, proc]:
        with contextlib.suppress(psutil.Error):
            p.kill()


def run_task(
    task: str,
    params: dict[str, Any] | None = None,
    *,
    timeout: float = 600,
    mem_cap: int = 16 * 1024**3,
    log: Path | None = None,
) -> dict[str, Any]:
    """Run ``task`` (``"module:function"``) in a fresh Python process; return its result.

    Parameters
    ----------
    task : str
        ``"benchmarks.tasks_cka:reprstore_pair"`` and the like.
    params : dict
        JSON-serialisable parameters handed to the task.
    timeout : float
        Seconds before the process tree is killed (status ``timeout``).
    mem_cap : int
        Bytes of RSS of the whole process tree before it is killed (status ``killed``).
    log : Path, optional
        Where the child's stdout/stderr go (appended).

    Returns
    -------
    dict
        ``status`` (``ok``, ``skipped: …``, ``not installed (…)``, ``error: …``,
        ``timeout …``, ``killed: …``) and, when ``ok``, ``wall_s``, ``peak_rss_mib`` and the
        task's own fields; always ``tree_peak_rss_mib`` (sampled by the parent).
    """
    import psutil

    with tempfile.TemporaryDirectory(prefix="reprstore-bench-") as tmp:
        spec_path, result_path = Path(tmp, "spec.json"), Path(tmp, "result.json")
        spec_path.write_text(json.dumps({"task": task, "params": params or {}}))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        out = open(log, "a") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            if log is not None:
                out.write(f"\n=== {task} {json.dumps(params)}\n")  # type: ignore[union-attr]
                out.flush()  # type: ignore[union-attr]
            child = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.harness", str(spec_path), str(result_path)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            proc = psutil.Process(child.pid)
            t0, tree_peak, status = time.monotonic(), 0, None
            while child.poll() is None:
                tree_peak = max(tree_peak, _tree_rss(proc))
                if tree_peak > mem_cap:
                    status = (
                        f"killed: over the memory cap ({tree_peak / 1024**3:.1f} GiB > "
                        f"{mem_cap / 1024**3:.1f} GiB)"
                    )
                elif time.monotonic() - t0 > timeout:
                    status = f"timeout (> {timeout:.0f} s)"
                if status:
                    _kill_tree(proc)
                    child.wait()
                    break
                time.sleep(POLL_S)
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        if status is None:
            if result_path.exists():
                result = json.loads(result_path.read_text())
            else:
                result = {"status": f"error: child exited with status {child.returncode}"}
        else:
            result = {"status": status}
        result["tree_peak_rss_mib"] = tree_peak / MiB
        return result


if __name__ == "__main__":
    _child_main(sys.argv[1], sys.argv[2])


def save_report(out: Path, case: str, size: str, doc: dict[str, Any], text: str) -> None:
    """Write a benchmark's ``<doc date>-<case>[-size].json`` and ``.md`` into ``out`` and
    print the Markdown: the report files of every ``python -m benchmarks.X``."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{doc['date']}-{case}" + ("" if size == "full" else f"-{size}")
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / f"{stem}.md").write_text(text)
    print(text)
