"""Centrifugo-compatible client protocol (v0.19): encodings and codes, sans-I/O."""

__all__: list[str] = []
