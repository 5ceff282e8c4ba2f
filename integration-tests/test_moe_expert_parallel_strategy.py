"""Strategy ``expert`` (deepseek-moe on deepseek-dist's DDP): training with experts
sharded over real gloo processes equals single-process training on the same global
batches, on a 1x2 and a 2x2 (data x expert) mesh."""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from deepseek.callbacks import Callback
from deepseek.checkpoint import load_weights
from deepseek.moe.models import MoETransformerLM
from deepseek.moe.parallel.strategy import ExpertParallelStrategy
from deepseek.plugins import registry
from deepseek.training import Trainer

TINY = {
    "d_model": 16,
    "n_layers": 2,
    "n_heads": 2,
    "max_seq_len": 16,
    "num_experts": 4,
    "top_k": 2,
    "moe_d_hidden": 8,
    "dense_d_hidden": 32,
    "num_shared_experts": 1,
    "aux_loss_coef": 0.0,  # the aux loss of a rank's batch is not that of the global batch
}
STEPS, PER_RANK = 3, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordBatches(Callback):
    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, batch, batch_idx) -> None:
        self.batches.append(batch[0].clone())


def strategy_worker(rank: int, world: int, port: int, ep_size: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MoETransformerLM(**TINY)
    reference = copy.deepcopy(model)
    torch.manual_seed(1)
    data = TensorDataset(torch.randint(0, 256, (world * PER_RANK * STEPS, 9)))
    record = RecordBatches()
    trainer = Trainer(
        model,
        torch.optim.SGD,
        {"lr": 0.5},
        train_data=data,
        batch_size=PER_RANK,
        max_steps=STEPS,
        strategy=ExpertParallelStrategy(expert_parallel_size=ep_size),
        callbacks=[record],
        enable_progress_bar=False,
        default_root_dir=None,
        shuffle=False,
    )
    trainer.fit()
    assert model.blocks[1].ffn.experts.w1.shape[0] == 4 // ep_size  # really sharded
    state = trainer.strategy.model_state_dict(trainer.model)

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    for batch in record.batches:
        parts = [torch.empty_like(batch) for _ in range(world)]
        dist.all_gather(parts, batch)
        reference.training_step(torch.cat(parts)).backward()
        optimizer.step()
        optimizer.zero_grad()
    expected = reference.state_dict()
    assert set(state) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(state[name], value, atol=2e-5, rtol=1e-4, msg=name)

    # A checkpoint holds the gathered experts: it loads into a single-process model, and
    # loading it back through the strategy restores each rank's shard.
    path = trainer.save_checkpoint(os.path.join(out, "checkpoint"))
    single = MoETransformerLM(**TINY)
    load_weights(single, path)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(value, state[name], msg=name)
    shard = model.blocks[1].ffn.experts.w1.detach().clone()
    with torch.no_grad():
        model.blocks[1].ffn.experts.w1.zero_()
    trainer.strategy.load_model_state_dict(trainer.model, single.state_dict())
    torch.testing.assert_close(model.blocks[1].ffn.experts.w1.detach(), shard)
    trainer.strategy.teardown()


@pytest.mark.parametrize("world, ep_size", [(2, 2), (4, 2)], ids=["mesh-1x2", "mesh-2x2"])
def test_expert_strategy_equals_single_process_training(world, ep_size, tmp_path):
    args = (world, free_port(), ep_size, str(tmp_path))
    mp.spawn(strategy_worker, args=args, nprocs=world, join=True)


def test_expert_strategy_is_registered_and_checks_its_options():
    strategy = registry("strategy").create("expert", expert_parallel_size=2)
    assert isinstance(strategy, ExpertParallelStrategy)
    with pytest.raises(ValueError, match="expert_parallel_size must be a positive int"):
        ExpertParallelStrategy(expert_parallel_size=0)
