// The official openai Node SDK against the gateway, one feature per run; prints JSON.
// Usage: node node_matrix.cjs NPM_PREFIX BASE_URL API_KEY MODEL FEATURE
const path = require("path");
const [prefix, baseURL, apiKey, model, feature] = process.argv.slice(2);
const { OpenAI } = require(path.join(prefix, "node_modules", "openai"));

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const weather = {
  name: "get_weather",
  description: "Current weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};
const ask = [{ role: "user", content: "What is the weather in Madrid?" }];

const features = {
  async chat() {
    const reply = await client.chat.completions.create({
      model, messages: [{ role: "user", content: "Say hello." }], max_tokens: 16, temperature: 0,
    });
    return { content: reply.choices[0].message.content };
  },
  async stream() {
    const stream = await client.chat.completions.create({
      model, messages: [{ role: "user", content: "Say hello." }], max_tokens: 16, stream: true,
      temperature: 0,
    });
    let content = "";
    for await (const chunk of stream) content += chunk.choices[0]?.delta?.content ?? "";
    return { content };
  },
  async tools() {
    const reply = await client.chat.completions.create({
      model, messages: ask, tools: [{ type: "function", function: weather }], temperature: 0,
      max_tokens: 48,
    });
    const choice = reply.choices[0];
    return { finish: choice.finish_reason, calls: choice.message.tool_calls ?? [] };
  },
  async runTools() {
    // The runner calls the model, runs the function it asked for, sends the result back,
    // and returns the model's final answer.
    const seen = [];
    const runner = client.chat.completions.runTools({
      model, messages: ask, temperature: 0, max_tokens: 48,
      tools: [{
        type: "function",
        function: { ...weather, parse: JSON.parse, function: (args) => { seen.push(args); return '{"temp_c": 21}'; } },
      }],
    });
    const content = await runner.finalContent();
    return { content, seen };
  },
  async responses() {
    const response = await client.responses.create({
      model, input: "What is the weather in Madrid?", temperature: 0, max_output_tokens: 48,
      tools: [{ type: "function", ...weather }],
    });
    return { output: response.output };
  },
};

features[feature]()
  .then((result) => console.log(JSON.stringify(result)))
  .catch((error) => { console.error(error); process.exit(1); });
