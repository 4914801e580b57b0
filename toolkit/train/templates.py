"""Chat templates: the tokenizer's own by default, named ones (qwen3, chatml, llama3) when it has none.

Tool conversations render through the template's tools section, or, for a template without
one, through the tool prompt the gateway serves such models with (toolkit/core/tool_prompt.py).

QWEN3 follows Qwen3's published template: assistant turns after the last user query carry
`<think>...</think>`, and `enable_thinking=False` at generation time writes an empty think block.
"""

from __future__ import annotations

from toolkit.core.tool_prompt import has_tool_turns, renders_tools, with_tool_prompt

QWEN3 = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

CHATML = """\
{%- for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

LLAMA3 = """\
{{- bos_token }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

NAMED_TEMPLATES = {"qwen3": QWEN3, "chatml": CHATML, "llama3": LLAMA3}


END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "</s>")


def training_template(tokenizer, name: str) -> str:
    """The template to render training text with: the tokenizer's own unless the recipe names one."""
    if name != "auto":
        return NAMED_TEMPLATES[name]
    if tokenizer.chat_template:
        return tokenizer.chat_template
    raise ValueError(
        "the tokenizer has no chat template; set model.chat_template to qwen3, chatml or llama3"
    )


def _render(
    tokenizer,
    template: str,
    messages: list[dict],
    *,
    prompt: bool,
    thinking: bool,
    tools: list[dict] | None = None,
) -> str:
    return tokenizer.apply_chat_template(
        messages,
        tools=tools or None,
        chat_template=template,
        tokenize=False,
        add_generation_prompt=prompt,
        enable_thinking=thinking,
    )


def with_tools(
    tokenizer, template: str, messages: list[dict], tools: list[dict] | None
) -> tuple[list[dict], list[dict] | None]:
    """(messages, tools) to render a tool conversation with: the template's own tools section
    when it has one, else the tool prompt the gateway writes for such templates when serving
    (toolkit/core/tool_prompt.py), so the model learns the prompt it will be served."""
    if not tools and not has_tool_turns(messages):
        return messages, None
    if renders_tools(
        lambda probe, probe_tools: _render(
            tokenizer, template, probe, prompt=True, thinking=False, tools=probe_tools
        )
    ):
        return messages, tools
    return with_tool_prompt(messages, tools), None


def assistant_spans(
    tokenizer, template: str, messages: list[dict], mode: str, tools: list[dict] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant replies.

    A reply starts where the template's generation prompt for it ends, and runs through its
    end-of-turn marker, so the model learns to stop. Thinking examples are rendered with their
    reasoning, chat examples with thinking disabled, as Qwen3's template does. An assistant's
    tool calls are part of its reply; tool results are not (they come as other turns).
    """
    thinking = mode == "thinking"
    if len(messages) == 1 and messages[0]["role"] == "assistant":  # plain text rows
        text = messages[0]["content"] + (tokenizer.eos_token or "")
        return text, [(0, len(text))]
    messages, tools = with_tools(tokenizer, template, messages, tools)
    full = _render(tokenizer, template, messages, prompt=False, thinking=thinking, tools=tools)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or index == 0:
            continue
        start = None
        for flag in (thinking, not thinking):
            prefix = _render(
                tokenizer, template, messages[:index], prompt=True, thinking=flag, tools=tools
            )
            if full.startswith(prefix):
                start = len(prefix)
                break
        if start is None:
            raise ValueError(
                f"the chat template does not render turn {index} as a continuation of the turns before it"
            )
        end = _end_of_turn(full, start)
        spans.append((start, end))
    return full, spans


def _end_of_turn(text: str, start: int) -> int:
    found = [(text.find(marker, start), marker) for marker in END_OF_TURN]
    found = [(pos, marker) for pos, marker in found if pos >= 0]
    if not found:
        return len(text)
    pos, marker = min(found)
    return pos + len(marker)


def tokenize_masked(
    tokenizer,
    template: str,
    messages: list[dict],
    mode: str,
    max_length: int,
    responses_only: bool,
    tools: list[dict] | None = None,
) -> dict[str, list[int]]:
    """input_ids and labels: -100 everywhere but the assistant replies (when `responses_only`)."""
    text, spans = assistant_spans(tokenizer, template, messages, mode, tools)
    encoded = tokenizer(
        text,
        add_special_tokens=False,
        return_offsets_mapping=True,
        truncation=True,
        max_length=max_length,
    )
    ids = encoded["input_ids"]
    if not responses_only:
        return {"input_ids": ids, "labels": list(ids)}
    labels = []
    for token_id, (begin, _end) in zip(ids, encoded["offset_mapping"], strict=True):
        inside = any(lo <= begin < hi for lo, hi in spans)
        labels.append(token_id if inside else -100)
    return {"input_ids": ids, "labels": labels}
