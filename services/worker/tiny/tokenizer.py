"""Tokenizers built from an in-memory vocabulary, so a tiny pipeline never touches a model hub.

The vocabulary is a few hundred common prompt words on top of a character (or byte) alphabet: whole
words keep prompts short, and the alphabet means any unicode prompt still tokenizes (to characters,
bytes or the unk token) instead of failing.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from itertools import pairwise

from tokenizers import pre_tokenizers
from transformers import CLIPTokenizer, GemmaTokenizer, T5Tokenizer

_COMMON_PROMPT_WORDS = """
    a an the of in on at to with and or by for from under over above below near behind beside between
    into through across inside outside next far up down left right front back top bottom middle center
    is are was be being has have it its this that these those there here very more most some many few
    one two three four five six seven eight nine ten hundred thousand first last single double pair group
    photo photograph picture image painting drawing sketch illustration render portrait landscape close
    view shot scene style art artwork poster cover logo icon pattern texture wallpaper concept design
    cat dog bird horse cow sheep pig fox wolf bear lion tiger elephant monkey rabbit mouse fish whale
    dolphin shark owl eagle duck chicken frog snake dragon unicorn robot alien monster knight wizard
    man woman boy girl child baby person people king queen princess soldier astronaut farmer chef doctor
    face eye eyes hair hand hands head smile body dress shirt hat coat shoes glasses crown armor mask
    house home castle tower bridge road street city town village building room kitchen window door wall
    roof garden park forest tree trees flower flowers grass leaf leaves field farm mountain mountains hill
    river lake sea ocean beach island desert sky cloud clouds sun moon star stars planet space galaxy
    rain snow storm fog wind fire water ice stone rock sand wood metal glass gold silver paper light
    shadow night day morning evening sunset sunrise winter summer spring autumn weather rainbow
    car bus train plane boat ship bicycle truck rocket table chair bed lamp book cup bottle clock
    computer phone camera guitar piano ball box bag sword shield key map candle food bread cake fruit
    apple banana orange pizza coffee tea wine cheese
    red green blue yellow purple pink black white gray grey brown cyan magenta dark bright colorful
    big small large tiny little tall short long wide old new young ancient modern futuristic beautiful
    cute happy sad angry scary funny strange magic magical mysterious epic peaceful quiet busy empty
    wet dry hot cold warm soft hard smooth rough shiny golden wooden glowing floating flying running
    sitting standing walking sleeping eating drinking reading playing dancing swimming smiling looking
    detailed highly high quality resolution sharp focus blurry realistic photorealistic hyperrealistic
    cinematic dramatic lighting soft studio natural volumetric ambient neon vibrant pastel vintage retro
    minimalist abstract surreal fantasy anime cartoon comic pixel oil watercolor pencil ink digital
    hd masterpiece trending artstation unreal engine octane bokeh lens wide angle macro aerial
"""
WORDS: tuple[str, ...] = tuple(dict.fromkeys(_COMMON_PROMPT_WORDS.split()))

# Characters T5 and Gemma fall back to for words outside WORDS; CLIP uses its byte-level alphabet.
CHARACTERS: str = string.ascii_letters + string.digits + string.punctuation

CLIP_MAX_LENGTH = 77


def _bpe_encode(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges the way `tokenizers` does: lowest rank first, leftmost on ties."""
    symbols = list(symbols)
    while len(symbols) > 1:
        rank, at = min((ranks.get(pair, len(ranks)), i) for i, pair in enumerate(pairwise(symbols)))
        if rank == len(ranks):
            break
        symbols[at : at + 2] = [symbols[at] + symbols[at + 1]]
    return symbols


def _bpe_table(base: Iterable[str], words: Iterable[list[str]]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a BPE model that reads each of `words` (given as symbols) as one token.

    Each word first reuses the merges already made for earlier words, then appends merges that join
    whatever pieces remain; appended merges rank last, so they never change how earlier words split.
    """
    vocab = {token: index for index, token in enumerate(dict.fromkeys(base))}
    ranks: dict[tuple[str, str], int] = {}
    for symbols in words:
        pieces = _bpe_encode(symbols, ranks)
        merged = pieces[0]
        for piece in pieces[1:]:
            ranks[merged, piece] = len(ranks)
            merged += piece
            vocab.setdefault(merged, len(vocab))
    return vocab, list(ranks)


def clip_tokenizer() -> CLIPTokenizer:
    """CLIP BPE tokenizer; its full byte-level alphabet means no input can map outside the vocabulary."""
    special = ["<|startoftext|>", "<|endoftext|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    base = [*special, *alphabet, *(char + "</w>" for char in alphabet)]
    vocab, merges = _bpe_table(base, ([*word[:-1], word[-1] + "</w>"] for word in WORDS if len(word) > 1))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_MAX_LENGTH)


def t5_tokenizer() -> T5Tokenizer:
    """SentencePiece-style unigram tokenizer; whole words score above characters so they win."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + word, -5.0) for word in WORDS]
    pieces += [(char, -10.0) for char in CHARACTERS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def gemma_tokenizer() -> GemmaTokenizer:
    """Gemma BPE tokenizer with byte fallback, so emoji and other scripts become <0x..> byte tokens."""
    special = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    byte_tokens = [f"<0x{value:02X}>" for value in range(256)]
    base = [*special, *byte_tokens, "▁", *CHARACTERS]
    spelled = ([*prefix, *word] for word in WORDS for prefix in ([], ["▁"]))
    vocab, merges = _bpe_table(base, (symbols for symbols in spelled if len(symbols) > 1))
    return GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, model_max_length=2048)
