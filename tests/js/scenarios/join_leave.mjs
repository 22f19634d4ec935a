// Join and leave between two clients: `one` watches (joinLeave), `two` subscribes,
// unsubscribes, subscribes again and then disconnects.
import { client, connect, done, emit, params, subscribe } from './lib.mjs';

const one = client({ token: params.tokens[0] });
await connect(one, 'one');
const { events: watcher } = await subscribe(one, params.channel, 'one', { joinLeave: true });

const two = client({ token: params.tokens[1] });
const { ctx } = await connect(two, 'two');
const twoId = ctx.client;
emit('two', { client: twoId });
const isTwo = (ctx) => ctx.info.client === twoId;

const { sub, events } = await subscribe(two, params.channel, 'two');
await watcher.next('join', isTwo);
sub.unsubscribe();
await watcher.next('leave', isTwo);

sub.subscribe();
await events.next('subscribed');
await watcher.next('join', isTwo);
two.disconnect(); // a connection that goes away leaves too
await watcher.next('leave', isTwo);
one.disconnect();
done();
