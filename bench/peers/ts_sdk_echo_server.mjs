// The official TypeScript SDK's Streamable HTTP server with one `echo` tool,
// written the way the SDK's own examples write it (examples/server/
// simpleStreamableHttp.js and jsonResponseStreamableHttp.js): Express via
// createMcpExpressApp, one StreamableHTTPServerTransport + McpServer per
// session, sessions kept in a Map by Mcp-Session-Id. Nothing is logged per
// request, and there is no cap on sessions (the memory benchmark needs many).
//
//   node ts_sdk_echo_server.mjs --port 7100 [--json] [--time-limit 3600]
//
// --json answers with application/json (enableJsonResponse), otherwise SSE
// (the SDK's default). The process exits by itself after --time-limit seconds.
import { randomUUID } from 'node:crypto';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import * as z from 'zod/v4';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const port = Number(opt('--port', '7100'));
const json = args.includes('--json');
const timeLimit = Number(opt('--time-limit', '3600'));

function newServer() {
    const server = new McpServer({ name: 'ts-sdk-echo', version: '1.0.0' });
    server.registerTool(
        'echo',
        {
            title: 'Echo',
            description: 'Returns the given text unchanged.',
            inputSchema: { text: z.string().describe('Text to echo back') },
            outputSchema: { text: z.string() }
        },
        async ({ text }) => ({ content: [{ type: 'text', text }], structuredContent: { text } })
    );
    return server;
}

const app = createMcpExpressApp();
const sessions = new Map();

app.post('/mcp', async (req, res) => {
    try {
        const sid = req.headers['mcp-session-id'];
        const transport = sid ? sessions.get(sid) : undefined;
        if (transport) {
            await transport.handleRequest(req, res, req.body);
            return;
        }
        if (!sid && isInitializeRequest(req.body)) {
            const t = new StreamableHTTPServerTransport({
                sessionIdGenerator: () => randomUUID(),
                enableJsonResponse: json,
                onsessioninitialized: (id) => sessions.set(id, t)
            });
            t.onclose = () => {
                if (t.sessionId) sessions.delete(t.sessionId);
            };
            await newServer().connect(t);
            await t.handleRequest(req, res, req.body);
            return;
        }
        res.status(sid ? 404 : 400).json({
            jsonrpc: '2.0',
            error: { code: sid ? -32001 : -32000, message: sid ? 'Session not found' : 'Bad Request: No valid session ID provided' },
            id: null
        });
    } catch (err) {
        if (!res.headersSent)
            res.status(500).json({ jsonrpc: '2.0', error: { code: -32603, message: String(err) }, id: null });
    }
});

app.delete('/mcp', async (req, res) => {
    const t = sessions.get(req.headers['mcp-session-id']);
    if (!t) return res.status(404).end();
    await t.handleRequest(req, res);
});

const httpServer = app.listen(port, '127.0.0.1', () => {
    console.log(JSON.stringify({ listening: port, json, pid: process.pid }));
});
// No idle cutoff: the memory benchmark holds many idle keep-alive connections.
httpServer.keepAliveTimeout = 0;
httpServer.headersTimeout = 0;
httpServer.requestTimeout = 0;
httpServer.maxConnections = 1 << 20;
setTimeout(() => process.exit(0), timeLimit * 1000).unref();
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => process.exit(0));
