// The official v2 MCP client (@modelcontextprotocol/client) against a cmcp
// node's Streamable HTTP endpoint. Prints one JSON report on stdout; exits
// non-zero when a step fails.
//
//   node v2_client.mjs URL            pinned to 2026-07-28: server/discover,
//                                     tools/list, tools/call echo, input_required
//                                     round trips (elicitation, sampling, a
//                                     multi-round tool, a prompt), -32021
//   node v2_client.mjs URL fallback   a client that speaks both eras ("auto"):
//                                     probes with server/discover and stays
//                                     modern here; against a legacy-only server
//                                     it falls back to initialize
//   node v2_client.mjs URL legacy     the same client in 2025 mode (initialize,
//                                     session), against the same endpoint
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const url = new URL(process.argv[2] ?? 'http://127.0.0.1:8080/mcp');
const mode = process.argv[3] ?? 'pinned';
const report = { mode, url: url.href, steps: {}, ok: true };

function step(name, fn) {
    return fn().then(
        value => {
            report.steps[name] = { ok: true, ...value };
        },
        err => {
            report.ok = false;
            report.steps[name] = {
                ok: false,
                error: String(err?.message ?? err),
                code: err?.code,
                data: err?.data
            };
        }
    );
}

const text = result => (result.content ?? []).filter(b => b.type === 'text').map(b => b.text).join('\n');

function newClient(versionNegotiation, capabilities) {
    const client = new Client(
        { name: 'cmcp-v2-test', version: '1.0.0' },
        { capabilities: capabilities ?? { elicitation: { form: {} }, sampling: {}, roots: {} }, versionNegotiation }
    );
    const seen = { elicitation: 0, sampling: 0, roots: 0 };
    if (capabilities === undefined) {
        client.setRequestHandler('elicitation/create', async request => {
            seen.elicitation++;
            const props = Object.keys(request.params.requestedSchema?.properties ?? {});
            const content = {};
            for (const p of props) {
                const type = request.params.requestedSchema.properties[p].type;
                content[p] = type === 'boolean' ? true : type === 'number' || type === 'integer' ? 7 : `v2-${p}`;
            }
            return { action: 'accept', content };
        });
        client.setRequestHandler('sampling/createMessage', async () => {
            seen.sampling++;
            return { role: 'assistant', model: 'cmcp-test-model', content: { type: 'text', text: 'Paris' }, stopReason: 'endTurn' };
        });
        client.setRequestHandler('roots/list', async () => {
            seen.roots++;
            return { roots: [{ uri: 'file:///tmp/cmcp-root', name: 'root' }] };
        });
    }
    return { client, seen };
}

async function pinned() {
    const { client, seen } = newClient({ mode: { pin: '2026-07-28' } });
    await client.connect(new StreamableHTTPClientTransport(url));
    report.era = client.getProtocolEra();
    report.protocolVersion = client.getNegotiatedProtocolVersion();
    await step('discover', async () => {
        const d = await client.discover();
        if (!d.supportedVersions.includes('2026-07-28')) throw new Error('2026-07-28 not offered');
        return {
            supportedVersions: d.supportedVersions,
            capabilities: Object.keys(d.capabilities),
            serverInfo: d._meta?.['io.modelcontextprotocol/serverInfo']
        };
    });
    await step('tools_list', async () => {
        const { tools } = await client.listTools();
        const names = tools.map(t => t.name);
        if (!names.includes('echo')) throw new Error('no echo tool');
        return { count: tools.length, hasEcho: true };
    });
    await step('call_echo', async () => {
        const r = await client.callTool({ name: 'echo', arguments: { text: 'hello v2' } });
        if (text(r) !== 'hello v2') throw new Error(`echo said ${JSON.stringify(r)}`);
        return { text: text(r), structuredContent: r.structuredContent };
    });
    await step('input_required_elicitation', async () => {
        const r = await client.callTool({ name: 'test_elicitation', arguments: { message: 'Who are you?' } });
        const t = text(r);
        if (!t.includes('action=accept') || !t.includes('v2-username')) throw new Error(`got ${t}`);
        return { text: t, handled: seen.elicitation };
    });
    await step('input_required_sampling', async () => {
        const r = await client.callTool({ name: 'test_sampling', arguments: { prompt: 'Capital of France?' } });
        if (text(r) !== 'LLM response: Paris') throw new Error(`got ${text(r)}`);
        return { text: text(r), handled: seen.sampling };
    });
    await step('input_required_multi_round', async () => {
        const r = await client.callTool({ name: 'test_input_required_result_multi_round', arguments: {} });
        if (!text(r).includes('v2-name') || !text(r).includes('v2-color')) throw new Error(`got ${text(r)}`);
        return { text: text(r) };
    });
    await step('input_required_prompt', async () => {
        const r = await client.getPrompt({ name: 'test_input_required_result_prompt' });
        const t = r.messages?.[0]?.content?.text ?? '';
        if (!t.includes('v2-context')) throw new Error(`got ${JSON.stringify(r)}`);
        return { text: t };
    });
    await step('read_resource', async () => {
        const r = await client.readResource({ uri: 'test://static-text' });
        return { text: r.contents?.[0]?.text };
    });
    await client.close();

    // A client that declares nothing: the server answers -32021.
    const bare = newClient({ mode: { pin: '2026-07-28' } }, {});
    await bare.client.connect(new StreamableHTTPClientTransport(url));
    await step('missing_capability', async () => {
        try {
            await bare.client.callTool({ name: 'test_missing_capability', arguments: {} });
        } catch (err) {
            if (err?.code === -32021) return { code: err.code, data: err.data };
            throw err;
        }
        throw new Error('the call succeeded without the sampling capability');
    });
    await bare.client.close();
}

async function fallback() {
    const { client } = newClient({ mode: 'auto' });
    await client.connect(new StreamableHTTPClientTransport(url));
    report.era = client.getProtocolEra();
    report.protocolVersion = client.getNegotiatedProtocolVersion();
    report.discovered = client.getDiscoverResult()?.supportedVersions;
    await step('call_echo', async () => {
        const r = await client.callTool({ name: 'echo', arguments: { text: 'either era' } });
        if (text(r) !== 'either era') throw new Error(`echo said ${JSON.stringify(r)}`);
        return { text: text(r) };
    });
    await step('elicitation', async () => {
        const r = await client.callTool({ name: 'test_elicitation', arguments: { message: 'Name?' } });
        if (!text(r).includes('action=accept')) throw new Error(`got ${text(r)}`);
        return { text: text(r) };
    });
    await client.close();
}

async function legacy() {
    const { client } = newClient(undefined);
    const transport = new StreamableHTTPClientTransport(url);
    await client.connect(transport);
    report.era = client.getProtocolEra();
    report.protocolVersion = client.getNegotiatedProtocolVersion();
    report.sessionId = transport.sessionId ?? null;
    await step('call_echo', async () => {
        const r = await client.callTool({ name: 'echo', arguments: { text: 'legacy' } });
        if (text(r) !== 'legacy') throw new Error(`echo said ${JSON.stringify(r)}`);
        return { text: text(r) };
    });
    await step('elicitation', async () => {
        const r = await client.callTool({ name: 'test_elicitation', arguments: { message: 'Name?' } });
        if (!text(r).includes('action=accept')) throw new Error(`got ${text(r)}`);
        return { text: text(r) };
    });
    await client.close();
}

try {
    if (mode === 'fallback') await fallback();
    else if (mode === 'legacy') await legacy();
    else await pinned();
} catch (err) {
    report.ok = false;
    report.error = String(err?.stack ?? err);
}
console.log(JSON.stringify(report, null, 2));
process.exit(report.ok ? 0 : 1);
