// Recovery after a dropped connection. The driver drops the connection on the server side;
// the SDK's next connect attempt waits (in getData) for a line on stdin, so the driver can
// publish while the client is away. Ends once the publication with n == `params.last`
// arrived. With `params.server_side` the channel comes from the token (a server-side
// subscription, recovered through the connect command) instead of `newSubscription`.
import {
  client,
  connect,
  done,
  emit,
  input,
  params,
  SERVER_SUB_EVENTS,
  subscribe,
  value,
} from './lib.mjs';

let attempts = 0;
let held = false;
const centrifuge = client({
  token: params.token,
  // Called before every connect attempt: hold the first reconnect until the driver is ready.
  getData: async () => {
    attempts += 1;
    if (attempts > 1 && !held) {
      held = true;
      emit('reconnecting', { attempt: attempts });
      await input();
    }
    return null;
  },
});
const extra = params.server_side ? SERVER_SUB_EVENTS : [];
const { events: clientEvents, ctx } = await connect(centrifuge, 'alice', extra);
emit('client', { client: ctx.client });
const { events } = params.server_side
  ? { events: clientEvents }
  : await subscribe(centrifuge, params.channel, 'alice');
await events.next('publication', (ctx) => value(ctx.data).n === params.last);
centrifuge.disconnect();
done();
