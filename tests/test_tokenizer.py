"""The from-scratch tokenizer: exact round trip, one token per digit, deterministic, saveable."""

import pytest
from transformers import AutoTokenizer

from coconut.core.tokenizer import EOS, build_tokenizer
from coconut.data.synthetic import generate_arithmetic, generate_multiplication

TEXTS = [
    f"{r.question}\n" + "".join(s + "\n" for s in r.steps) + f"### {r.answer}"
    for r in generate_arithmetic(300, seed=0) + generate_multiplication(100, seed=0)
]
SAMPLES = [
    "<<3*4=12>>",
    "Ann has 3 boxes of 4 pens.\n<<3*4=12>>\n### 12",
    "### 42",
    "  two leading spaces, a tab\tand\n\nblank lines \r\n",
    "5 5 6 0 8 2 0 1 ( 1 2 )",
    "unseen: é, 中文, 🙂, $1,000.50",
    " . , !",
    "",
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TEXTS, vocab_size=400)


@pytest.mark.parametrize("text", SAMPLES)
def test_decode_encode_is_the_identity(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_every_digit_is_its_own_token(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode("123 4567 <<89*10=890>>"))
    with_digits = [t for t in tokens if any(c.isdigit() for c in t)]
    assert with_digits == list("1234567891089" + "0")


def test_special_tokens_and_size(tokenizer):
    assert tokenizer.eos_token == tokenizer.bos_token == tokenizer.pad_token == EOS
    assert tokenizer.eos_token_id == tokenizer.pad_token_id
    assert len(tokenizer) <= 400
    # Encoding adds nothing: the data code appends eos itself.
    assert tokenizer.encode("7") == [tokenizer.convert_tokens_to_ids("7")]


def test_same_texts_same_tokenizer(tokenizer):
    again = build_tokenizer(TEXTS, vocab_size=400)
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_save_and_load_with_auto_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.eos_token == EOS and loaded.pad_token_id == tokenizer.pad_token_id
    for text in SAMPLES:
        assert loaded.encode(text) == tokenizer.encode(text)
        assert loaded.decode(loaded.encode(text)) == text


def test_vocab_below_the_byte_alphabet_is_refused():
    with pytest.raises(ValueError, match="256 bytes"):
        build_tokenizer(TEXTS, vocab_size=100)
