"""``revision=``: a Hub model pinned to a commit or branch, read from a local Hugging Face cache offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
from sentence_transformers import CrossEncoder

from rerank_pipeline.components import CrossEncoderRanker
from rerank_pipeline.components.ranker.cache import hub_revision, model_fingerprint
from rerank_pipeline.provenance import model_provenance
from tiny_models import BACKEND_PAIRS, make_tiny_bert_cross_encoder

REPO = "rerank-tests/tiny-bert"
OLD, NEW = "a" * 40, "b" * 40  # commits: main points to OLD; the tag v2 to NEW


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A Hugging Face hub cache holding two snapshots of ``REPO`` that differ in weights, tokenizer and config."""
    root = tmp_path_factory.mktemp("hub")
    repo = root / f"models--{REPO.replace('/', '--')}"
    sources = {OLD: make_tiny_bert_cross_encoder(tmp_path_factory.mktemp("old"), max_length=64, seed=0),
               NEW: make_tiny_bert_cross_encoder(tmp_path_factory.mktemp("new"), max_length=48, seed=1)}
    for commit, source in sources.items():
        config = json.loads((source / "config.json").read_text())
        (source / "config.json").write_text(json.dumps({**config, "snapshot_marker": commit[0]}))
        shutil.copytree(source, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(OLD)
    (repo / "refs" / "v2").write_text(NEW)
    return root, sources


@pytest.fixture
def offline_hub(hub_cache, monkeypatch):
    root, sources = hub_cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return root, sources


def test_revision_is_serialized():
    ranker = CrossEncoderRanker(REPO, revision=NEW)
    data = ranker.to_dict()
    assert data["init_parameters"]["revision"] == NEW
    assert CrossEncoderRanker.from_dict(data).revision == NEW
    assert CrossEncoderRanker(REPO).to_dict()["init_parameters"]["revision"] is None


@pytest.mark.parametrize("revision", [NEW, "v2"])
def test_revision_loads_that_snapshot(offline_hub, revision):
    _, sources = offline_hub
    pinned = CrossEncoderRanker(REPO, revision=revision, device="cpu")
    pinned.warm_up()
    hf_model = pinned.engine.model
    assert hf_model.config.snapshot_marker == "b"  # config of the pinned commit
    assert pinned._scorer.max_length == 48  # its tokenizer
    expected = CrossEncoder(str(sources[NEW]), device="cpu").predict(BACKEND_PAIRS)
    assert pinned.predict(BACKEND_PAIRS) == pytest.approx(expected, abs=1e-6)  # its weights
    default = CrossEncoderRanker(REPO, device="cpu")
    assert default.predict(BACKEND_PAIRS) != pytest.approx(expected, abs=1e-3)
    assert default._scorer.max_length == 64


def test_revision_reaches_every_from_pretrained(offline_hub, monkeypatch):
    import transformers

    seen: dict[str, object] = {}
    for name in ("AutoConfig", "AutoTokenizer", "AutoModelForSequenceClassification"):
        loader = getattr(transformers, name)
        original = loader.from_pretrained

        def recording(*args, _name=name, _original=original, **kwargs):
            seen[_name] = kwargs.get("revision")
            return _original(*args, **kwargs)

        monkeypatch.setattr(loader, "from_pretrained", recording)
    CrossEncoderRanker(REPO, revision="v2", device="cpu").warm_up()
    assert seen == {"AutoConfig": "v2", "AutoTokenizer": "v2", "AutoModelForSequenceClassification": "v2"}


def test_revision_names_the_cache_entry_and_the_provenance(offline_hub):
    root, _ = offline_hub
    assert hub_revision(REPO) == OLD
    assert hub_revision(REPO, revision="v2") == NEW
    names = ["input_ids", "attention_mask"]
    assert model_fingerprint(REPO, names, revision="v2") == model_fingerprint(REPO, names, revision=NEW)
    assert model_fingerprint(REPO, names, revision=NEW) != model_fingerprint(REPO, names)
    assert model_provenance(REPO)["revision"] == OLD
    assert model_provenance(REPO, revision="v2") == {"model": REPO, "revision": NEW, "requested_revision": "v2"}
