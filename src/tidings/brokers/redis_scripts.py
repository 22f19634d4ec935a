"""What every Redis writer shares: key names, the publication encoding and the Lua scripts.

The broker and ``Publisher("redis://…")`` publish through the same script, so a publication
made without a node in the path gets its offset, epoch and history like any other.

Keys of one channel share the hash tag ``{<channel>}`` (channel names have no braces), so
on Redis Cluster they live in one slot and one script can touch them all:

- ``<prefix>:{<channel>}:m`` — the stream's meta, a hash: ``o`` offset, ``e`` epoch, ``n``
  the channel name, ``s`` and ``t`` the history size and TTL (ms); expires ``meta_ttl``
  after the last publication.
- ``<prefix>:{<channel>}:h`` — the history, a Redis stream whose entry ids are the offsets
  (``<offset>-0``): fields ``t`` (server time in ms) and ``d`` (the encoded publication).
  Trimmed by size (approximately, when written) and by age (``t``, when read); reads
  return only what is within both.
- ``<prefix>:{<channel>}:i:<key>`` — an idempotency key's result, ``<offset>:<epoch>``.
- PUB/SUB channel ``<prefix>:{<channel>}`` — messages to the nodes subscribed to it:
  ``p<offset>:<epoch>:<encoded publication>``, ``j``/``l`` + encoded client info (join and
  leave), ``d`` (the channel was deleted).

An encoded publication is ``<n>:<header><data>``: ``n`` the length of the JSON header
``[is_json, event, time_ms, info, tags, delta]`` (``info``: ``[user, client, conn_info,
chan_info]`` with the infos as JSON text; a seventh item, the connection excluded from live
delivery, when there is one), then the payload bytes as published.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from tidings.core.publication import ClientInfo, Publication

__all__ = [
    "HISTORY_SCRIPT",
    "PRESENCE_ADD_SCRIPT",
    "PRESENCE_SCRIPT",
    "PUBLISH_SCRIPT",
    "SCRIPTS",
    "SCRIPT_SHAS",
    "decode_info",
    "decode_publication",
    "encode_info",
    "encode_publication",
    "keys",
    "pubsub_channel",
]


def pubsub_channel(prefix: str, channel: str) -> str:
    return f"{prefix}:{{{channel}}}"


def keys(prefix: str, channel: str, idempotency_key: str = "") -> list[str]:
    """The meta, history and idempotency keys of ``channel``."""
    base = f"{prefix}:{{{channel}}}"
    return [f"{base}:m", f"{base}:h", f"{base}:i:{idempotency_key}"]


def _info(info: ClientInfo | None) -> Any:
    if info is None:
        return None
    conn = info.conn_info.decode() if info.conn_info is not None else None
    chan = info.chan_info.decode() if info.chan_info is not None else None
    return [info.user, info.client, conn, chan]


def _uninfo(value: Any) -> ClientInfo | None:
    if value is None:
        return None
    user, client, conn, chan = value
    return ClientInfo(
        user,
        client,
        conn.encode() if conn is not None else None,
        chan.encode() if chan is not None else None,
    )


def encode_info(info: ClientInfo) -> bytes:
    return orjson.dumps(_info(info))


def decode_info(raw: bytes) -> ClientInfo:
    info = _uninfo(orjson.loads(raw))
    if info is None:
        raise ValueError("no client info")
    return info


def encode_publication(
    data: bytes,
    *,
    is_json: bool,
    event: str | None,
    time_ms: int,
    info: ClientInfo | None,
    tags: dict[str, str] | None,
    delta: bool,
    exclude_client: str = "",
) -> bytes:
    header = [is_json, event, time_ms, _info(info), tags, delta]
    if exclude_client:
        header.append(exclude_client)
    encoded = orjson.dumps(header)
    return b"%d:%b%b" % (len(encoded), encoded, data)


def decode_publication(channel: str, offset: int, epoch: str, raw: bytes) -> Publication:
    """A publication from its encoding; ``ValueError`` when ``raw`` is not one."""
    colon = raw.index(b":")
    end = colon + 1 + int(raw[:colon])
    is_json, event, time_ms, info, tags, delta, *rest = orjson.loads(raw[colon + 1 : end])
    pub = Publication(
        channel,
        offset,
        epoch,
        raw[end:],
        bool(is_json),
        event,
        time_ms / 1000.0,
        _uninfo(info),
        tags,
    )
    pub.delta = bool(delta)
    if rest:
        pub.exclude_client = str(rest[0])
    return pub


# Shared Lua: drop history entries older than the stream's history TTL. The stream's ids are
# offsets, not times, so age is read from each entry's `t` field, oldest first; at most the
# history size is ever scanned, and one entry when nothing expired.
_TRIM = """
local function trim(hist, ttl, now)
  if ttl <= 0 then return end
  local cutoff = now - ttl
  while true do
    local batch = redis.call('xrange', hist, '-', '+', 'COUNT', 32)
    if #batch == 0 then return end
    for i = 1, #batch do
      local f, t = batch[i][2], 0
      for j = 1, #f, 2 do if f[j] == 't' then t = tonumber(f[j + 1]) end end
      if t >= cutoff then
        -- Keep this entry and what follows (XTRIM MINID takes no exclusive bound).
        if i > 1 then redis.call('xtrim', hist, 'MINID', batch[i][1]) end
        return
      end
    end
    -- All expired: ids are <offset>-0, so the next offset is the new minimum.
    local last = batch[#batch][1]
    local offset = tonumber(string.sub(last, 1, string.find(last, '-') - 1))
    redis.call('xtrim', hist, 'MINID', (offset + 1) .. '-0')
    if #batch < 32 then return end
  end
end
local function now_ms()
  local t = redis.call('time')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: meta, history, idempotency. ARGV: encoded publication, history size, history TTL
# (ms), meta TTL (ms), idempotency TTL (ms, 0: no key), PUB/SUB channel, a fresh epoch (used
# when the stream is new), 1 to SPUBLISH (Redis Cluster), the channel name.
# Returns {"<offset>:<epoch>", duplicate (0/1)}. Each redis.call costs Redis about 2 µs, so
# the script makes as few as it can: XADD trims approximately (``~``, whole listpack nodes)
# and reads skip what is beyond the size; entries past their age are trimmed by reads.
PUBLISH_SCRIPT = """
local meta, hist, idem = KEYS[1], KEYS[2], KEYS[3]
local size, ttl = ARGV[2], ARGV[3]
local idem_ttl = tonumber(ARGV[5])
if idem_ttl > 0 then
  local seen = redis.call('get', idem)
  if seen then return {seen, 1} end
end
local top = redis.call('hmget', meta, 'e', 's', 't')
local epoch = top[1]
if not epoch then
  epoch = ARGV[7]
  redis.call('del', hist)
  redis.call('hset', meta, 'e', epoch, 'n', ARGV[9])
end
local offset = redis.call('hincrby', meta, 'o', 1)
redis.call('pexpire', meta, ARGV[4])
if size ~= '0' and ttl ~= '0' then
  if top[2] ~= size or top[3] ~= ttl then redis.call('hset', meta, 's', size, 't', ttl) end
  local now = redis.call('time')
  local ms = now[1] * 1000 + math.floor(now[2] / 1000)
  redis.call('xadd', hist, 'MAXLEN', '~', size, offset .. '-0', 't', ms, 'd', ARGV[1])
  redis.call('pexpire', hist, ttl)
end
local position = offset .. ':' .. epoch
if ARGV[8] == '1' then
  redis.call('spublish', ARGV[6], 'p' .. position .. ':' .. ARGV[1])
else
  redis.call('publish', ARGV[6], 'p' .. position .. ':' .. ARGV[1])
end
if idem_ttl > 0 then redis.call('set', idem, position, 'PX', idem_ttl) end
return {position, 0}
"""

# KEYS: meta, history. ARGV: since offset (-1: none), since epoch, limit (-1: none),
# reverse (0/1), meta TTL (ms) for a stream this read creates, a fresh epoch, the channel.
# Returns {offset, epoch, id1, encoded1, id2, encoded2, ...}: only entries within the
# stream's history size of its top offset, and not older than its history TTL.
HISTORY_SCRIPT = (
    _TRIM
    + """
local meta, hist = KEYS[1], KEYS[2]
local since, since_epoch = tonumber(ARGV[1]), ARGV[2]
local limit, reverse = tonumber(ARGV[3]), ARGV[4] == '1'
local top = redis.call('hmget', meta, 'o', 'e', 't', 's')
local offset, epoch = tonumber(top[1]) or 0, top[2]
if not epoch then
  -- Reading a position fixes the epoch (contract, point 2).
  epoch = ARGV[6]
  offset = 0
  redis.call('del', hist)
  redis.call('hset', meta, 'e', epoch, 'o', 0, 'n', ARGV[7])
  redis.call('pexpire', meta, ARGV[5])
end
local out = {offset, epoch}
if limit == 0 or (since >= 0 and since_epoch ~= '' and since_epoch ~= epoch) then
  return out
end
trim(hist, tonumber(top[3]) or 0, now_ms())
local size = tonumber(top[4]) or 0
local low = 1
if size > 0 then low = math.max(1, offset - size + 1) end
local entries
if reverse then
  local stop = '+'
  if since >= 0 then
    if since <= low then return out end
    stop = '(' .. since .. '-0'
  end
  if limit > 0 then
    entries = redis.call('xrevrange', hist, stop, low .. '-0', 'COUNT', limit)
  else
    entries = redis.call('xrevrange', hist, stop, low .. '-0')
  end
else
  local start = low .. '-0'
  if since >= 0 and since + 1 > low then start = (since + 1) .. '-0' end
  if limit > 0 then
    entries = redis.call('xrange', hist, start, '+', 'COUNT', limit)
  else
    entries = redis.call('xrange', hist, start, '+')
  end
end
for i = 1, #entries do
  local id, f = entries[i][1], entries[i][2]
  local d = nil
  for j = 1, #f, 2 do if f[j] == 'd' then d = f[j + 1] end end
  out[#out + 1] = id
  out[#out + 1] = d
end
return out
"""
)

# Presence: a hash client → encoded info and a sorted set client → expiry (server time,
# ms), both ``<prefix>:{<channel>}:p`` / ``:pz``, so entries of a node that died expire
# even though the keys live on.
# KEYS: hash, zset. ARGV: client, encoded info, TTL (ms).
PRESENCE_ADD_SCRIPT = (
    _TRIM
    + """
local now = now_ms()
redis.call('zadd', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
redis.call('pexpire', KEYS[1], ARGV[3])
redis.call('pexpire', KEYS[2], ARGV[3])
return 1
"""
)

# KEYS: hash, zset. Drops expired entries; returns {client1, info1, ...}.
PRESENCE_SCRIPT = (
    _TRIM
    + """
local now = now_ms()
local gone = redis.call('zrangebyscore', KEYS[2], '-inf', now)
if #gone > 0 then
  redis.call('zremrangebyscore', KEYS[2], '-inf', now)
  redis.call('hdel', KEYS[1], unpack(gone))
end
return redis.call('hgetall', KEYS[1])
"""
)

SCRIPTS = {
    "publish": PUBLISH_SCRIPT,
    "history": HISTORY_SCRIPT,
    "presence_add": PRESENCE_ADD_SCRIPT,
    "presence": PRESENCE_SCRIPT,
}

# Redis names a loaded script by the SHA-1 of its body: known without asking.
SCRIPT_SHAS = {
    name: hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()
    for name, body in SCRIPTS.items()
}
