// The 2025-11-25 client features, driven by the official MCP TypeScript SDK client against
// a node serving the conformance pack, and reported as one JSON object on stdout:
// URL-mode elicitation (the request, notifications/elicitation/complete, the -32042
// UrlElicitationRequiredError), sampling with tools (two rounds: tool_use, then tool_result),
// and icons (serverInfo and the four lists).
//   node sdk_client_features.mjs URL
// The client declares elicitation {form, url} and sampling {tools}, and answers every
// request the way a user and a model would. Exits non-zero with the reason on stderr when a
// step fails.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ElicitationCompleteNotificationSchema,
  UrlElicitationRequiredError,
} from "@modelcontextprotocol/sdk/types.js";

const [target] = process.argv.slice(2);
const report = { elicitations: [], completions: [], samplings: [] };

function fail(msg) {
  console.error(`sdk_client_features: ${msg}`);
  console.log(JSON.stringify(report));
  process.exit(1);
}
const timer = setTimeout(() => fail("timed out after 60 s"), 60000);

const client = new Client(
  { name: "cmcp-client-features-test", version: "1.0.0" },
  { capabilities: { elicitation: { form: {}, url: {} }, sampling: { tools: {} } } },
);
client.setRequestHandler(ElicitRequestSchema, async (req) => {
  report.elicitations.push(req.params);
  return { action: "accept" }; // the user agreed to open the URL
});
client.setNotificationHandler(ElicitationCompleteNotificationSchema, async (n) => {
  report.completions.push(n.params);
});
client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
  report.samplings.push(req.params);
  const last = req.params.messages.at(-1);
  const blocks = Array.isArray(last.content) ? last.content : [last.content];
  if (!blocks.some((b) => b.type === "tool_result")) {
    return {
      role: "assistant",
      model: "sdk-test-model",
      stopReason: "toolUse",
      content: [{ type: "tool_use", id: "call-1", name: "get_weather", input: { city: "Lyon" } }],
    };
  }
  return {
    role: "assistant",
    model: "sdk-test-model",
    stopReason: "endTurn",
    content: { type: "text", text: "It is sunny in Lyon." },
  };
});

try {
  const transport = new StreamableHTTPClientTransport(new URL(target));
  await client.connect(transport);
  report.protocol = transport.protocolVersion ?? null;
  report.serverInfo = client.getServerVersion() ?? null;

  const pick = (list, key, value) => list.find((x) => x[key] === value) ?? null;
  report.icons = {
    tool: pick((await client.listTools()).tools, "name", "test_icons")?.icons ?? null,
    prompt: pick((await client.listPrompts()).prompts, "name", "test_prompt_with_icons")?.icons ?? null,
    resource: pick((await client.listResources()).resources, "uri", "test://icons/static")?.icons ?? null,
    template:
      pick((await client.listResourceTemplates()).resourceTemplates, "uriTemplate", "test://icons/{name}")
        ?.icons ?? null,
  };

  const url = await client.callTool({ name: "test_url_elicitation", arguments: { elicitationId: "sdk-el-1" } });
  report.urlElicitation = { isError: url.isError ?? false, structured: url.structuredContent ?? null };

  try {
    await client.callTool({ name: "test_url_elicitation_required", arguments: {} });
    report.required = { thrown: false };
  } catch (e) {
    report.required = {
      thrown: true,
      urlElicitationRequiredError: e instanceof UrlElicitationRequiredError,
      code: e?.code,
      elicitations: e?.elicitations ?? null,
    };
  }
  const id = report.required.elicitations?.[0]?.elicitationId;
  if (id) {
    const retry = await client.callTool({ name: "test_url_elicitation_required", arguments: { elicitationId: id } });
    report.retry = { isError: retry.isError ?? false, structured: retry.structuredContent ?? null };
  }

  const sampled = await client.callTool({ name: "test_sampling_tools", arguments: { prompt: "Weather in Lyon?" } });
  report.samplingTools = { isError: sampled.isError ?? false, structured: sampled.structuredContent ?? null };

  await transport.terminateSession();
  await client.close();
} catch (e) {
  fail(`${e?.stack ?? e}`);
}
clearTimeout(timer);
console.log(JSON.stringify(report));
process.exit(0);
