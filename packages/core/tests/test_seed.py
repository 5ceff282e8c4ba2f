"""seed_everything: Python, NumPy, torch and data-loader workers; a model built before
the Trainer is reproducible (issue 14 item 5)."""

from __future__ import annotations

import random
import textwrap

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import deepseek as ds
from deepseek.config import parse_config
from deepseek.training.job import build_trainer
from deepseek.utils.seed import seed_everything, seed_worker, worker_generator


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seeds_python_numpy_and_torch():
    assert seed_everything(123) == 123
    first = draws()
    seed_everything(123)
    assert draws() == first
    seed_everything(124)
    assert draws() != first


def test_exported_as_ds_seed_everything_and_env(monkeypatch):
    assert ds.seed_everything is seed_everything
    monkeypatch.setenv("DEEPSEEK_SEED", "7")
    assert seed_everything() == 7
    with pytest.warns(UserWarning, match="no seed given: using seed"):
        monkeypatch.delenv("DEEPSEEK_SEED")
        seed_everything()


@pytest.mark.parametrize("bad", [-1, 2**32, 1e20, "abc", True])
def test_bad_seeds_are_one_clear_error(bad):
    with pytest.raises((TypeError, ValueError), match="seed must be"):
        seed_everything(bad)


class NoisyDataset(Dataset):
    """Each item draws from NumPy's global generator: a worker must be seeded for it to
    repeat."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(np.random.rand())


def loader_values(seed: int) -> torch.Tensor:
    seed_everything(seed)
    loader = DataLoader(
        NoisyDataset(),
        batch_size=2,
        num_workers=2,
        worker_init_fn=seed_worker,
        generator=worker_generator(seed),
    )
    return torch.cat(list(loader))


def test_workers_are_seeded_reproducibly():
    a, b = loader_values(5), loader_values(5)
    assert torch.equal(a, b)
    assert len(set(a.tolist())) == len(a)  # the two workers do not repeat each other


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3)
    )


def train_python_api(seed_first: bool) -> torch.Tensor:
    if seed_first:
        ds.seed_everything(0)
    else:
        torch.seed()  # a new process: the global generator starts anywhere
    model = make_model()  # built BEFORE the Trainer, from the global generator
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=g)
    data = TensorDataset(x, x[:, :3].argmax(-1))
    trainer = ds.Trainer(
        model,
        torch.optim.SGD,
        {"lr": 0.1},
        train_data=data,
        batch_size=16,
        loss_fn=torch.nn.functional.cross_entropy,
        max_epochs=2,
        seed=0,
        enable_progress_bar=False,
        default_root_dir=None,
    )
    trainer.fit()
    return torch.cat([p.detach().flatten() for p in trainer.unwrapped_model.parameters()])


def test_model_built_before_the_trainer_is_reproducible_with_seed_everything():
    assert torch.equal(train_python_api(True), train_python_api(True))
    # without it the Trainer's seed= cannot reach the weights drawn before it existed
    assert not torch.equal(train_python_api(False), train_python_api(False))


def test_yaml_job_seeds_before_building_the_model(tmp_path):
    (tmp_path / "seedjob.py").write_text(
        textwrap.dedent(
            """
            import torch

            def model():
                return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.3),
                                           torch.nn.Linear(16, 3))

            def data():
                x = torch.randn(48, 6)  # global generator too: seeded by the job
                return torch.utils.data.TensorDataset(x, x[:, :3].argmax(-1))
            """
        )
    )
    config = {
        "seed": 3,
        "output_dir": str(tmp_path / "out"),
        "plot": False,
        "model": "seedjob:model",
        "data": {"train": "seedjob:data", "batch_size": 8},
        "trainer": {"max_epochs": 2, "loss": "cross_entropy", "enable_progress_bar": False},
    }
    runs = []
    for _ in range(2):
        torch.manual_seed(torch.seed())  # disturb the global state between runs
        trainer = build_trainer(parse_config(config, source_dir=tmp_path))
        trainer.fit()
        runs.append([p.detach().clone() for p in trainer.unwrapped_model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs))
