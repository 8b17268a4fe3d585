"""Measurements: step benchmarks, FLOP counts, attention scaling and the generator comparison."""
