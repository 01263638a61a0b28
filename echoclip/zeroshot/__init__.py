"""zeroshot."""
