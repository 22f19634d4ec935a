// getState: the app loads its state and returns a stream position; the SDK subscribes
// recovering from it and asks the server to refuse (error 112) rather than not recover.
// getState returns `params.positions` in order; ends once `params.count` publications came.
import { client, connect, done, emit, params, Recorder, SUB_EVENTS } from './lib.mjs';

const centrifuge = client({ token: params.token });
await connect(centrifuge, 'alice');
const positions = [...params.positions];
const sub = centrifuge.newSubscription(params.channel, {
  getState: async () => {
    const position = positions.shift();
    emit('get_state', position);
    return position;
  },
});
const events = new Recorder(sub, 'alice', SUB_EVENTS);
sub.subscribe();
for (let n = 0; n < params.count; n++) {
  await events.next('publication');
}
centrifuge.disconnect();
done();
