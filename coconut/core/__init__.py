"""The continuous-thought mechanics, free of Lightning and Hydra: the model wrapper and its
generation, the thought projections, the curriculum and the methods as data, the special tokens and
the from-scratch tokenizer. Everything else in coconut builds on this layer; it imports nothing
from the others (tests/test_architecture.py checks it)."""
