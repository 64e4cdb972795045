"""ANN candidates for the age-pooled recall (MODELS.md §8): faiss-cpu HNSW against usearch HNSW, on one thread.

    .venv/bin/python benchmarks/ann.py [--n 1000000] [--sweep-n 50000] [--dims 32 64] [--queries 1000]
        [--seeds 8101 8202 8303] [--configs 16:100 32:128] [--ef-search 64 128 256]
        [--full usearch:16:100] [--full-ef-search 128 256 384 512] [--out benchmarks/results/ann.json]

faiss-cpu is measured here but is not a project dependency: ``.venv/bin/pip install faiss-cpu==1.15.1`` first
(its abi3 wheel ships only the generic build: faiss loads no AVX2/AVX-512 kernels although this CPU has both,
while usearch picks its AVX-512 ("skylake") kernels).

Data: clustered synthetic unit vectors, a mixture of ``--clusters`` isotropic Gaussians (centres ~ N(0, I),
members = centre + ``--spread`` x N(0, I), then L2-normalised); queries are fresh draws from the same mixture
(user vectors living near item clusters), not indexed points. Uniform noise would make every ANN look worse than
on real embeddings, and a query equal to an indexed point would make it look better.

Per library and build setting (M = graph degree, ef_construction), on one thread (``OMP_NUM_THREADS=1``,
``faiss.omp_set_num_threads(1)``, usearch ``threads=1``): build time of the whole index; then for each ef_search:
recall@100 against exact search (faiss ``IndexFlatIP`` over the same unit vectors) and latency of single queries
(p50, p99, one query per call); then ``--adds`` held-out items added one call each into the full index (p50, p99)
and removed again one call each (usearch only: faiss HNSW cannot remove ids, see the README).

Two stages, because one core builds a 1M-item HNSW in minutes: a sweep at ``--sweep-n`` over both libraries,
every build setting, every dimension and every seed (medians over seeds reported), then the configurations in
``--full`` built once at ``--n`` (first seed) for every dimension. ``--sweep-n 0`` or ``--full`` with nothing
after it skips a stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("benchmarks.ann")

RESULTS = Path(__file__).resolve().parent / "results"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
K = 100


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="Items in the full-size stage.")
    parser.add_argument("--sweep-n", type=int, default=50_000, help="Items in the sweep (0: no sweep).")
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--adds", type=int, default=1000, help="Held-out items added (and removed) one by one.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[8101, 8202, 8303])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.75, help="Cluster noise scale relative to centres.")
    parser.add_argument("--libs", nargs="+", default=["faiss", "usearch"])
    parser.add_argument("--configs", nargs="+", default=["16:100", "32:128"], help="M:ef_construction.")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--full", nargs="*", default=["usearch:16:100"], help="lib:M:ef_construction at --n.")
    parser.add_argument("--full-ef-search", type=int, nargs="+", default=[128, 256, 384, 512])
    parser.add_argument("--out", type=Path, default=RESULTS / "ann.json")
    return parser.parse_args()


def make_data(n: int, dim: int, seed: int, args: argparse.Namespace) -> tuple[np.ndarray, ...]:
    """(items [n, dim], queries [q, dim], held-out adds [a, dim]), all unit float32 rows."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((args.clusters, dim), dtype=np.float32)

    def draw(count: int) -> np.ndarray:
        out = centres[rng.integers(0, args.clusters, count)]
        out += args.spread * rng.standard_normal((count, dim), dtype=np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    return draw(n), draw(args.queries), draw(args.adds)


def exact_top(items: np.ndarray, queries: np.ndarray) -> np.ndarray:
    import faiss

    flat = faiss.IndexFlatIP(items.shape[1])
    flat.add(items)
    _, ids = flat.search(queries, K)
    return ids


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, q))


class FaissHNSW:
    """faiss ``IndexHNSWFlat`` (inner product) behind an ``IndexIDMap``: external ids, but no removal."""

    name = "faiss"

    def __init__(self, dim: int, m: int, ef_construction: int):
        import faiss

        self.hnsw = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        self.hnsw.hnsw.efConstruction = ef_construction
        self.index = faiss.IndexIDMap(self.hnsw)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(vectors, ids.astype(np.int64))

    def set_ef(self, ef: int) -> None:
        self.hnsw.hnsw.efSearch = ef

    def search_one(self, query: np.ndarray) -> np.ndarray:
        return self.index.search(query[None, :], K)[1][0]

    remove_one = None


class UsearchHNSW:
    """usearch ``Index`` (inner product on unit vectors, f32), one thread for every call."""

    name = "usearch"

    def __init__(self, dim: int, m: int, ef_construction: int):
        from usearch.index import Index

        self.index = Index(ndim=dim, metric="ip", dtype="f32", connectivity=m, expansion_add=ef_construction)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add(ids.astype(np.uint64), vectors, threads=1)

    def set_ef(self, ef: int) -> None:
        self.index.expansion_search = ef

    def search_one(self, query: np.ndarray) -> np.ndarray:
        return self.index.search(query, K, threads=1).keys.astype(np.int64)

    def remove_one(self, key: int) -> None:
        self.index.remove(key)


LIBS = {"faiss": FaissHNSW, "usearch": UsearchHNSW}


def measure(lib: str, m: int, efc: int, data: tuple, truth: np.ndarray, efs_list: list[int]) -> dict:
    """Build, query at each ef_search, add the held-out items one by one, remove them one by one."""
    items, queries, adds = data
    index = LIBS[lib](items.shape[1], m, efc)
    start = time.perf_counter()
    index.add(np.arange(len(items)), items)
    out = {"build_s": time.perf_counter() - start, "search": {}}
    for ef in efs_list:
        index.set_ef(ef)
        latencies, hits = [], 0
        for query, true_ids in zip(queries, truth, strict=True):
            start = time.perf_counter()
            found = index.search_one(query)
            latencies.append(time.perf_counter() - start)
            hits += len(np.intersect1d(found, true_ids))
        out["search"][ef] = {"recall": hits / truth.size, "p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99)}
    new_ids = np.arange(len(items), len(items) + len(adds))
    add_s = []
    for key, vector in zip(new_ids, adds, strict=True):
        start = time.perf_counter()
        index.add(key[None], vector[None, :])
        add_s.append(time.perf_counter() - start)
    out["add_p50_ms"], out["add_p99_ms"] = pct(add_s, 50), pct(add_s, 99)
    if index.remove_one is not None:
        remove_s = []
        for key in new_ids:
            start = time.perf_counter()
            index.remove_one(int(key))
            remove_s.append(time.perf_counter() - start)
        out["remove_p50_ms"], out["remove_p99_ms"] = pct(remove_s, 50), pct(remove_s, 99)
    return out


def run_stage(n: int, dim: int, seeds: list[int], plans: list[tuple], efs: list[int], args) -> list[dict]:
    """Every (lib, M, ef_construction) in ``plans`` on each seed's data; one row per plan, seed."""
    rows = []
    for seed in seeds:
        data = make_data(n, dim, seed, args)
        start = time.perf_counter()
        truth = exact_top(data[0], data[1])
        log.info("n=%d dim=%d seed=%d: exact top-%d in %.1f s", n, dim, seed, K, time.perf_counter() - start)
        for lib, m, efc in plans:
            result = measure(lib, m, efc, data, truth, efs)
            log.info("  %s M=%d efC=%d: %s", lib, m, efc, json.dumps(result))
            rows.append({"n": n, "dim": dim, "seed": seed, "lib": lib, "m": m, "ef_construction": efc, **result})
        del data, truth
    return rows


def median_table(rows: list[dict]) -> list[str]:
    """Markdown rows, medians over seeds of every (n, dim, lib, M, efC, efS)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["n"], row["dim"], row["lib"], row["m"], row["ef_construction"]), []).append(row)
    lines = [
        "| n | dim | lib | M | efC | efS | seeds | build s | recall@100 | query p50 ms | query p99 ms "
        "| add p50 ms | add p99 ms | remove p50 ms |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (n, dim, lib, m, efc), group in sorted(groups.items()):

        def med(get, group=group) -> float:
            return statistics.median(get(row) for row in group)

        removal = f"{med(lambda r: r['remove_p50_ms']):.4f}" if "remove_p50_ms" in group[0] else "n/a"
        for ef in group[0]["search"]:
            s = [lambda r, key=key, ef=ef: r["search"][ef][key] for key in ("recall", "p50_ms", "p99_ms")]
            lines.append(
                f"| {n:,} | {dim} | {lib} | {m} | {efc} | {ef} | {len(group)} | {med(lambda r: r['build_s']):.1f} "
                f"| {med(s[0]):.4f} | {med(s[1]):.3f} | {med(s[2]):.3f} | {med(lambda r: r['add_p50_ms']):.3f} "
                f"| {med(lambda r: r['add_p99_ms']):.3f} | {removal} |"
            )
    return lines


def single_threaded() -> None:
    """Re-run this script with the BLAS/OpenMP thread counts at 1 (they are read when the libraries load)."""
    if any(os.environ.get(var) != "1" for var in THREAD_VARS):
        env = {**os.environ, **dict.fromkeys(THREAD_VARS, "1")}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> None:
    single_threaded()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    rows = []
    sweep = [(lib, *map(int, cfg.split(":"))) for lib in args.libs for cfg in args.configs]
    full = [(spec.split(":")[0], *map(int, spec.split(":")[1:])) for spec in args.full]
    for dim in args.dims:
        if args.sweep_n:
            rows += run_stage(args.sweep_n, dim, args.seeds, sweep, args.ef_search, args)
    for dim in args.dims:
        if full:
            rows += run_stage(args.n, dim, args.seeds[:1], full, args.full_ef_search, args)
    table = median_table(rows)
    print("\n".join(table))
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine, "rows": rows, "table": table}
    args.out.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
