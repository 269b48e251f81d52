"""Byte-level BPE tokenizer of the bundled backbone (GPT-2 style, one special token)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|endoftext|>"  # document separator; also eos/bos/pad for transformers


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192) -> Tokenizer:
    """A byte-level BPE trained on `texts`: any byte string round-trips exactly."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_tokenizer(tok: Tokenizer, out: Path) -> None:
    """tokenizer.json + tokenizer_config.json loadable by transformers' AutoTokenizer."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS, unk_token=None
    )
    fast.model_max_length = 4096
    fast.save_pretrained(str(out))
