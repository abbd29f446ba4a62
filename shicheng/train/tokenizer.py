"""Tokenizers for the five stages: a small demo BPE, the real Qwen2.5 vocabulary offline, and TCM term extension.

Stage 1 of the method extends the base tokenizer with TCM terms that it splits into many
pieces — herb, formula and syndrome names, frequent n-grams of the corpus — so that the model reads
"炙甘草" as one token rather than three. Qwen2.5 reads Chinese TCM text at roughly one token per
character; every two-character term added saves one token each time it occurs.

Terms are added as ordinary added tokens (`tokenizer.add_tokens`), the standard Hugging Face way, rather
than merged into the BPE ranks: an appended merge has the lowest priority, so inside a run of Chinese
characters an existing merge can consume half of the term first and the term would never form. Added
tokens are matched leftmost-longest before BPE, so 炙甘草 wins over 甘草 wherever it is written.

Each new embedding row (and lm_head row when untied) starts as the mean of the rows of the pieces the term
used to split into, so the extended model reads a new token roughly as it read the old pieces.

Chat tokens follow Qwen2.5 exactly: `<|endoftext|>` pads (and ends a pre-training document),
`<|im_start|>role\\n … <|im_end|>` frames a turn, and `<|im_end|>` is the end-of-sequence token so that a
Base model being taught to chat stops at the end of its turn.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import PreTrainedTokenizerFast

from shicheng.vocab import INSTALL_HINT, QWEN2_PATTERN, QWEN25_BPE_SIZE, VocabUnavailable, qwen_tiktoken_path

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# The answer's tags (shicheng.template): plain added tokens, so they survive decode(skip_special_tokens=True).
TAG_TOKENS: tuple[str, ...] = ("<think>", "</think>", "<output>", "</output>")

# Qwen2.5's tokens after the 151,643 BPE ranks, in id order from 151643 (tokenizer_config.json of Qwen2.5);
# the flag says whether the token is special (stripped by decode(skip_special_tokens=True)).
QWEN25_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    (ENDOFTEXT, True), (IM_START, True), (IM_END, True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", True), ("<|fim_middle|>", True), ("<|fim_suffix|>", True), ("<|fim_pad|>", True),
    ("<|repo_name|>", True), ("<|file_sep|>", True),
)

# ChatML as Qwen2.5 writes it, without Qwen's default system prompt and tool branch (our prompts always carry
# a system turn). `{% generation %}` marks the assistant content *and* its <|im_end|>, which is what TRL's
# `assistant_only_loss=True` needs to train the model to stop at the end of its turn.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")


def _qwen2_pipeline(tok: Tokenizer) -> Tokenizer:
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def configure_chat_tokens(tokenizer: PreTrainedTokenizerFast, model=None) -> None:
    """Make `<|im_end|>` end a turn and `<|endoftext|>` pad, on the tokenizer and, when given, the model.

    Sets our CHAT_TEMPLATE. A Base model's generation config stops on `<|endoftext|>` only; after this it
    stops on `[<|im_end|>, <|endoftext|>]`. Stage code that packs plain text (CPT) should end documents with
    `<|endoftext|>` (TRL: `SFTConfig(eos_token="<|endoftext|>")`), not with the chat eos.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in (ENDOFTEXT, IM_START, IM_END) if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer lacks the chat tokens {missing}; it is not a Qwen2-style tokenizer")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.eos_token = IM_END
    tokenizer.pad_token = ENDOFTEXT
    if model is None:
        return
    im_end, eot = vocab[IM_END], vocab[ENDOFTEXT]
    model.config.pad_token_id = eot
    model.config.eos_token_id = im_end
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.eos_token_id = [im_end, eot]
        gen.pad_token_id = eot


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=ENDOFTEXT)
    configure_chat_tokens(fast)
    return fast


def train_demo_tokenizer(texts: Iterable[str], vocab_size: int = 4000) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts`, laid out like Qwen2's (same split, special tokens, chat template).

    Ids 0–2 are `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`; the four answer tags are plain added tokens.
    Byte-level means no text is ever unknown, whatever the demo corpus lacked.
    """
    if vocab_size < 300:
        raise ValueError(f"vocab_size {vocab_size} is below the 256 bytes plus special tokens a byte-level BPE needs")
    tok = _qwen2_pipeline(Tokenizer(BPE(fuse_unk=False)))
    trainer = BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                         special_tokens=[ENDOFTEXT, IM_START, IM_END],
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    return _wrap(tok)


def load_qwen25_vocab_tokenizer() -> PreTrainedTokenizerFast:
    """Qwen2.5's real tokenizer, built offline from the vocabulary `shicheng.vocab` finds (dashscope's
    `qwen.tiktoken`); raises `shicheng.vocab.VocabUnavailable` naming the extra to install when it is missing.

    Same BPE ranks, pre-tokenizer split, NFC normalisation and added tokens (151643 `<|endoftext|>`,
    151644 `<|im_start|>`, 151645 `<|im_end|>` … 151664 `<|file_sep|>`), so `len()` is 151,665 like the
    hub tokenizer; a Qwen2.5 model has 151,936 embedding rows (padded to a multiple of 128).
    """
    # transformers' own tiktoken converter rebuilds BPE merges from the ranks (what the hub files encode).
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = qwen_tiktoken_path()
    try:
        import tiktoken  # noqa: F401  (the converter reads the ranks with it)
    except ImportError as e:
        raise VocabUnavailable(f"building the Qwen tokenizer needs tiktoken: {INSTALL_HINT}") from e
    tok = TikTokenConverter(vocab_file=str(path), pattern=QWEN2_PATTERN).converted()
    if tok.get_vocab_size() != QWEN25_BPE_SIZE:
        raise RuntimeError(f"qwen.tiktoken holds {tok.get_vocab_size()} ranks, expected {QWEN25_BPE_SIZE}")
    _qwen2_pipeline(tok)
    tok.post_processor = None
    for content, special in QWEN25_ADDED_TOKENS:
        token = AddedToken(content, special=special, normalized=False)
        if special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
    return _wrap(tok)


def compression(tokenizer, texts: Iterable[str]) -> float:
    """Tokens per 1,000 characters of `texts` (no special tokens added)."""
    texts = [t for t in texts if t]
    chars = sum(len(t) for t in texts)
    if chars == 0:
        raise ValueError("compression needs non-empty texts")
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return 1000.0 * sum(len(x) for x in ids) / chars


def piece_counts(tokenizer, terms: Sequence[str]) -> list[int]:
    """How many tokens each term takes on its own."""
    if not terms:
        return []
    return [len(ids) for ids in tokenizer(list(terms), add_special_tokens=False)["input_ids"]]


def knowledge_terms(kb=None) -> list[str]:
    """Every written form the knowledge base knows: herbs, aliases, processed forms, formulas, merged names."""
    if kb is None:
        from shicheng.knowledge import load_knowledge

        kb = load_knowledge()
    terms: dict[str, None] = {}
    for row in kb.herbs.values():
        terms[row.name] = None
        terms.update(dict.fromkeys(row.aliases))
        for form in row.processed:
            terms[form.surface] = None
            terms[form.standard] = None
    terms.update(dict.fromkeys(kb.formulas))
    terms.update(dict.fromkeys(kb.merged))
    return [t for t in terms if t]


def _capped(texts: Iterable[str], max_chars: int) -> list[str]:
    kept, seen = [], 0
    for text in texts:
        if seen >= max_chars:
            break
        kept.append(text[: max_chars - seen])
        seen += len(kept[-1])
    return kept


def _ngram_counts(texts: Sequence[str], min_len: int, max_len: int) -> Counter:
    counts: Counter = Counter()
    for text in texts:
        for run in _CJK_RUN.findall(text):
            for n in range(min_len, min(max_len, len(run)) + 1):
                counts.update(run[i:i + n] for i in range(len(run) - n + 1))
    return counts


def _savings_in_context(tokenizer, texts: Sequence[str], candidates: set[str]) -> tuple[Counter, Counter]:
    """Tokens each candidate would save over all its occurrences (and how often it occurs), judged against
    the old tokens around it.

    An added token is matched before BPE, so it saves the old tokens it covers minus one, but a token that
    straddled its edge is cut and its outside part costs a token of its own. Qwen2.5 reads " 党参" as three
    pieces (space + first byte of 党, the rest of 党, 参); with 党参 added it reads " " + "党参": a saving of
    1, not 2. A BPE that already had " 炙甘草" as one token would lose one, so that term is not worth adding.
    """
    lengths = sorted({len(c) for c in candidates})
    savings: Counter = Counter()
    seen: Counter = Counter()
    if not texts or not candidates:
        return savings, seen
    batch = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for text, offsets in zip(texts, batch, strict=True):
        starts = [o[0] for o in offsets]
        ends = [o[1] for o in offsets]
        for m in _CJK_RUN.finditer(text):
            run = m.group()
            for i in range(len(run)):
                for n in lengths:
                    if i + n > len(run):
                        break
                    if run[i:i + n] not in candidates:
                        continue
                    s, e = m.start() + i, m.start() + i + n
                    first, last = bisect.bisect_right(ends, s), bisect.bisect_left(starts, e) - 1
                    if first > last:  # no token covers the span (a normaliser dropped it)
                        continue
                    savings[run[i:i + n]] += (last - first + 1) - 1 - (starts[first] < s) - (ends[last] > e)
                    seen[run[i:i + n]] += 1
    return savings, seen


def mine_terms(tokenizer, lexicon_terms: Iterable[str], corpus_texts: Iterable[str], min_pieces: int = 2,
               max_new: int = 2000, min_freq: int = 3, min_len: int = 2, max_len: int = 6,
               absorb: float = 0.9, max_corpus_chars: int = 2_000_000) -> list[str]:
    """TCM terms worth adding, best first; deterministic for the same inputs.

    Candidates are the given lexicon terms (herb, formula, syndrome names …; any length) and the Chinese
    n-grams of `min_len`–`max_len` characters seen at least `min_freq` times in the corpus. An n-gram that
    occurs almost only inside a longer one (count(longer) ≥ `absorb` × count(shorter)) is dropped in its
    favour: "弦细" within "脉弦细". Kept: those the tokenizer splits into ≥ `min_pieces` tokens, ranked by
    the tokens they save in the corpus (≈ frequency × (pieces − 1), counted in context, see
    `_savings_in_context`); terms that occur but save nothing there are dropped. Lexicon terms the corpus
    never uses come last, by the tokens they save on their own. Only the first `max_corpus_chars`
    characters of the corpus are read.
    """
    texts = _capped(corpus_texts, max_corpus_chars)
    counts = _ngram_counts(texts, min_len, max_len)
    absorbed: set[str] = set()
    for gram, c in counts.items():
        if len(gram) > min_len and c >= min_freq:
            for part in (gram[:-1], gram[1:]):
                if c >= absorb * counts[part]:
                    absorbed.add(part)
    lexicon = set(t.strip() for t in lexicon_terms if t and t.strip())
    grams = {g for g, c in counts.items() if c >= min_freq and g not in absorbed}
    candidates = sorted((grams | lexicon) - set(tokenizer.get_added_vocab()))
    pieces = dict(zip(candidates, piece_counts(tokenizer, candidates), strict=True))
    candidates = [t for t in candidates if pieces[t] >= min_pieces]
    savings, seen = _savings_in_context(tokenizer, texts, set(candidates))
    scored = []
    for term in candidates:
        if savings[term] > 0 or (term in lexicon and not seen[term]):
            scored.append((-savings[term], -(pieces[term] - 1), -len(term), term))
    scored.sort()
    return [term for *_, term in scored[:max_new]]


@dataclass
class ExtensionReport:
    """What `extend_tokenizer` did; `to_dict()` goes into the stage manifest."""

    added: int
    skipped: int  # distinct terms not added: already a token, or a single token already
    sample: list[str] = field(default_factory=list)
    vocab_before: int = 0
    vocab_after: int = 0
    embedding_rows: int | None = None  # rows of the input embedding matrix after resizing
    tied_embeddings: bool | None = None
    heldout_chars: int = 0
    tokens_per_1k_before: float | None = None
    tokens_per_1k_after: float | None = None
    reduction_pct: float | None = None  # fewer tokens on the held-out text, in percent

    def to_dict(self) -> dict:
        return asdict(self)


def _tied(model) -> bool:
    out = model.get_output_embeddings()
    return out is None or out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def extend_tokenizer(tokenizer: PreTrainedTokenizerFast, model, terms: Iterable[str],
                     heldout_texts: Sequence[str] = (), pad_to_multiple_of: int | None = 64) -> ExtensionReport:
    """Add `terms` as tokens, resize `model` (may be None) and initialise the new rows; report the gain.

    Each new row of the input embeddings — and of the lm_head when it is not tied — is the mean of the rows
    of the pieces the OLD tokenizer split the term into. The embedding matrix only grows (a Qwen2.5 model
    already has spare padded rows, which new ids use first) and is padded to `pad_to_multiple_of` rows for
    GPU-friendly shapes. Chat tokens are then set with `configure_chat_tokens`. Terms may include
    TAG_TOKENS (`<think>` …) to make the answer tags single tokens too.
    """
    vocab_before = len(tokenizer)
    heldout = [t for t in heldout_texts if t]
    before = compression(tokenizer, heldout) if heldout else None
    unique = list(dict.fromkeys(t.strip() for t in terms if t and t.strip()))
    existing = set(tokenizer.get_added_vocab())
    candidates = [t for t in unique if t not in existing]
    pieces = dict(zip(candidates, tokenizer(candidates, add_special_tokens=False)["input_ids"], strict=True)) \
        if candidates else {}
    new_terms = [t for t in candidates if len(pieces[t]) >= 2]
    added = tokenizer.add_tokens(new_terms)
    if added != len(new_terms):
        raise RuntimeError(f"tokenizer added {added} of {len(new_terms)} new terms")
    report = ExtensionReport(added=added, skipped=len(unique) - added, sample=new_terms[:20],
                             vocab_before=vocab_before, vocab_after=len(tokenizer))
    if model is not None:
        _resize_and_init(model, tokenizer, {t: pieces[t] for t in new_terms}, pad_to_multiple_of)
        report.embedding_rows = model.get_input_embeddings().weight.shape[0]
        report.tied_embeddings = _tied(model)
    configure_chat_tokens(tokenizer, model)
    if heldout:
        after = compression(tokenizer, heldout)
        report.heldout_chars = sum(len(t) for t in heldout)
        report.tokens_per_1k_before, report.tokens_per_1k_after = round(before, 2), round(after, 2)
        report.reduction_pct = round(100.0 * (before - after) / before, 2)
    return report


def _resize_and_init(model, tokenizer, pieces: dict[str, list[int]], pad_to_multiple_of: int | None) -> None:
    import torch

    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
    matrices = [model.get_input_embeddings().weight]
    if not _tied(model):
        matrices.append(model.get_output_embeddings().weight)
    with torch.no_grad():
        for term, old_ids in pieces.items():
            new_id = tokenizer.convert_tokens_to_ids(term)
            index = torch.tensor(old_ids, dtype=torch.long, device=matrices[0].device)
            for weight in matrices:
                weight[new_id] = weight.index_select(0, index).float().mean(0).to(weight.dtype)
