"""The decision core: pure functions over plain values (no I/O, no clock, no metrics)."""
