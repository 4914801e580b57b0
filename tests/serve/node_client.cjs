// The official openai Node SDK against the gateway: one plain call and one stream.
// Usage: node node_client.cjs NPM_PREFIX BASE_URL API_KEY MODEL
const path = require("path");
const [prefix, baseURL, apiKey, model] = process.argv.slice(2);
const { OpenAI } = require(path.join(prefix, "node_modules", "openai"));

async function main() {
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
  const messages = [{ role: "user", content: "Say hi" }];
  const { data, response } = await client.chat.completions
    .create({ model, messages, max_tokens: 8 })
    .withResponse();
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 8, stream: true,
  });
  let streamed = "";
  for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
  console.log(JSON.stringify({
    content: data.choices[0].message.content,
    mode: response.headers.get("x-tuneserve-mode"),
    sampling: response.headers.get("x-tuneserve-sampling"),
    streamed,
  }));
}

main().catch((error) => { console.error(error); process.exit(1); });
