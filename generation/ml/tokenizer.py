"""The built-in model's tokenizer, made offline from a word list.

A word-level `tokenizers` model wrapped in `PreTrainedTokenizerFast`: it saves
as `tokenizer/tokenizer.json` beside the model and `StableDiffusionPipeline`
loads it like any other tokenizer. Words outside the vocabulary become
`<|unk|>`, so any text is accepted.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from . import scenes

PAD, UNK, BOS, EOS = "<|pad|>", "<|unk|>", "<|startoftext|>", "<|endoftext|>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
MAX_LENGTH = 24

# Words the scene grammar writes, plus common words that artists' captions
# and prompts use, so a style adapter can be triggered by a real word.
EXTRA_WORDS = """
a an the on in at of with and or by for to is
background corner side middle left right top bottom centre
one two three small large big tiny little
picture image drawing illustration painting sketch art artwork icon sticker
style styled stylised artist pastel outline outlines outlined thick thin dark light
ink hatching hatched lines line dotted dots texture pixel pixels retro flat
cute simple colour colourful grey bright soft sky night day
""".split()
PUNCTUATION = [",", ".", ":", ";", "-", "!", "?", "(", ")", "'"]


def vocabulary() -> list[str]:
    words: list[str] = []
    for name in list(scenes.COLOURS) + list(scenes.OBJECTS) + [o + "s" for o in scenes.OBJECTS]:
        words.append(name)
    for position in scenes.POSITIONS:
        words.extend(position.split())
    words.extend(EXTRA_WORDS)
    words.extend(PUNCTUATION)
    unique = list(dict.fromkeys(words))
    return list(SPECIAL_TOKENS) + unique


def build_tokenizer(max_length: int = MAX_LENGTH) -> PreTrainedTokenizerFast:
    vocab = {token: index for index, token in enumerate(vocabulary())}
    backend = Tokenizer(WordLevel(vocab, unk_token=UNK))
    backend.normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Lowercase(),
            # American spellings map onto the words the model was trained on.
            normalizers.Replace(Regex(r"\bcenter\b"), "centre"),
            normalizers.Replace(Regex(r"\bcolor"), "colour"),
            normalizers.Replace(Regex(r"\bgray\b"), "grey"),
        ]
    )
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B {EOS}",
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        model_max_length=max_length,
    )
