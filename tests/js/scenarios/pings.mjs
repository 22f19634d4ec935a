// Server pings and the SDK's pongs: stays connected, without reconnecting, until the driver
// writes a line (it waits for connections that don't answer pings to be cut off first).
// `maxServerPingDelay` is short so that missing pings would make the SDK reconnect.
import { client, connect, done, emit, input, params } from './lib.mjs';

const centrifuge = client({ token: params.token, maxServerPingDelay: params.max_ping_delay_ms });
const { events, ctx } = await connect(centrifuge, 'alice');
emit('client', { client: ctx.client });
await input();
emit('alice', {
  state: centrifuge.state,
  connecting: events.waiting('connecting').map((ctx) => ctx.code),
  errors: events.waiting('error'),
});
centrifuge.disconnect();
done();
