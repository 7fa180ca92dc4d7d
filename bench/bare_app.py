"""The yardstick for bench/intake.py: a Flask endpoint that does nothing and answers 204."""

from flask import Flask

app = Flask(__name__)


@app.post("/webhooks/github")
def webhook() -> tuple[str, int]:
    return "", 204
