"""What only the demo, the tests and the benchmarks use; not part of the service."""
