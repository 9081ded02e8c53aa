"""Any OpenAI-compatible chat-completions server (vLLM, SGLang, …) as the reasoner's VLM.

Real HTTP with the standard library (``urllib.request``): the image goes as a
``data:image/jpeg;base64,…`` URL, the answer schema through
``response_format={"type": "json_schema", …}`` so the server constrains decoding itself. A batch
is sent as concurrent requests (the server does the batching: vLLM/SGLang continuous batching),
``n`` samples per request. Every failure -- refused connection, timeout, HTTP error, a body that is
not a chat completion -- becomes a :class:`VLMError` for that prompt, never an exception.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import VLMError, VLMPrompt

#: A reply larger than this is refused (a confused server must not exhaust memory).
MAX_RESPONSE_BYTES = 1 << 20


class OpenAIEngine:
    def __init__(
        self,
        url: str,
        *,
        model: str,
        schema_fn: Callable[[tuple[str, ...]], dict[str, Any]],
        timeout_s: float = 30.0,
        temperature: float = 0.8,
        max_tokens: int = 400,
        api_key: str | None = None,
        concurrency: int = 8,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise VLMError(f"VLM URL must start with http:// or https://, got {url!r}")
        base = url.rstrip("/")
        self.endpoint = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model = model
        self.name = f"openai:{model}"
        self.schema_fn = schema_fn
        self.timeout_s = timeout_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.api_key = api_key
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="vlm-http")

    def request_body(self, prompt: VLMPrompt, n: int) -> dict[str, Any]:
        image = "data:image/jpeg;base64," + base64.b64encode(prompt.image_jpeg).decode("ascii")
        messages: list[dict[str, Any]] = []
        if prompt.system:
            messages.append({"role": "system", "content": prompt.system})
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": image}},
                    {"type": "text", "text": prompt.text},
                ],
            }
        )
        return {
            "model": self.model,
            "messages": messages,
            "n": n,
            # First answer near-greedy; resamples need diversity to be worth drawing.
            "temperature": 0.0 if n == 1 else self.temperature,
            "max_tokens": self.max_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "emotion_answer",
                    "schema": self.schema_fn(prompt.labels),
                    "strict": True,
                },
            },
        }

    def _one(self, prompt: VLMPrompt, n: int) -> list[str] | VLMError:
        data = json.dumps(self.request_body(prompt, n)).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.endpoint, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = resp.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            return VLMError(f"VLM server answered HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError) as exc:  # refused, DNS, timeout (TimeoutError is OSError)
            reason = getattr(exc, "reason", exc)
            return VLMError(f"VLM server {self.endpoint} unreachable: {reason}")
        if len(body) > MAX_RESPONSE_BYTES:
            return VLMError("VLM server reply too large")
        try:
            choices = json.loads(body)["choices"]
            texts = [c["message"]["content"] for c in choices]
        except (ValueError, KeyError, TypeError, IndexError):
            return VLMError("VLM server reply is not a chat completion")
        if not texts or not all(isinstance(t, str) for t in texts):
            return VLMError("VLM server reply has no text content")
        return texts

    def generate(self, prompts: list[VLMPrompt], n: int = 1) -> list[list[str] | VLMError]:
        return list(self._pool.map(lambda p: self._one(p, n), prompts))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
