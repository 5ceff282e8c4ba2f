"""BertTokenizer: ids equal transformers' fast and slow tokenizers; options; bad vocabularies."""

from __future__ import annotations

import pytest
import torch

from deepseek.nlp import BertTokenizer

SPECIALS = ["[PAD]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PIECES = [
    *"我爱北京天安门，。！？的是了在人有这中大为上个国",
    "hello",
    "world",
    "##s",
    "##ing",
    "play",
    "café",
    "cafe",
    "naive",
    "##ly",
    "the",
    "a",
    "!",
    ",",
    ".",
    "?",
    "😀",
    "bert",
    "un",
    "##believ",
    "##able",
    "é",
    "e",
    "##e",
    "##é",
    "##llo",
    "he",
    "##l",
    "##o",
    "Hello",
    "BERT",
    "##a",
    "ok",
]
TEXTS = [
    "我爱北京天安门！Hello world, playing BERT.",
    "Café naïve ÉCOLE unbelievable 😀 ok?",
    "\x00\tcontrol\u200bchars 中国人的\ufffd",
    "heLLo" * 40,
    "the 的 a [MASK] 是 [CLS]",
    "",
    "   ",
]
PAIRS = ["第二句 the second", "x", "", "a b c", "中", "hello", "world"]


@pytest.fixture
def vocab_dir(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIALS + PIECES) + "\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("lower", [True, False])
def test_ids_match_transformers_fast_and_slow(vocab_dir, lower):
    transformers = pytest.importorskip("transformers")
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    ours = BertTokenizer.from_pretrained(vocab_dir, do_lower_case=lower)
    fast = transformers.BertTokenizer.from_pretrained(vocab_dir, do_lower_case=lower)
    slow = BertTokenizerLegacy(str(vocab_dir / "vocab.txt"), do_lower_case=lower)
    for text in TEXTS:
        assert ours(text)["input_ids"] == fast(text)["input_ids"] == slow(text)["input_ids"]
        assert ours.tokenize(text) == fast.tokenize(text)
    for text, pair in zip(TEXTS, PAIRS, strict=True):
        a, b = ours(text, pair), fast(text, pair)
        assert a["input_ids"] == b["input_ids"] and a["token_type_ids"] == b["token_type_ids"]


@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
def test_batches_with_truncation_padding_and_offsets_match_transformers(vocab_dir, strategy):
    transformers = pytest.importorskip("transformers")
    ours = BertTokenizer.from_pretrained(vocab_dir)
    fast = transformers.BertTokenizer.from_pretrained(vocab_dir)
    texts, pairs = TEXTS[:5], ["中国 人 的 是 了 在 hello world the a"] * 5
    options = {
        "truncation": strategy,
        "max_length": 24,
        "padding": "max_length",
        "return_offsets_mapping": True,
        "return_special_tokens_mask": True,
    }
    a, b = ours(texts, pairs, **options), fast(texts, pairs, **options)
    for key in ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask"):
        assert a[key] == b[key], key
    assert [list(map(tuple, row)) for row in a["offset_mapping"]] == [
        list(map(tuple, row)) for row in b["offset_mapping"]
    ]
    assert all(len(row) == 24 for row in a["input_ids"])


def test_tensors_padding_and_masks(vocab_dir):
    tok = BertTokenizer.from_pretrained(vocab_dir)
    batch = tok(["我爱北京", "我"], padding=True, return_tensors="pt")
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (2, 6)
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert batch["input_ids"][1, 3:].tolist() == [tok.pad_token_id] * 3
    multiple = tok(["我爱北京"], padding=True, pad_to_multiple_of=8, return_tensors="pt")
    assert multiple["input_ids"].shape == (1, 8)
    with pytest.raises(ValueError, match="padding=True"):
        tok(["我爱北京", "我"], return_tensors="pt")


def test_basic_tokenizer_rules(vocab_dir):
    tok = BertTokenizer.from_pretrained(vocab_dir)
    assert tok.tokenize("我爱北京") == ["我", "爱", "北", "京"]  # each CJK char its own word
    assert tok.tokenize("Hello,World!") == ["hello", ",", "world", "!"]  # punctuation split
    assert tok.tokenize("CAFÉ") == ["cafe"]  # lower-cased and accents stripped
    assert tok.tokenize("he\x00llo") == ["hello"]  # control characters removed
    assert tok.tokenize("x" * 101) == ["[UNK]"]  # over-long word
    assert tok.tokenize("unbelievable") == ["un", "##believ", "##able"]
    cased = BertTokenizer.from_pretrained(vocab_dir, do_lower_case=False)
    assert cased.tokenize("Hello BERT") == ["Hello", "BERT"]
    assert tok.decode(tok.encode("hello world"), skip_special_tokens=True) == "hello world"
    assert tok.tokenize("[MASK] hello") == ["[MASK]", "hello"]  # specials stay whole


def test_save_and_reload_both_ways(vocab_dir, tmp_path):
    tok = BertTokenizer.from_pretrained(vocab_dir)
    tok.save_pretrained(tmp_path / "saved")
    reloaded = BertTokenizer.from_pretrained(tmp_path / "saved")  # from tokenizer.json
    assert (tmp_path / "saved" / "tokenizer.json").is_file()
    for text in TEXTS:
        assert reloaded(text)["input_ids"] == tok(text)["input_ids"]
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    for text in TEXTS:
        assert theirs(text)["input_ids"] == tok(text)["input_ids"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "empty"),
        ("[PAD]\n[UNK]\n\n[CLS]\n[SEP]\n[MASK]\n", "line 3"),
        ("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n[PAD]\n", "appears on lines 1 and 6"),
        ("[PAD]\n[CLS]\n[SEP]\n[MASK]\n", r"lacks the special token\(s\) \['\[UNK\]'\]"),
    ],
)
def test_bad_vocabularies_get_one_clear_error(tmp_path, content, match):
    (tmp_path / "vocab.txt").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        BertTokenizer.from_pretrained(tmp_path)


def test_binary_vocab_and_bad_options(tmp_path, vocab_dir):
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not UTF-8"):
        BertTokenizer(tmp_path / "binary.txt")
    tok = BertTokenizer.from_pretrained(vocab_dir)
    with pytest.raises(ValueError, match="truncation must be"):
        tok("hello", truncation="sideways")
    with pytest.raises(ValueError, match="padding must be"):
        tok("hello", padding="around")
    with pytest.raises(TypeError, match="special tokens"):
        BertTokenizer(vocab_dir / "vocab.txt", sep="[SEP]")
