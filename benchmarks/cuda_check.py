"""CUDA parity and speed of CrossEncoderRanker against sentence_transformers.CrossEncoder.predict, in one run.

Prepare the pairs first (benchmarks/cuda_check_prepare.py), then on the CUDA machine:
    OUT=some/folder python benchmarks/cuda_check.py        # ONLY=minilm_speed runs one section
Models are MiniLM-L6- and ModernBERT-base-shaped with seeded random weights and the real MiniLM tokenizer, so parity
and speed are real but no quality is measured. Writes OUT/results.json; speeds are ratios against
CrossEncoder.predict (fp32, batch_size 32) measured in the same run.
"""
import gzip, json, os, shutil, time, traceback
from pathlib import Path

import numpy as np
import torch

OUT = Path(os.environ.get("OUT", "runs/cuda_check/out"))
OUT.mkdir(parents=True, exist_ok=True)
RESULTS = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
DEV = "cuda" if torch.cuda.is_available() else "cpu"
SYNC = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
HERE = Path(os.environ.get("CUDA_CHECK_DIR", "runs/cuda_check"))


def section(name):
    def wrap(fn):
        if os.environ.get('ONLY') and name != os.environ['ONLY']:
            return fn
        start = time.time()
        try:
            RESULTS[name] = fn()
        except Exception as error:  # keep going: one broken section must not hide the others
            RESULTS[name] = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-3000:]}
        print(f"== {name} ({time.time() - start:.1f}s)\n{json.dumps(RESULTS[name], indent=1)[:3000]}", flush=True)
        (OUT / "results.json").write_text(json.dumps(RESULTS, indent=1))
        return fn
    return wrap


import transformers, sentence_transformers
RESULTS["transformers"] = transformers.__version__
RESULTS["sentence_transformers"] = sentence_transformers.__version__
from transformers import BertConfig, BertForSequenceClassification, ModernBertConfig, ModernBertForSequenceClassification
from sentence_transformers import CrossEncoder
from rerank_pipeline.components.ranker import CrossEncoderRanker

rows = json.load(gzip.open(HERE / "pairs.json.gz", "rt"))
PAIRS = [(row["query"], doc) for row in rows for doc in row["docs"]]
if os.environ.get("SMOKE"):
    rows = [dict(row, docs=row["docs"][:5]) for row in rows[:4]]
    PAIRS = [(row["query"], doc) for row in rows for doc in row["docs"]]
SIZES = [len(row["docs"]) for row in rows]

# A MiniLM-L6-shaped cross-encoder (random, seeded; the real vocab and tokenizer), saved once.
MINI = Path("/tmp/minilm-shaped")
shutil.copytree(HERE / "tokenizer", MINI, dirs_exist_ok=True)
torch.manual_seed(0)
config = BertConfig.from_pretrained(MINI)
config.num_labels = 1
config.initializer_range = 0.1
config.architectures = ["BertForSequenceClassification"]
BertForSequenceClassification(config).save_pretrained(MINI)


def st_logits(model, pairs, batch_size=32, **kwargs):
    return np.asarray(model.predict(pairs, batch_size=batch_size, activation_fn=torch.nn.Identity(), **kwargs)).reshape(-1)


def ours(folder, **kwargs):
    ranker = CrossEncoderRanker(str(folder), device=DEV, scale_score=False, **kwargs)
    ranker.warm_up()
    return ranker


def per_query_agreement(reference, other):
    from scipy.stats import kendalltau
    taus, overlaps, start = [], [], 0
    for size in SIZES:
        a, b = reference[start:start + size], other[start:start + size]
        taus.append(kendalltau(a, b).statistic)
        overlaps.append(len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / min(10, size))
        start += size
    return {"kendall_tau_mean": float(np.nanmean(taus)), "kendall_tau_min": float(np.nanmin(taus)),
            "top10_overlap_mean": float(np.mean(overlaps)), "top10_overlap_min": float(np.min(overlaps))}


def timed(fn, repeats=2):
    best = float("inf")
    for _ in range(repeats):
        SYNC(); start = time.perf_counter(); result = fn(); SYNC()
        best = min(best, time.perf_counter() - start)
    return best, result


@section("minilm_parity")
def _():
    st = CrossEncoder(str(MINI), device=DEV)
    reference = st_logits(st, PAIRS)
    cpu_subset = st_logits(CrossEncoder(str(MINI), device="cpu"), PAIRS[:500])
    out = {"pairs": len(PAIRS), "logit_std": float(reference.std()),
           "st_cuda_vs_st_cpu_max_abs": float(np.abs(reference[:500] - cpu_subset).max())}
    for precision in ("fp32", "auto", "bf16", "fp16"):
        ranker = ours(MINI, precision=precision)
        scores = ranker.predict(PAIRS)
        out[precision] = {"autocast": str(ranker.engine.autocast_dtype),
                          "max_abs_vs_st_fp32": float(np.abs(scores - reference).max()),
                          "mean_abs_vs_st_fp32": float(np.abs(scores - reference).mean()),
                          **per_query_agreement(reference, scores)}
    st_bf16 = CrossEncoder(str(MINI), device=DEV, model_kwargs={"torch_dtype": torch.bfloat16})
    bf16_st = st_logits(st_bf16, PAIRS)
    out["st_bf16_weights"] = {"max_abs_vs_st_fp32": float(np.abs(bf16_st - reference).max()),
                              **per_query_agreement(reference, bf16_st)}
    return out


@section("minilm_speed")
def _():
    st = CrossEncoder(str(MINI), device=DEV)
    st_logits(st, PAIRS[:500])
    anchor, _ = timed(lambda: st_logits(st, PAIRS))
    out = {"anchor": "CrossEncoder.predict fp32 batch_size=32", "anchor_s": anchor,
           "anchor_pairs_per_s": len(PAIRS) / anchor}
    for batch_size in (128, 512):
        seconds, _ = timed(lambda: st_logits(st, PAIRS, batch_size=batch_size))
        out[f"st_fp32_bs{batch_size}"] = {"s": seconds, "speedup": anchor / seconds}
    st_bf16 = CrossEncoder(str(MINI), device=DEV, model_kwargs={"torch_dtype": torch.bfloat16})
    st_logits(st_bf16, PAIRS[:500])
    for batch_size in (32, 512):
        seconds, _ = timed(lambda: st_logits(st_bf16, PAIRS, batch_size=batch_size))
        out[f"st_bf16_weights_bs{batch_size}"] = {"s": seconds, "speedup": anchor / seconds}
    for label, kwargs in [("ours_fp32", {"precision": "fp32"}), ("ours_auto_default_budget", {}),
                          ("ours_fp16", {"precision": "fp16"}),
                          ("ours_bf16_budget_16k", {"precision": "bf16", "max_batch_tokens": 16384}),
                          ("ours_bf16_budget_32k", {"precision": "bf16", "max_batch_tokens": 32768}),
                          ("ours_bf16_budget_131k", {"precision": "bf16", "max_batch_tokens": 131072, "batch_size": 1024}),
                          ("ours_bf16_budget_262k", {"precision": "bf16", "max_batch_tokens": 262144, "batch_size": 2048}),
                          ("ours_bf16_65k_bs512", {"precision": "bf16", "batch_size": 512})]:
        ranker = ours(MINI, **kwargs)
        ranker.predict(PAIRS[:500])
        seconds, _ = timed(lambda: ranker.predict(PAIRS))
        out[label] = {"s": seconds, "speedup": anchor / seconds, "pairs_per_s": len(PAIRS) / seconds}
    return out


@section("modernbert_long")
def _():
    folder = Path("/tmp/modernbert-shaped")
    shutil.copytree(HERE / "tokenizer", folder, dirs_exist_ok=True)
    cfg = json.loads((folder / "tokenizer_config.json").read_text()); cfg["model_max_length"] = 8192
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    config = ModernBertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
                              intermediate_size=1152, max_position_embeddings=8192, num_labels=1, pad_token_id=0,
                              cls_token_id=101, sep_token_id=102, bos_token_id=101, eos_token_id=102,
                              initializer_range=0.1)
    config.architectures = ["ModernBertForSequenceClassification"]
    ModernBertForSequenceClassification(config).save_pretrained(folder)
    long_text = " ".join(doc for row in rows[:3] for doc in row["docs"])
    pairs = [(row["query"], " ".join(long_text.split()[i * 50:]) ) for i, row in enumerate(rows[:48])]
    st = CrossEncoder(str(folder), device=DEV)
    reference = st_logits(st, pairs[:16], batch_size=4)
    anchor, _ = timed(lambda: st_logits(st, pairs, batch_size=4), repeats=1)
    out = {"pairs": len(pairs), "tokens_per_pair": 8192, "attn": st.model.config._attn_implementation,
           "anchor": "CrossEncoder.predict fp32 batch_size=4", "anchor_s": anchor}
    for precision in ("fp32", "auto"):
        ranker = ours(folder, precision=precision)
        scores = ranker.predict(pairs[:16])
        seconds, _ = timed(lambda: ranker.predict(pairs), repeats=1)
        out[precision] = {"max_abs_vs_st_fp32": float(np.abs(scores - reference).max()), "s": seconds,
                          "speedup": anchor / seconds}
    return out


@section("faiss_fallback")
def _():
    from haystack import Document
    from rerank_pipeline.components.faiss_store import FAISSDocumentStore, gpu_available
    rng = np.random.default_rng(0)
    docs = [Document(id=str(i), content=f"d{i}", embedding=rng.normal(size=16).astype("float32").tolist()) for i in range(50)]
    store = FAISSDocumentStore(use_gpu="auto")
    store.write_documents(docs)
    hits = store.embedding_retrieval(query_embedding=docs[7].embedding, top_k=3)
    out = {"faiss_gpu_available": gpu_available(), "auto_top1": hits[0].id}
    try:
        strict = FAISSDocumentStore(use_gpu=True); strict.write_documents(docs)
        strict.embedding_retrieval(query_embedding=docs[7].embedding, top_k=3)
        out["use_gpu_true"] = "ran"
    except Exception as error:
        out["use_gpu_true"] = f"{type(error).__name__}: {error}"
    return out

@section("profile")
def _():
    out = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    for precision in ("fp32", "bf16"):
        r = CrossEncoderRanker(str(MINI), device="cuda", precision=precision, max_batch_tokens=131072, batch_size=1024); r.warm_up()
        r.predict(PAIRS[:1000]); s = r._scorer
        t = time.perf_counter(); encoded, batches = s.plan_batches(PAIRS, 1024, 131072); out[f"{precision}_tokenize_s"] = time.perf_counter() - t
        t = time.perf_counter(); padded = [s.pad(encoded, b) for b in batches]; out[f"{precision}_pad_s"] = time.perf_counter() - t
        torch.cuda.synchronize(); t = time.perf_counter()
        for p in padded: s.engine(p)
        torch.cuda.synchronize(); out[f"{precision}_forward_s"] = time.perf_counter() - t
        t = time.perf_counter(); r.predict(PAIRS); torch.cuda.synchronize(); out[f"{precision}_predict_s"] = time.perf_counter() - t
        out[f"{precision}_batches"] = len(batches)
        print(json.dumps(out), flush=True)
    return out

print(json.dumps({k: v for k, v in RESULTS.items() if not isinstance(v, dict)}))
