// History of a channel the server published to, then presence and presence stats of three
// connections of two users (`params.tokens`, the first one being asked).
import { client, connect, done, emit, failure, params, subscribe } from './lib.mjs';

const clients = [];
for (const [i, token] of params.tokens.entries()) {
  const centrifuge = client({ token });
  const { ctx } = await connect(centrifuge, `c${i}`);
  // The first one watches the others leave.
  const { sub, events } = await subscribe(centrifuge, params.channel, `c${i}`, {
    joinLeave: i === 0,
  });
  clients.push({ centrifuge, sub, events, id: ctx.client });
}
emit('clients', { ids: clients.map((c) => c.id) });

const { sub } = clients[0];
const first = await sub.history({ limit: 2 });
emit('history', { call: 'limit 2', ...first });
const epoch = first.epoch;
const calls = {
  all: { limit: -1 },
  position: { limit: 0 },
  since: { since: { offset: 2, epoch }, limit: 10 },
  'since limit 1': { since: { offset: 2, epoch }, limit: 1 },
  reverse: { limit: 2, reverse: true },
  'reverse since': { since: { offset: 4, epoch }, limit: 2, reverse: true },
};
for (const [call, options] of Object.entries(calls)) {
  emit('history', { call, ...(await sub.history(options)) });
}
const wrongEpoch = sub.history({ since: { offset: 1, epoch: 'another-epoch' }, limit: 10 });
emit('history_error', await failure(wrongEpoch));

const presence = await sub.presence();
emit('presence', { clients: presence.clients });
emit('presence_stats', await sub.presenceStats());

clients[2].centrifuge.disconnect();
await clients[0].events.next('leave', (ctx) => ctx.info.client === clients[2].id);
emit('presence_stats', await sub.presenceStats());
for (const { centrifuge } of clients) centrifuge.disconnect();
done();
