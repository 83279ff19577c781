"""Every registered evaluation keeps the contract (evaluations/base.py), derived from the registry, so that
a new evaluation file is checked without a line added here."""

from __future__ import annotations

import dataclasses
import json

import pytest

from evalkit.data import DATASETS
from evalkit.embed.features import FeatureSet, PooledRows, feature_file
from evalkit.errors import EvalkitError
from evalkit.evaluations import EVALUATIONS, Evaluation
from evalkit.evaluations.knn import KnnProbe
from evalkit.evaluations.linear_probe import LinearProbe
from evalkit.evaluations.segmentation import Segmentation
from evalkit.metrics.spec import METRICS
from evalkit.segmentation.features import CropPoolFeatures, GridFeatures
from helpers import CONFIGS, CONSEP_TASK, CRC_TASK, load_task, small_timm

NAMES = EVALUATIONS.names()


def test_the_registry_holds_the_shipped_evaluations():
    assert {"linear_probe", "knn", "segmentation"} <= set(NAMES)
    assert EVALUATIONS.get("linear_probe") is LinearProbe and EVALUATIONS.get("knn") is KnnProbe
    assert EVALUATIONS.get("segmentation") is Segmentation
    with pytest.raises(EvalkitError, match="unknown evaluation 'nope'; known: .*linear_probe"):
        EVALUATIONS.get("nope")


@pytest.mark.parametrize("name", NAMES)
def test_every_evaluation_declares_what_the_pipeline_reads(name):
    cls = EVALUATIONS.get(name)
    assert issubclass(cls, Evaluation) and cls.name == name
    assert (cls.__doc__ or "").strip(), "`evalkit evaluations list` prints the first line of the docstring"
    assert cls.options, "an evaluation has at least one option group"
    for group, (config_cls, text) in cls.options.items():
        assert group.isidentifier() and group not in ("task", "model", "embed", "stats", "evaluation")
        assert dataclasses.is_dataclass(config_cls), f"--{group}.* must be a typed (dataclass) config"
        assert isinstance(text, str) and text
        config_cls()  # the defaults are a valid config
    assert set(cls.predict_options) <= set(cls.options)
    assert cls.metrics and len(set(cls.metrics)) == len(cls.metrics)
    assert all(metric in METRICS for metric in cls.metrics), [m for m in cls.metrics if m not in METRICS]
    assert cls.primary_metric in cls.metrics
    assert METRICS.get(cls.primary_metric).higher_is_better is not None  # the primary metric ranks models
    for metric in cls.metrics:
        assert callable(METRICS.get(metric).function())


@pytest.mark.parametrize("name", NAMES)
def test_every_evaluation_runs_on_some_dataset_and_shipped_task(name):
    assert any(name in cls.evaluations for _, cls in DATASETS.items()), f"no dataset supports {name}"
    tasks = [config for config in sorted((CONFIGS / "tasks").glob("*.yaml")) if name in load_task(config).evaluations]
    assert tasks, f"no shipped task config runs {name}"


@pytest.mark.parametrize("name", NAMES)
def test_an_instance_has_its_groups_a_protocol_and_features_for_every_split(name):
    cls = EVALUATIONS.get(name)
    evaluation = cls()
    assert set(evaluation.config) == set(cls.options)
    assert all(isinstance(evaluation.config[g], c) for g, (c, _) in cls.options.items())
    assert isinstance(evaluation.protocol, str) and evaluation.protocol
    assert isinstance(evaluation.n_runs, int) and evaluation.n_runs >= 1
    task = load_task(CONSEP_TASK if name == "segmentation" else CRC_TASK)
    features = evaluation.features(task)
    assert list(features) == task.splits
    for feature_set in features.values():
        assert isinstance(feature_set, FeatureSet) and feature_set.kind
        json.dumps(feature_set.settings())  # enters the cache key
    with pytest.raises(EvalkitError, match=f"evaluation '{name}' has no option group"):
        cls(no_such_group=object())


def test_the_probes_share_one_cache_and_segmentation_embeds_crops_and_grids():
    task, model = load_task(), small_timm()
    fingerprint = model.fingerprint()

    def files(evaluation: Evaluation) -> dict:
        return {split: feature_file("emb", task, model.name, fingerprint, split, features)[1]
                for split, features in evaluation.features(task).items()}

    assert all(isinstance(f, PooledRows) for f in LinearProbe().features(task).values())
    assert files(KnnProbe()) == files(LinearProbe())  # kNN reads the linear probe's embeddings
    consep = load_task(CONSEP_TASK)
    features = Segmentation().features(consep)
    assert isinstance(features["train"], CropPoolFeatures) and features["train"].kind == "crop_pool"
    assert isinstance(features["test"], GridFeatures) and features["test"].kind == "grid"
    assert Segmentation.predict_options == ("seg",) and LinearProbe.predict_options == KnnProbe.predict_options == ()


def test_protocol_labels_follow_the_options():
    from evalkit.evaluations.knn import KnnConfig
    from evalkit.heads.linear import LinearProbeConfig
    from evalkit.segmentation.protocol import SegmentationConfig

    assert LinearProbe(head=LinearProbeConfig(protocol="adamw_eva")).protocol == "adamw_eva"
    assert LinearProbe(head=LinearProbeConfig(n_runs=3)).n_runs == 3
    assert KnnProbe().protocol == "knn_k20" and KnnProbe().n_runs == 1
    assert KnnProbe(knn=KnnConfig(k=5, center=True)).protocol == "knn_k5_centered"
    assert Segmentation(seg=SegmentationConfig(decoder="linear", n_runs=2)).protocol == "linear"
    assert Segmentation(seg=SegmentationConfig(n_runs=2)).n_runs == 2
    with pytest.raises(EvalkitError, match="knn.k must be at least 1"):
        KnnConfig(k=0)
