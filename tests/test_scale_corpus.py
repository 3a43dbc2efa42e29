"""The corpus builder of ``benchmarks/scale.py``: deterministic bytes, distinct ids, a ``meta`` object per line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"


def load_scale():
    spec = importlib.util.spec_from_file_location("scale_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_scale_corpus_is_deterministic_with_distinct_ids_and_a_meta_object(cranfield_dir, tmp_path):
    scale = load_scale()
    sentences = scale.source_sentences(cranfield_dir)
    assert len(sentences) > 5000 and len(set(sentences)) == len(sentences)

    first = scale.write_corpus(tmp_path / "a.jsonl", 200, sentences, seed=0)
    second = scale.write_corpus(tmp_path / "b.jsonl", 200, scale.source_sentences(cranfield_dir), seed=0)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert first == second and first["documents"] == 200
    other = scale.write_corpus(tmp_path / "c.jsonl", 200, sentences, seed=1)
    assert other["sha256"] != first["sha256"]

    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 200 and len({row["_id"] for row in rows}) == 200
    assert all(row["meta"] == {"year": 1950 + i % 60} for i, row in enumerate(rows))
    sizes = [len(row["text"].encode("utf-8")) for row in rows]
    assert 650 < sum(sizes) / len(sizes) < 1000
    assert not list(tmp_path.glob("*.tmp"))  # written into PATH.tmp, then renamed

