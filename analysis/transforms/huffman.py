"""Huffman code lengths from symbol frequencies (a `heapq` merge) and the relative-index gap codes of
Deep Compression's sparse storage; `sharing` counts a shared layer's bits with them."""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Hashable, Mapping

import torch


def huffman_code_lengths(counts: Mapping[Hashable, int]) -> dict[Hashable, int]:
    """Code length (bits) of each symbol in a Huffman code for these frequencies (zero counts left out).

    A lone symbol gets 1 bit. Ties merge in insertion order, so the lengths are reproducible.
    """
    items = [(int(c), s) for s, c in counts.items() if c > 0]
    if not items:
        return {}
    if len(items) == 1:
        return {items[0][1]: 1}
    order = itertools.count()
    heap = [(c, next(order), [s]) for c, s in items]
    heapq.heapify(heap)
    lengths = {s: 0 for _, s in items}
    while len(heap) > 1:
        c1, _, a = heapq.heappop(heap)
        c2, _, b = heapq.heappop(heap)
        for s in a + b:  # every symbol under the merged node sits one level deeper
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, next(order), a + b))
    return lengths


def huffman_bits(counts: Mapping[Hashable, int]) -> int:
    """Total bits of the symbols Huffman-coded with their own frequencies (the code table not included)."""
    lengths = huffman_code_lengths(counts)
    return sum(int(counts[s]) * n for s, n in lengths.items())


def gap_codes(nonzero_positions: torch.Tensor, index_bits: int) -> Counter:
    """Histogram of relative-index codes for nonzeros at these flat positions (ascending): code g - 1 for a
    gap g <= 2^bits - 1, preceded by escape codes (2^bits - 1, "skip that many, no weight") for longer gaps."""
    escape = 2**index_bits - 1
    if len(nonzero_positions) == 0:
        return Counter()
    previous = torch.cat([torch.tensor([-1]), nonzero_positions[:-1]])
    steps = (nonzero_positions - previous - 1).tolist()  # positions skipped before each nonzero
    codes: Counter = Counter()
    for skipped in steps:
        fillers, rest = divmod(skipped, escape)
        codes[rest] += 1
        if fillers:
            codes[escape] += fillers
    return codes


__all__ = ["gap_codes", "huffman_bits", "huffman_code_lengths"]
