"""The paper's student: a pretrained encoder with a classification head, fine-tuned end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from pgkd.students import encoders
from pgkd.students.base import Student, length_sorted_batches


def freeze_lower_layers(model: torch.nn.Module, n_layers: int) -> None:
    """Stop training the embeddings and the lowest ``n_layers`` encoder layers of a BERT-style
    ``…ForSequenceClassification`` model (BERT, MiniLM, MPNet, RoBERTa)."""
    base = model.base_model
    for part in [base.embeddings, *base.encoder.layer[:n_layers]]:
        part.requires_grad_(False)


class SequenceClassifier(pl.LightningModule):
    """``AutoModelForSequenceClassification`` trained with cross-entropy and AdamW."""

    def __init__(self, model: torch.nn.Module, lr: float = 2e-5, weight_decay: float = 0.01):
        super().__init__()
        self.model = model.train()
        self.lr, self.weight_decay = lr, weight_decay

    def forward(self, batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return self.model(**inputs).logits

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        logits = self(batch)
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
        size = len(batch["labels"])
        self.log(f"{stage}_loss", loss, batch_size=size, prog_bar=True, on_epoch=True,
                 on_step=stage == "train")
        if stage == "val":
            accuracy = (logits.argmax(-1) == batch["labels"]).float().mean()
            self.log("val_acc", accuracy, batch_size=size, prog_bar=True)
        return loss

    def on_train_start(self) -> None:
        # from_pretrained() and predict_proba() leave modules in eval mode; Lightning keeps
        # submodule modes as it finds them, which would silently disable dropout
        self.train()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=self.lr, weight_decay=self.weight_decay)


class TokenizedDataModule(pl.LightningDataModule):
    """Tokenizes once, pads per batch (dynamic padding); validation batches are length-sorted;
    with ``length_grouped`` training batches hold texts of similar length (less padding), in a
    seeded random order (transformers' ``LengthGroupedSampler``)."""

    def __init__(self, tokenizer, train: tuple[list, list], val: tuple[list, list],
                 batch_size: int, eval_batch_size: int, max_length: int, length_grouped: bool = False,
                 seed: int = 0):
        super().__init__()
        self.collate = DataCollatorWithPadding(tokenizer)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.length_grouped, self.seed = length_grouped, seed
        encode = lambda texts: tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]  # noqa: E731
        self.train_rows = [{"input_ids": ids, "labels": y} for ids, y in zip(encode(train[0]), train[1])]
        self.val_rows = [{"input_ids": ids, "labels": y} for ids, y in zip(encode(val[0]), val[1])]

    def train_dataloader(self) -> DataLoader:
        if not self.length_grouped:
            return DataLoader(self.train_rows, batch_size=self.batch_size, shuffle=True, collate_fn=self.collate)
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler = LengthGroupedSampler(self.batch_size, lengths=[len(r["input_ids"]) for r in self.train_rows],
                                       generator=torch.Generator().manual_seed(self.seed))
        return DataLoader(self.train_rows, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        batches = length_sorted_batches([len(r["input_ids"]) for r in self.val_rows], self.eval_batch_size)
        return DataLoader(self.val_rows, batch_sampler=[b.tolist() for b in batches], collate_fn=self.collate)


class FineTunedStudent(Student):
    """BERT-style encoder + classification head, fine-tuned (paper defaults: max_length 512,
    batch 64, AdamW lr 2e-5, <= 30 epochs, early stopping patience 5).

    ``model_name_or_path``: a hub id (``bert-base-uncased``), a local folder, ``pypi:…`` for
    encoders shipped in PyPI wheels, or ``tiny`` for a 2-layer random BERT.
    """

    def __init__(self, num_labels: int, model_name_or_path: str = "bert-base-uncased",
                 max_length: int | str = 512, lr: float = 2e-5, weight_decay: float = 0.01,
                 cache_dir: str | Path = ".cache", name: str = "finetuned", length_grouped: bool = False,
                 max_length_cap: int = 512, max_length_quantile: float = 0.99, kd_frozen_layers: int = 0,
                 **kwargs):
        super().__init__(num_labels, **kwargs)
        self.name = name
        self.model_name_or_path = model_name_or_path
        self.max_length, self.lr, self.weight_decay = max_length, lr, weight_decay
        self.max_length_cap, self.max_length_quantile = max_length_cap, max_length_quantile
        self.length_grouped, self.kd_frozen_layers = length_grouped, kd_frozen_layers
        self.cache_dir = cache_dir
        self._tokenizer = None

    def prepare(self, train_texts: Sequence[str]) -> None:
        """``max_length: auto``: the ``max_length_quantile`` of the annotated texts' token
        lengths, capped at ``max_length_cap`` (short-text datasets do not pay for 512)."""
        if self.max_length == "auto":
            lengths = [len(ids) for ids in self.tokenizer(list(train_texts), truncation=False, verbose=False)["input_ids"]]
            self.max_length = int(min(self.max_length_cap, max(8, np.ceil(np.quantile(lengths, self.max_length_quantile)))))

    def before_fit(self, continuing: bool) -> None:
        """A warm-started KD fit trains only the top of the encoder: embeddings and the lowest
        ``kd_frozen_layers`` layers keep model_0's weights (fewer backward FLOPs)."""
        if continuing and self.kd_frozen_layers:
            freeze_lower_layers(self.module.model, self.kd_frozen_layers)

    @property
    def tokenizer(self):
        """Loaded on first use, so configs instantiate without touching the hub or disk."""
        if self._tokenizer is None:
            self._tokenizer = encoders.tokenizer_for(self.model_name_or_path, self.cache_dir)
        return self._tokenizer

    def new_module(self) -> SequenceClassifier:
        torch.manual_seed(self.seed)
        if self.model_name_or_path == encoders.TINY:
            model = encoders.tiny_bert(self.num_labels, self.seed)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                encoders.resolve(self.model_name_or_path, self.cache_dir), num_labels=self.num_labels,
                ignore_mismatched_sizes=True,
            )
        return SequenceClassifier(model, self.lr, self.weight_decay)

    def save_pretrained(self, model_dir: str | Path, labels: Sequence[str]) -> dict:
        """A Hugging Face folder: ``AutoModelForSequenceClassification.from_pretrained(model_dir)``
        loads it with ``id2label`` / ``label2id`` set, the tokenizer beside it."""
        model = self.module.model
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {label: i for i, label in enumerate(labels)}
        model.save_pretrained(model_dir)
        self.tokenizer.save_pretrained(model_dir)
        return {"kind": "finetuned", "name": self.name, "encoder": self.model_name_or_path,
                "pooling": f"{model.config.model_type} sequence-classification head",
                "max_length": self.max_length}

    @classmethod
    def from_pretrained(cls, model_dir, spec, labels, cache_dir=None, device=None) -> "FineTunedStudent":
        student = cls(len(labels), model_name_or_path=str(model_dir), max_length=int(spec["max_length"]),
                      cache_dir=cache_dir or ".cache", name=spec.get("name", "finetuned"))
        student.device = torch.device(device or "cpu")
        student.module = student.new_module()
        return student

    def datamodule(self, train, val) -> TokenizedDataModule:
        if not isinstance(self.max_length, int):
            raise ValueError(f"student.max_length={self.max_length!r}: call prepare(train_texts) first (auto)")
        return TokenizedDataModule(self.tokenizer, train, val, self.batch_size, self.eval_batch_size,
                                   self.max_length, self.length_grouped, self.seed)

    @torch.inference_mode()
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        module = self.module.to(self.device)
        module.eval()
        device = self.device
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        collate = DataCollatorWithPadding(self.tokenizer)
        out = np.zeros((len(ids), self.num_labels), dtype=np.float32)
        for batch in length_sorted_batches([len(x) for x in ids], self.eval_batch_size):
            inputs = collate([{"input_ids": ids[i]} for i in batch])
            logits = module({k: v.to(device) for k, v in inputs.items()})
            out[batch] = torch.softmax(logits.float(), -1).cpu().numpy()
        return out
