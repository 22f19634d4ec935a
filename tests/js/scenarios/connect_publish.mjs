// Connect with a token, subscribe, receive `params.server_pubs` publications published by the
// server, then publish from the SDK and receive that publication with the publisher's info.
import { body, client, connect, done, emit, params, subscribe, value } from './lib.mjs';

const centrifuge = client({ token: params.token });
const { ctx: connected } = await connect(centrifuge, 'alice');
emit('client', { client: connected.client, transport: connected.transport });

const { sub, events } = await subscribe(centrifuge, params.channel, 'alice');
for (let n = 0; n < params.server_pubs; n++) {
  await events.next('publication');
}

await sub.publish(body({ from: 'sdk' }));
const own = await events.next('publication', (ctx) => value(ctx.data)?.from === 'sdk');
emit('own', { offset: own.offset, info: own.info });

sub.unsubscribe();
await events.next('unsubscribed');
centrifuge.disconnect();
done();
