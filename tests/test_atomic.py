"""rerank_pipeline.atomic: one file replaced whole, or left as it was."""

from __future__ import annotations

import json
import os
import stat

import pytest

from rerank_pipeline.atomic import atomic_path, atomic_write, write_text_atomic


def test_atomic_write_replaces_the_file_with_ordinary_permissions(tmp_path):
    target = tmp_path / "nested" / "summary.json"
    write_text_atomic(target, "old\n")
    umask = os.umask(0o022)
    try:
        with atomic_write(target) as out:
            json.dump({"ndcg@10": 0.5}, out)
            assert target.read_text(encoding="utf-8") == "old\n"  # readers see the old file until the block ends
    finally:
        os.umask(umask)
    assert json.loads(target.read_text(encoding="utf-8")) == {"ndcg@10": 0.5}
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's private 0o600
    assert sorted(path.name for path in target.parent.iterdir()) == ["summary.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "fusion.json"
    target.write_bytes(b"kept")
    with pytest.raises(TypeError, match="not JSON serializable"), atomic_write(target) as out:
        json.dump({"scorer": object()}, out)
    with pytest.raises(RuntimeError, match="export failed"), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("export failed")
    assert target.read_bytes() == b"kept"
    assert [path.name for path in tmp_path.iterdir()] == ["fusion.json"]


def test_atomic_path_keeps_the_suffix_and_binary_mode_writes_bytes(tmp_path):
    target = tmp_path / "plot.png"
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.endswith(".png") and temporary != target
        temporary.write_bytes(b"\x89PNG")
    with atomic_write(tmp_path / "blob.bin", "wb") as out:
        out.write(b"\x00\x01")
    assert target.read_bytes() == b"\x89PNG" and (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb', got 'a'"):
        with atomic_write(target, "a"):
            pass
