"""A help-desk webhook that answers customers from a running `semsearch serve`.

    semsearch faq build examples/faq.jsonl --question-field text --index faq-index
    semsearch faq calibrate --index faq-index --questions examples/faq-labelled.jsonl
    semsearch serve --index faq-index --port 8000 &
    python examples/webhook_bot.py --semsearch http://127.0.0.1:8000 --port 8080 &
    curl -s localhost:8080/webhook -d '{"ticket": 42, "message": "I forgot my login secret"}'

A help desk POSTs each new customer message as JSON ({"ticket", "message"});
the bot asks /faq/answer and replies {"ticket", "reply", "handover"}: the
answer when semsearch is confident, else a hand-over to a person with the
closest questions as hints. Standard library only: copy it and adapt the
two JSON shapes to your help desk.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def ask(semsearch: str, question: str) -> dict:
    request = urllib.request.Request(f"{semsearch}/faq/answer", data=json.dumps({"question": question}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def reply_for(semsearch: str, ticket, message: str) -> dict:
    answer = ask(semsearch, message)
    if answer["confident"]:
        return {"ticket": ticket, "reply": answer["match"]["answer"], "handover": False}
    hints = [m["question"] for m in answer["runners_up"]]
    return {"ticket": ticket, "reply": "Thanks! A colleague will get back to you shortly.", "handover": True,
            "hints": hints}


def handler_for(semsearch: str):
    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self):
            if self.path != "/webhook":
                return self.send_json(404, {"error": "POST your messages to /webhook"})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                message = body["message"]
                if not isinstance(message, str) or not message.strip():
                    raise ValueError("empty message")
            except (ValueError, KeyError, TypeError):
                return self.send_json(400, {"error": 'expected {"ticket": ..., "message": "..."}'})
            try:
                self.send_json(200, reply_for(semsearch, body.get("ticket"), message))
            except (urllib.error.URLError, OSError) as exc:
                self.send_json(502, {"error": f"semsearch is not reachable: {exc}"})

        def send_json(self, status: int, value: dict) -> None:
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):  # quiet
            pass

    return Webhook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--semsearch", default="http://127.0.0.1:8000", help="the semsearch server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), handler_for(args.semsearch.rstrip("/")))
    print(f"webhook on http://{args.host}:{server.server_address[1]}/webhook -> {args.semsearch}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
