"""Text data: the readers, the splits, the tokenizer round trip and dynamic padding."""

from __future__ import annotations

import pytest
import torch

from mhaprune.data import DatasetError, build_text_data, load_tokenizer, read_fortunes, read_texts


@pytest.fixture(scope="module")
def tokenizer(text_encoder):
    return load_tokenizer(text_encoder)


def test_readers_lines_csv_jsonl_and_fortunes(tmp_path):
    (tmp_path / "a.txt").write_text("first item\n\n  second item  \n")
    assert read_texts(tmp_path / "a.txt") == ["first item", "second item"]
    (tmp_path / "a.csv").write_text('id,body\n1,"hello, world"\n2,\n3,bye\n')
    assert read_texts(tmp_path / "a.csv", "body") == ["hello, world", "bye"]
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    assert read_texts(tmp_path / "a.jsonl") == ["one", "two"]
    fort = tmp_path / "fortunes"
    fort.mkdir()
    (fort / "jokes").write_text("A joke\nover two lines.\n%\nAnother.\n%\n")
    (fort / "jokes.dat").write_bytes(b"\x00\x01\xff")  # the binary index is skipped
    (fort / "jokes.u8").symlink_to(fort / "jokes")  # and the UTF-8 link (it would count every entry twice)
    assert read_fortunes(fort) == ["A joke over two lines.", "Another."]
    assert read_texts(fort) == read_fortunes(fort)


def test_the_debian_fortunes_are_thousands_of_english_texts():
    texts = read_texts("fortunes")
    assert len(texts) > 10_000 and all(t.strip() == t and t for t in texts)


@pytest.mark.parametrize(
    "content, column, message",
    [(b"", None, "holds no text items"), (b"caf\xe9\n", None, "is not UTF-8 text"),
     (b"id,text\n1,a\n", "body", "has no column 'body'"), (b'{"t": 1}\n', "text", "has no field 'text'")],
)  # fmt: skip
def test_bad_text_files_say_what_is_wrong(tmp_path, content, column, message):
    suffix = ".csv" if b"id," in content else ".jsonl" if content.startswith(b"{") else ".txt"
    f = tmp_path / f"items{suffix}"
    f.write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        read_texts(f, column)


def test_tokenizer_round_trip_and_padding_masked_out(tokenizer):
    splits = build_text_data("fortunes", tokenizer, max_length=24, val_size=50, test_size=50)
    ds = splits.val
    text = ds.text(0)
    ids, label = ds[0]
    assert label == -1 and len(ids) <= 24 and ids[0] == tokenizer.cls_token_id
    if len(ids) < 24:  # not truncated: the ids decode back to the (lower-cased, uncased model) text
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        assert decoded.replace(" ", "") == tokenizer.backend_tokenizer.normalizer.normalize_str(text).replace(" ", "")
    items = [ds[i] for i in range(5)]
    x, y = ds.collate(items)
    lengths = [len(t) for t, _ in items]
    assert x["input_ids"].shape == (5, max(lengths)) and torch.equal(y, torch.full((5,), -1))
    assert x["attention_mask"].sum(1).tolist() == lengths
    assert (x["input_ids"][x["attention_mask"] == 0] == tokenizer.pad_token_id).all()
    x64, _ = ds.collate(items, pad_to=30)
    assert x64["input_ids"].shape == (5, 30)


def test_splits_are_disjoint_seeded_and_bounded(tokenizer):
    a = build_text_data("fortunes", tokenizer, 16, val_size=100, test_size=80)
    b = build_text_data("fortunes", tokenizer, 16, val_size=100, test_size=80)
    assert len(a.val) == 100 and len(a.test) == 80
    sets = [set(s.indices) for s in (a.train, a.val, a.test)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert a.val.indices == b.val.indices and a.test.indices == b.test.indices
    with pytest.raises(DatasetError, match="beyond the model's 64 positions"):
        build_text_data("fortunes", tokenizer, 100, max_positions=64)


def test_a_folder_without_a_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="holds no tokenizer"):
        load_tokenizer(tmp_path)
