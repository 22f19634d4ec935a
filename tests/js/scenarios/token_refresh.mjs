// Connection token refresh. Both clients connect with the short-lived `params.short`;
// `refreshing` gets `params.fresh` from getToken when it expires, `control` never gets one,
// so the server closes it once the token expired. Then `refreshing` must still be connected
// (never having reconnected) and work. `late` starts with the already expired
// `params.expired`: refused at connect, it gets `params.fresh` from getToken and connects.
import { body, client, connect, done, emit, input, params, subscribe, value } from './lib.mjs';

let calls = 0;
const refreshing = client({
  token: params.short,
  getToken: async () => {
    calls += 1;
    emit('get_token', { who: 'refreshing', calls });
    return params.fresh;
  },
});
const control = client({
  token: params.short,
  getToken: () => {
    emit('get_token', { who: 'control' });
    return new Promise(() => {}); // never: the server has to cut it off
  },
});
const late = client({
  token: params.expired,
  getToken: async () => {
    emit('get_token', { who: 'late' });
    return params.fresh;
  },
});
const { events: lateEvents, ctx: lateCtx } = await connect(late, 'late');
emit('late', {
  client: lateCtx.client,
  connecting: lateEvents.waiting('connecting').map((ctx) => ctx.code),
  errors: lateEvents.waiting('error').map((ctx) => ctx.error.code),
});
late.disconnect();

const { events, ctx } = await connect(refreshing, 'refreshing');
emit('client', { client: ctx.client });
const { events: controlEvents } = await connect(control, 'control');
const { sub, events: subEvents } = await subscribe(refreshing, params.channel, 'refreshing');

const lost = await controlEvents.next('connecting', (ctx) => ctx.code !== 0);
emit('control_lost', { code: lost.code, reason: lost.reason });

await sub.publish(body({ still: 'here' }));
await subEvents.next('publication', (ctx) => value(ctx.data).still === 'here');
emit('refreshing', {
  state: refreshing.state,
  calls,
  connecting: events.waiting('connecting').map((ctx) => ctx.code),
  disconnected: events.waiting('disconnected').length,
});
await input(); // the driver looks at the server's side first
refreshing.disconnect();
control.disconnect();
done();
