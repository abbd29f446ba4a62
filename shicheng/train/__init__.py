"""Training: tokenizer extension, the five stages on TRL/PEFT/transformers, GRPO rewards, the curriculum runner."""
