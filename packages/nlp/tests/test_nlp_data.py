"""Fine-tuning data: files, label maps, dynamic padding, length buckets, the Trainer."""

from __future__ import annotations

import json

import pytest
import torch

import deepseek as ds
from deepseek.nlp import BertConfig, BertForSequenceClassification, BertTokenizer
from deepseek.nlp.data import (
    DataCollatorWithPadding,
    LengthGroupedSampler,
    TextClassificationDataset,
    TokenClassificationDataset,
    text_classification_loader,
)
from deepseek.training.data import EpochSampler

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *"我爱北京天安门好差很的了",
    "new",
    "york",
    "##er",
]


@pytest.fixture
def tok():
    return BertTokenizer.from_vocab(VOCAB)


def write_csv(path, header, rows, delimiter=","):
    lines = [delimiter.join(header)] + [delimiter.join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_tsv_jsonl_with_clue_fields(tmp_path, tok):
    csv_file = write_csv(
        tmp_path / "train.csv", ["sentence", "label"], [["很好", "pos"], ["很差", "neg"]]
    )
    tsv_file = write_csv(
        tmp_path / "train.tsv", ["label", "sentence"], [["neg", "差"], ["pos", "好了"]], "\t"
    )
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps({"sentence1": a, "sentence2": b, "label": c}, ensure_ascii=False)
            for a, b, c in [("我爱", "北京", "entailment"), ("好", "差", "contradiction")]
        )
    )
    for path in (csv_file, tsv_file):
        data = TextClassificationDataset.from_file(path, tok)
        assert data.label_names == ["neg", "pos"] and len(data) == 2
    pairs = TextClassificationDataset.from_file(jsonl, tok)
    assert pairs.label_names == ["contradiction", "entailment"]
    item = pairs[0]
    assert item["input_ids"].tolist() == [2, 5, 6, 3, 7, 8, 3]  # [CLS] 我 爱 [SEP] 北 京 [SEP]
    assert item["token_type_ids"].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert item["labels"].item() == 1


def test_integer_labels_stay_ids_and_names_can_be_given(tmp_path, tok):
    path = write_csv(tmp_path / "t.csv", ["text", "label"], [["好", "2"], ["差", "0"]])
    data = TextClassificationDataset.from_file(path, tok)
    assert data.label_names == ["0", "1", "2"] and data.labels.tolist() == [2, 0]
    named = TextClassificationDataset(["好", "差"], ["b", "a"], tok, label_names=["b", "a"])
    assert named.labels.tolist() == [0, 1] and named.id2label == {0: "b", 1: "a"}


def test_missing_column_lists_the_columns_found(tmp_path, tok):
    path = write_csv(tmp_path / "bad.csv", ["review_text", "stars"], [["好", "5"]])
    with pytest.raises(
        ValueError, match=r"no text column.*columns found: \['review_text', 'stars'\]"
    ):
        TextClassificationDataset.from_file(path, tok)
    with pytest.raises(ValueError, match=r"no label column.*columns found"):
        TextClassificationDataset.from_file(path, tok, text_field="review_text")
    with pytest.raises(ValueError, match=r"no text column 'body'"):
        TextClassificationDataset.from_file(path, tok, text_field="body", label_field="stars")


def test_bad_labels_and_lengths(tmp_path, tok):
    with pytest.raises(ValueError, match=r"example 1: label 'meh' is not one of the 2 labels"):
        TextClassificationDataset(["好", "差"], ["pos", "meh"], tok, label_names=["neg", "pos"])
    with pytest.raises(ValueError, match=r"example 0: 12 tokens, longer than max_length=8"):
        TextClassificationDataset(["好" * 10], ["pos"], tok, max_length=8, truncation=False)
    truncated = TextClassificationDataset(["好" * 10], ["pos"], tok, max_length=8)
    assert truncated.lengths == [8]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sentence": "好", "label": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"line 2: not valid JSON"):
        TextClassificationDataset.from_file(bad, tok)


def test_tokenizes_once(tok):
    calls = []

    class Counting:
        def __call__(self, *args, **kwargs):
            calls.append(len(args[0]))
            return tok(*args, **kwargs)

    data = TextClassificationDataset(["好", "差", "很好"], ["p", "n", "p"], Counting())
    for _ in range(3):  # three epochs read the cached tensors
        [data[i] for i in range(len(data))]
    assert calls == [3]


def test_token_classification_labels_first_word_piece(tmp_path, tok):
    path = tmp_path / "ner.jsonl"
    path.write_text(
        json.dumps({"tokens": ["我", "newer", "york"], "tags": ["O", "B-LOC", "I-LOC"]})
    )
    data = TokenClassificationDataset.from_file(path, tok)
    assert data.label_names == ["B-LOC", "I-LOC", "O"]
    item = data[0]
    # [CLS] 我 new ##er york [SEP]: only each word's first piece is labelled
    assert item["input_ids"].tolist() == [2, 5, 17, 19, 18, 3]
    assert item["labels"].tolist() == [-100, 2, 0, -100, 1, -100]
    tsv = write_csv(tmp_path / "ner.tsv", ["tokens", "tags"], [["我 爱", "O O"]], "\t")
    assert TokenClassificationDataset.from_file(tsv, tok)[0]["labels"].tolist() == [
        -100,
        0,
        0,
        -100,
    ]
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        TokenClassificationDataset([["我", "爱"]], [["O"]], tok)


def test_collator_pads_and_omits_mask_without_padding(tok):
    data = TextClassificationDataset(["好", "很好了", "差"], ["p", "p", "n"], tok)
    collate = DataCollatorWithPadding(tok.pad_token_id)
    batch = collate([data[0], data[1]])
    assert batch["input_ids"].tolist() == [[2, 12, 3, 0, 0], [2, 14, 12, 16, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    same = collate([data[0], data[2]])
    assert "attention_mask" not in same and same["input_ids"].shape == (2, 3)
    eight = DataCollatorWithPadding(0, pad_to_multiple_of=8)([data[0], data[2]])
    assert eight["input_ids"].shape == (2, 8) and eight["attention_mask"][:, 3:].sum() == 0
    tokens = TokenClassificationDataset([["我"], ["我", "爱", "好"]], [["O"], ["O", "O", "O"]], tok)
    token_batch = collate([tokens[0], tokens[1]])
    assert token_batch["labels"][0].tolist() == [-100, 0, -100, -100, -100]


def test_padded_batch_gives_the_same_logits_as_one_by_one(tok):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
    )
    model = BertForSequenceClassification(config).eval()
    data = TextClassificationDataset(["好", "我爱北京天安门", "很差的"], ["p", "n", "n"], tok)
    batch = DataCollatorWithPadding(tok.pad_token_id)([data[i] for i in range(3)])
    with torch.no_grad():
        together = model(**batch).logits
        alone = torch.cat(
            [
                model(
                    data[i]["input_ids"][None], token_type_ids=data[i]["token_type_ids"][None]
                ).logits
                for i in range(3)
            ]
        )
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_length_grouped_sampler_is_a_resumable_epoch_sampler():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 120, (203,), generator=g).tolist()
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3, mega_batches=4)
    assert isinstance(sampler, EpochSampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(epoch1) == list(range(203))  # a permutation: every sample once
    assert list(sampler) == epoch1  # a function of (seed, epoch)
    sampler.set_epoch(2)
    assert list(sampler) != epoch1
    sampler.set_epoch(1)
    sampler.start_at(40)  # what the Trainer does on resume after 5 batches
    assert list(sampler) == epoch1[40:]
    assert list(sampler) == epoch1  # start_at applies to one iteration only

    def padding(order):
        batches = [order[i : i + 8] for i in range(0, len(order), 8)]
        return sum(
            max(lengths[j] for j in b) * len(b) - sum(lengths[j] for j in b) for b in batches
        )

    plain = EpochSampler(203, shuffle=True, seed=3)
    plain.set_epoch(1)
    assert padding(epoch1) < padding(list(plain)) / 3
    first = epoch1[:8]  # the longest batch comes first
    assert max(lengths[i] for i in first) == max(lengths)
    # Two replicas: disjoint shards that together cover everything.
    shards = []
    for rank in range(2):
        s = LengthGroupedSampler(lengths, 8, seed=3, num_replicas=2, rank=rank)
        s.set_epoch(1)
        shards.append(list(s))
    assert len(shards[0]) == len(shards[1]) == 102
    assert set(shards[0]) | set(shards[1]) == set(range(203))


def test_fine_tunes_through_the_trainer(tok, tmp_path):
    torch.manual_seed(0)
    texts = ["好", "很好", "好好", "很好了", "差", "很差", "差差", "很差了"] * 4
    labels = ["pos"] * 4 + ["neg"] * 4
    data = TextClassificationDataset(texts, labels * 4, tok)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        id2label=data.id2label,
        gradient_checkpointing=True,
    )
    model = BertForSequenceClassification(config)
    trainer = ds.Trainer(
        model,
        torch.optim.AdamW,
        optimizer_kwargs={"lr": 3e-3},
        train_data=text_classification_loader(data, 8, pad_token_id=tok.pad_token_id),
        val_data=text_classification_loader(data, 16, shuffle=False, group_by_length=False),
        max_epochs=6,
        seed=0,
        metrics=["accuracy", "f1_macro"],
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit()
    assert trainer.metrics["val_accuracy"] == 1.0
    assert trainer.metrics["val_f1_macro"] == 1.0
    model.save_pretrained(tmp_path / "fine-tuned")
    loaded = BertForSequenceClassification.from_pretrained(tmp_path / "fine-tuned")
    assert loaded.config.id2label == {0: "neg", 1: "pos"}


def test_trainer_keeps_the_length_grouped_sampler(tok, tmp_path):
    data = TextClassificationDataset(
        ["好", "很好", "差", "很差了"] * 4, ["p", "p", "n", "n"] * 4, tok
    )
    trainer = ds.Trainer(
        BertForSequenceClassification(
            BertConfig(
                vocab_size=len(VOCAB),
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=16,
            )
        ),
        torch.optim.SGD,
        optimizer_kwargs={"lr": 0.1},
        train_data=text_classification_loader(data, 4),
        max_steps=1,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    loader = trainer._train_loader(text_classification_loader(data, 4))
    assert isinstance(loader.sampler, LengthGroupedSampler)
