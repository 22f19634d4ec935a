"""``RecordingPublisher``: a ``Publisher`` for applications' own tests.

It has the Publisher's API and runs the Publisher's own code — encoding (so data the real
one can't encode fails here too), idempotency keys, retries — with a transport that
publishes nothing and records. It refuses what the server would (a bad channel or event
name, JSON nested too deep: ``PublishError`` 400) and answers a repeated idempotency key as
the server does, with the first publication's position and ``duplicate``.
"""

from __future__ import annotations

import secrets
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson

from tidings.client.publisher import JsonEncoder, Publisher, encode_json
from tidings.client.transport import Call
from tidings.core.channels import validate_channel
from tidings.exceptions import InvalidChannel, InvalidPayload, PublishError
from tidings.protocol.envelope import EVENT_NAME, check_json_payload
from tidings.protocol.positions import format_position

__all__ = ["RecordedPublication", "RecordingPublisher"]


@dataclass(frozen=True, slots=True)
class RecordedPublication:
    """One publication as the server would have taken it: ``data`` decoded (the JSON value,
    or the text), ``payload`` the bytes sent, and the position it got."""

    channel: str
    data: Any
    event: str | None
    is_json: bool
    payload: bytes
    idempotency_key: str
    offset: int
    epoch: str


class _Recorder:
    """The transport: records calls instead of sending them; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.epoch = secrets.token_urlsafe(6)
        self.publications: list[RecordedPublication] = []
        self.offsets: defaultdict[str, int] = defaultdict(int)
        self.keys: dict[tuple[str, str], dict[str, Any]] = {}
        self.failures: list[PublishError] = []
        self.attempts = 0

    def call(self, call: Call) -> dict[str, Any]:
        with self.lock:
            self.attempts += 1
            if self.failures:
                raise self.failures.pop(0)
            _check(call)
            seen = self.keys.get((call.channel, call.idempotency_key))
            if seen is not None:
                return {**seen, "duplicate": True}
            self.offsets[call.channel] += 1
            offset = self.offsets[call.channel]
            data = orjson.loads(call.data) if call.is_json else call.data.decode()
            self.publications.append(
                RecordedPublication(
                    call.channel,
                    data,
                    call.event,
                    call.is_json,
                    call.data,
                    call.idempotency_key,
                    offset,
                    self.epoch,
                )
            )
            answer = {
                "channel": call.channel,
                "offset": offset,
                "epoch": self.epoch,
                "id": format_position(call.channel, offset, self.epoch),
                "subscribers": 0,
            }
            if call.idempotency_key:
                self.keys[(call.channel, call.idempotency_key)] = answer
            return answer

    async def acall(self, call: Call) -> dict[str, Any]:
        return self.call(call)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _refused(reason: str) -> PublishError:
    return PublishError(f"publish refused: 400 {reason}", 400, reason=reason)


def _check(call: Call) -> None:
    """What ``POST /pub`` refuses with 400."""
    try:
        validate_channel(call.channel)
    except InvalidChannel as exc:
        raise _refused(f"bad channel name: {exc}") from None
    if call.event is not None and not EVENT_NAME.fullmatch(call.event):
        raise _refused("event name: 1-64 characters of A-Z a-z 0-9 _-.:@/")
    try:
        check_json_payload(call.data)
    except InvalidPayload as exc:
        raise _refused(str(exc)) from None
    if not call.is_json:
        try:
            call.data.decode("utf-8")
        except UnicodeDecodeError:
            raise _refused("body must be JSON or UTF-8 text") from None


class RecordingPublisher(Publisher):
    """``RecordingPublisher()`` in place of ``Publisher(url, key)``; then look at
    ``publications`` (or ``on(channel)``). ``fail_next(error)`` makes the next attempt raise
    ``error`` — a ``PublishError`` with ``retryable=True`` is retried like a real failure
    (without waiting, unless ``backoff`` is given)."""

    def __init__(
        self,
        *,
        json_encoder: JsonEncoder = encode_json,
        retries: int = 3,
        backoff: float = 0.0,
    ) -> None:
        self._recorder = _Recorder()
        super().__init__(
            "http://recording.invalid",
            json_encoder=json_encoder,
            retries=retries,
            backoff=backoff,
            max_backoff=max(backoff, 5.0),
            transport=self._recorder,
        )

    @property
    def publications(self) -> list[RecordedPublication]:
        """Every publication so far, in order (repeated idempotency keys once)."""
        with self._recorder.lock:
            return list(self._recorder.publications)

    @property
    def attempts(self) -> int:
        """Attempts made, failed ones and retries included."""
        return self._recorder.attempts

    def on(self, channel: str) -> list[Any]:
        """The decoded data published to ``channel``, in order."""
        return [p.data for p in self.publications if p.channel == channel]

    def fail_next(self, error: PublishError | None = None, *, times: int = 1) -> None:
        """The next ``times`` attempts raise ``error`` (default: the server unreachable,
        retryable)."""
        failure = error or PublishError(
            "can't reach http://recording.invalid: connection refused",
            reason="connection refused",
            retryable=True,
        )
        with self._recorder.lock:
            self._recorder.failures.extend([failure] * times)

    def clear(self) -> None:
        """Forget what was recorded (positions go on, as on a server)."""
        with self._recorder.lock:
            self._recorder.publications.clear()
            self._recorder.failures.clear()
