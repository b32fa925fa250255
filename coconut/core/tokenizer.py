"""A small byte-level BPE tokenizer trained on a run's own texts, for models built from scratch.

Byte-level (as GPT-2; Radford et al. 2019) so that any text round-trips exactly:
`decode(encode(s)) == s`, newlines and `<<3*4=12>>` included. Every digit is its own token (as in
LLaMA; Touvron et al. 2023) so that numbers are read digit by digit, which arithmetic and the iCoT
multiplication task need; merges never cross a digit. `<|endoftext|>` is bos, eos, pad and unk.
Encoding adds no special tokens: answers end with eos because the data code appends it.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from coconut.core.errors import ConfigError

EOS = "<|endoftext|>"
# Every byte is in the base alphabet, so the vocabulary must hold all 256 plus the special token.
MIN_VOCAB_SIZE = 257


def build_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Trains a byte-level BPE with single-digit pre-tokenization on `texts`. The same texts in
    the same order give the same tokenizer. `vocab_size` counts the 256 bytes and `<|endoftext|>`;
    it is an upper bound (a small corpus may have fewer merges to make)."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise ConfigError(
            f"model.tokenizer_vocab_size={vocab_size} is below {MIN_VOCAB_SIZE} (256 bytes + {EOS}); "
            f"set it to {MIN_VOCAB_SIZE} or more"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            # add_prefix_space=False: a leading space would break decode(encode(s)) == s.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps offsets byte-exact; the processor adds no tokens.
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=EOS,
        # The default clean-up rewrites " ." to "." on decode, which breaks the round trip.
        clean_up_tokenization_spaces=False,
    )
