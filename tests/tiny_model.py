"""A tiny randomly initialised BERT saved as a transformers folder: the tests' fast model.

Three layers of 32 dimensions and a WordPiece vocabulary of its own: English
words, letters, every Hangul syllable (alone and as a continuation piece), the
conjoining jamo an accent-stripping tokenizer produces, and the longer jamo
pieces of the tutorial's multilingual vocabulary (배를 -> ᄇ, ##ᅢ를). Used by
``conftest.py`` and by the Korean part of ``docs/tutorial.md``:

    python tests/tiny_model.py korean-bert --strip-accents    # an uncased tokenizer that cuts Hangul into jamo
"""

from __future__ import annotations

import argparse
import string
import unicodedata
from pathlib import Path

WORDS = """
the a an of to and in is it you i my me we how do does can what where when why who
reset password login account delete remove invoice billing bank river money boat ship
sea eat pear fruit rates raised sat on find see forgot secret email address change
document passage search index query test long text quick brown fox jumps over lazy dog
number cat sat mat hello world korean english apple orange
""".split()


KOREAN_WORDS = "배를 타고 여행을 간다 추석에 먹은 배가 맛있었다".split()


def _vocab() -> list[str]:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens += ["##" + c for c in string.ascii_lowercase + string.digits]
    tokens += WORDS
    # Hangul: every syllable, alone and as a continuation piece, plus the jamo an
    # accent-stripping tokenizer would produce.
    syllables = [chr(c) for c in range(0xAC00, 0xD7A4)]
    tokens += syllables + ["##" + s for s in syllables]
    jamo = [chr(c) for c in range(0x1100, 0x1200)]
    tokens += jamo + ["##" + j for j in jamo]
    # The longer jamo pieces of the tutorial's multilingual vocabulary: 배를 splits into ᄇ, ##ᅢ를
    # (a decomposed 를, which a terminal draws like the syllable).
    for word in KOREAN_WORDS:
        decomposed = unicodedata.normalize("NFD", word)
        tokens.append("##" + decomposed[1:])
    return list(dict.fromkeys(tokens))


def make_tiny_bert(folder: Path, seed: int = 0, strip_accents: bool | None = False, layers: int = 3) -> Path:
    """Save a randomly initialised BERT and its WordPiece tokenizer as a transformers folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    options = dict(do_lower_case=True, strip_accents=strip_accents)
    try:  # transformers 5 takes the vocabulary itself
        tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, **options)
    except TypeError:
        tokenizer = None
    if tokenizer is None or len(tokenizer.get_vocab()) != len(vocab):  # transformers 4
        tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), **options)
    assert len(tokenizer.get_vocab()) == len(vocab)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    BertModel(config).eval().save_pretrained(folder)
    return folder


def perturbed_copy(src: Path, dst: Path) -> Path:
    """``src`` saved at ``dst`` with one weight tensor (the word embeddings) changed enough to
    change its vectors (cosine about 0.96 to the original's): a model an index must refuse."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(src)
    with torch.no_grad():
        weight = model.embeddings.word_embeddings.weight
        weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * weight.std())
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return Path(dst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--strip-accents", action="store_true",
                        help="strip accents through NFD (as uncased multilingual BERT), cutting Hangul into jamo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make_tiny_bert(args.folder, seed=args.seed, strip_accents=None if args.strip_accents else False)


if __name__ == "__main__":
    main()
