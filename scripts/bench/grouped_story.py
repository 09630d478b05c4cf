#!/usr/bin/env python3
"""What group commit could buy the command path: writes a pgbench script that runs N
stories of scripts/bench/story.sql side by side, with each command's N appends in one
transaction (its reads before it, as the server does them), so that N commands share
one BEGIN/COMMIT. Compare, on a fresh migrated database, ANALYZEd after a warm-up:

    python3 scripts/bench/grouped_story.py 4 > /tmp/story_g4.sql
    pgbench -n -M prepared -c 32 -j 2 -T 10 -f scripts/bench/story.sql "$URL"   # x3 = commands/s
    pgbench -n -M prepared -c 8  -j 2 -T 10 -f /tmp/story_g4.sql "$URL"         # x12 = commands/s

(-c 8 with 4 stories each keeps 32 commands in flight, as -c 32 does.)
"""
import re
import sys
from pathlib import Path

n = int(sys.argv[1]) if len(sys.argv) > 1 else 4
story = Path(__file__).with_name("story.sql").read_text()
body = "\n".join(l for l in story.split("\n") if not l.startswith("--"))
first_read = body.index("SELECT e.position")
header, rest = body[:first_read], body[first_read:]
commands = ["SELECT e.position" + p for p in rest.split("SELECT e.position") if p.strip()]
assert len(commands) == 3, "story.sql: expected three commands, each starting with its read"


def nth(text, i):
    """The text with every pgbench variable of the story renamed for story i."""
    for v in ("sid", "k1", "k2", "seller", "pos"):
        text = re.sub(r":%s\b" % v, ":%s_%d" % (v, i), text)
        text = re.sub(r"AS %s\b" % v, "AS %s_%d" % (v, i), text)
    return text


out = [nth(header, i) for i in range(n)]
for command in commands:
    read_end = command.index(";") + 1
    read, writes = command[:read_end], command[read_end:]
    writes = writes.replace("BEGIN;", "").replace("COMMIT;", "")
    out += [nth(read, i) for i in range(n)]
    out.append("BEGIN;")
    out += [nth(writes, i) for i in range(n)]
    out.append("COMMIT;")
print("\n".join(out))
