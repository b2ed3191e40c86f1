"""Layer 2: fine-tuning: training formats and data from the knowledge base, the LoRA trainer, adapters, the
model registry (production pointer) and the retrain stages."""
