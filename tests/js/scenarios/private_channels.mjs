// Subscription errors and subscription tokens. A channel of an unknown namespace and a
// private ($) channel without a token are refused. `params.channel` (private) gets its
// tokens from getToken, in the order of `params.sub_tokens` (the first one short-lived, so
// the SDK has to refresh it); `params.control` gets a short-lived token from a getToken that
// never returns a new one, so the server unsubscribes it once the token expired.
import {
  body,
  client,
  connect,
  done,
  emit,
  input,
  params,
  Recorder,
  subscribe,
  SUB_EVENTS,
  value,
} from './lib.mjs';

const centrifuge = client({ token: params.token });
await connect(centrifuge, 'alice');

for (const channel of params.refused) {
  const sub = centrifuge.newSubscription(channel);
  const events = new Recorder(sub, 'refused', SUB_EVENTS);
  sub.subscribe();
  await events.next('unsubscribed');
  centrifuge.removeSubscription(sub);
}

const tokens = [...params.sub_tokens];
const { sub, events } = await subscribe(centrifuge, params.channel, 'private', {
  getToken: async (ctx) => {
    emit('get_sub_token', { channel: ctx.channel });
    return tokens.shift();
  },
});
let controlCalls = 0;
const { events: control } = await subscribe(centrifuge, params.control, 'control', {
  getToken: async () => {
    controlCalls += 1;
    if (controlCalls === 1) return params.control_token;
    return new Promise(() => {}); // never: the server has to unsubscribe it
  },
});

const lost = await control.next('subscribing', (ctx) => ctx.code !== 0);
emit('control_lost', { code: lost.code, reason: lost.reason });

await sub.publish(body({ still: 'here' }));
await events.next('publication', (ctx) => value(ctx.data).still === 'here');
emit('private', {
  state: sub.state,
  subscribing: events.waiting('subscribing').map((ctx) => ctx.code),
  unsubscribed: events.waiting('unsubscribed').length,
});
await input(); // the driver looks at the server's side first
centrifuge.disconnect();
done();
