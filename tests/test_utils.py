"""atomic_path: a file appears whole or not at all."""
from __future__ import annotations

import pytest

from utils import atomic_path


def test_success_renames_onto_the_target(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt" and tmp != target
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]
    plain = tmp_path / "plain.txt"
    plain.write_text("")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's private 0o600


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_unwritable_folder_raises_oserror(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        with atomic_path(blocker / "out.txt"):
            pass


def test_registry_builds_from_specs_and_refuses_duplicates_and_unknown_names():
    from utils import Registry, UnknownNameError

    class Unknown(UnknownNameError):
        pass

    registry = Registry("widget", Unknown)
    registry.register("pair")(lambda a, b=2: (a, b))
    spec = {"name": "pair", "args": {"a": 1}}
    assert registry.build(spec) == (1, 2)
    assert registry.build(spec, {"b": 5}) == (1, 5) and spec == {"name": "pair", "args": {"a": 1}}
    with pytest.raises(ValueError, match="widget name 'pair' registered twice"):
        registry.register("pair")(tuple)
    with pytest.raises(Unknown, match="unknown widget 'nope' \\(known: pair\\)"):
        registry.build({"name": "nope"})
