"""``rerank-pipeline eval`` on a BEIR folder of N documents: wall time and peak RSS of the command (issue 20).

The folder is written deterministically, line by line (memory never holds it), into ``--work-dir`` (default
``/tmp/rerank-pipeline-eval-scale-N``):

- ``corpus.jsonl``: N documents from ``benchmarks/scale.py``'s builder (``source_sentences`` of Cranfield's texts,
  ``corpus_lines`` with the same seed: texts of ~820 bytes, ids ``doc0`` ... ``doc{N-1}``), written with ``_id``,
  ``title`` (empty) and ``text`` only;
- ``queries.jsonl``: Cranfield's 225 queries (``--beir-dir``), of which ``--queries`` (default 100) are judged;
- ``qrels/test.tsv``: for each judged query, 3 documents drawn at random (``random.Random(seed)``, gain 1). A
  seeded random pick, not bm25s's top 3: judging by BM25 would need a BM25 index of the whole corpus in this
  process, which is what is being measured. The metrics are therefore near 0; they only show the eval ran.

Then ``rerank-pipeline eval --beir-dir FOLDER --first-stage bm25 --no-rerank`` runs in a child process: the
embedded BM25 first stage streamed into a temporary index folder (under the work dir: ``TMPDIR`` is set to it),
the R100 protocol (all positives reranked, texts read by id) and the full-ranking metrics, the report written to
``WORK/report``. Printed: the CPU model, ``uptime`` before and after, the child's wall time and its peak RSS
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``; the corpus is written in this process, so the child is the only
large one), the corpus's size on disk, and the command's own per-phase timings from its report. A small N (2,000)
gives the floor: the RSS of the imported libraries.

    python benchmarks/eval_scale.py --documents 20000                     # ~10 s on 2 shared cores
    python benchmarks/eval_scale.py --documents 1000000 --work-dir /scratch/eval-scale --keep
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import DEFAULT_BEIR, REPO, corpus_lines, cpu_description, source_sentences, uptime  # noqa: E402

POSITIVES_PER_QUERY = 3


def write_collection(folder: Path, documents: int, beir_dir: Path, queries: int, seed: int) -> dict:
    """The BEIR folder described in the module docstring; returns its sizes."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    size = 0
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as out:
        for line in corpus_lines(documents, source_sentences(beir_dir), seed):
            row = json.loads(line)
            text = json.dumps({"_id": row["_id"], "title": row.get("title", ""), "text": row["text"]},
                              ensure_ascii=False) + "\n"
            size += len(text.encode("utf-8"))
            out.write(text)
    query_lines = [line for line in (Path(beir_dir) / "queries.jsonl").read_text(encoding="utf-8").splitlines()
                   if line.strip()]
    (folder / "queries.jsonl").write_text("\n".join(query_lines) + "\n", encoding="utf-8")
    judged = [json.loads(line)["_id"] for line in query_lines][:queries]
    rng = random.Random(seed)
    rows = ["query-id\tcorpus-id\tscore"]
    for qid in judged:
        rows += [f"{qid}\tdoc{i}\t1" for i in rng.sample(range(documents), min(POSITIVES_PER_QUERY, documents))]
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return {"documents": documents, "corpus_mb": size / 2**20, "judged_queries": len(judged)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=20_000, help="N, documents in the corpus (default 20,000)")
    parser.add_argument("--queries", type=int, default=100, help="judged queries (Cranfield's first ones)")
    parser.add_argument("--beir-dir", type=Path, default=DEFAULT_BEIR, help="BEIR folder: sentences and queries")
    parser.add_argument("--work-dir", type=Path, help="scratch folder (default: /tmp/rerank-pipeline-eval-scale-N)")
    parser.add_argument("--keep", action="store_true", help="keep the folder and the report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    if args.documents < POSITIVES_PER_QUERY or args.queries < 1:
        parser.error(f"--documents must be at least {POSITIVES_PER_QUERY} and --queries at least 1")

    work = args.work_dir or Path(tempfile.gettempdir()) / f"rerank-pipeline-eval-scale-{args.documents}"
    created = not work.exists()
    collection, report_dir, log = work / "collection", work / "report", work / "eval.log"
    before = uptime()
    print(f"uptime before: {before}")
    print(f"CPU: {cpu_description()}", flush=True)
    try:
        started = time.perf_counter()
        shutil.rmtree(collection, ignore_errors=True)
        sizes = write_collection(collection, args.documents, args.beir_dir, args.queries, args.seed)
        print(f"wrote {sizes['documents']:,} documents ({sizes['corpus_mb']:.0f} MB), {sizes['judged_queries']} judged "
              f"queries to {collection} in {time.perf_counter() - started:.1f} s", flush=True)
        command = [sys.executable, "-m", "rerank_pipeline", "eval", "--beir-dir", str(collection), "--split", "test",
                   "--first-stage", "bm25", "--no-rerank", "--no-progress", "--output", str(report_dir), "--overwrite"]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                   HAYSTACK_TELEMETRY_ENABLED="False", TQDM_DISABLE="1", TMPDIR=str(work))  # the index's disk
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        print("running: " + " ".join(command[2:]), flush=True)
        started = time.perf_counter()
        with open(log, "w", encoding="utf-8") as output:
            code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, cwd=REPO, env=env).returncode
        wall = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        after = uptime()
        figures = {"documents": args.documents, "corpus_mb": sizes["corpus_mb"], "queries": sizes["judged_queries"],
                   "exit_code": code, "wall_s": wall, "peak_rss_mb": peak_mb, "cpu": cpu_description(),
                   "uptime_before": before, "uptime_after": after}
        if code != 0:
            tail = "\n    ".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-10:])
            print(f"FAILED: eval exited {code} after {wall:.1f} s at {peak_mb:.0f} MB peak RSS:\n    {tail}")
        else:
            report = json.loads((report_dir / "metrics.json").read_text(encoding="utf-8"))
            figures["phases_s"] = report["provenance"]["timings_s"]
            figures["first_stage"] = next(iter(report["end_to_end"].values()))["first_stage"]
            print(f"\neval of {args.documents:,} documents, {sizes['judged_queries']} queries (bm25, --no-rerank): "
                  f"wall {wall:.1f} s, peak RSS {peak_mb:.0f} MB")
            print("phases (s): " + ", ".join(f"{name} {seconds}" for name, seconds in figures["phases_s"].items()))
            print("full ranking: " + ", ".join(f"{k} {v:.4f}" for k, v in figures["first_stage"].items())
                  + " (random qrels: near 0 is expected)")
        print(f"uptime after: {after}")
        if args.output:
            args.output.write_text(json.dumps(figures, indent=2), encoding="utf-8")
        return 0 if code == 0 else 1
    finally:
        if not args.keep:
            shutil.rmtree(collection, ignore_errors=True)
            shutil.rmtree(report_dir, ignore_errors=True)
            log.unlink(missing_ok=True)
            if created:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
