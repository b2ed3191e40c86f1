"""Tiny, randomly initialised models built from a config: the offline stand-in for a real base model.

`ragtune tiny-model PATH --kind causal` saves a Llama-style causal LM, `--kind cls` a BERT-style encoder with a
classification head. Both get a small tokenizer trained on the shipped sample text, so the whole retrain path
(chat template, loss mask, LoRA, DeepSpeed, save, reload) runs for real in seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from tasks.core.errors import ConfigError
from tasks.core.jsonl import parse_lines
from tasks.lm.templates import TEMPLATES

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def sample_texts(root: Path) -> Iterable[str]:
    """Every text field of the shipped sample data: enough for a few hundred sub-word merges."""
    for path in sorted((root / "data/sample").rglob("*")):
        if path.suffix in (".md", ".txt"):
            yield path.read_text(encoding="utf-8", errors="replace")
        elif path.suffix == ".jsonl":
            for _, row in parse_lines(path.read_text(encoding="utf-8", errors="replace").splitlines()):
                if not isinstance(row, dict):
                    continue
                yield " ".join(str(v) for v in row.values() if isinstance(v, str))
                for m in row.get("messages", []) if isinstance(row.get("messages"), list) else []:
                    yield str(m.get("content", "")) if isinstance(m, dict) else ""


def _byte_bpe(texts: Iterable[str], vocab_size: int, specials: list[str]):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def _wordpiece(texts: Iterable[str], vocab_size: int):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return tok


def build_tiny_model(
    path: Path,
    kind: str,
    project_root: Path,
    num_labels: int = 2,
    hidden_size: int = 64,
    layers: int = 2,
    vocab_size: int = 1024,
    seed: int = 0,
) -> dict:
    """Write config, random weights and a trained tokenizer to `path`; loadable with from_pretrained."""
    import torch
    from transformers import PreTrainedTokenizerFast

    if kind not in ("causal", "cls"):
        raise ConfigError(f"--kind {kind}: expected 'causal' (Llama-style) or 'cls' (BERT-style classifier).")
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise ConfigError(f"{path}: folder exists and is not empty; choose a new path or remove it first.")
    texts = list(sample_texts(project_root)) or ["hello world"]
    torch.manual_seed(seed)
    if kind == "causal":
        from transformers import LlamaConfig, LlamaForCausalLM

        specials = ["<|pad|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"]
        tok = PreTrainedTokenizerFast(
            tokenizer_object=_byte_bpe(texts, vocab_size, specials),
            pad_token="<|pad|>",
            eos_token="<|im_end|>",
            bos_token=None,
            unk_token=None,
            model_max_length=1024,
        )
        tok.chat_template = TEMPLATES["chatml"]
        config = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=None,
            tie_word_embeddings=True,
        )
        model: PreTrainedModel = LlamaForCausalLM(config)
    else:
        from transformers import BertConfig, BertForSequenceClassification

        tok = PreTrainedTokenizerFast(
            tokenizer_object=_wordpiece(texts, vocab_size),
            pad_token="[PAD]",
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
            model_max_length=512,
        )
        cls_config = BertConfig(
            vocab_size=len(tok),
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=512,
            num_labels=num_labels,
            pad_token_id=tok.pad_token_id,
        )
        model = BertForSequenceClassification(cls_config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return {
        "path": str(path),
        "kind": kind,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tok),
    }
