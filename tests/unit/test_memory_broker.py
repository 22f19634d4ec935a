from tidings.brokers.memory import MemoryBroker
from tidings.core.broker import Broker
from tidings.core.channels import ChannelOptions
from tidings.testing.broker_conformance import BrokerConformance


class TestMemoryBroker(BrokerConformance):
    async def make_broker(self) -> Broker:
        return MemoryBroker()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_history_expires_by_ttl():
    clock = Clock()
    broker = MemoryBroker(clock=clock)
    opts = ChannelOptions(history_size=10, history_ttl=60)
    await broker.publish("t", b"1", options=opts)
    clock.now += 30
    await broker.publish("t", b"2", options=opts)
    clock.now += 31
    result = await broker.history("t")
    assert [p.offset for p in result.publications] == [2]
    clock.now += 30
    assert (await broker.history("t")).publications == []
    assert (await broker.history("t")).position.offset == 2


async def test_idle_streams_are_forgotten():
    clock = Clock()
    broker = MemoryBroker(clock=clock, stream_ttl=100)
    opts = ChannelOptions(history_size=10, history_ttl=10)
    await broker.publish("idle", b"1", options=opts)
    clock.now += 200
    await broker.publish("busy", b"1", options=opts)  # publishing sweeps once a minute
    assert await broker.channels() == ["busy"]


async def test_each_broker_has_its_own_epoch():
    assert MemoryBroker().epoch != MemoryBroker().epoch
