"""Model references to local folders (r2m_hf/sources.py): local paths (relative to the YAML first), the
``base+adapter`` syntax, and a reference that resolves to nothing as one ``SourceError`` line."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
import yaml
from bad_input import Case, case_ids, check_api_error, check_cli_error, recipe
from conftest import lora_only_recipe, write_yaml
from safetensors.torch import load_file

from r2m_hf.config import SourceSpec
from r2m_hf.errors import SourceError
from r2m_hf.sources import resolve_source, sha256_file


def missing_local_path(zoo, tmp_path):
    models = [{"model": str(zoo.specialists[0])}, {"model": "./no/such/specialist"}]
    path = write_yaml(tmp_path / "m.yaml", recipe(zoo, models=models))
    return Case(path, SourceError, ["./no/such/specialist", "no such folder"])


CASES = [missing_local_path]


@pytest.mark.parametrize("builder", CASES, ids=case_ids(CASES))
def test_unresolvable_source_is_one_error_line_and_nothing_is_written(build_case, builder, tmp_path, cli, monkeypatch):
    check_cli_error(build_case(builder), tmp_path / "merged", cli, monkeypatch)


@pytest.mark.parametrize("builder", CASES, ids=case_ids(CASES))
def test_unresolvable_source_raises_source_error(build_case, builder, tmp_path):
    check_api_error(build_case(builder), tmp_path / "merged")


def test_relative_folder_is_looked_up_beside_the_yaml_first(tmp_path, monkeypatch):
    (tmp_path / "recipes" / "model").mkdir(parents=True)
    (tmp_path / "cwd" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    beside = resolve_source(SourceSpec("model"), base_dir=tmp_path / "recipes")
    assert beside.path == (tmp_path / "recipes" / "model").resolve()
    assert beside.repo_id is None and not beside.is_adapter
    cwd = resolve_source(SourceSpec("model"), base_dir=tmp_path / "elsewhere")
    assert cwd.path == (tmp_path / "cwd" / "model").resolve()


@pytest.mark.parametrize(
    ("make", "reference", "fragment"),
    [
        ("folder", "model@main", "a revision (@main) was given for a local folder"),
        ("file", "weights.safetensors", "is a file"),
        (None, "./absent", "no such folder"),
        (None, "not a repo id!", "not a valid Hub repo id"),
    ],
)
def test_bad_local_references_are_source_errors(tmp_path, make, reference, fragment):
    if make == "folder":
        (tmp_path / "model").mkdir()
    elif make == "file":
        (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(SourceError) as info:
        resolve_source(SourceSpec.parse(reference), base_dir=tmp_path)
    assert fragment in str(info.value) and str(info.value).startswith(reference.split("@")[0])
    assert isinstance(info.value, OSError)


def test_read_json_names_the_broken_file(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    source = resolve_source(SourceSpec(str(tmp_path)))
    assert source.read_json("absent.json") is None
    with pytest.raises(SourceError, match=r"config\.json: not valid JSON"):
        source.read_json("config.json")


def test_sha256_file_streams_the_whole_file(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "f.bin").write_bytes(data)
    assert sha256_file(tmp_path / "f.bin", chunk=1000) == hashlib.sha256(data).hexdigest()


def test_sha256_file_reuses_the_hash_of_an_unchanged_file_only(tmp_path, monkeypatch):
    """A settled file's hash is cached by device, inode, size and times; any change to the file is a new key."""
    from r2m_hf import sources

    monkeypatch.setenv("R2M_HF_CACHE", str(tmp_path / "cache"))
    file = tmp_path / "f.bin"
    file.write_bytes(b"first")
    assert sha256_file(file) == hashlib.sha256(b"first").hexdigest()
    assert not (tmp_path / "cache" / "hashes").exists()  # just written: not settled, never stored
    monkeypatch.setattr(sources, "HASH_CACHE_SETTLED_NS", -(10**12))  # every file counts as settled
    assert sha256_file(file) == hashlib.sha256(b"first").hexdigest()
    (entry,) = (tmp_path / "cache" / "hashes").iterdir()
    record = json.loads(entry.read_text())
    entry.write_text(json.dumps({**record, "sha256": "0" * 64}))
    assert sha256_file(file) == "0" * 64  # the cached value is what is returned: the file is not read again
    assert sha256_file(file, cache=False) == hashlib.sha256(b"first").hexdigest()
    file.write_bytes(b"other")  # new size, times: another key
    assert sha256_file(file) == hashlib.sha256(b"other").hexdigest()
    entry.write_text("{broken")
    os.utime(file, ns=(0, 0))  # times set back: the change time still moved, so still a new key
    assert sha256_file(file) == hashlib.sha256(b"other").hexdigest()


def test_base_plus_adapter_syntax(zoo, lora, tmp_path, cli):
    """``backbone+lora5`` (relative to the YAML's folder) merges as the adapter over its own base."""
    rel = write_yaml(zoo.root / "plus.yaml", lora_only_recipe(zoo, "backbone+lora5"))
    plain = write_yaml(tmp_path / "plain.yaml", lora_only_recipe(zoo, str(lora.v5)))
    dry = cli("merge", rel, tmp_path / "dry", "--dry-run")
    assert dry.code == 0, dry.err
    assert "[lora, adapter over " in dry.out
    assert cli("merge", rel, tmp_path / "a", "--no-progress").code == 0
    assert cli("merge", plain, tmp_path / "b", "--no-progress").code == 0
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    recorded = yaml.safe_load((tmp_path / "a" / "merge_config.yaml").read_text())
    assert recorded["models"][0]["adapter_base"]["path"] == "backbone"  # relative to plus.yaml's folder
