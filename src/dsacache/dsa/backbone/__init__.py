"""The bundled `tiny` backbone: corpus, tokenizer and training script."""
