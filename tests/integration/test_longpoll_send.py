"""Long-poll sessions: ``send`` and ``broadcast`` reach a long-poll client across its polls,
what comes between two polls waits (bounded, for a while), and a session that is gone is
``NoSuchConnection``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from integration_helpers import http_client, until

from tidings import NoSuchConnection, Publisher
from tidings.app import App
from tidings.config import Config
from tidings.server import Server
from tidings.server.lpsession import LongPollSession
from tidings.testing import TIMEOUT, FakeClock

pytestmark = pytest.mark.usefixtures("no_server_errors")

TTL = 60.0


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[tuple[Server, FakeClock]]:
    """A server whose long-poll sessions expire by a fake clock (polls wait for real)."""
    clock = FakeClock()
    config = Config(
        host="127.0.0.1",
        port=0,
        api_key="test-key",
        longpoll_timeout=TIMEOUT * 3,
        longpoll_session_ttl=TTL,
        **settings,
    )
    server = Server(App(config, clock=clock))
    await server.start()
    try:
        yield server, clock
    finally:
        await server.aclose()


def publisher(server: Server) -> Publisher:
    return Publisher(server.url, "test-key", timeout=TIMEOUT)


async def waiting_session(server: Server, before: set[str] | None = None) -> LongPollSession:
    """The session of the poll that is waiting now (made after those in ``before``)."""
    registry = server.app.longpoll_sessions

    def found() -> list[LongPollSession]:
        return [
            s
            for key, s in registry.by_secret.items()
            if key not in (before or set()) and s.poll is not None and s.poll.ready
        ]

    await until(lambda: len(found()) == 1, "a long-poll waiting")
    return found()[0]


async def first_answer(
    server: Server, http: httpx.AsyncClient, pub: Publisher, message: Any
) -> tuple[LongPollSession, str]:
    """Open a session with a first poll, answered by ``message`` sent to it: the session
    and the secret its answer carries."""
    first = asyncio.create_task(http.get("/lp/news"))
    session = await waiting_session(server)
    await pub.asend(session.id, message)
    secret: str = (await asyncio.wait_for(first, TIMEOUT)).json()["session"]
    return session, secret


def message(data: Any) -> dict[str, Any]:
    return {"notice": "message", "channel": "", "data": data}


async def test_send_reaches_a_long_poll_client_during_and_between_its_polls() -> None:
    async with serving() as (server, _), http_client(server) as http, publisher(server) as pub:
        first = asyncio.create_task(http.get("/lp/news"))
        session = await waiting_session(server)
        await pub.asend(session.id, {"to": "you"})  # answers the waiting poll at once
        answer = (await asyncio.wait_for(first, TIMEOUT)).json()
        assert answer["notices"] == [message({"to": "you"})]
        assert answer["session"] == session.secret and answer["messages"] == []
        # No poll waits: they are kept, in order, for the next one.
        await pub.asend(session.id, {"n": 1})
        await pub.asend(session.id, "two")
        assert await pub.abroadcast({"n": 3}) == 1
        again = await http.get(
            "/lp/news", params={"session": answer["session"], "last_event_id": answer["id"]}
        )
        body = again.json()
        assert body["notices"] == [message({"n": 1}), message("two"), message({"n": 3})]
        assert body["session"] == session.secret
        assert body["id"] == answer["id"]
        assert len(server.app.longpoll_sessions) == 1


async def test_a_session_nobody_polls_for_expires_and_send_is_then_no_such_connection() -> None:
    async with (
        serving() as (server, clock),
        http_client(server) as http,
        publisher(server) as pub,
    ):
        session, secret = await first_answer(server, http, pub, "hi")
        await pub.asend(session.id, "kept a while")
        clock.advance(TTL - 1)
        await pub.asend(session.id, "still here")
        clock.advance(2)
        with pytest.raises(NoSuchConnection):
            await pub.asend(session.id, "too late")
        assert server.app.node.streams.get(session.id) is None
        # A poll naming it starts a new session, without what the old one held.
        poll = asyncio.create_task(http.get("/lp/news", params={"session": secret}))
        fresh = await waiting_session(server)
        assert fresh.secret != secret and fresh.id != session.id
        await pub.asend(fresh.id, "new")
        body = (await asyncio.wait_for(poll, TIMEOUT)).json()
        assert body["notices"] == [message("new")]


async def test_a_session_that_holds_too_much_ends() -> None:
    async with (
        serving(longpoll_session_messages=2) as (server, _),
        http_client(server) as http,
        publisher(server) as pub,
    ):
        first = asyncio.create_task(http.get("/lp/news"))
        session = await waiting_session(server)
        await pub.asend(session.id, 0)
        await asyncio.wait_for(first, TIMEOUT)
        await pub.asend(session.id, 1)
        await pub.asend(session.id, 2)
        await pub.asend(session.id, 3)  # one more than it may hold: the session ends
        with pytest.raises(NoSuchConnection):
            await pub.asend(session.id, 4)


async def test_polls_for_other_channels_start_another_session() -> None:
    async with serving() as (server, _), http_client(server) as http, publisher(server) as pub:
        _, secret = await first_answer(server, http, pub, 0)
        other = asyncio.create_task(http.get("/lp/news,sport", params={"session": secret}))
        fresh = await waiting_session(server, {secret})
        assert fresh.secret != secret and fresh.channels == ["news", "sport"]
        await pub.asend(fresh.id, "x")
        assert (await asyncio.wait_for(other, TIMEOUT)).json()["session"] == fresh.secret


async def test_past_the_limit_of_sessions_the_longest_idle_one_ends() -> None:
    async with (
        serving(longpoll_max_sessions=2) as (server, _),
        http_client(server) as http,
        publisher(server) as pub,
    ):
        ids = []
        for _ in range(2):
            poll = asyncio.create_task(http.get("/lp/news"))
            session = await waiting_session(server, set(server.app.longpoll_sessions.by_secret))
            ids.append(session.id)
            await pub.asend(session.id, "answer")
            await asyncio.wait_for(poll, TIMEOUT)
        third = asyncio.create_task(http.get("/lp/news"))
        await until(lambda: server.app.node.streams.get(ids[0]) is None, "the oldest ended")
        with pytest.raises(NoSuchConnection):
            await pub.asend(ids[0], "gone")
        await pub.asend(ids[1], "still here")
        third.cancel()


async def test_hooks_see_one_connection_across_polls() -> None:
    events: list[tuple[str, str]] = []
    conns: list[Any] = []

    async with serving() as (server, clock), http_client(server) as http:
        hooks = server.app.hooks

        @hooks.on_connect
        def connect(conn, context):
            context["polls"] = 0
            conns.append(conn)
            events.append(("connect", conn.id))
            conn.user = "alice"

        @hooks.on_disconnect
        def gone(conn, context):
            events.append(("disconnect", conn.id))

        @hooks.on_finish
        def finish(conn, context):
            events.append(("finish", ",".join(conn.channels)))

        first = asyncio.create_task(http.get("/lp/news"))
        session = await waiting_session(server)
        [conn] = conns
        assert conn.id == session.id and session.user == "alice"
        conn.send({"hello": conn.user})  # conn.send reaches the poll like Publisher.send
        answer = (await asyncio.wait_for(first, TIMEOUT)).json()
        assert answer["notices"] == [message({"hello": "alice"})]
        await until(lambda: session.poll is None, "the poll is over")
        # Between polls the connection lasts: no disconnect yet, and sends are kept.
        conn.send("between")
        second = await http.get("/lp/news", params={"session": answer["session"]})
        assert second.json()["notices"] == [message("between")]
        assert events == [("connect", session.id)]
        clock.advance(TTL + 1)
        await until(lambda: len(events) == 3, "the last hooks ran")
        assert events[1:] == [("disconnect", session.id), ("finish", "news")]
        assert conn.closed
        with pytest.raises(NoSuchConnection):
            conn.send("after")


async def test_a_hooks_disconnect_reaches_the_next_poll() -> None:
    conns: list[Any] = []
    async with serving() as (server, _), http_client(server) as http, publisher(server) as pub:
        server.app.hooks.on_connect(lambda conn, context: conns.append(conn))
        session, secret = await first_answer(server, http, pub, "first")
        await pub.asend(session.id, "before the end")
        await server.app.node.send(session.id, b'"direct"')
        conns[0].disconnect(4500, "banned")
        with pytest.raises(NoSuchConnection):
            await pub.asend(session.id, "refused")
        last = await http.get("/lp/news", params={"session": secret})
        assert last.json()["notices"] == [
            message("before the end"),
            message("direct"),
            {"notice": "disconnect", "channel": "", "code": 4500, "reason": "banned"},
        ]
        # Delivered: the session is over, and the next poll is a new connection.
        assert secret not in server.app.longpoll_sessions.by_secret
        assert len(conns) == 1


async def test_a_new_poll_of_a_session_answers_the_one_still_waiting() -> None:
    async with serving() as (server, _), http_client(server) as http, publisher(server) as pub:
        session, secret = await first_answer(server, http, pub, "answer")
        async with http_client(server) as other:
            stale = asyncio.create_task(http.get("/lp/news", params={"session": secret}))
            await until(lambda: session.poll is not None and session.poll.ready, "polling")
            older = session.poll
            fresh = asyncio.create_task(other.get("/lp/news", params={"session": secret}))
            await until(lambda: session.poll is not older and session.poll is not None, "replaced")
            answered = await asyncio.wait_for(stale, TIMEOUT)
            assert answered.json()["messages"] == [] and "notices" not in answered.json()
            await pub.asend(session.id, "to the newer")
            body = (await asyncio.wait_for(fresh, TIMEOUT)).json()
            assert body["notices"] == [message("to the newer")]


async def test_a_message_held_by_a_poll_that_goes_unanswered_waits_for_the_next() -> None:
    async with serving() as (server, _), http_client(server) as http, publisher(server) as pub:
        session, secret = await first_answer(server, http, pub, "first")
        async with http_client(server) as gone:
            lost = asyncio.create_task(gone.get("/lp/news", params={"session": secret}))
            await until(lambda: session.poll is not None and session.poll.ready, "polling")
            poll = session.poll
            assert poll is not None
            # In one go, as when the connection drops before the answer is written.
            session.send_message(b'"caught"', True)
            poll.close()
            lost.cancel()
        await pub.asend(session.id, "after")
        body = (await http.get("/lp/news", params={"session": secret})).json()
        assert body["notices"] == [message("caught"), message("after")]
