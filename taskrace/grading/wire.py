"""What crosses the pipe from a check's processes to the grader: one JSON line per
message (never pickle), each message's text one line a student reads. Shared by the
supervisor (``one``) and the runner (``check_runner``)."""
from __future__ import annotations

import json
import os

MAX_MESSAGE = 400  # characters: a message is one line a student reads


def send(fd: int, **msg) -> None:
    """One JSON line on the pipe (under PIPE_BUF, so lines from two processes never mix)."""
    data = (json.dumps(msg) + "\n").encode()
    if len(data) > 4000:
        msg = {k: (v[:MAX_MESSAGE] if isinstance(v, str) else v) for k, v in msg.items()}
        data = (json.dumps(msg) + "\n").encode()
    os.write(fd, data)


def one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 3] + "..."
