"""Text data for encoders: items from a file (one per line, a CSV column, a JSONL field) or a fortunes folder,
tokenized with the model folder's own tokenizer (offline), dynamically padded, with seeded validation and test
splits held out.

Items carry no labels: they feed the label-free objectives (logit and feature distillation) and the encoder
metrics. ``TextDataset[i]`` is ``(token ids, -1)``; ``TextDataset.collate`` pads a list of items into
``({"input_ids", "attention_mask"}, targets)``, which the training engine and the pruner take as they take images.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .datasets import NO_LABEL
from .idx import DatasetError

_logger = logging.getLogger(__name__)

FORTUNES_DIR = "/usr/share/games/fortunes"


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{path} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); convert it, e.g. "
            f"iconv -f latin1 -t utf-8 {path.name}"
        ) from e
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror}") from e


def read_fortunes(root: str | Path = FORTUNES_DIR) -> list[str]:
    """Entries of a fortunes folder (the Debian package ``fortunes``): every plain file, entries separated by a line
    holding ``%``; the binary ``.dat`` indexes and the ``.u8`` links are skipped. Sorted by file, in file order."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"fortunes folder {root} does not exist; install the Debian package (apt-get install -y fortunes) or "
            f"pass a text file"
        )
    texts = []
    for f in sorted(root.iterdir()):
        if f.is_symlink() or not f.is_file() or f.suffix in (".dat", ".u8"):
            continue
        entry: list[str] = []
        for line in _read_utf8(f).splitlines() + ["%"]:
            if line.strip() == "%":
                text = " ".join(" ".join(entry).split())
                if text:
                    texts.append(text)
                entry = []
            else:
                entry.append(line)
    return texts


def read_texts(source: str | Path, column: str | None = None) -> list[str]:
    """Items of ``source``: ``"fortunes"`` (the Debian package's folder) or a folder laid out like it; a ``.csv``
    file's ``column`` (default ``text``); a ``.jsonl`` file's field ``column`` (default ``text``); any other file,
    one item per non-empty line. Raises :class:`DatasetError` on a missing, empty or non-UTF-8 source."""
    if str(source) == "fortunes":
        source = FORTUNES_DIR
    path = Path(source)
    if path.is_dir():
        texts = read_fortunes(path)
    elif not path.exists():
        raise DatasetError(f"text file {path} does not exist")
    elif path.suffix.lower() == ".csv":
        texts = _csv_column(path, column or "text")
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        texts = _jsonl_field(path, column or "text")
    else:
        if column:
            raise DatasetError(f"--text-column goes with a .csv or .jsonl file; {path} is read one item per line")
        texts = [ln.strip() for ln in _read_utf8(path).splitlines() if ln.strip()]
    if not texts:
        raise DatasetError(f"{path} holds no text items (empty lines and blank entries are skipped)")
    return texts


def _csv_column(path: Path, column: str) -> list[str]:
    rows = list(csv.DictReader(_read_utf8(path).splitlines()))
    fields = list(rows[0].keys()) if rows else []
    if rows and column not in rows[0]:
        raise DatasetError(f"{path} has no column {column!r} (columns: {', '.join(fields)}); pass --text-column NAME")
    return [r[column].strip() for r in rows if (r.get(column) or "").strip()]


def _jsonl_field(path: Path, field: str) -> list[str]:
    out = []
    for n, line in enumerate(_read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}:{n} is not valid JSON ({e.msg})") from e
        if not isinstance(obj, dict) or field not in obj:
            raise DatasetError(f"{path}:{n} has no field {field!r}; pass --text-column NAME")
        if str(obj[field]).strip():
            out.append(str(obj[field]).strip())
    return out


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "merges.txt",
                   "vocab.json", "spiece.model", "sentencepiece.bpe.model", "added_tokens.json")  # fmt: skip


def copy_tokenizer(src: str | Path, dst: str | Path) -> list[str]:
    """Copy the tokenizer files of model folder ``src`` into ``dst`` (each through a temp file and a rename), so that
    a pruned folder tokenizes its own inputs; returns the names copied."""
    copied = []
    for name in TOKENIZER_FILES:
        f, target = Path(src) / name, Path(dst) / name
        if f.is_file():
            tmp = target.with_name(f".{name}.tmp")
            try:
                tmp.write_bytes(f.read_bytes())
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)
            copied.append(name)
    return copied


def load_tokenizer(folder: str | Path):
    """The tokenizer saved in a model folder (``tokenizer.json`` or ``vocab.txt`` ...), offline."""
    folder = Path(folder)
    names = TOKENIZER_FILES
    if not any((folder / n).exists() for n in names):
        raise DatasetError(
            f"{folder} holds no tokenizer (none of {', '.join(names)}); save it there with "
            f"tokenizer.save_pretrained({str(folder)!r})"
        )
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise DatasetError("text data needs transformers: pip install 'mhaprune[hf]'") from e
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot load the tokenizer in {folder}: {e}") from e


class TextDataset(torch.utils.data.Dataset):
    """Tokenized texts (truncated to ``max_length`` tokens), optionally a subset ``indices``; items are
    ``(input_ids, -1)``. :meth:`collate` pads a batch."""

    def __init__(self, texts: list[str], tokenizer, max_length: int, indices=None):
        self.texts, self.tokenizer, self.max_length = texts, tokenizer, max_length
        self.indices = list(range(len(texts))) if indices is None else [int(i) for i in indices]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        enc = tokenizer([texts[i] for i in self.indices], truncation=True, max_length=max_length)["input_ids"]
        self._ids = [torch.tensor(e, dtype=torch.long) for e in enc]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self._ids[i], NO_LABEL

    def text(self, i: int) -> str:
        return self.texts[self.indices[i]]

    def collate(self, items, pad_to: int | None = None):
        """``[(ids, label), ...]`` -> ``({"input_ids", "attention_mask"}, labels)``, padded to the longest item
        (or to ``pad_to``); padding is masked out (``attention_mask`` 0)."""
        length = max(pad_to or 0, max(len(ids) for ids, _ in items))
        ids = torch.full((len(items), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        for r, (t, _) in enumerate(items):
            ids[r, : len(t)] = t
            mask[r, : len(t)] = 1
        return {"input_ids": ids, "attention_mask": mask}, torch.tensor([int(y) for _, y in items])


@dataclass(frozen=True)
class TextDataConfig:
    """Text items for an encoder (``mhaprune prune --hf DIR --text-file SRC``).

    Args:
        text_file: the items: fortunes (the Debian package's folder), a folder of fortunes-style files (entries
            separated by a line holding %), a .csv or .jsonl file (see --text-column), or a text file with one item
            per line.
        text_column: the column of a CSV file or the field of a JSONL file (default text).
        max_length: tokens per item (longer ones are truncated); MACs and latency are counted at this length.
        holdout: items held out for validation and as many again for test (seeded; at most a tenth each).
    """

    text_file: str | None = field(default=None, metadata={"metavar": "SRC"})
    text_column: str | None = field(default=None, metadata={"metavar": "NAME"})
    max_length: int = field(default=64, metadata={"metavar": "N"})
    holdout: int = field(default=500, metadata={"metavar": "N"})


@dataclass
class TextSplits:
    train: TextDataset
    val: TextDataset
    test: TextDataset
    classes: tuple = ()


def build_text_data(
    source: str | Path,
    tokenizer,
    max_length: int = 64,
    val_size: int = 500,
    test_size: int = 500,
    split_seed: int = 0,
    column: str | None = None,
    max_positions: int | None = None,
) -> TextSplits:
    """Train / validation / test splits of the items of ``source`` (:func:`read_texts`), seeded; each split at most
    ``val_size`` / ``test_size`` items and at most a tenth of the items each. ``max_positions`` (the model's
    position embeddings) bounds ``max_length``."""
    if max_length < 2:
        raise DatasetError(f"max_length must be >= 2 tokens, got {max_length}")
    if max_positions is not None and max_length > max_positions:
        raise DatasetError(
            f"max_length {max_length} is beyond the model's {max_positions} positions; pass --max-length "
            f"{max_positions} or less"
        )
    texts = read_texts(source, column)
    if len(texts) < 10:
        raise DatasetError(f"{source} holds {len(texts)} text items; at least 10 are needed (train, val and test)")
    n_val, n_test = min(val_size, len(texts) // 10), min(test_size, len(texts) // 10)
    perm = torch.randperm(len(texts), generator=torch.Generator().manual_seed(split_seed)).tolist()
    val, test, train = perm[:n_val], perm[n_val : n_val + n_test], perm[n_val + n_test :]
    _logger.info("text data %s: %d train, %d val, %d test items", source, len(train), len(val), len(test))
    return TextSplits(*(TextDataset(texts, tokenizer, max_length, sorted(ix)) for ix in (train, val, test)))
