"""Compression methods: plans applied one-shot, and global, iterative and sparsity-training schedules."""
