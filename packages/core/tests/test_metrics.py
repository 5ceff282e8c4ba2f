"""deepseek.metrics: values over the whole set (checked against scikit-learn and naive
computations), not per-batch averages; reduced across real gloo ranks."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.multiprocessing as mp
from sklearn import metrics as skm

from deepseek.metrics import (
    AUROC,
    F1,
    MAE,
    MSE,
    Accuracy,
    MetricCollection,
    Perplexity,
    build_metrics,
)

BATCHES = (7, 20, 3, 31, 11)  # uneven on purpose


from _metrics_dist import classification_data  # noqa: E402


def batches(*tensors):
    start = 0
    for size in BATCHES:
        yield tuple(t[start : start + size] for t in tensors)
        start += size
    assert start == tensors[0].shape[0]


def accumulate(metric, preds, target):
    metric.reset()
    for p, t in batches(preds, target):
        metric.update(p, t)
    return float(metric.compute())


def per_batch_mean(metric, preds, target):
    return sum(float(metric(p, t)) for p, t in batches(preds, target)) / len(BATCHES)


def test_multiclass_accuracy_and_f1_match_sklearn_on_the_whole_set():
    logits, target = classification_data()
    labels = logits.argmax(-1).numpy()
    y = target.numpy()
    assert accumulate(Accuracy(), logits, target) == pytest.approx(skm.accuracy_score(y, labels))
    macro = skm.f1_score(y, labels, average="macro")
    assert accumulate(F1(), logits, target) == pytest.approx(macro)
    assert accumulate(build_metrics("f1_macro")["f1_macro"], logits, target) == pytest.approx(macro)
    micro = skm.f1_score(y, labels, average="micro")
    assert accumulate(build_metrics("f1_micro")["f1_micro"], logits, target) == pytest.approx(micro)
    # the per-batch average (what the Trainer used to report) is a different number
    assert abs(per_batch_mean(F1(), logits, target) - macro) > 1e-3


def test_binary_scores_f1_and_auroc_match_sklearn():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 2, (72,), generator=g)
    probs = (0.35 * target + 0.65 * torch.rand(72, generator=g)).clamp(0, 1)
    probs[::9] = 0.5  # ties
    y, p = target.numpy(), probs.numpy()
    assert accumulate(F1(), probs, target) == pytest.approx(skm.f1_score(y, p >= 0.5))
    auc = skm.roc_auc_score(y, p)
    assert accumulate(AUROC(), probs, target) == pytest.approx(auc)
    logits = torch.logit(probs.clamp(1e-4, 1 - 1e-4))  # logits rank the same way
    assert accumulate(AUROC(), logits, target) == pytest.approx(auc)
    assert abs(per_batch_mean(AUROC(), probs, target) - auc) > 1e-3


def test_multiclass_auroc_matches_sklearn_ovr_macro():
    logits, target = classification_data(seed=2)
    probs = logits.softmax(-1)
    expected = skm.roc_auc_score(target.numpy(), probs.numpy(), multi_class="ovr")
    assert accumulate(AUROC(), probs, target) == pytest.approx(expected)
    assert accumulate(AUROC(), logits, target) == pytest.approx(expected)  # softmaxed


def test_regression_errors_match_sklearn():
    g = torch.Generator().manual_seed(3)
    target = torch.randn(72, generator=g)
    preds = target + 0.3 * torch.randn(72, generator=g)
    y, p = target.numpy(), preds.numpy()
    assert accumulate(MAE(), preds, target) == pytest.approx(skm.mean_absolute_error(y, p))
    assert accumulate(MSE(), preds, target) == pytest.approx(skm.mean_squared_error(y, p))
    # [N, 1] predictions against [N] targets, as a regression head returns them
    assert accumulate(MSE(), preds[:, None], target) == pytest.approx(skm.mean_squared_error(y, p))


def test_perplexity_is_exp_of_the_token_mean_not_of_batch_means():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(72, 5, 11, generator=g)
    tokens = torch.randint(0, 11, (72, 5), generator=g)
    tokens[::4, 3:] = -100  # padding, ignored
    nll = [
        -torch.log_softmax(logits[i, j], -1)[tokens[i, j]]
        for i in range(72)
        for j in range(5)
        if tokens[i, j] != -100
    ]
    naive = math.exp(float(torch.stack(nll).mean()))
    assert accumulate(Perplexity(), logits, tokens) == pytest.approx(naive, rel=1e-5)
    assert abs(per_batch_mean(Perplexity(), logits, tokens) - naive) > 1e-3


def test_build_metrics_forms():
    def top1(preds, target):
        return (preds.argmax(-1) == target).float().mean()

    metrics = build_metrics(
        ["accuracy", {"name": "f1", "average": "micro"}, top1, "torch.nn.functional:l1_loss"]
    )
    assert list(metrics) == ["accuracy", "f1", "top1", "l1_loss"]
    assert metrics["f1"].average == "micro"
    custom = Accuracy()
    assert build_metrics({"acc": custom})["acc"] is custom
    with pytest.raises(ValueError, match="unknown metric 'acuracy'. Did you mean 'accuracy'"):
        build_metrics(["acuracy"])
    with pytest.raises(ValueError, match=r"metrics\[0\].averag: not accepted by F1"):
        build_metrics([{"name": "f1", "averag": "micro"}])


def test_core_metrics_are_registered_as_plugins():
    from deepseek.plugins import registry

    names = registry("metric").names()
    for name in ("accuracy", "f1", "f1_macro", "f1_micro", "auroc", "mae", "mse", "perplexity"):
        assert name in names
    assert registry("metric").provider("accuracy").name == "core"


def test_collection_warns_once_and_says_why():
    metrics = MetricCollection(build_metrics(["accuracy", "auroc"]))
    target = torch.zeros(4, dtype=torch.long)  # only one class: AUROC is undefined
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            metrics.update(torch.randn(4, 2), target)
        results = metrics.compute()
        metrics.compute()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "auroc" in messages[0] and "two classes" in messages[0]
    assert set(results) == {"accuracy"}
    loss_only = MetricCollection(build_metrics(["accuracy"]))
    with pytest.warns(UserWarning, match="no prediction tensor"):
        loss_only.update({"loss": torch.tensor(1.0)}, target)


def test_torchmetrics_objects_are_accepted():
    torchmetrics = pytest.importorskip("torchmetrics")
    metric = torchmetrics.classification.MulticlassAccuracy(num_classes=4, average="micro")
    logits, target = classification_data()
    built = build_metrics([metric])
    ((name, value),) = built.items()
    assert accumulate(value, logits, target) == pytest.approx(
        skm.accuracy_score(target.numpy(), logits.argmax(-1).numpy())
    )


def test_reduced_across_ranks_equals_single_process_on_the_union(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    from _metrics_dist import ranks  # light module: the spawned ranks skip sklearn

    mp.spawn(ranks, args=(2, port, out), nprocs=2, join=True)
    values = out["values"]
    assert values[0] == pytest.approx(values[1])  # every rank gets the global value
    logits = torch.cat([s[0] for s in out["shards"]])
    target = torch.cat([s[1] for s in out["shards"]])
    y, labels = target.numpy(), logits.argmax(-1).numpy()
    assert values[0]["accuracy"] == pytest.approx(skm.accuracy_score(y, labels))
    assert values[0]["f1_macro"] == pytest.approx(skm.f1_score(y, labels, average="macro"))
    assert values[0]["auroc"] == pytest.approx(
        skm.roc_auc_score(y, logits.softmax(-1).numpy(), multi_class="ovr")
    )
    assert values[0]["mse"] == pytest.approx(
        skm.mean_squared_error(target.float().numpy(), logits[:, 0].numpy())
    )
