// A client whose requests carry `Origin: params.origin`: with `params.allowed` it connects
// and runs an RPC (through /emulation on the HTTP transports); otherwise its transport fails.
import { body, client, connect, done, emit, params, Recorder, CLIENT_EVENTS } from './lib.mjs';

const centrifuge = client({ token: params.token });
if (params.allowed) {
  const { ctx } = await connect(centrifuge, 'alice');
  emit('client', { client: ctx.client });
  emit('echo', await centrifuge.rpc('echo', body({ from: params.origin })));
} else {
  const events = new Recorder(centrifuge, 'alice', CLIENT_EVENTS);
  centrifuge.connect();
  await events.next('error');
}
centrifuge.disconnect();
done();
