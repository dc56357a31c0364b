"""The CPU fast path: a frozen sentence encoder whose embeddings are cached on disk per text, and a
linear classification head trained with Lightning on them. A KD step then only embeds new texts."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
from transformers import AutoModel, DataCollatorWithPadding

from pgkd.sqlite_store import connect, open_shared_db
from pgkd.students import encoders
from pgkd.students.base import Student, length_sorted_batches

HEAD_FILE = "head.safetensors"


class EmbeddingCache:
    """Text -> float32 vector, in SQLite (WAL), keyed by encoder tag + sha1 of the text."""

    def __init__(self, path: str | Path, tag: str):
        self.path, self.tag = Path(path), tag
        open_shared_db(self.path, "CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB)")

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path)

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{self.tag}\0{text}".encode()).hexdigest()

    def get(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        keys = {self._key(t): t for t in texts}
        found: dict[str, np.ndarray] = {}
        with self._connect() as db:
            items = list(keys)
            for i in range(0, len(items), 900):
                chunk = items[i:i + 900]
                rows = db.execute(f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})", chunk)
                for key, blob in rows:
                    found[keys[key]] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?)",
                           [(self._key(t), v.astype(np.float32).tobytes()) for t, v in vectors.items()])


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe)."""

    def __init__(self, model_name_or_path: str, max_length: int = 128, batch_size: int = 64,
                 cache_dir: str | Path | None = ".cache", device: str | torch.device = "cpu"):
        """``cache_dir=None``: no on-disk embedding cache (serving new texts)."""
        from transformers import AutoTokenizer

        source = encoders.resolve(model_name_or_path, cache_dir or encoders.default_cache_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.device = torch.device(device)
        self.model = AutoModel.from_pretrained(source).eval().to(self.device)
        self.max_length, self.batch_size = max_length, batch_size
        self.dim = self.model.config.hidden_size
        self.cache = (EmbeddingCache(Path(cache_dir) / "embeddings.sqlite", f"{model_name_or_path}|{max_length}")
                      if cache_dir is not None else None)

    @torch.inference_mode()
    def _embed(self, texts: list[str]) -> np.ndarray:
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        collate = DataCollatorWithPadding(self.tokenizer)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for batch in length_sorted_batches([len(x) for x in ids], self.batch_size):
            inputs = {k: v.to(self.device) for k, v in collate([{"input_ids": ids[i]} for i in batch]).items()}
            hidden = self.model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[batch] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings for ``texts``; only texts not in the on-disk cache go through the encoder."""
        texts = list(texts)
        if self.cache is None:
            return self._embed(texts) if texts else np.zeros((0, self.dim), np.float32)
        known = self.cache.get(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            fresh = dict(zip(missing, self._embed(missing)))
            self.cache.put(fresh)
            known.update(fresh)
        return np.stack([known[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


class LinearHead(pl.LightningModule):
    """Dropout + linear layer over fixed embeddings, cross-entropy, AdamW."""

    def __init__(self, dim: int, num_labels: int, lr: float, weight_decay: float, dropout: float):
        super().__init__()
        self.dropout = torch.nn.Dropout(dropout)
        self.linear = torch.nn.Linear(dim, num_labels)
        self.lr, self.weight_decay = lr, weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x))

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.log(f"{stage}_loss", loss, batch_size=len(y), prog_bar=True, on_epoch=True, on_step=False)
        if stage == "val":
            self.log("val_acc", (logits.argmax(-1) == y).float().mean(), batch_size=len(y), prog_bar=True)
        return loss

    def on_train_start(self) -> None:
        # from_pretrained() and predict_proba() leave modules in eval mode; Lightning keeps
        # submodule modes as it finds them, which would silently disable dropout
        self.train()

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class EmbeddingDataModule(pl.LightningDataModule):
    def __init__(self, train: tuple[np.ndarray, list], val: tuple[np.ndarray, list], batch_size: int):
        super().__init__()
        as_set = lambda x, y: TensorDataset(torch.from_numpy(x), torch.tensor(y, dtype=torch.long))  # noqa: E731
        self.train_set, self.val_set, self.batch_size = as_set(*train), as_set(*val), batch_size

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=1024)


class FrozenEncoderStudent(Student):
    """Frozen encoder (cached embeddings) + linear head: same interface as the fine-tuned student."""

    def __init__(self, num_labels: int, model_name_or_path: str = encoders.MINILM,
                 max_length: int = 128, lr: float = 1e-2, weight_decay: float = 0.0,
                 dropout: float = 0.1, cache_dir: str | Path | None = ".cache", name: str = "frozen", **kwargs):
        super().__init__(num_labels, **kwargs)
        self.name = name
        self.lr, self.weight_decay, self.dropout = lr, weight_decay, dropout
        self.encoder_args = (model_name_or_path, max_length, self.eval_batch_size, cache_dir)
        self._encoder = None

    @property
    def encoder(self) -> SentenceEncoder:
        """Loaded on first use, so configs instantiate without touching the hub or disk."""
        if self._encoder is None:
            self._encoder = SentenceEncoder(*self.encoder_args, device=self.device)
        return self._encoder

    def new_module(self) -> LinearHead:
        torch.manual_seed(self.seed)
        return LinearHead(self.encoder.dim, self.num_labels, self.lr, self.weight_decay, self.dropout)

    def save_pretrained(self, model_dir: str | Path, labels: Sequence[str]) -> dict:
        """The head's weights (``head.safetensors``) and a reference to the frozen encoder: the
        encoder itself is the public pretrained model, unchanged by training."""
        from safetensors.torch import save_file

        Path(model_dir).mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.module.linear.state_dict().items()},
                  str(Path(model_dir) / HEAD_FILE))
        model_name_or_path, max_length, _, _ = self.encoder_args
        return {"kind": "frozen", "name": self.name, "encoder": model_name_or_path,
                "pooling": "mean over tokens, L2-normalised", "max_length": max_length,
                "dim": self.encoder.dim, "head": HEAD_FILE}

    @classmethod
    def from_pretrained(cls, model_dir, spec, labels, cache_dir=None, device=None) -> "FrozenEncoderStudent":
        from safetensors.torch import load_file

        student = cls(len(labels), model_name_or_path=spec["encoder"], max_length=int(spec["max_length"]),
                      cache_dir=cache_dir, name=spec.get("name", "frozen"))
        student.device = torch.device(device or "cpu")
        student.module = student.new_module()
        student.module.linear.load_state_dict(load_file(str(Path(model_dir) / spec.get("head", HEAD_FILE))))
        return student

    def datamodule(self, train, val) -> EmbeddingDataModule:
        return EmbeddingDataModule((self.encoder.encode(train[0]), train[1]),
                                   (self.encoder.encode(val[0]), val[1]), self.batch_size)

    @torch.inference_mode()
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        module = self.module.to(self.device).eval()
        logits = module(torch.from_numpy(self.encoder.encode(texts)).to(self.device))
        return torch.softmax(logits.float(), -1).cpu().numpy()
