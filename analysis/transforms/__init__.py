"""The transforms a plan applies to a layer (pruning, quantization, low-rank, weight sharing, low-bit) and the coupled channel groups they act on."""
