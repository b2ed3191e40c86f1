"""Chat templates: the tokenizer's own, or a named fallback (ChatML, plain), and prompts rendered with one."""

from __future__ import annotations

from tasks.core.errors import ConfigError

TEMPLATES = {
    "chatml": (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "plain": (
        "{% for message in messages %}{% if message['role'] == 'assistant' %}{{ message['content'] }}"
        "{{ eos_token }}\n{% else %}### {{ message['role'] | capitalize }}:\n{{ message['content'] }}\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}### Assistant:\n{% endif %}"
    ),
}


def chat_template(tokenizer, fallback: str) -> str:
    """The tokenizer's own template when it has one, else a named fallback or a literal Jinja template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    if fallback in TEMPLATES:
        return TEMPLATES[fallback]
    if "{%" in fallback or "{{" in fallback:
        return fallback
    raise ConfigError(
        f"dataset.fallback_template: '{fallback}' is neither a known template "
        f"({', '.join(TEMPLATES)}) nor a Jinja template string."
    )


def chat_prompt_ids(tokenizer, template: str, user: str, system_prompt: str | None = None) -> list[int]:
    msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": user}
    ]
    prompt = tokenizer.apply_chat_template(msgs, chat_template=template, tokenize=False, add_generation_prompt=True)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]
