// Runs tools as tasks (MCP 2025-11-25) with the official TypeScript SDK client's
// experimental tasks API against a cmcp node, so the SDK's own schemas check every
// task answer; prints one JSON report on stdout.
//   node sdk_tasks.mjs http://HOST:PORT/mcp
// Exits non-zero with the reason on stderr when any step fails.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CallToolResultSchema } from "@modelcontextprotocol/sdk/types.js";

const [target] = process.argv.slice(2);
const report = { steps: [] };
const step = (name, data) => report.steps.push({ name, ...data });
function fail(msg) {
  console.error(`sdk_tasks: ${msg}`);
  console.log(JSON.stringify(report));
  process.exit(1);
}
const timer = setTimeout(() => fail("timed out after 60 s"), 60000);

try {
  const client = new Client({ name: "cmcp-sdk-tasks", version: "1" });
  await client.connect(new StreamableHTTPClientTransport(new URL(target)));
  step("capabilities", { tasks: client.getServerCapabilities()?.tasks ?? null });
  const tools = await client.listTools();
  step("tools/list", {
    slow: tools.tools.find((t) => t.name === "slow_compute")?.execution ?? null,
  });

  // callToolStream: creates the task, polls tasks/get, fetches tasks/result.
  const seen = [];
  let final = null;
  for await (const m of client.experimental.tasks.callToolStream(
    { name: "slow_compute", arguments: { ms: 400 } }, CallToolResultSchema,
    { task: { ttl: 60000 } })) {
    if (m.type === "taskCreated") seen.push("created:" + m.task.status);
    else if (m.type === "taskStatus") seen.push("status:" + m.task.status);
    else if (m.type === "result") final = m.result;
    else if (m.type === "error") fail("callToolStream error: " + m.error?.message);
  }
  step("stream", { seen, structured: final?.structuredContent ?? null });

  const failing = [];
  for await (const m of client.experimental.tasks.callToolStream(
    { name: "failing_job", arguments: {} }, CallToolResultSchema, { task: { ttl: 60000 } })) {
    if (m.type === "taskStatus") failing.push(m.task.status);
    else if (m.type === "result") failing.push("result:isError=" + m.result.isError);
    else if (m.type === "error") failing.push("error:" + m.error?.message);
  }
  step("failing", { seen: failing });

  // A long one, cancelled.
  let taskId = null;
  const it = client.experimental.tasks.callToolStream(
    { name: "slow_compute", arguments: { ms: 20000 } }, CallToolResultSchema,
    { task: { ttl: 60000 } });
  for await (const m of it) {
    if (m.type === "taskCreated") { taskId = m.task.taskId; break; }
  }
  const cancelled = await client.experimental.tasks.cancelTask(taskId);
  const got = await client.experimental.tasks.getTask(taskId);
  const listed = await client.experimental.tasks.listTasks();
  step("cancel", { status: cancelled.status, get: got.status, listed: listed.tasks.length });

  let unknown = null;
  try {
    await client.experimental.tasks.getTask("no-such-task");
  } catch (e) {
    unknown = e.code ?? String(e);
  }
  step("unknown", { code: unknown });
  await client.close();
  clearTimeout(timer);
  console.log(JSON.stringify(report));
  process.exit(0);
} catch (e) {
  fail(e?.stack ?? String(e));
}
