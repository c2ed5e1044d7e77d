// The official v2 MCP client (@modelcontextprotocol/client) pinned to
// 2026-07-28 opens a subscriptions/listen stream on a cmcp node and waits for
// the change notifications another client causes (test_listen.py drives it).
//
//   node v2_listen.mjs URL [TIMEOUT_MS]
//
// Prints {"ready": true, "honoredFilter": ...} on a line of its own once the
// server acknowledged the stream (the other client acts then), and a final
// JSON report line when a tools list_changed and a resources/updated for
// test://watched-resource arrived, or the time ran out. Exits non-zero on failure.
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const url = new URL(process.argv[2] ?? 'http://127.0.0.1:8080/mcp');
const timeoutMs = Number(process.argv[3] ?? 20000);
const WATCHED = 'test://watched-resource';
const report = { ok: false, toolsListChanged: 0, resourcesUpdated: [], toolsAfter: null, errors: [], other: [] };

const client = new Client({ name: 'cmcp-v2-listen', version: '1.0.0' },
    { capabilities: {}, versionNegotiation: { mode: { pin: '2026-07-28' } } });
client.onerror = err => report.errors.push(String(err?.message ?? err));
client.fallbackNotificationHandler = async n => { report.other.push(n.method); };
let done;
const finished = new Promise(resolve => { done = resolve; });
const check = () => {
    if (report.toolsListChanged > 0 && report.resourcesUpdated.includes(WATCHED)) done();
};
let timer;
try {
    const transport = new StreamableHTTPClientTransport(url);
    await client.connect(transport);
    // What arrived, before the client's own filtering (for the report when a step fails).
    const deliver = transport.onmessage;
    report.received = [];
    transport.onmessage = (m, extra) => {
        report.received.push(m.method ?? `response:${m.id}`);
        deliver(m, extra);
    };
    report.protocolVersion = client.getNegotiatedProtocolVersion();
    // Handlers go on after connect: connecting (era negotiation) sets the handler table up.
    client.setNotificationHandler('notifications/tools/list_changed', async () => {
        report.toolsListChanged++;
        check();
    });
    client.setNotificationHandler('notifications/resources/updated', async n => {
        report.resourcesUpdated.push(n.params.uri);
        check();
    });
    const sub = await client.listen({ toolsListChanged: true, resourceSubscriptions: [WATCHED] });
    report.honoredFilter = sub.honoredFilter;
    console.log(JSON.stringify({ ready: true, honoredFilter: sub.honoredFilter }));
    const expired = new Promise(resolve => { timer = setTimeout(() => resolve('timeout'), timeoutMs); });
    const how = await Promise.race([finished.then(() => 'notified'), expired]);
    report.how = how;
    if (how === 'notified') {
        const { tools } = await client.listTools();
        report.toolsAfter = tools.map(t => t.name);
        report.ok = true;
    }
    await sub.close();
    await client.close();
} catch (err) {
    report.error = String(err?.stack ?? err);
    report.code = err?.code;
}
clearTimeout(timer);
console.log(JSON.stringify(report));
process.exit(report.ok ? 0 : 1);
