"""Extraction at scale: clips per second and peak driver memory at 1k, 10k and 100k clips, local pool vs Dask.

Every (size, config) runs in a fresh subprocess (the "driver") from a cold cache (a new temporary directory).
The driver's peak memory is the high-water mark of its own resident set (``VmHWM`` of /proc/self/status, which
starts afresh at exec and counts no worker process; ``getrusage(RUSAGE_SELF).ru_maxrss`` is recorded beside
it as a cross-check, although Linux carries the spawning parent's peak into it across exec). The driver's RSS
right after its imports is reported as the baseline. Executor start-up (pool or LocalCluster, warm) is timed
apart from extraction whenever the extraction API lets it be reused (``open_executor``); with the older API
(a pool opened inside ``extract_features``) start-up is inside the extraction time and shown as "-".

Data: the 480 FSDD digits of tests/data/fsdd (~0.4 s, 8 kHz, 16-bit), copied round-robin; copy ``i`` gets the
bits of ``i`` added (+0/+1 LSB) to its first 20 samples, so that no two files hash alike and the cache cannot
dedupe them (a change of at most one LSB: -90 dBFS). The files are written once into ``--work`` (reused by
later runs; ~9 kB each, ~0.9 GB for 100k) by parallel processes. Default modality: ``recording`` only, so that
the figures measure the pipeline (planning, dispatch, cache writes, assembly), not the extractors' maths.

    python benchmarks/scale.py --work /tmp/scale-work [--sizes 1000,10000,100000]
        [--configs local-1,local-2,dask-1,dask-2] [--modalities recording] [--json out.json]
        [--only-100k local-2,dask-2] [--trace]

Besides wall-clock throughput, each row gives the CPU seconds of the driver and of its workers during extraction
only (clip/s ratios mean little on a shared machine; CPU per clip is steadier), and ``--trace`` records the
driver's RSS and high-water mark at the entry and exit of each driver-side phase (planning, executor run,
cache compaction, assembly), so that a memory target missed can be attributed.

Prints one row per (size, config) and the derived targets of issue 21: driver peak at the largest size / at
the smallest (target <= 2x), throughput 2 workers / 1 worker for each executor (target >= 1.7x), and Dask's
per-clip time over the local pool's at the same worker count (target within 20%, i.e. <= 1.2x).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT / "tests" / "data" / "fsdd"
MARK_BITS = 20  # copies 0 .. 2**20-1 get distinct files
PER_DIR = 1000


# ------------------------------------------------------------------------------------------------ the data


def clip_path(work: Path, i: int) -> Path:
    return work / "clips" / f"{i // PER_DIR:04d}" / f"c{i:07d}.wav"


def _wav_bytes(samples, sr: int) -> bytes:
    import struct

    data = samples.astype("<i2").tobytes()
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sr, sr * 2, 2, 16)
            + b"data" + struct.pack("<I", len(data)) + data)


def _write_range(args: tuple[str, int, int]) -> int:
    import numpy as np
    import soundfile as sf

    work, lo, hi = Path(args[0]), args[1], args[2]
    sources = _sources()
    decoded = [sf.read(p, dtype="int16") for p in sources]
    bits = np.arange(MARK_BITS)
    for i in range(lo, hi):
        x, sr = decoded[i % len(decoded)]
        y = x.astype(np.int32)
        mark = (i >> bits) & 1
        k = min(MARK_BITS, len(y))
        y[:k] = np.where(y[:k] >= 32767, y[:k] - mark[:k], y[:k] + mark[:k])
        p = clip_path(work, i)
        if i % PER_DIR == 0 or i == lo:
            p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".part")
        tmp.write_bytes(_wav_bytes(y, sr))
        os.replace(tmp, p)
    return hi - lo


def _sources() -> list[str]:
    import csv

    with open(FSDD / "metadata.csv", newline="") as f:
        return [str(FSDD / r["path"]) for r in csv.DictReader(f)]


def ensure_data(work: Path, n: int, procs: int) -> float:
    """Make clips 0..n-1 under ``work`` (those already there, per the stamp, are kept). Returns seconds spent."""
    from concurrent.futures import ProcessPoolExecutor

    stamp = work / "clips" / "STAMP.json"
    have = 0
    if stamp.exists():
        st = json.loads(stamp.read_text())
        if st.get("mark_bits") == MARK_BITS and st.get("sources") == len(_sources()):
            have = int(st["n"])
    if have >= n:
        return 0.0
    t = time.perf_counter()
    step = 2000
    ranges = [(str(work), lo, min(n, lo + step)) for lo in range(have, n, step)]
    (work / "clips").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=procs) as pool:
        written = sum(pool.map(_write_range, ranges))
    assert written == n - have
    stamp.write_text(json.dumps({"n": n, "mark_bits": MARK_BITS, "sources": len(_sources())}))
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------- one run, one process


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _descendants(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            out += kids
            stack += kids
    return out


def workers_cpu_s() -> float:
    """CPU seconds of every descendant of this process so far: the reaped ones (RUSAGE_CHILDREN, which also holds
    what they reaped) plus the live ones (utime+stime+cutime+cstime from /proc). A difference of two readings is
    the workers' CPU between them, whether they lived through it (Dask) or ended inside it (the local pool)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    total, tick = r.ru_utime + r.ru_stime, os.sysconf("SC_CLK_TCK")
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def _self_cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _trace_phases(bx, marks: list) -> None:
    """--trace: note the driver's RSS and its high-water mark at the entry and exit of the driver-side phases of
    extraction (wrapping functions from the benchmark; nothing in blindcheck changes). The high-water mark's rise
    between two marks is the peak that phase reached."""
    import functools

    from blindcheck.extraction.cache import Store

    def mark(label: str) -> None:
        marks.append({"at": label, "t": time.perf_counter(), "rss_mb": _rss_mb("VmRSS"), "hwm_mb": _rss_mb("VmHWM")})

    def wrap(owner, name: str, label: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def inner(*a, **k):
            mark(label + " in")
            try:
                return fn(*a, **k)
            finally:
                mark(label + " out")

        setattr(owner, name, inner)

    for name in ("read_index", "lookup_index", "present", "present_mask", "write_plan"):  # old and new planning
        if hasattr(Store, name):
            wrap(Store, name, name)
    wrap(Store, "compact", "compact")
    wrap(Store, "read_matrix", "read_matrix")
    wrap(bx, "_assemble", "assemble")
    try:
        import blindcheck.runtime.executors as bex
    except ImportError:
        bex = None
    for cls_name in ("LocalExecutor", "DaskExecutor"):
        cls = getattr(bex, cls_name, None)
        if cls is None:
            continue
        run = cls.run

        def traced_run(self, fn, jobs, max_in_flight=None, _run=run, _name=cls_name):
            mark(f"{_name}.run in")
            yield from _run(self, fn, jobs, max_in_flight)
            mark(f"{_name}.run out")

        cls.run = traced_run
    mark("traced")


def child(args: argparse.Namespace) -> None:
    """One (size, config) in this fresh process; prints one JSON line."""
    import resource

    import pandas as pd

    import blindcheck.extraction.pipeline as bx
    from blindcheck.inputs.manifest import Manifest

    open_executor = getattr(bx, "open_executor", None)  # where the executors commit put it
    if open_executor is None:
        try:
            from blindcheck.runtime.executors import open_executor
        except ImportError:
            open_executor = None
    new_api = hasattr(bx, "ExtractionConfig") and open_executor is not None
    executor, workers = args.config.rsplit("-", 1)
    workers = int(workers)
    if executor == "dask":
        import distributed  # noqa: F401  (imported before the baseline: it is the executor's own weight)
    base_rss = _rss_mb("VmRSS")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = r0.ru_utime + r0.ru_stime
    out: dict = {"size": args.size, "config": args.config, "executor": executor, "workers": workers,
                 "modalities": args.modalities, "api": "executors" if new_api else "legacy",
                 "baseline_rss_mb": base_rss, "pid": os.getpid()}
    if executor == "dask" and not new_api:
        out["error"] = "this blindcheck has no Dask executor (blindcheck.runtime.executors / ExtractionConfig missing)"
        print("RESULT " + json.dumps(out), flush=True)
        return
    work = Path(args.work)
    n = args.size
    table = pd.DataFrame({"id": [f"c{i:07d}" for i in range(n)],
                          "path": [str(clip_path(work, i)) for i in range(n)],
                          "label": [i % 2 for i in range(n)]})
    manifest = Manifest(table=table, source="bench")
    del table
    out["manifest_rss_mb"] = _rss_mb("VmRSS")
    marks: list = []
    if args.trace:
        _trace_phases(bx, marks)
    mods = tuple(args.modalities.split(","))
    with tempfile.TemporaryDirectory(prefix="scale-cache-", dir=args.cache_root) as cache:
        if new_api:
            cfg = bx.ExtractionConfig(modalities=mods, workers=workers, executor=executor)
            t0 = time.perf_counter()
            with open_executor(cfg) as ex:
                t1, c1, w1 = time.perf_counter(), _self_cpu_s(), workers_cpu_s()
                res = bx.extract_features(manifest, cache, cfg, executor=ex)
                t2, c2, w2 = time.perf_counter(), _self_cpu_s(), workers_cpu_s()
            t3 = time.perf_counter()
            out["startup_s"], out["extract_s"], out["close_s"] = t1 - t0, t2 - t1, t3 - t2
        else:
            t1, c1, w1 = time.perf_counter(), _self_cpu_s(), workers_cpu_s()
            res = bx.extract_features(manifest, cache, modalities=list(mods), workers=workers)
            t2, c2, w2 = time.perf_counter(), _self_cpu_s(), workers_cpu_s()
            out["startup_s"], out["extract_s"], out["close_s"] = None, t2 - t1, None
        out["cache_mb"] = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file()) / 2**20
    out["clips_per_s"] = n / out["extract_s"]
    # CPU spent during extraction only (start-up and close excluded), per clip: robust to a busy machine where
    # wall-clock ratios are not.
    out["extract_driver_cpu_s"], out["extract_workers_cpu_s"] = c2 - c1, w2 - w1
    out["cpu_ms_per_clip"] = 1000 * ((c2 - c1) + (w2 - w1)) / n
    out["peak_rss_mb"] = _rss_mb("VmHWM")
    out["end_rss_mb"] = _rss_mb("VmRSS")
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    out["ru_maxrss_mb"] = me.ru_maxrss / 1024
    # CPU seconds of the driver itself vs of its reaped descendants (pool workers, Dask nannies and workers),
    # over the whole child: tells whether the driver or the workers limit the throughput.
    out["driver_cpu_s"] = me.ru_utime + me.ru_stime - cpu0
    out["workers_cpu_s"] = kids.ru_utime + kids.ru_stime
    out["in_table"] = int(len(res.features))
    out["feature_columns"] = int(sum(1 for c in res.features.columns if "." in c))
    out["failed"] = int(res.stats.get("failed", -1))
    out["computed"] = res.stats.get("computed")
    out["features_mb"] = float(res.features.memory_usage(deep=True).sum() / 2**20)
    out["float32"] = bool(all(str(res.features[c].dtype) == "float32" for c in res.features.columns if "." in c))
    out["load_end"] = os.getloadavg()
    if marks:
        out["trace"] = [dict(m, t=m["t"] - marks[0]["t"]) for m in marks]
    print("RESULT " + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------------------------- the driver


def run_one(args: argparse.Namespace, size: int, config: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--work", str(args.work), "--size", str(size), "--config", config,
           "--modalities", args.modalities]
    if args.cache_root:
        cmd += ["--cache-root", args.cache_root]
    if args.trace:
        cmd += ["--trace"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load0 = os.getloadavg()
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        return {"size": size, "config": config, "error": f"exit {proc.returncode}: " + " | ".join(tail),
                "load_start": load0, "wall_s": wall}
    res = json.loads(lines[-1][len("RESULT "):])
    res["load_start"], res["wall_s"] = load0, wall
    return res


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def derived(results: list[dict]) -> dict:
    ok = {(r["size"], r["config"]): r for r in results if "error" not in r}
    out: dict = {"memory": {}, "scaling": {}, "dask_overhead": {}, "dask_cpu_overhead": {}}
    for cfg in sorted({c for _, c in ok}):
        sizes = sorted(s for s, c in ok if c == cfg)
        if len(sizes) >= 2:
            lo, hi = ok[(sizes[0], cfg)], ok[(sizes[-1], cfg)]
            out["memory"][cfg] = {"sizes": [sizes[0], sizes[-1]], "peak_mb": [lo["peak_rss_mb"], hi["peak_rss_mb"]],
                                  "ratio": hi["peak_rss_mb"] / lo["peak_rss_mb"],
                                  "above_baseline_ratio": (hi["peak_rss_mb"] - hi["baseline_rss_mb"])
                                  / max(1e-9, lo["peak_rss_mb"] - lo["baseline_rss_mb"])}
    for size in sorted({s for s, _ in ok}):
        for ex in ("local", "dask"):
            a, b = ok.get((size, f"{ex}-1")), ok.get((size, f"{ex}-2"))
            if a and b:
                out["scaling"][f"{ex}@{size}"] = b["clips_per_s"] / a["clips_per_s"]
        for w in (1, 2):
            a, b = ok.get((size, f"local-{w}")), ok.get((size, f"dask-{w}"))
            if a and b:
                out["dask_overhead"][f"{w}w@{size}"] = a["clips_per_s"] / b["clips_per_s"]
                out["dask_cpu_overhead"][f"{w}w@{size}"] = b["cpu_ms_per_clip"] / a["cpu_ms_per_clip"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=False, help="folder for the generated clips (reused across runs)")
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--configs", default="local-1,local-2,dask-1,dask-2")
    ap.add_argument("--only-100k", default=None,
                    help="configs to run at sizes >= 100000 (default: all of --configs)")
    ap.add_argument("--modalities", default="recording")
    ap.add_argument("--json", default=None, help="write every result and the derived targets here")
    ap.add_argument("--cache-root", default=None, help="where the cold caches are made (default: system temp)")
    ap.add_argument("--gen-procs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds one (size, config) may take")
    ap.add_argument("--trace", action="store_true",
                    help="record the driver's RSS at the entry and exit of each driver-side phase (in the JSON)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if not args.work:
        ap.error("--work is required (a folder outside the repository for the generated clips)")
    args.work = Path(args.work).resolve()
    sizes = [int(s) for s in args.sizes.split(",")]
    configs = [c.strip() for c in args.configs.split(",")]
    for c in configs:
        ex, _, w = c.rpartition("-")
        if ex not in ("local", "dask") or not w.isdigit():
            ap.error(f"bad config {c!r}: expected local-N or dask-N")
    big = [c.strip() for c in args.only_100k.split(",")] if args.only_100k else configs
    gen = ensure_data(args.work, max(sizes), args.gen_procs)
    made = f"made in {gen:.1f} s" if gen else "reused"
    print(f"data: {max(sizes)} clips under {args.work / 'clips'} ({made}); "
          f"modalities: {args.modalities}; load average at start: {os.getloadavg()}", flush=True)
    print(f"{'size':>7} {'config':<8} {'wk':>2} {'start s':>7} {'extract s':>9} {'clips/s':>8} {'base MB':>7} "
          f"{'peak MB':>7} {'maxrss':>7} {'feat MB':>7} {'failed':>6} {'drv cpu':>7} {'wk cpu':>7} "
          f"{'cpu ms/clip':>11}  load(1m) start/end", flush=True)
    results = []
    for size in sizes:
        for cfg in configs:
            if size >= 100_000 and cfg not in big:
                continue
            r = run_one(args, size, cfg)
            results.append(r)
            if args.json:  # after every run, so that an interrupted run keeps what it measured
                write_json(args, results)
            if "error" in r:
                print(f"{size:>7} {cfg:<8} ERROR {r['error']}", flush=True)
                continue
            print(f"{size:>7} {cfg:<8} {r['workers']:>2} {_fmt(r['startup_s'], '7.2f')} {r['extract_s']:>9.2f} "
                  f"{r['clips_per_s']:>8.1f} {r['baseline_rss_mb']:>7.0f} {r['peak_rss_mb']:>7.0f} "
                  f"{r['ru_maxrss_mb']:>7.0f} {r['features_mb']:>7.1f} {r['failed']:>6} "
                  f"{r['extract_driver_cpu_s']:>7.1f} "
                  f"{r['extract_workers_cpu_s']:>7.1f} {r['cpu_ms_per_clip']:>11.2f}  "
                  f"{r['load_start'][0]:.2f}/{r['load_end'][0]:.2f}", flush=True)
    d = derived(results)
    print("\ntargets:")
    for cfg, m in d["memory"].items():
        print(f"  driver peak {cfg}: {m['peak_mb'][1]:.0f} MB at {m['sizes'][1]} / {m['peak_mb'][0]:.0f} MB at "
              f"{m['sizes'][0]} = {m['ratio']:.2f}x (target <= 2x; above the import baseline: "
              f"{m['above_baseline_ratio']:.2f}x)")
    for k, v in d["scaling"].items():
        print(f"  throughput 2 workers / 1 worker, {k}: {v:.2f}x (target >= 1.7x)")
    for k, v in d["dask_overhead"].items():
        print(f"  Dask per-clip time / local pool's, {k}: {v:.2f}x (target <= 1.2x); CPU per clip (driver + workers): "
              f"{d['dask_cpu_overhead'][k]:.2f}x")
    if args.json:
        write_json(args, results)


def write_json(args: argparse.Namespace, results: list[dict]) -> None:
    meta = {"argv": sys.argv, "cpus": os.cpu_count(), "work": str(args.work), "modalities": args.modalities,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(args.json).write_text(json.dumps({"meta": meta, "results": results, "derived": derived(results)}, indent=1))


if __name__ == "__main__":
    main()
