"""Sans-I/O wire formats: bytes in, events out, bytes to send. No sockets, no asyncio."""

__all__: list[str] = []
