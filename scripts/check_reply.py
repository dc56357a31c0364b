"""Check a reply written for a `teacher=file` request before renaming it into place.

    python check_reply.py QUEUE_DIR REQUEST_ID [REPLY_FILE]

Reads QUEUE_DIR/REQUEST_ID.request.json and the reply (default QUEUE_DIR/REQUEST_ID.reply.tmp);
exits 0 when the reply is valid JSON of the requested shape (for a PGKD request: a list of exactly
N {"text", "label"} objects with labels from the taxonomy), else prints what is wrong and exits 1.
Copied into each queue folder for whoever answers it.
"""

import json
import sys
from pathlib import Path


def check(request: dict, reply: str) -> list[str]:
    schema = (request.get("params") or {}).get("json_schema") or {}
    try:
        payload = json.loads(reply)
    except json.JSONDecodeError as error:
        return [f"not JSON: {error}"]
    problems = []
    if schema.get("type") == "array":
        if not isinstance(payload, list):
            return ["the reply must be a JSON list"]
        n = schema.get("minItems")
        if n is not None and len(payload) != n:
            problems.append(f"{len(payload)} items, the request asks for exactly {n}")
        allowed = set(schema["items"]["properties"]["label"].get("enum", []))
        for i, item in enumerate(payload):
            if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
                problems.append(f"item {i}: needs a non-empty string 'text'")
            elif allowed and item.get("label") not in allowed:
                problems.append(f"item {i}: label {item.get('label')!r} is not in the taxonomy")
    elif schema.get("type") == "object":
        if not isinstance(payload, dict):
            return ["the reply must be a JSON object"]
        allowed = set(schema["properties"]["class_names"].get("enum", []))
        if allowed and payload.get("class_names") not in allowed:
            problems.append(f"class_names {payload.get('class_names')!r} is not in the taxonomy")
    return problems


if __name__ == "__main__":
    folder, request_id = Path(sys.argv[1]), sys.argv[2]
    reply_path = Path(sys.argv[3]) if len(sys.argv) > 3 else folder / f"{request_id}.reply.tmp"
    request = json.loads((folder / f"{request_id}.request.json").read_text())
    problems = check(request, reply_path.read_text())
    for problem in problems[:20]:
        print(problem)
    print("OK" if not problems else f"{len(problems)} problem(s)")
    sys.exit(1 if problems else 0)
