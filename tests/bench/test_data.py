"""Tests of the offline forgery benchmark builder (quick tier, tiny counts)."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("sklearn")

import datasets  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from r2m_hf.bench import (  # noqa: E402
    GENERATORS,
    HELD_OUT_FAMILIES,
    SEEN_FAMILIES,
    SPLITS,
    BenchmarkError,
    build_benchmark,
    contact_sheet,
    generators_of,
    joint_subset,
    load_benchmark,
    specialist_subset,
    trivial_detector_check,
)

torch.set_num_threads(1)
SIZE = 32


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_benchmark(tmp_path_factory.mktemp("bench") / "ds", image_size=SIZE, n_per_cell=3, seed=0)


@pytest.fixture(scope="module")
def bench(bench_dir: str) -> datasets.DatasetDict:
    return load_benchmark(bench_dir)


def _raw_images(ds: datasets.Dataset) -> list[bytes]:
    return [r["bytes"] for r in ds.cast_column("image", datasets.Image(decode=False))["image"]]


def test_generator_registry_has_held_out_parts() -> None:
    for fam in SEEN_FAMILIES:
        assert len(generators_of(fam, held_out=False)) >= 3
        assert len(generators_of(fam, held_out=True)) >= 1
    assert len(HELD_OUT_FAMILIES) >= 2
    for fam in HELD_OUT_FAMILIES:
        assert len(generators_of(fam)) >= 3
        assert all(GENERATORS[g].held_out for g in generators_of(fam))


def test_columns_labels_and_splits(bench: datasets.DatasetDict) -> None:
    assert tuple(bench) == SPLITS
    for split, ds in bench.items():
        assert ds.features["label"].names == ["real", "fake"]
        assert ds.features["label"].str2int("real") == 0
        assert {"image", "label", "family", "generator", "split", "domain"} <= set(ds.column_names)
        assert set(ds["split"]) == {split}
        for lab, fam, gen in zip(ds["label"], ds["family"], ds["generator"], strict=True):
            assert (lab == 0) == (fam == "real") == (gen == "real")
            if lab == 1:
                assert GENERATORS[gen].family == fam
        # one shared real set per split, as many reals as fakes of each family
        fams = list(ds["family"])
        n_real = fams.count("real")
        assert n_real > 0
        assert all(fams.count(f) == n_real for f in set(fams) - {"real"})


def test_held_out_generators_and_families(bench: datasets.DatasetDict) -> None:
    held_gens = {g for g, spec in GENERATORS.items() if spec.held_out}
    for split in ("train", "validation", "test", "test_cross_domain"):
        gens = set(bench[split]["generator"])
        assert not gens & held_gens
        assert set(bench[split]["family"]) == {"real", *SEEN_FAMILIES}
    unseen = set(bench["test_unseen_generators"]["generator"]) - {"real"}
    assert unseen and unseen <= held_gens
    assert {GENERATORS[g].family for g in unseen} == set(SEEN_FAMILIES)
    for split in SPLITS:
        fams = set(bench[split]["family"])
        if split == "test_unseen_families":
            assert fams == {"real", *HELD_OUT_FAMILIES}
        else:
            assert not fams & set(HELD_OUT_FAMILIES)


def test_cross_domain_uses_domain_b_only(bench: datasets.DatasetDict) -> None:
    assert set(bench["test_cross_domain"]["domain"]) == {"B"}
    for split in SPLITS:
        if split != "test_cross_domain":
            assert set(bench[split]["domain"]) == {"A"}


def test_every_image_same_size_mode_and_format(bench: datasets.DatasetDict) -> None:
    for ds in bench.values():
        for raw in _raw_images(ds):
            with Image.open(io.BytesIO(raw)) as im:
                assert (im.size, im.mode, im.format) == ((SIZE, SIZE), "RGB", "PNG")


def test_deterministic_from_seed(bench: datasets.DatasetDict, tmp_path: os.PathLike) -> None:
    again = load_benchmark(build_benchmark(tmp_path / "again", image_size=SIZE, n_per_cell=3, seed=0))
    other = load_benchmark(build_benchmark(tmp_path / "other", image_size=SIZE, n_per_cell=3, seed=1))
    for split in SPLITS:
        assert _raw_images(again[split]) == _raw_images(bench[split])
        assert list(again[split]["generator"]) == list(bench[split]["generator"])
    assert _raw_images(other["train"]) != _raw_images(bench["train"])


def test_manifest(bench_dir: str, bench: datasets.DatasetDict) -> None:
    with open(os.path.join(bench_dir, "manifest.json"), encoding="utf-8") as fh:
        man = json.load(fh)
    assert man["seed"] == 0 and man["image_size"] == SIZE
    for split in SPLITS:
        assert man["splits"][split]["total"] == len(bench[split])
    assert "datasets" in man["versions"]


def test_specialist_and_joint_subsets_are_balanced(bench: datasets.DatasetDict) -> None:
    train = bench["train"]
    reals = None
    for fam in SEEN_FAMILIES:
        sub = specialist_subset(train, fam)
        fams = list(sub["family"])
        assert set(fams) == {"real", fam}
        assert fams.count("real") == fams.count(fam)
        real_imgs = [r for r, f in zip(_raw_images(sub), fams, strict=True) if f == "real"]
        reals = reals or real_imgs
        assert real_imgs == reals  # every specialist sees the same real images
    joint = joint_subset(train)
    labels = np.array(joint["label"])
    assert (labels == 0).sum() == (labels == 1).sum()
    fams = list(joint["family"])
    assert len({fams.count(f) for f in SEEN_FAMILIES}) == 1
    sub = joint_subset(train, mode="subsample")
    assert np.array(sub["label"]).sum() <= (np.array(sub["label"]) == 0).sum()
    with pytest.raises(BenchmarkError):
        specialist_subset(train, "djpeg")


def test_contact_sheet_writes_png(bench_dir: str, tmp_path: os.PathLike) -> None:
    out = contact_sheet(bench_dir, tmp_path / "sheet.png", per_generator=2, tile=32)
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.size[0] > 2 * 32 and im.size[1] > len(GENERATORS) * 32


def test_trivial_detector_check_reports(bench: datasets.DatasetDict) -> None:
    rep = trivial_detector_check(bench)
    assert set(rep["families"]) == {*SEEN_FAMILIES, *HELD_OUT_FAMILIES}
    assert all(0.0 <= v["auc"] <= 1.0 for v in rep["families"].values())
    assert rep["bookkeeping"]["uniform"]
    assert rep["bookkeeping"]["sizes"] == [(SIZE, SIZE)]


def test_unknown_tier_is_refused(tmp_path: os.PathLike) -> None:
    with pytest.raises(BenchmarkError, match="tier"):
        build_benchmark(tmp_path / "x", tier="huge")
