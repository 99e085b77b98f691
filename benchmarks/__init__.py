"""Benchmarks of speakerdemo: one script per question, see benchmarks/README.md."""
