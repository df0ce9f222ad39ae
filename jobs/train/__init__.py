"""Train stage: fine-tune a base model on a mix (LoRA or full, TRL SFT), resumable from the store."""
