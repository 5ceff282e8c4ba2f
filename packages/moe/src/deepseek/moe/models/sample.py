"""``GenerateSample`` (callback ``lm_sample``): print a text sample at the end of training."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from deepseek.callbacks.base import Callback
from deepseek.moe.models.tokenizer import build_tokenizer

if TYPE_CHECKING:
    from deepseek.training import Trainer


class GenerateSample(Callback):
    """After ``fit`` (and, with ``every_n_epochs``, after those epochs) the model
    continues ``prompt`` and the text is printed on rank 0 and kept in ``samples``.

    >>> cb = GenerateSample(prompt="def ", max_new_tokens=40, top_k=20, temperature=0.8)
    """

    def __init__(
        self,
        prompt: str = "def ",
        max_new_tokens: int = 120,
        tokenizer: str = "byte",
        tokenizer_path: str | os.PathLike | None = None,
        do_sample: bool = True,
        temperature: float = 0.8,
        top_k: int | None = 40,
        top_p: float | None = 0.95,
        seed: int = 0,
        every_n_epochs: int | None = None,
    ) -> None:
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.tokenizer = build_tokenizer(tokenizer, tokenizer_path)
        self.options = {
            "do_sample": do_sample,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
        }
        self.seed = seed
        self.every_n_epochs = every_n_epochs
        self.samples: list[str] = []

    def sample(self, model: Any) -> str:
        prompt = self.tokenizer.encode(self.prompt)
        room = model.config.max_seq_len - len(prompt)
        generator = torch.Generator(device=model.embed.weight.device).manual_seed(self.seed)
        ids = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=max(0, min(self.max_new_tokens, room)),
            generator=generator,
            **self.options,
        )
        return self.tokenizer.decode(ids[0].tolist())

    def _emit(self, trainer: Trainer, when: str) -> None:
        text = self.sample(trainer.unwrapped_model)
        self.samples.append(text)
        if trainer.is_global_zero:
            print(f"\n--- sample ({when}) ---\n{text}\n--- end of sample ---")

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._emit(trainer, f"epoch {trainer.current_epoch}")

    def on_fit_end(self, trainer: Trainer) -> None:
        self._emit(trainer, f"end of training, step {trainer.global_step}")
