// Drives a cmcp node with the official MCP TypeScript SDK client, the way a
// user's application would, and prints one JSON report on stdout.
//   node sdk_client.mjs http URL
//   node sdk_client.mjs http URL SESSION VERSION   (joins a session made elsewhere, e.g. on
//                      another cluster member, negotiated at VERSION: no initialize of its own)
//   node sdk_client.mjs stdio CMCPD [args...]
//   node --experimental-websocket sdk_client.mjs ws ws://HOST:PORT/mcp/ws
//   node sdk_client.mjs sse http://HOST:PORT/sse        (the 2024-11-05 HTTP+SSE transport)
// Exits non-zero with the reason on stderr when any step fails.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { WebSocketClientTransport } from "@modelcontextprotocol/sdk/client/websocket.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";

const [mode, target, ...rest] = process.argv.slice(2);
const report = { steps: [] };
const step = (name, data) => report.steps.push({ name, ...data });

function fail(msg) {
  console.error(`sdk_client: ${msg}`);
  console.log(JSON.stringify(report));
  process.exit(1);
}
const timer = setTimeout(() => fail("timed out after 60 s"), 60000);

let transport;
const joinSession = mode === "http" && rest[0] ? rest[0] : undefined;
if (mode === "http") transport = new StreamableHTTPClientTransport(new URL(target), { sessionId: joinSession });
else if (mode === "ws") transport = new WebSocketClientTransport(new URL(target));
else if (mode === "sse") transport = new SSEClientTransport(new URL(target));
else if (mode === "stdio") transport = new StdioClientTransport({ command: target, args: rest, stderr: "inherit" });
else fail(`unknown mode ${mode}`);

const client = new Client({ name: "cmcp-sdk-test", version: "1.0.0" });
try {
  await client.connect(transport); // with a session to join, the SDK sends no initialize
  if (joinSession) transport.setProtocolVersion(rest[1]);
  report.serverVersion = client.getServerVersion() ?? null;
  report.sessionId = transport.sessionId ?? null;
  step("connect", { protocol: transport.protocolVersion ?? null });

  const tools = await client.listTools();
  step("tools/list", { names: tools.tools.map((t) => t.name) });

  const echo = await client.callTool({ name: "echo", arguments: { text: "hello from the SDK" } });
  step("echo", { text: echo.content?.[0]?.text, isError: echo.isError ?? false });

  const progress = [];
  const slept = await client.callTool(
    { name: "sleep", arguments: { ms: 600 } },
    undefined,
    { onprogress: (p) => progress.push(p), timeout: 20000 },
  );
  step("sleep", { isError: slept.isError ?? false, progress: progress.length, last: progress.at(-1) ?? null });

  // Cancellation: abort a long sleep; the SDK sends notifications/cancelled.
  const ac = new AbortController();
  const t0 = Date.now();
  const cancelled = client
    .callTool({ name: "sleep", arguments: { ms: 30000 } }, undefined, { signal: ac.signal, timeout: 40000 })
    .then(() => "completed", (e) => `rejected: ${e?.message ?? e}`);
  setTimeout(() => ac.abort("test cancels"), 300);
  const outcome = await cancelled;
  step("cancel", { outcome, ms: Date.now() - t0 });
  // The server must still answer after a cancellation.
  await client.ping();
  step("ping-after-cancel", {});

  await client.callTool({ name: "kv_set", arguments: { key: "colour", value: "teal" } });
  const got = await client.callTool({ name: "kv_get", arguments: { key: "colour" } });
  step("kv", { text: got.content?.[0]?.text, structured: got.structuredContent ?? null });

  if (mode === "http") {
    await transport.terminateSession();
    step("terminate", { sessionId: transport.sessionId ?? null });
  }
  await client.close();
  step("close", {});
} catch (e) {
  fail(`${e?.stack ?? e}`);
}
clearTimeout(timer);
console.log(JSON.stringify(report));
process.exit(0);
