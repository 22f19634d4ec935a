// RPC: a handler that answers, a method nobody registered and a handler that fails; then an
// asynchronous `send` to the server's message handler (no reply: the driver confirms it).
import { body, client, connect, done, emit, failure, input, params } from './lib.mjs';

const centrifuge = client({ token: params.token });
await connect(centrifuge, 'alice');
emit('echo', await centrifuge.rpc('echo', body({ x: [1, 2] })));
emit('missing', await failure(centrifuge.rpc('missing', body({}))));
emit('failing', await failure(centrifuge.rpc('fail', body({}))));
emit('again', await centrifuge.rpc('echo', body(1))); // errors don't end the connection
await centrifuge.send(body({ note: 'bye' }));
emit('sent');
await input(); // closing now could abort the send still on its way (HTTP transports)
centrifuge.disconnect();
done();
