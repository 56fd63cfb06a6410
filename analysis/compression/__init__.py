"""Compression methods: plans, pruning, quantization, fine-tuning, and the transforms beyond them."""
