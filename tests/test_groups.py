"""``r2m_hf.groups`` as a module: it imports without torch, and a layout answers name questions once, then from memory.
(The groups themselves, per architecture, are tested in ``test_architectures.py``; cached layouts in
``test_layout_cache.py``.)"""

from __future__ import annotations

import subprocess
import sys

from r2m_hf.groups import Group, ModelLayout, build_layout
from r2m_hf.zoo import tiny_config


def test_the_module_imports_neither_torch_nor_transformers():
    code = "import sys, r2m_hf.groups; print('torch' in sys.modules, 'transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
    assert Group("truncatable").in_subspace and not Group("vector").in_subspace


def test_canonical_names_are_remembered():
    layout = build_layout(tiny_config("vit"))
    assert not layout.learned
    assert layout.canonical_name("vit.layers.0.mlp.fc1.weight") == "vit.layers.0.mlp.fc1.weight"
    assert not layout.learned  # a canonical name needs no lookup
    legacy = "encoder.layer.0.intermediate.dense.weight"  # transformers 4, without the base-model prefix
    assert layout.canonical_name(legacy) == "vit.layers.0.mlp.fc1.weight"
    assert layout.canonical_name("vit.pooler.dense.weight") is None
    assert layout.aliases[legacy] == "vit.layers.0.mlp.fc1.weight" and layout.aliases["vit.pooler.dense.weight"] is None
    assert layout.learned


def test_disk_names_are_computed_once_and_handed_out_as_copies():
    layout = build_layout(tiny_config("vit"))
    names = layout.disk_names()
    assert names["vit.layers.0.mlp.fc1.weight"] == "vit.encoder.layer.0.intermediate.dense.weight"
    names.clear()
    assert len(layout.disk_names()) == len(layout.shapes)


def test_a_layout_without_its_model_builds_it_on_demand():
    reference = build_layout(tiny_config("vit"))
    bare = ModelLayout(
        config=reference.config,
        model_class=reference.model_class,
        shapes=dict(reference.shapes),
        groups=dict(reference.groups),
        head_names=list(reference.head_names),
        base_model_prefix=reference.base_model_prefix,
    )
    assert bare.instance is None
    assert bare.canonical_name("encoder.layer.1.output.dense.weight") == "vit.layers.1.mlp.fc2.weight"
    assert type(bare.meta_model).__name__ == "ViTForImageClassification"
    assert bare.disk_names() == reference.disk_names()
