"""The layout cache (``r2m_hf.layout_cache``): a cached layout equals the meta-instance one for every supported
architecture, stale or broken files are rebuilt (never an error), writes are atomic, and a merge with a warm cache
imports no modeling code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import write_yaml

import r2m_hf.layout_cache as layout_cache
from r2m_hf.groups import build_layout
from r2m_hf.layout_cache import cache_dir, cache_file, layout_key, load_layout, read_layout, remember_aliases
from r2m_hf.planning import layout_for
from r2m_hf.zoo import ARCHITECTURES, TINY, tiny_config

# Checkpoint keys no supported architecture has: other heads, a text tower, a pooler, timm and random names.
FOREIGN_KEYS = [
    "vit.pooler.dense.weight",
    "pooler.dense.bias",
    "text_model.encoder.layers.0.mlp.fc1.weight",
    "logit_scale",
    "blocks.0.attn.qkv.weight",
    "classifier.weight.extra",
    "",
]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own empty cache folder."""
    monkeypatch.setenv(layout_cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "layouts"


def _default_config(arch: str):
    """The architecture's default sizes (ViT-B class models), from its config class alone: no weights."""
    from transformers import CLIPConfig, Dinov2Config, SiglipConfig, ViTConfig

    return {"vit": ViTConfig, "clip": CLIPConfig, "dinov2": Dinov2Config, "siglip": SiglipConfig}[arch]()


def _deepfakebench_config():
    from r2m_hf.deepfakebench import DeepfakeBenchCLIPConfig

    return DeepfakeBenchCLIPConfig(**TINY)


CONFIGS = {f"{arch}-tiny": (lambda a=arch: tiny_config(a)) for arch in ARCHITECTURES}
CONFIGS.update({f"{arch}-default": (lambda a=arch: _default_config(a)) for arch in ARCHITECTURES})
CONFIGS["deepfakebench-clip-tiny"] = _deepfakebench_config


def _checkpoint_keys(layout) -> list[str]:
    """The keys checkpoints use: every canonical and on-disk name, each with and without the base-model prefix."""
    prefix = layout.base_model_prefix + "."
    keys = []
    for name, disk in layout.disk_names().items():
        keys += [name, disk, name.removeprefix(prefix), disk.removeprefix(prefix)]
    return keys


@pytest.mark.parametrize("which", list(CONFIGS))
def test_cached_layout_equals_the_meta_instance_layout(which, cache):
    config = CONFIGS[which]()
    built = layout_for(config)  # cold: built on the meta device, then stored
    assert built.instance is not None and len(list(cache.iterdir())) == 1

    cached = layout_for(config)  # warm: read back
    assert cached.instance is None, "a warm cache must not instantiate the model"
    meta = build_layout(built.config)  # the reference, never cached
    assert cached.model_class == meta.model_class
    assert list(cached.shapes.items()) == list(meta.shapes.items())  # names, order and shapes
    assert all(type(s).__name__ == "Size" for s in cached.shapes.values())
    assert cached.groups == meta.groups  # the groups by module type, exactly
    assert cached.head_names == meta.head_names
    assert cached.backbone_names == meta.backbone_names
    assert cached.base_model_prefix == meta.base_model_prefix
    assert cached.disk_names() == meta.disk_names()

    known = _checkpoint_keys(meta)
    assert [cached.canonical_name(k) for k in known] == [meta.canonical_name(k) for k in known]
    assert cached.instance is None, "the names transformers 4/5 checkpoints use are answered from the cache"
    others = FOREIGN_KEYS + [f"{meta.base_model_prefix}.{name}" for name in meta.shapes]  # prefix doubled
    assert [cached.canonical_name(k) for k in others] == [meta.canonical_name(k) for k in others]


def test_learned_keys_are_stored_and_answered_without_the_model():
    config = tiny_config("vit")
    layout_for(config)
    cached = layout_for(config)
    assert cached.canonical_name("vit.pooler.dense.weight") is None  # a ViTModel base's pooler: not ours
    assert cached.instance is not None and cached.learned
    # A half-renamed key is not among the names known up front; transformers' renaming maps it.
    assert cached.canonical_name("vit.encoder.layer.1.mlp.fc1.weight") == "vit.layers.1.mlp.fc1.weight"
    remember_aliases(cached)
    assert not cached.learned

    again = layout_for(config)
    assert again.canonical_name("vit.pooler.dense.weight") is None
    assert again.canonical_name("vit.encoder.layer.1.mlp.fc1.weight") == "vit.layers.1.mlp.fc1.weight"
    assert again.instance is None and not again.learned


def test_key_follows_content_and_versions_not_provenance(monkeypatch):
    import transformers

    config = tiny_config("vit")
    key = layout_key(config)
    config._name_or_path = "/somewhere/else"
    assert layout_key(config) == key

    wider = tiny_config("vit", hidden_size=48)
    assert layout_key(wider)["config"] != key["config"]
    assert cache_file(layout_key(wider)) != cache_file(key)

    monkeypatch.setattr(transformers, "__version__", "0.0.1")
    assert layout_key(config)["transformers"] == "0.0.1" and cache_file(layout_key(config)) != cache_file(key)
    monkeypatch.undo()
    monkeypatch.setattr(layout_cache, "__version__", "0.0.1")
    assert cache_file(layout_key(config)) != cache_file(key)


def test_other_sizes_do_not_read_each_others_file(cache):
    small, wide = layout_for(tiny_config("vit")), layout_for(tiny_config("vit", hidden_size=48))
    assert len(list(cache.iterdir())) == 2
    assert layout_for(tiny_config("vit", hidden_size=48)).shapes == wide.shapes != small.shapes


def _valid_data(path) -> dict:
    return json.loads(path.read_text())


def _tensors(data, edit) -> dict:
    """`data` with every tensor entry ``[name, shape, group, disk name]`` passed through `edit`."""
    return {**data, "tensors": [edit(t) for t in data["tensors"]]}


# Each writes a broken version of a good cache file (`data` is the good file's JSON).
BREAKAGES = {
    "empty": lambda path, data: path.write_text(""),
    "not json": lambda path, data: path.write_text("{not json"),
    "truncated": lambda path, data: path.write_text(json.dumps(data)[:200]),
    "binary": lambda path, data: path.write_bytes(b"\xff\xfe\x00garbage"),
    "a list": lambda path, data: path.write_text("[]"),
    "deep nesting": lambda path, data: path.write_text("[" * 100000 + "]" * 100000),
    "other key": lambda path, data: path.write_text(json.dumps({**data, "key": {**data["key"], "config": "x"}})),
    "unknown group": lambda path, data: path.write_text(json.dumps(_tensors(data, lambda t: [*t[:2], "x", t[3]]))),
    "bad shape": lambda path, data: path.write_text(json.dumps(_tensors(data, lambda t: [t[0], [-1], *t[2:]]))),
    "short entry": lambda path, data: path.write_text(json.dumps(_tensors(data, lambda t: t[:3]))),
    "duplicate disk name": lambda path, data: path.write_text(json.dumps(_tensors(data, lambda t: [*t[:3], "d"]))),
    "no head": lambda path, data: path.write_text(
        json.dumps({**data, "tensors": [t for t in data["tensors"] if t[2] != "head"]})
    ),
    "alias to nothing": lambda path, data: path.write_text(json.dumps({**data, "aliases": {"x": "not.a.tensor"}})),
    "a directory": lambda path, data: (path.unlink(), path.mkdir()),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_cache_file_is_rebuilt_and_rewritten(breakage, cache):
    config = tiny_config("vit")
    reference = layout_for(config)
    (path,) = cache.iterdir()
    good = _valid_data(path)
    BREAKAGES[breakage](path, good)

    layout = layout_for(config)  # never an error
    assert layout.groups == reference.groups and list(layout.shapes) == list(reference.shapes)
    assert layout.instance is not None  # rebuilt, not trusted
    if path.is_file():  # rewritten (a directory in the way just means no cache)
        assert _valid_data(path) == good
        assert layout_for(config).instance is None


def test_an_unwritable_cache_is_skipped(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(layout_cache.CACHE_ENV, str(blocker))
    layout = layout_for(tiny_config("vit"))
    assert layout.head_names == ["classifier.weight", "classifier.bias"]
    assert cache_dir() == blocker / "layouts"


def test_concurrent_writers_leave_only_complete_files(cache):
    config = tiny_config("vit")
    layout = load_layout(config)
    path, key = layout.cache_entry
    errors, seen = [], []

    def write():
        for _ in range(25):
            if not layout_cache.write_layout(layout, key, path):
                errors.append("write failed")

    def read():
        for _ in range(100):
            found = read_layout(path, key, config)
            seen.append(found is not None and found.groups == layout.groups)

    threads = [threading.Thread(target=write) for _ in range(3)] + [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and seen and all(seen)
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary file left behind


def test_warm_merge_plan_imports_no_modeling_code(tmp_path, zoo):
    models = [{"model": str(p)} for p in zoo.specialists]
    data = {"merge_method": "average", "base_model": str(zoo.base), "models": models}
    recipe = write_yaml(tmp_path / "merge.yaml", data)
    script = textwrap.dedent(
        f"""
        import sys
        from r2m_hf.planning import plan_merge
        plan = plan_merge({str(recipe)!r})
        assert plan.layout.groups
        heavy = ("transformers.modeling_utils", "transformers.core_model_loading", "transformers.models.vit.modeling_")
        print(sorted(m for m in sys.modules if m.startswith(heavy)))
        """
    )
    env_cache = str(tmp_path / "cache")
    cold = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(env_cache))
    assert cold.returncode == 0, cold.stderr
    assert "modeling_vit" in cold.stdout  # the first run builds the layout
    warm = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(env_cache))
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.strip() == "[]", warm.stdout


def _env(cache: str) -> dict[str, str]:
    import os

    return {**os.environ, layout_cache.CACHE_ENV: cache}
