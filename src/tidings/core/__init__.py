"""The hub: channels, publications, fan-out and resume. No socket code."""

__all__: list[str] = []
